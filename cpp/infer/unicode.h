// UTF-8 and the character classes of CLIP's tokenizer (tables generated from the Python modules
// cris_edge.tokenizer uses: see gen_unicode_tables.py). Code points are char32_t.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace cris_infer {

// UTF-8 bytes -> code points. Invalid sequences (as Python's errors="replace") become U+FFFD.
std::u32string utf8_decode(std::string_view bytes);

// Code points -> UTF-8 (surrogates and values > U+10FFFF are written as U+FFFD).
std::string utf8_encode(std::u32string_view text);
void utf8_append(char32_t cp, std::string& out);

// Python's str.isspace (used by str.strip).
bool is_py_space(char32_t c);
// The `regex` module's \s.
bool is_regex_space(char32_t c);

// The class of a character in CLIP's split pattern (regex module, IGNORECASE).
enum class SplitClass { Letter, Number, Other, Skip };  // Skip: \s, or matched by no alternative
SplitClass split_class(char32_t c);

// True when `c` equals the ASCII lower-case letter `ascii` under the regex module's IGNORECASE.
bool folds_to(char32_t c, char ascii);

// Python's str.lower() of one code point, appended to `out` (U+0130 lowers to two characters).
void py_lower_append(char32_t c, std::u32string& out);

// ftfy's per-character maps: fix_latin_ligatures, fix_character_width and uncurl_quotes.
// Returns the replacement of `c`, or nullptr when `c` is kept as is.
const char32_t* ftfy_char_fix(char32_t c);
// ftfy's remove_control_chars set.
bool is_ftfy_control(char32_t c);
// ftfy's fix_c1_controls: a C1 control U+0080..U+009F as Windows-1252 decodes its byte.
char32_t ftfy_c1_fix(char32_t c);

// Value (UTF-8) of a named character reference `name` (e.g. "amp;" or "amp"), or nullptr. Only
// the names of Latin-1 characters are known (see gen_unicode_tables.py); `ftfy_upper` adds
// ftfy's all-caps variants ("EACUTE;").
const char* html_named_entity(std::string_view name, bool ftfy_upper);
// Python html.unescape of the numeric reference `num`: appends its character(s) and returns true,
// or returns false when the reference decodes to nothing.
bool html_charref(uint32_t num, std::u32string& out);

}  // namespace cris_infer
