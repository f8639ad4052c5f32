// CLIP's text cleaning as cris_edge.tokenizer.clean_text does it:
//   html.unescape(html.unescape(ftfy.fix_text(text))).strip(), whitespace runs -> " ", strip,
//   lower-case.
//
// ftfy.fix_text is reproduced for what it does to text that is not mojibake: HTML character
// references (when the line holds no '<', repeated until nothing changes), C1 controls read as
// Windows-1252, Latin ligatures, full/half-width forms, curly quotes, terminal escapes and
// control characters. NOT reproduced (the ids may then differ from Python's):
//   * mojibake repair (ftfy.fix_encoding: "cafÃ©" -> "café") and its related byte fixes;
//   * Unicode NFC normalisation: decomposed text (e.g. "e" + U+0301) stays decomposed;
//   * named character references other than those of Latin-1 characters ("&hellip;", "&mdash;").
// Text typed or pasted as ordinary (precomposed) Unicode is cleaned exactly.
#pragma once

#include <string>
#include <string_view>

namespace cris_infer {

// The ftfy.fix_text subset described above, on code points.
std::u32string ftfy_fix(std::u32string text);

// Python's html.unescape (numeric references exactly; named ones: see above).
std::u32string html_unescape(std::u32string_view text);

// The full cleaning of UTF-8 `text`; returns code points.
std::u32string clean_text(std::string_view text);

}  // namespace cris_infer
