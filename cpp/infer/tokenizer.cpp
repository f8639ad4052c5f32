// CLIP BPE: vocabulary, pre-tokenisation (CLIP's regular expression) and merges.
#include "tokenizer.h"

#include <limits>
#include <stdexcept>

#include "gzip_file.h"
#include "text_clean.h"
#include "unicode.h"

namespace cris_infer {
namespace {

constexpr int kNumMerges = 49152 - 256 - 2;
constexpr char kSotText[] = "<|startoftext|>";
constexpr char kEotText[] = "<|endoftext|>";

// Byte -> symbol code point in CLIP's order: printable Latin-1 bytes stand for themselves, the
// others take code points 256, 257, ... in byte order. `order` receives the bytes in vocab order.
void byte_symbols(char32_t symbol[256], int order[256]) {
    int n = 0, shifted = 0;
    auto kept = [](int b) { return (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF); };
    for (int b = 0; b < 256; ++b)
        if (kept(b)) {
            symbol[b] = static_cast<char32_t>(b);
            order[n++] = b;
        }
    for (int b = 0; b < 256; ++b)
        if (!kept(b)) {
            symbol[b] = static_cast<char32_t>(256 + shifted++);
            order[n++] = b;
        }
}

// Does `text` at `i` read `word` (ASCII) under IGNORECASE?
bool matches_at(std::u32string_view text, size_t i, std::string_view word) {
    if (i + word.size() > text.size()) return false;
    for (size_t k = 0; k < word.size(); ++k) {
        const char w = word[k];
        const bool letter = w >= 'a' && w <= 'z';
        if (letter ? !folds_to(text[i + k], w) : text[i + k] != static_cast<char32_t>(w)) return false;
    }
    return true;
}

}  // namespace

std::vector<std::string> split_pieces(std::u32string_view text) {
    // <\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|\p{L}+|\p{N}|[^\s\p{L}\p{N}]+
    static const std::string_view literals[] = {kSotText, kEotText, "'s", "'t", "'re", "'ve", "'m", "'ll", "'d"};
    std::vector<std::string> pieces;
    size_t i = 0;
    while (i < text.size()) {
        size_t end = i;
        for (std::string_view lit : literals)
            if (matches_at(text, i, lit)) {
                end = i + lit.size();
                break;
            }
        if (end == i) {
            const SplitClass cls = split_class(text[i]);
            if (cls == SplitClass::Skip) {
                ++i;
                continue;
            }
            end = i + 1;
            if (cls != SplitClass::Number)
                while (end < text.size() && split_class(text[end]) == cls) ++end;
        }
        pieces.push_back(utf8_encode(text.substr(i, end - i)));
        i = end;
    }
    return pieces;
}

ClipTokenizer::ClipTokenizer(const std::string& vocab_path) {
    const std::string data = read_gzip_file(vocab_path);
    char32_t symbol[256];
    int order[256];
    byte_symbols(symbol, order);
    std::vector<std::string> vocab;
    vocab.reserve(kVocabSize);
    for (int b : order) vocab.push_back(utf8_encode(std::u32string(1, symbol[b])));
    for (int k = 0; k < 256; ++k) vocab.push_back(vocab[k] + "</w>");
    for (int b = 0; b < 256; ++b) byte_symbol_[b] = utf8_encode(std::u32string(1, symbol[b]));

    size_t pos = data.find('\n');  // line 0 is a version header
    for (int rank = 0; rank < kNumMerges; ++rank) {
        if (pos == std::string::npos)
            throw std::runtime_error(vocab_path + " is not CLIP's BPE vocabulary: it has " + std::to_string(rank) +
                                     " merge lines, " + std::to_string(kNumMerges) + " expected");
        const size_t next = data.find('\n', pos + 1);
        const std::string line = data.substr(pos + 1, (next == std::string::npos ? data.size() : next) - pos - 1);
        const size_t space = line.find(' ');
        if (space == std::string::npos || space == 0 || space + 1 >= line.size() ||
            line.find(' ', space + 1) != std::string::npos)
            throw std::runtime_error(vocab_path + " is not CLIP's BPE vocabulary: line " + std::to_string(rank + 2) +
                                     " is not a merge pair: \"" + line + "\"");
        ranks_.emplace(line, rank);
        vocab.push_back(line.substr(0, space) + line.substr(space + 1));
        pos = next;
    }
    vocab.push_back(kSotText);
    vocab.push_back(kEotText);
    for (size_t id = 0; id < vocab.size(); ++id) ids_.emplace(vocab[id], static_cast<int32_t>(id));
}

const std::vector<int32_t>& ClipTokenizer::piece_ids(const std::string& piece) {
    const auto hit = cache_.find(piece);
    if (hit != cache_.end()) return hit->second;
    std::vector<int32_t> ids;
    if (piece == kSotText || piece == kEotText) {
        ids.push_back(piece == kSotText ? kSot : kEot);
    } else {
        std::vector<std::string> word;
        for (unsigned char b : piece) word.push_back(byte_symbol_[b]);
        word.back() += "</w>";
        while (word.size() > 1) {
            int best = std::numeric_limits<int>::max();
            size_t at = 0;
            for (size_t k = 0; k + 1 < word.size(); ++k) {
                const auto r = ranks_.find(word[k] + " " + word[k + 1]);
                if (r != ranks_.end() && r->second < best) {
                    best = r->second;
                    at = k;
                }
            }
            if (best == std::numeric_limits<int>::max()) break;
            const std::string left = word[at], right = word[at + 1];
            std::vector<std::string> merged;
            for (size_t k = 0; k < word.size(); ++k) {
                if (k + 1 < word.size() && word[k] == left && word[k + 1] == right) {
                    merged.push_back(left + right);
                    ++k;
                } else {
                    merged.push_back(word[k]);
                }
            }
            word.swap(merged);
        }
        for (const std::string& s : word) ids.push_back(ids_.at(s));
    }
    return cache_.emplace(piece, std::move(ids)).first->second;
}

std::vector<int32_t> ClipTokenizer::encode(std::string_view text) {
    std::vector<int32_t> out;
    for (const std::string& piece : split_pieces(clean_text(text))) {
        const std::vector<int32_t>& ids = piece_ids(piece);
        out.insert(out.end(), ids.begin(), ids.end());
    }
    return out;
}

TokenRow ClipTokenizer::tokenize(std::string_view text, int word_len) {
    if (word_len < 2) throw std::invalid_argument("word_len must be >= 2 (SOT and EOT), got " + std::to_string(word_len));
    std::vector<int32_t> ids{kSot};
    const std::vector<int32_t> body = encode(text);
    if (body.empty()) throw std::invalid_argument("the text is empty after cleaning: \"" + std::string(text) + "\"");
    ids.insert(ids.end(), body.begin(), body.end());
    ids.push_back(kEot);
    TokenRow row;
    if (static_cast<int>(ids.size()) > word_len) {
        ids.resize(word_len);
        ids.back() = kEot;
        row.truncated = true;
    }
    row.length = static_cast<int32_t>(ids.size());
    row.tokens.assign(word_len, 0);
    std::copy(ids.begin(), ids.end(), row.tokens.begin());
    row.pad_mask.resize(word_len);
    for (int k = 0; k < word_len; ++k) {
        row.pad_mask[k] = row.tokens[k] == 0;
        if (row.tokens[k] > row.tokens[row.eot_index]) row.eot_index = k;
    }
    return row;
}

}  // namespace cris_infer
