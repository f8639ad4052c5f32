// UTF-8 codec and table look-ups for the tokenizer (tables: unicode_tables.inc, generated).
#include "unicode.h"

#include <algorithm>
#include <array>
#include <cstdint>
#include <iterator>
#include <map>

namespace cris_infer {
namespace {

struct CpRange {
    char32_t lo, hi;
};
struct LowerRun {
    char32_t lo, hi;
    int stride, delta;
};
struct CpString {
    char32_t cp;
    const char* utf8;
};
struct NameString {
    const char* name;
    const char* utf8;
};

#include "unicode_tables.inc"

template <size_t N>
bool in_ranges(const CpRange (&table)[N], char32_t c) {
    const CpRange* end = table + N;
    const CpRange* it = std::upper_bound(table, end, c, [](char32_t v, const CpRange& r) { return v < r.lo; });
    return it != table && c <= (it - 1)->hi;
}

constexpr char32_t kReplacement = 0xFFFD;

// Length of a UTF-8 sequence from its lead byte (0: invalid lead), and the minimum code point
// of that length (overlong forms are invalid).
int sequence_length(unsigned char lead) {
    if (lead < 0x80) return 1;
    if (lead >= 0xC2 && lead <= 0xDF) return 2;
    if (lead >= 0xE0 && lead <= 0xEF) return 3;
    if (lead >= 0xF0 && lead <= 0xF4) return 4;
    return 0;
}

}  // namespace

std::u32string utf8_decode(std::string_view bytes) {
    std::u32string out;
    out.reserve(bytes.size());
    size_t i = 0;
    while (i < bytes.size()) {
        const unsigned char lead = static_cast<unsigned char>(bytes[i]);
        const int n = sequence_length(lead);
        if (n == 1) {
            out.push_back(lead);
            ++i;
            continue;
        }
        char32_t cp = n == 2 ? lead & 0x1F : (n == 3 ? lead & 0x0F : lead & 0x07);
        int k = 1;
        for (; n > 0 && k < n && i + k < bytes.size(); ++k) {
            const unsigned char b = static_cast<unsigned char>(bytes[i + k]);
            // Second-byte limits that exclude overlongs, surrogates and > U+10FFFF.
            unsigned char lo = 0x80, hi = 0xBF;
            if (k == 1 && lead == 0xE0) lo = 0xA0;
            if (k == 1 && lead == 0xED) hi = 0x9F;
            if (k == 1 && lead == 0xF0) lo = 0x90;
            if (k == 1 && lead == 0xF4) hi = 0x8F;
            if (b < lo || b > hi) break;
            cp = (cp << 6) | (b & 0x3F);
        }
        if (n > 0 && k == n) {
            out.push_back(cp);
            i += n;
        } else {  // one U+FFFD per maximal invalid prefix, as Python's decoder
            out.push_back(kReplacement);
            i += n > 0 ? k : 1;
        }
    }
    return out;
}

void utf8_append(char32_t cp, std::string& out) {
    if (cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) cp = kReplacement;
    if (cp < 0x80) {
        out.push_back(static_cast<char>(cp));
    } else if (cp < 0x800) {
        out.push_back(static_cast<char>(0xC0 | (cp >> 6)));
        out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
    } else if (cp < 0x10000) {
        out.push_back(static_cast<char>(0xE0 | (cp >> 12)));
        out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
        out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
    } else {
        out.push_back(static_cast<char>(0xF0 | (cp >> 18)));
        out.push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
        out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
        out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
    }
}

std::string utf8_encode(std::u32string_view text) {
    std::string out;
    out.reserve(text.size());
    for (char32_t c : text) utf8_append(c, out);
    return out;
}

bool is_py_space(char32_t c) { return in_ranges(kPySpace, c); }
bool is_regex_space(char32_t c) { return in_ranges(kRegexSpace, c); }

SplitClass split_class(char32_t c) {
    if (in_ranges(kLetter, c)) return SplitClass::Letter;
    if (in_ranges(kNumber, c)) return SplitClass::Number;
    if (in_ranges(kRegexSpace, c) || in_ranges(kSplitSkip, c)) return SplitClass::Skip;
    return SplitClass::Other;
}

bool folds_to(char32_t c, char ascii) {
    if (c == static_cast<char32_t>(ascii)) return true;
    for (const CpRange& f : kCaseFoldAscii)
        if (f.lo == c && f.hi == static_cast<char32_t>(ascii)) return true;
    return false;
}

void py_lower_append(char32_t c, std::u32string& out) {
    if (c == 0x130) {  // LATIN CAPITAL LETTER I WITH DOT ABOVE -> "i" + COMBINING DOT ABOVE
        out.push_back(U'i');
        out.push_back(0x307);
        return;
    }
    const LowerRun* end = kLowerRuns + std::size(kLowerRuns);
    const LowerRun* it =
        std::upper_bound(kLowerRuns, end, c, [](char32_t v, const LowerRun& r) { return v < r.lo; });
    if (it != kLowerRuns) {
        const LowerRun& r = *(it - 1);
        if (c <= r.hi && (c - r.lo) % static_cast<char32_t>(r.stride) == 0) {
            out.push_back(static_cast<char32_t>(static_cast<int64_t>(c) + r.delta));
            return;
        }
    }
    out.push_back(c);
}

const char32_t* ftfy_char_fix(char32_t c) {
    static const std::map<char32_t, std::u32string> fixes = [] {
        std::map<char32_t, std::u32string> m;
        for (const CpString& r : kFtfyReplace) m[r.cp] = utf8_decode(r.utf8);
        for (const CpRange& r : kSingleQuote)
            for (char32_t q = r.lo; q <= r.hi; ++q) m[q] = U"'";
        for (const CpRange& r : kDoubleQuote)
            for (char32_t q = r.lo; q <= r.hi; ++q) m[q] = U"\"";
        return m;
    }();
    const auto it = fixes.find(c);
    return it == fixes.end() ? nullptr : it->second.c_str();
}

bool is_ftfy_control(char32_t c) { return in_ranges(kControl, c); }

char32_t ftfy_c1_fix(char32_t c) {
    for (const CpRange& r : kC1Fix)
        if (r.lo == c) return r.hi;
    return c;
}

const char* html_named_entity(std::string_view name, bool ftfy_upper) {
    for (const NameString& e : kHtmlNamed)
        if (name == e.name) return e.utf8;
    if (ftfy_upper)
        for (const NameString& e : kFtfyUpperNamed)
            if (name == e.name) return e.utf8;
    return nullptr;
}

bool html_charref(uint32_t num, std::u32string& out) {
    for (const CpRange& r : kCharRefFix)
        if (r.lo == num) {
            out.push_back(r.hi);
            return true;
        }
    if ((num >= 0xD800 && num <= 0xDFFF) || num > 0x10FFFF) {
        out.push_back(kReplacement);
        return true;
    }
    if (in_ranges(kCharRefDrop, num)) return false;
    out.push_back(num);
    return true;
}

}  // namespace cris_infer
