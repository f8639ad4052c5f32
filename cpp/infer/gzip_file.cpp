// File reading with zlib for the tokenizer's gzip vocabulary.
#include "gzip_file.h"

#include <zlib.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>
#include <stdexcept>

namespace cris_infer {

std::string read_file(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) throw std::runtime_error("cannot open " + path + ": " + std::strerror(errno));
    std::ostringstream buffer;
    buffer << in.rdbuf();
    if (in.bad()) throw std::runtime_error("cannot read " + path);
    return buffer.str();
}

std::string read_gzip_file(const std::string& path) {
    const std::string packed = read_file(path);
    if (packed.size() < 18 || static_cast<unsigned char>(packed[0]) != 0x1F ||
        static_cast<unsigned char>(packed[1]) != 0x8B)
        throw std::runtime_error(path + " is not a gzip file");
    z_stream zs{};
    if (inflateInit2(&zs, 16 + MAX_WBITS) != Z_OK) throw std::runtime_error("zlib inflateInit2 failed");
    zs.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(packed.data()));
    zs.avail_in = static_cast<uInt>(packed.size());
    std::string out;
    char chunk[1 << 16];
    int status = Z_OK;
    while (status == Z_OK) {
        zs.next_out = reinterpret_cast<Bytef*>(chunk);
        zs.avail_out = sizeof(chunk);
        status = inflate(&zs, Z_NO_FLUSH);
        out.append(chunk, sizeof(chunk) - zs.avail_out);
        if (status == Z_BUF_ERROR && zs.avail_in == 0) break;  // input ended mid-stream
    }
    inflateEnd(&zs);
    if (status != Z_STREAM_END)
        throw std::runtime_error(path + " is a damaged or truncated gzip file (zlib: " +
                                 (zs.msg ? zs.msg : "unexpected end of data") + ")");
    return out;
}

}  // namespace cris_infer
