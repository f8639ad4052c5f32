// A minimal JSON reader (RFC 8259 values; numbers as double) for the bundle's config.json.
#pragma once

#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace cris_infer {

class Json {
public:
    enum class Type { Null, Bool, Number, String, Array, Object };

    // Parses a whole document; throws std::runtime_error("... at line L column C") when it is
    // not valid JSON.
    static Json parse(std::string_view text);

    Type type() const { return type_; }
    bool is_null() const { return type_ == Type::Null; }

    // Typed access; each throws std::runtime_error naming `what` when the type differs.
    bool as_bool(const std::string& what) const;
    double as_number(const std::string& what) const;
    long long as_int(const std::string& what) const;  // a number with no fraction
    const std::string& as_string(const std::string& what) const;
    const std::vector<Json>& as_array(const std::string& what) const;
    const std::vector<std::pair<std::string, Json>>& as_object(const std::string& what) const;

    // Member `key` of an object, or nullptr when absent (or when this is not an object).
    const Json* find(std::string_view key) const;

private:
    friend class JsonParser;
    Type type_ = Type::Null;
    bool bool_ = false;
    double number_ = 0.0;
    std::string string_;
    std::vector<Json> array_;
    std::vector<std::pair<std::string, Json>> object_;
};

}  // namespace cris_infer
