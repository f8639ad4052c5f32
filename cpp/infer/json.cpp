// Recursive-descent JSON parser (no third-party code).
#include "json.h"

#include <cmath>
#include <cstdlib>
#include <stdexcept>

#include "unicode.h"

namespace cris_infer {

class JsonParser {
public:
    explicit JsonParser(std::string_view text) : s_(text) {}

    Json document() {
        Json v = value(0);
        skip_space();
        if (i_ != s_.size()) fail("unexpected text after the JSON value");
        return v;
    }

private:
    [[noreturn]] void fail(const std::string& why) const {
        int line = 1, column = 1;
        for (size_t k = 0; k < i_ && k < s_.size(); ++k) {
            if (s_[k] == '\n') {
                ++line;
                column = 1;
            } else {
                ++column;
            }
        }
        throw std::runtime_error("invalid JSON: " + why + " at line " + std::to_string(line) + " column " +
                                 std::to_string(column));
    }

    void skip_space() {
        while (i_ < s_.size() && (s_[i_] == ' ' || s_[i_] == '\t' || s_[i_] == '\n' || s_[i_] == '\r')) ++i_;
    }

    bool literal(std::string_view word) {
        if (s_.substr(i_, word.size()) != word) return false;
        i_ += word.size();
        return true;
    }

    Json value(int depth) {
        if (depth > 64) fail("nesting deeper than 64");
        skip_space();
        if (i_ >= s_.size()) fail("unexpected end of text");
        Json v;
        const char c = s_[i_];
        if (c == '{') {
            v.type_ = Json::Type::Object;
            ++i_;
            skip_space();
            if (i_ < s_.size() && s_[i_] == '}') {
                ++i_;
                return v;
            }
            for (;;) {
                skip_space();
                if (i_ >= s_.size() || s_[i_] != '"') fail("expected a member name");
                std::string key = string();
                skip_space();
                if (i_ >= s_.size() || s_[i_] != ':') fail("expected ':'");
                ++i_;
                v.object_.emplace_back(std::move(key), value(depth + 1));
                skip_space();
                if (i_ < s_.size() && s_[i_] == ',') {
                    ++i_;
                } else if (i_ < s_.size() && s_[i_] == '}') {
                    ++i_;
                    return v;
                } else {
                    fail("expected ',' or '}'");
                }
            }
        }
        if (c == '[') {
            v.type_ = Json::Type::Array;
            ++i_;
            skip_space();
            if (i_ < s_.size() && s_[i_] == ']') {
                ++i_;
                return v;
            }
            for (;;) {
                v.array_.push_back(value(depth + 1));
                skip_space();
                if (i_ < s_.size() && s_[i_] == ',') {
                    ++i_;
                } else if (i_ < s_.size() && s_[i_] == ']') {
                    ++i_;
                    return v;
                } else {
                    fail("expected ',' or ']'");
                }
            }
        }
        if (c == '"') {
            v.type_ = Json::Type::String;
            v.string_ = string();
            return v;
        }
        if (literal("true") || literal("false")) {
            v.type_ = Json::Type::Bool;
            v.bool_ = s_[i_ - 1] == 'e' && s_[i_ - 2] == 'u';
            return v;
        }
        if (literal("null")) return v;
        v.type_ = Json::Type::Number;
        v.number_ = number();
        return v;
    }

    double number() {
        const size_t start = i_;
        if (i_ < s_.size() && s_[i_] == '-') ++i_;
        auto digits = [&] {
            const size_t from = i_;
            while (i_ < s_.size() && s_[i_] >= '0' && s_[i_] <= '9') ++i_;
            return i_ > from;
        };
        const size_t int_start = i_;
        if (!digits()) fail("expected a value");
        if (s_[int_start] == '0' && i_ - int_start > 1) fail("leading zero in a number");
        if (i_ < s_.size() && s_[i_] == '.') {
            ++i_;
            if (!digits()) fail("expected digits after '.'");
        }
        if (i_ < s_.size() && (s_[i_] == 'e' || s_[i_] == 'E')) {
            ++i_;
            if (i_ < s_.size() && (s_[i_] == '+' || s_[i_] == '-')) ++i_;
            if (!digits()) fail("expected exponent digits");
        }
        const std::string text(s_.substr(start, i_ - start));
        return std::strtod(text.c_str(), nullptr);
    }

    unsigned hex4() {
        if (i_ + 4 > s_.size()) fail("truncated \\u escape");
        unsigned v = 0;
        for (int k = 0; k < 4; ++k) {
            const char h = s_[i_++];
            v <<= 4;
            if (h >= '0' && h <= '9') v |= h - '0';
            else if (h >= 'a' && h <= 'f') v |= h - 'a' + 10;
            else if (h >= 'A' && h <= 'F') v |= h - 'A' + 10;
            else fail("bad \\u escape");
        }
        return v;
    }

    std::string string() {
        ++i_;  // opening quote
        std::string out;
        for (;;) {
            if (i_ >= s_.size()) fail("unterminated string");
            const char c = s_[i_++];
            if (c == '"') return out;
            if (static_cast<unsigned char>(c) < 0x20) fail("control character in a string");
            if (c != '\\') {
                out.push_back(c);
                continue;
            }
            if (i_ >= s_.size()) fail("unterminated string");
            const char e = s_[i_++];
            switch (e) {
                case '"': out.push_back('"'); break;
                case '\\': out.push_back('\\'); break;
                case '/': out.push_back('/'); break;
                case 'b': out.push_back('\b'); break;
                case 'f': out.push_back('\f'); break;
                case 'n': out.push_back('\n'); break;
                case 'r': out.push_back('\r'); break;
                case 't': out.push_back('\t'); break;
                case 'u': {
                    char32_t cp = hex4();
                    if (cp >= 0xD800 && cp <= 0xDBFF && s_.substr(i_, 2) == "\\u") {
                        i_ += 2;
                        const unsigned low = hex4();
                        if (low >= 0xDC00 && low <= 0xDFFF) cp = 0x10000 + ((cp - 0xD800) << 10) + (low - 0xDC00);
                        else fail("unpaired surrogate");
                    }
                    utf8_append(cp, out);
                    break;
                }
                default: fail("bad escape");
            }
        }
    }

    std::string_view s_;
    size_t i_ = 0;
};

Json Json::parse(std::string_view text) { return JsonParser(text).document(); }

namespace {
[[noreturn]] void wrong_type(const std::string& what, const char* expected) {
    throw std::runtime_error(what + " must be " + expected);
}
}  // namespace

bool Json::as_bool(const std::string& what) const {
    if (type_ != Type::Bool) wrong_type(what, "true or false");
    return bool_;
}

double Json::as_number(const std::string& what) const {
    if (type_ != Type::Number) wrong_type(what, "a number");
    return number_;
}

long long Json::as_int(const std::string& what) const {
    if (type_ != Type::Number || std::floor(number_) != number_ || std::fabs(number_) > 9.0e15)
        wrong_type(what, "an integer");
    return static_cast<long long>(number_);
}

const std::string& Json::as_string(const std::string& what) const {
    if (type_ != Type::String) wrong_type(what, "a string");
    return string_;
}

const std::vector<Json>& Json::as_array(const std::string& what) const {
    if (type_ != Type::Array) wrong_type(what, "an array");
    return array_;
}

const std::vector<std::pair<std::string, Json>>& Json::as_object(const std::string& what) const {
    if (type_ != Type::Object) wrong_type(what, "an object");
    return object_;
}

const Json* Json::find(std::string_view key) const {
    for (const auto& [k, v] : object_)
        if (k == key) return &v;
    return nullptr;
}

}  // namespace cris_infer
