// Text cleaning of CLIP's tokenizer (see text_clean.h for what is and is not reproduced).
#include "text_clean.h"

#include <algorithm>
#include <cstdint>

#include "unicode.h"

namespace cris_infer {
namespace {

bool is_digit(char32_t c, int base) {
    if (c >= U'0' && c <= U'9') return true;
    return base == 16 && ((c >= U'a' && c <= U'f') || (c >= U'A' && c <= U'F'));
}

uint32_t digit_value(char32_t c) {
    return c <= U'9' ? c - U'0' : (c | 0x20) - U'a' + 10;
}

bool is_alnum_ascii(char32_t c) {
    return (c >= U'0' && c <= U'9') || (c >= U'a' && c <= U'z') || (c >= U'A' && c <= U'Z');
}

// Digits of a numeric reference as Python's int(): values past U+10FFFF saturate (they all
// decode to U+FFFD).
uint32_t parse_number(std::u32string_view digits, int base) {
    uint64_t v = 0;
    for (char32_t c : digits) {
        v = v * base + digit_value(c);
        if (v > 0x110000) v = 0x110000;
    }
    return static_cast<uint32_t>(v);
}

// Appends text[i..] up to the next '&' to `out`; returns the index of that '&' (or the size).
size_t copy_to_ampersand(std::u32string_view text, size_t i, std::u32string& out) {
    const size_t amp = std::min(text.find(U'&', i), text.size());
    out.append(text.substr(i, amp - i));
    return amp;
}

void append_utf8(const char* utf8, std::u32string& out) { out += utf8_decode(utf8); }

// One reference of html.unescape starting after '&' at text[i]; appends its value and returns
// the index after it, or returns i when nothing there is a reference ('&' kept as text).
size_t unescape_one(std::u32string_view text, size_t i, std::u32string& out) {
    if (i < text.size() && text[i] == U'#') {
        size_t j = i + 1;
        int base = 10;
        if (j < text.size() && (text[j] == U'x' || text[j] == U'X')) {
            base = 16;
            ++j;
        }
        const size_t start = j;
        while (j < text.size() && is_digit(text[j], base)) ++j;
        if (j == start) return i;
        const uint32_t num = parse_number(text.substr(start, j - start), base);
        if (j < text.size() && text[j] == U';') ++j;
        html_charref(num, out);
        return j;
    }
    // [^\t\n\f <&#;]{1,32};?
    size_t j = i;
    auto excluded = [](char32_t c) {
        return c == U'\t' || c == U'\n' || c == U'\f' || c == U' ' || c == U'<' || c == U'&' ||
               c == U'#' || c == U';';
    };
    while (j < text.size() && j - i < 32 && !excluded(text[j])) ++j;
    if (j == i) return i;
    if (j < text.size() && text[j] == U';') ++j;
    const std::string name = utf8_encode(text.substr(i, j - i));
    if (const char* v = html_named_entity(name, false)) {
        append_utf8(v, out);
        return j;
    }
    // The longest prefix (at least 2 characters) that is a name; the rest stays text.
    const std::u32string_view s = text.substr(i, j - i);
    for (size_t x = s.size() - 1; x > 1; --x) {
        if (const char* v = html_named_entity(utf8_encode(s.substr(0, x)), false)) {
            append_utf8(v, out);
            out += s.substr(x);
            return j;
        }
    }
    out.push_back(U'&');
    out += s;
    return j;
}

// ftfy's unescape_html: "&#?[0-9A-Za-z]{1,24};" replaced when it is a known entity, or a
// numeric reference html.unescape decodes completely.
std::u32string ftfy_unescape(const std::u32string& text) {
    std::u32string out;
    size_t i = 0;
    while ((i = copy_to_ampersand(text, i, out)) < text.size()) {
        size_t j = i + 1;
        if (j < text.size() && text[j] == U'#') ++j;
        const size_t start = j;
        while (j < text.size() && j - start < 24 && is_alnum_ascii(text[j])) ++j;
        if (j == start || j >= text.size() || text[j] != U';') {
            out.push_back(text[i++]);
            continue;
        }
        const std::u32string_view ref(text.data() + i, j + 1 - i);
        std::u32string value;
        if (ref[1] != U'#') {
            if (const char* v = html_named_entity(utf8_encode(ref.substr(1)), true)) value = utf8_decode(v);
        } else {
            std::u32string decoded = html_unescape(ref);
            if (decoded.find(U';') == std::u32string::npos) value = decoded;
            else value = ref;
        }
        if (value.empty() && ref[1] != U'#') value = ref;  // unknown name: kept
        out += value;
        i = j + 1;
    }
    return out;
}

// ftfy's remove_terminal_escapes: ESC '[' [0-9;]* [A-Za-z].
std::u32string remove_terminal_escapes(const std::u32string& text) {
    std::u32string out;
    size_t i = 0;
    while (i < text.size()) {
        if (text[i] == 0x1B && i + 1 < text.size() && text[i + 1] == U'[') {
            size_t j = i + 2;
            while (j < text.size() && ((text[j] >= U'0' && text[j] <= U'9') || text[j] == U';')) ++j;
            if (j < text.size() && ((text[j] | 0x20) >= U'a' && (text[j] | 0x20) <= U'z')) {
                i = j + 1;
                continue;
            }
        }
        out.push_back(text[i++]);
    }
    return out;
}

// One pass of ftfy's fixers over one segment (see ftfy.fix_and_explain).
std::u32string ftfy_pass(const std::u32string& text, bool unescape) {
    std::u32string t = unescape ? ftfy_unescape(text) : text;
    std::u32string mapped;
    for (char32_t c : t) {
        c = ftfy_c1_fix(c);
        if (const char32_t* r = ftfy_char_fix(c)) mapped += r;
        else mapped.push_back(c);
    }
    std::u32string out;
    for (char32_t c : remove_terminal_escapes(mapped))
        if (!is_ftfy_control(c)) out.push_back(c);
    return out;
}

}  // namespace

std::u32string html_unescape(std::u32string_view text) {
    std::u32string out;
    size_t i = 0;
    while ((i = copy_to_ampersand(text, i, out)) < text.size()) {
        const size_t next = unescape_one(text, i + 1, out);
        if (next == i + 1) out.push_back(U'&');
        i = next;
    }
    return out;
}

std::u32string ftfy_fix(std::u32string text) {
    // ftfy works line by line (segments end after '\n'); once a line holds '<', HTML unescaping
    // is off for it and every later line.
    std::u32string out;
    bool unescape = true;
    size_t pos = 0;
    while (pos < text.size()) {
        const size_t nl = text.find(U'\n', pos);
        const size_t end = nl == std::u32string::npos ? text.size() : nl + 1;
        std::u32string segment = text.substr(pos, end - pos);
        if (segment.find(U'<') != std::u32string::npos) unescape = false;
        for (;;) {
            std::u32string fixed = ftfy_pass(segment, unescape);
            if (fixed == segment) break;
            segment.swap(fixed);
        }
        out += segment;
        pos = end;
    }
    return out;
}

std::u32string clean_text(std::string_view text) {
    const std::u32string fixed = html_unescape(html_unescape(ftfy_fix(utf8_decode(text))));
    // strip (str.isspace), collapse regex \s runs to one space, strip again, lower-case.
    size_t b = 0, e = fixed.size();
    while (b < e && is_py_space(fixed[b])) ++b;
    while (e > b && is_py_space(fixed[e - 1])) --e;
    std::u32string collapsed;
    for (size_t i = b; i < e; ++i) {
        if (is_regex_space(fixed[i])) {
            collapsed.push_back(U' ');
            while (i + 1 < e && is_regex_space(fixed[i + 1])) ++i;
        } else {
            collapsed.push_back(fixed[i]);
        }
    }
    b = 0;
    e = collapsed.size();
    while (b < e && is_py_space(collapsed[b])) ++b;
    while (e > b && is_py_space(collapsed[e - 1])) --e;
    std::u32string out;
    for (size_t i = b; i < e; ++i) py_lower_append(collapsed[i], out);
    return out;
}

}  // namespace cris_infer
