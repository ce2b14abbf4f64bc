// Parallel parsing and formatting of the XC repository's sparse text format (see io.h).
//
// Parsing splits the text into fixed byte ranges of whole lines and parses each range in parallel
// into its own arrays; a prefix sum over the ranges' row and entry counts places them in the
// result. Each range records its first error; the earliest one is thrown, so the message is the
// same for every thread count.
#include "io.h"

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>
#include <memory>
#include <stdexcept>
#include <utility>

#include "parallel.h"

namespace ramen::io {
namespace {

constexpr int64_t kRowsPerChunk = 8192;  // rows per parallel task when formatting

bool is_blank(char c) { return c == ' ' || c == '\t' || c == '\r'; }

bool is_digit(char c) { return static_cast<unsigned>(c - '0') < 10u; }

// A token quoted for an error message, cut to a readable length; bytes outside printable ASCII
// are written \xHH, so the message is ASCII whatever the file holds (Python decodes it as UTF-8).
std::string quote(const char* begin, const char* end) {
    constexpr int64_t kMax = 40;
    static constexpr char kHex[] = "0123456789abcdef";
    const int64_t n = end - begin;
    std::string s = "'";
    for (const char* p = begin; p < begin + std::min(n, kMax); ++p) {
        const auto c = static_cast<unsigned char>(*p);
        if (c >= 0x20 && c < 0x7f && c != '\\') {
            s += static_cast<char>(c);
        } else {
            s += "\\x";
            s += kHex[c >> 4];
            s += kHex[c & 15];
        }
    }
    return s + (n > kMax ? "...'" : "'");
}

// Position of the first line start at or after `pos` in [begin, end]: a line starts at `begin`
// and after every '\n' that is not the last byte.
int64_t line_start_from(const char* text, int64_t begin, int64_t end, int64_t pos) {
    if (pos <= begin) return begin;
    if (pos >= end) return end;
    const void* nl = std::memchr(text + pos - 1, '\n', static_cast<size_t>(end - pos + 1));
    return nl == nullptr ? end : static_cast<const char*>(nl) - text + 1;
}

struct Error {
    int64_t line = 0;  // 1-based; 0 when there is none
    std::string message;
};

[[noreturn]] void fail(const Error& e) {
    throw std::invalid_argument("line " + std::to_string(e.line) + ": " + e.message);
}

// Parses the header line [p, e) into rows and cols.
std::pair<int64_t, int64_t> parse_header(const char* p, const char* e) {
    int64_t values[2] = {0, 0};
    int found = 0;
    const char* q = p;
    while (true) {
        while (q < e && is_blank(*q)) ++q;
        if (q == e) break;
        const char* t = q;
        while (q < e && !is_blank(*q)) ++q;
        int64_t v = -1;
        const auto r = std::from_chars(t, q, v);
        if (found == 2 || r.ec != std::errc() || r.ptr != q || v < 0)
            fail({1, "the header must be two non-negative integers 'rows cols', found " + quote(p, e)});
        values[found++] = v;
    }
    if (found != 2) fail({1, "the header must be two non-negative integers 'rows cols', found " + quote(p, e)});
    if (values[1] > std::numeric_limits<int32_t>::max())
        fail({1, "column count " + std::to_string(values[1]) + " exceeds 2^31 - 1"});
    return {values[0], values[1]};
}

// Sorts the n entries of one row by column id; false (and *repeated) when an id repeats.
bool sort_row(int32_t* indices, float* data, int64_t n, int32_t* repeated) {
    std::vector<std::pair<int32_t, float>> row(static_cast<size_t>(n));
    for (int64_t j = 0; j < n; ++j) row[j] = {indices[j], data[j]};
    std::sort(row.begin(), row.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
    for (int64_t j = 0; j < n; ++j) {
        indices[j] = row[j].first;
        data[j] = row[j].second;
        if (j > 0 && row[j].first == row[j - 1].first) {
            *repeated = row[j].first;
            return false;
        }
    }
    return true;
}

constexpr int64_t kColumnCap = int64_t{1} << 40;

// Why the entry starting at t (a token up to the next blank) is malformed.
std::string explain_entry(const char* t, const char* line_end, int64_t cols) {
    const char* end = t;
    while (end < line_end && !is_blank(*end)) ++end;
    const char* colon = static_cast<const char*>(std::memchr(t, ':', static_cast<size_t>(end - t)));
    const char* id_end = colon == nullptr ? end : colon;
    int64_t col = 0;
    const auto r = std::from_chars(t, id_end, col);
    if (r.ec == std::errc() && r.ptr == id_end && col < 0) return "negative column id " + quote(t, id_end);
    if (r.ptr != id_end || t == id_end || (r.ec != std::errc() && r.ec != std::errc::result_out_of_range))
        return "column id " + quote(t, id_end) + " is not an integer (entry " + quote(t, end) + ")";
    if (r.ec == std::errc::result_out_of_range || col >= cols)
        return "column id " + quote(t, id_end) + " >= the header's column count " + std::to_string(cols);
    if (colon == nullptr) return "malformed entry " + quote(t, end);
    return "value " + quote(colon + 1, end) + " is not a finite number (entry " + quote(t, end) + ")";
}

// Reads a decimal number ([-]digits[.digits][e[+-]digits]) at p as the nearest float; returns the
// end of the number, or nullptr when the exact slow path (std::from_chars) must decide. Exact
// (Clinger's fast path): a mantissa below 2^53 scaled by 10^|e|, |e| <= 22, is one correctly
// rounded double operation, and that double rounds to the right float unless it sits exactly on a
// midpoint between two floats (then the slow path decides), or outside the normal float range.
const char* parse_float_fast(const char* p, const char* e, float& out) {
    static constexpr double kPow10[] = {1e0,  1e1,  1e2,  1e3,  1e4,  1e5,  1e6,  1e7,  1e8,  1e9,  1e10, 1e11,
                                        1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22};
    const auto digit = [](char c) { return static_cast<unsigned>(c - '0') < 10u; };
    const char* q = p;
    const bool negative = q < e && *q == '-';
    q += negative;
    uint64_t m = 0;
    int exp10 = 0;
    int digits = 0;
    const char* start = q;
    for (; q < e && digit(*q); ++q, ++digits) m = m * 10 + static_cast<uint64_t>(*q - '0');
    bool any = q > start;
    if (q < e && *q == '.') {
        const char* frac = ++q;
        for (; q < e && digit(*q); ++q, ++digits, --exp10) m = m * 10 + static_cast<uint64_t>(*q - '0');
        any = any || q > frac;
    }
    if (!any || digits > 18) return nullptr;
    if (q < e && (*q == 'e' || *q == 'E')) {
        const char* x = q + 1;
        const bool exp_negative = x < e && *x == '-';
        x += (x < e && (*x == '-' || *x == '+'));
        const char* exp_start = x;
        int value = 0;
        for (; x < e && digit(*x) && value < 1000; ++x) value = value * 10 + (*x - '0');
        if (x == exp_start || (x < e && digit(*x))) return nullptr;
        exp10 += exp_negative ? -value : value;
        q = x;
    }
    double d = 0.0;
    if (m != 0) {
        if (m >= (uint64_t{1} << 53) || exp10 < -22 || exp10 > 22) return nullptr;
        d = exp10 < 0 ? static_cast<double>(m) / kPow10[-exp10] : static_cast<double>(m) * kPow10[exp10];
        if (d < 0x1p-126 || d >= 0x1p128) return nullptr;
        uint64_t bits = 0;
        std::memcpy(&bits, &d, sizeof(bits));
        if ((bits & ((uint64_t{1} << 29) - 1)) == (uint64_t{1} << 28)) return nullptr;  // a float midpoint
    }
    const float f = static_cast<float>(d);
    out = negative ? -f : f;
    return q;
}

// Whether the decimal number [p, e) ([-]digits[.digits][e[+-]digits]) is below 1 in magnitude:
// tells a value too small for a float from one too large when std::from_chars says out of range.
bool below_one(const char* p, const char* e) {
    constexpr int64_t kCap = int64_t{1} << 40;  // saturates: digits and exponents of any length
    p += p < e && *p == '-';
    int64_t leading = 0;  // digits before the point, leading zeros skipped
    for (; p < e && is_digit(*p); ++p) leading += leading > 0 || *p != '0';
    int64_t zeros = 0;  // zeros after the point before the first other digit
    bool nonzero = leading > 0;
    if (p < e && *p == '.') {
        for (++p; p < e && is_digit(*p); ++p) {
            nonzero = nonzero || *p != '0';
            zeros += !nonzero;
        }
    }
    int64_t exp10 = 0;
    if (p < e && (*p == 'e' || *p == 'E')) {
        const bool negative = ++p < e && *p == '-';
        p += p < e && (*p == '-' || *p == '+');
        for (; p < e && is_digit(*p); ++p) exp10 = std::min(exp10 * 10 + (*p - '0'), kCap);
        exp10 = negative ? -exp10 : exp10;
    }
    const int64_t magnitude = (leading > 0 ? std::min(leading, kCap) - 1 : -std::min(zeros, kCap) - 1) + exp10;
    return !nonzero || magnitude < 0;
}

// std::from_chars for the values the fast path leaves: the end of the number, or p when there is
// none. A finite decimal too small for a float reads as the float it rounds to (+-0, what the
// writer reads back) rather than as an error; one too large stays an error.
const char* parse_float_slow(const char* p, const char* e, float& out) {
    const auto r = std::from_chars(p, e, out);
    if (r.ec == std::errc()) return r.ptr;
    if (r.ec != std::errc::result_out_of_range || !below_one(p, r.ptr)) return p;
    out = *p == '-' ? -0.0f : 0.0f;
    return r.ptr;
}

// One range of whole lines, parsed: its rows' entries and where each row ends.
struct Piece {
    std::vector<int64_t> row_ends;  // entries before the end of each row, counted in this piece
    std::vector<int32_t> indices;
    std::vector<float> data;
    int64_t lines = 0;   // rows of the range, counted to its end even past an error
    int64_t error_row = -1;  // row (within the range) of the first error, -1 when none
    std::string error;
};

// Lines in [p, e), where p starts a line and e ends one (or is the end of the text).
int64_t count_lines(const char* p, const char* e) {
    if (p >= e) return 0;
    return static_cast<int64_t>(std::count(p, e, '\n')) + static_cast<int64_t>(e[-1] != '\n');
}

// Parses the entries of the line [p, line_end) into `piece`; returns an error message or "".
std::string parse_line(const char* p, const char* line_end, int64_t cols, Piece& piece) {
    const size_t row_begin = piece.indices.size();
    int64_t prev = -1;
    bool sorted = true;
    const char* q = p;
    while (true) {
        while (q < line_end && is_blank(*q)) ++q;
        if (q == line_end) break;
        const char* t = q;
        int64_t col = 0;  // digits read straight, saturating above any valid id
        while (q < line_end && static_cast<unsigned>(*q - '0') < 10u) {
            col = std::min<int64_t>(col * 10 + (*q - '0'), kColumnCap);
            ++q;
        }
        float value = 1.0f;
        bool ok = q > t;
        if (ok && q < line_end && *q == ':') {
            const char* v = q + 1;
            if (line_end - v > 1 && *v == '+' && (is_digit(v[1]) || v[1] == '.')) ++v;  // not "+-1"
            const char* end = parse_float_fast(v, line_end, value);
            if (end == nullptr) end = parse_float_slow(v, line_end, value);
            ok = end > v && (end == line_end || is_blank(*end)) && std::isfinite(value);
            q = end;
        } else {
            ok = ok && (q == line_end || is_blank(*q));
        }
        if (!ok || col >= cols) return explain_entry(t, line_end, cols);
        if (col == prev) return "column id " + std::to_string(col) + " appears twice in the row";
        piece.indices.push_back(static_cast<int32_t>(col));
        piece.data.push_back(value);
        sorted = sorted && col > prev;
        prev = col;
    }
    int32_t repeated = 0;
    const int64_t n = static_cast<int64_t>(piece.indices.size() - row_begin);
    if (!sorted && !sort_row(piece.indices.data() + row_begin, piece.data.data() + row_begin, n, &repeated))
        return "column id " + std::to_string(repeated) + " appears twice in the row";
    return {};
}

// Parses the lines in [p, e): p starts a line, e ends one (or is the end of the text).
void parse_range(const char* p, const char* e, int64_t cols, Piece& piece) {
    const size_t guess = static_cast<size_t>((e - p) / 8);  // a short entry "7:1 " takes 4 bytes
    piece.indices.reserve(guess);
    piece.data.reserve(guess);
    while (p < e) {
        const char* nl = static_cast<const char*>(std::memchr(p, '\n', static_cast<size_t>(e - p)));
        const char* line_end = nl == nullptr ? e : nl;
        std::string error = parse_line(p, line_end, cols, piece);
        if (!error.empty()) {
            piece.error_row = piece.lines;
            piece.error = std::move(error);
            piece.lines += count_lines(p, e);
            return;
        }
        piece.row_ends.push_back(static_cast<int64_t>(piece.indices.size()));
        ++piece.lines;
        p = line_end + 1;
    }
}

// Formats rows [r0, r1) into `s`.
void format_rows(int64_t r0, int64_t r1, const int64_t* indptr, const int32_t* indices, const float* data,
                 std::string& s) {
    s.resize(static_cast<size_t>((indptr[r1] - indptr[r0]) * 28 + (r1 - r0)));
    char* out = s.data();
    for (int64_t r = r0; r < r1; ++r) {
        for (int64_t j = indptr[r]; j < indptr[r + 1]; ++j) {
            if (j > indptr[r]) *out++ = ' ';
            out = std::to_chars(out, out + 12, indices[j]).ptr;
            *out++ = ':';
            out = std::to_chars(out, out + 15, data[j]).ptr;
        }
        *out++ = '\n';
    }
    s.resize(static_cast<size_t>(out - s.data()));
}

struct FileCloser {
    void operator()(std::FILE* f) const { std::fclose(f); }
};

}  // namespace

FileBuffer read_file(const std::string& path) {
    std::unique_ptr<std::FILE, FileCloser> f(std::fopen(path.c_str(), "rb"));
    if (!f) throw std::invalid_argument("cannot open " + path + ": " + std::strerror(errno));
    FileBuffer out;
    int64_t capacity = 0;
    if (std::fseek(f.get(), 0, SEEK_END) == 0) {
        capacity = std::max<int64_t>(std::ftell(f.get()), 0);
        std::rewind(f.get());
    }
    capacity = std::max<int64_t>(capacity, 1 << 16);
    out.data.reset(new char[static_cast<size_t>(capacity)]);  // uninitialised: filled by fread
    while (true) {
        out.size += static_cast<int64_t>(std::fread(out.data.get() + out.size, 1, static_cast<size_t>(capacity - out.size), f.get()));
        if (out.size < capacity) break;  // end of file (or an error, checked below)
        capacity *= 2;  // the file grew since ftell: keep reading
        std::unique_ptr<char[]> bigger(new char[static_cast<size_t>(capacity)]);
        std::memcpy(bigger.get(), out.data.get(), static_cast<size_t>(out.size));
        out.data = std::move(bigger);
    }
    if (std::ferror(f.get())) throw std::invalid_argument("cannot read " + path);
    return out;
}

SparseMatrix parse_sparse_text(const char* text, int64_t size, int num_threads, int64_t chunk_bytes) {
    if (chunk_bytes < 1) throw std::invalid_argument("chunk_bytes must be >= 1");
    int64_t begin = 0;
    if (size >= 3 && std::memcmp(text, "\xEF\xBB\xBF", 3) == 0) begin = 3;  // UTF-8 byte-order mark
    if (begin == size) fail({1, "the file is empty: expected a header 'rows cols'"});
    const void* nl = std::memchr(text + begin, '\n', static_cast<size_t>(size - begin));
    const int64_t header_end = nl == nullptr ? size : static_cast<const char*>(nl) - text;
    const auto [rows, cols] = parse_header(text + begin, text + header_end);

    const int64_t body = std::min(size, header_end + 1);
    const int64_t num_chunks = std::max<int64_t>(1, (size - body + chunk_bytes - 1) / chunk_bytes);
    std::vector<int64_t> starts(static_cast<size_t>(num_chunks + 1));
    for (int64_t c = 0; c <= num_chunks; ++c) starts[c] = line_start_from(text, body, size, body + c * chunk_bytes);

    std::vector<Piece> pieces(static_cast<size_t>(num_chunks));
    parallel_for(num_chunks, 1, num_threads, [&](int64_t c0, int64_t c1) {
        for (int64_t c = c0; c < c1; ++c) parse_range(text + starts[c], text + starts[c + 1], cols, pieces[c]);
    });
    std::vector<int64_t> first_row(static_cast<size_t>(num_chunks + 1), 0);
    std::vector<int64_t> first_entry(static_cast<size_t>(num_chunks + 1), 0);
    for (int64_t c = 0; c < num_chunks; ++c) {
        first_row[c + 1] = first_row[c] + pieces[c].lines;
        first_entry[c + 1] = first_entry[c] + static_cast<int64_t>(pieces[c].indices.size());
    }
    const int64_t lines = first_row[num_chunks];
    if (lines != rows)
        fail({1, "the header says " + std::to_string(rows) + " rows but " + std::to_string(lines) +
                     " lines follow it (an empty row is an empty line)"});
    for (int64_t c = 0; c < num_chunks; ++c)
        if (pieces[c].error_row >= 0) fail({2 + first_row[c] + pieces[c].error_row, pieces[c].error});

    SparseMatrix out;
    out.rows = rows;
    out.cols = cols;
    const int64_t nnz = first_entry[num_chunks];
    out.indptr.resize(static_cast<size_t>(rows + 1));
    out.indptr[0] = 0;
    out.indices.resize(static_cast<size_t>(nnz));
    out.data.resize(static_cast<size_t>(nnz));
    parallel_for(num_chunks, 1, num_threads, [&](int64_t c0, int64_t c1) {
        for (int64_t c = c0; c < c1; ++c) {
            Piece& piece = pieces[c];
            std::copy(piece.indices.begin(), piece.indices.end(), out.indices.begin() + first_entry[c]);
            std::copy(piece.data.begin(), piece.data.end(), out.data.begin() + first_entry[c]);
            for (size_t r = 0; r < piece.row_ends.size(); ++r)
                out.indptr[first_row[c] + static_cast<int64_t>(r) + 1] = first_entry[c] + piece.row_ends[r];
            piece = Piece();  // free it
        }
    });
    return out;
}

void write_sparse_text(const std::string& path, int64_t rows, int64_t cols, const int64_t* indptr,
                       const int32_t* indices, const float* data, int num_threads) {
    std::unique_ptr<std::FILE, FileCloser> f(std::fopen(path.c_str(), "wb"));
    if (!f) throw std::invalid_argument("cannot open " + path + " for writing: " + std::strerror(errno));
    const std::string header = std::to_string(rows) + " " + std::to_string(cols) + "\n";
    bool ok = std::fwrite(header.data(), 1, header.size(), f.get()) == header.size();

    const int64_t num_chunks = (rows + kRowsPerChunk - 1) / kRowsPerChunk;
    const int64_t wave = int64_t{4} * resolve_threads(num_threads);  // chunks formatted before writing
    std::vector<std::string> parts(static_cast<size_t>(std::min(wave, std::max<int64_t>(num_chunks, 1))));
    for (int64_t w0 = 0; ok && w0 < num_chunks; w0 += wave) {
        const int64_t w1 = std::min(num_chunks, w0 + wave);
        parallel_for(w1 - w0, 1, num_threads, [&](int64_t c0, int64_t c1) {
            for (int64_t c = c0; c < c1; ++c) {
                const int64_t r0 = (w0 + c) * kRowsPerChunk;
                format_rows(r0, std::min(rows, r0 + kRowsPerChunk), indptr, indices, data, parts[c]);
            }
        });
        for (int64_t c = 0; ok && c < w1 - w0; ++c)
            ok = std::fwrite(parts[c].data(), 1, parts[c].size(), f.get()) == parts[c].size();
    }
    ok = ok && std::fflush(f.get()) == 0;
    if (!ok) throw std::invalid_argument("cannot write " + path + ": " + std::strerror(errno));
}

}  // namespace ramen::io
