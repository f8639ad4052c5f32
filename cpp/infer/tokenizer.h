// CLIP's byte-level BPE tokenizer, equal to cris_edge.tokenizer.ClipTokenizer on every text that
// text_clean.h cleans exactly (ordinary Unicode text; see there for the exceptions).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace cris_infer {

// The text inputs of the deployment graphs for one text (L = word_len).
struct TokenRow {
    std::vector<int32_t> tokens;    // int32 [L]: SOT, BPE ids, EOT, then 0-padding
    std::vector<uint8_t> pad_mask;  // bool  [L]: tokens == 0 (the official model's padding mask)
    int32_t eot_index = 0;          // argmax(tokens): where the text graph reads the sentence
    int32_t length = 0;             // tokens before the padding, SOT and EOT included
    bool truncated = false;         // the text was cut to L tokens (its last token is EOT)
};

class ClipTokenizer {
public:
    static constexpr int kVocabSize = 49408;
    static constexpr int32_t kSot = 49406;
    static constexpr int32_t kEot = 49407;

    // Loads the gzip BPE vocabulary (bpe_simple_vocab_16e6.txt.gz); throws std::runtime_error
    // naming the file when it is missing or not CLIP's vocabulary.
    explicit ClipTokenizer(const std::string& vocab_path);

    // BPE ids of `text` (UTF-8) after cleaning, without SOT/EOT.
    std::vector<int32_t> encode(std::string_view text);

    // One row of `word_len` (>= 2) tokens. Throws std::invalid_argument for a text that is empty
    // after cleaning or word_len < 2; an over-long text is cut (truncated = true).
    TokenRow tokenize(std::string_view text, int word_len);

private:
    const std::vector<int32_t>& piece_ids(const std::string& piece);

    std::unordered_map<std::string, int32_t> ids_;    // symbol (UTF-8) -> id
    std::unordered_map<std::string, int32_t> ranks_;  // "left right" -> merge rank
    std::string byte_symbol_[256];                    // byte -> its symbol (UTF-8)
    std::unordered_map<std::string, std::vector<int32_t>> cache_;
};

// The regex pieces of CLIP's split pattern in cleaned text (each piece UTF-8).
std::vector<std::string> split_pieces(std::u32string_view text);

}  // namespace cris_infer
