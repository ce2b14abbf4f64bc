// Parallel parsing and formatting of the XC repository's sparse text format (see io.h).
//
// Parsing makes two passes over fixed byte ranges of whole lines: the first counts lines and
// entries per range, a prefix sum gives each range its first row and entry, and the second parses
// straight into the final arrays. Each range records its first error; the earliest one is thrown,
// so the message is the same for every thread count.
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
#include <string_view>
#include <utility>

#include "parallel.h"

namespace ramen::io {
namespace {

constexpr int64_t kRowsPerChunk = 8192;  // rows per parallel task when formatting

bool is_blank(char c) { return c == ' ' || c == '\t' || c == '\r'; }

// A token quoted for an error message, cut to a readable length.
std::string quote(const char* begin, const char* end) {
    constexpr int64_t kMax = 40;
    const int64_t n = end - begin;
    std::string s(begin, static_cast<size_t>(std::min(n, kMax)));
    return "'" + s + (n > kMax ? "...'" : "'");
}

// Position of the first line start at or after `pos` in [begin, end]: a line starts at `begin`
// and after every '\n' that is not the last byte.
int64_t line_start_from(const char* text, int64_t begin, int64_t end, int64_t pos) {
    if (pos <= begin) return begin;
    if (pos >= end) return end;
    const void* nl = std::memchr(text + pos - 1, '\n', static_cast<size_t>(end - pos + 1));
    return nl == nullptr ? end : static_cast<const char*>(nl) - text + 1;
}

struct Count {
    int64_t lines = 0;
    int64_t entries = 0;
};

// Lines and whitespace-separated tokens in [p, e), where p starts a line and e ends one.
Count count_range(const char* p, const char* e) {
    Count c;
    if (p >= e) return c;
    int64_t newlines = 0;
    int64_t tokens = 0;
    bool in_token = false;
    for (const char* q = p; q < e; ++q) {
        const char ch = *q;
        const bool sep = ch == ' ' || ch == '\t' || ch == '\r' || ch == '\n';
        tokens += static_cast<int64_t>(!sep && !in_token);
        in_token = !sep;
        newlines += static_cast<int64_t>(ch == '\n');
    }
    c.lines = newlines + static_cast<int64_t>(e[-1] != '\n');
    c.entries = tokens;
    return c;
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

// Sorts entries [begin, end) of a row by column id; reports a repeated id.
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

// Parses the lines in [p, e) as rows first_row, first_row + 1, ... with entries written from
// `first_entry` on. Returns the first error, if any.
Error parse_range(const char* p, const char* e, int64_t first_row, int64_t first_entry, int64_t cols,
                  SparseMatrix& out) {
    int64_t row = first_row;
    int64_t pos = first_entry;
    while (p < e) {
        const char* nl = static_cast<const char*>(std::memchr(p, '\n', static_cast<size_t>(e - p)));
        const char* line_end = nl == nullptr ? e : nl;
        const int64_t line = row + 2;
        const int64_t row_begin = pos;
        int64_t prev = -1;
        bool sorted = true;
        const char* q = p;
        while (true) {
            while (q < line_end && is_blank(*q)) ++q;
            if (q == line_end) break;
            const char* t = q;
            while (q < line_end && !is_blank(*q)) ++q;
            const char* colon = static_cast<const char*>(std::memchr(t, ':', static_cast<size_t>(q - t)));
            const char* id_end = colon == nullptr ? q : colon;
            int64_t col = 0;
            const auto r = std::from_chars(t, id_end, col);
            if (r.ptr != id_end || t == id_end || (r.ec != std::errc() && r.ec != std::errc::result_out_of_range))
                return {line, "column id " + quote(t, id_end) + " is not an integer (entry " + quote(t, q) + ")"};
            if (r.ec == std::errc::result_out_of_range || col >= cols)
                return {line, "column id " + quote(t, id_end) + " >= the header's column count " + std::to_string(cols)};
            if (col < 0) return {line, "negative column id " + quote(t, id_end)};
            float value = 1.0f;
            if (colon != nullptr) {
                const char* v = colon + 1;
                if (v < q && *v == '+') ++v;
                const auto rv = std::from_chars(v, q, value);
                if (v == q || rv.ec != std::errc() || rv.ptr != q || !std::isfinite(value))
                    return {line, "value " + quote(colon + 1, q) + " is not a finite number (entry " + quote(t, q) + ")"};
            }
            out.indices[pos] = static_cast<int32_t>(col);
            out.data[pos] = value;
            ++pos;
            if (col == prev) return {line, "column id " + std::to_string(col) + " appears twice in the row"};
            sorted = sorted && col > prev;
            prev = col;
        }
        int32_t repeated = 0;
        if (!sorted && !sort_row(&out.indices[row_begin], &out.data[row_begin], pos - row_begin, &repeated))
            return {line, "column id " + std::to_string(repeated) + " appears twice in the row"};
        out.indptr[row + 1] = pos;
        ++row;
        p = line_end + 1;
    }
    return {};
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

std::string read_file(const std::string& path) {
    std::unique_ptr<std::FILE, FileCloser> f(std::fopen(path.c_str(), "rb"));
    if (!f) throw std::invalid_argument("cannot open " + path + ": " + std::strerror(errno));
    std::string text;
    char buffer[1 << 16];
    if (std::fseek(f.get(), 0, SEEK_END) == 0) {
        const long size = std::ftell(f.get());
        if (size > 0) text.reserve(static_cast<size_t>(size));
        std::rewind(f.get());
    }
    size_t n = 0;
    if (text.capacity() > 0) {
        text.resize(text.capacity());
        n = std::fread(text.data(), 1, text.size(), f.get());
        text.resize(n);
    }
    while ((n = std::fread(buffer, 1, sizeof(buffer), f.get())) > 0) text.append(buffer, n);
    if (std::ferror(f.get())) throw std::invalid_argument("cannot read " + path);
    return text;
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

    std::vector<Count> counts(static_cast<size_t>(num_chunks));
    parallel_for(num_chunks, 1, num_threads, [&](int64_t c0, int64_t c1) {
        for (int64_t c = c0; c < c1; ++c) counts[c] = count_range(text + starts[c], text + starts[c + 1]);
    });
    std::vector<int64_t> first_row(static_cast<size_t>(num_chunks + 1), 0);
    std::vector<int64_t> first_entry(static_cast<size_t>(num_chunks + 1), 0);
    for (int64_t c = 0; c < num_chunks; ++c) {
        first_row[c + 1] = first_row[c] + counts[c].lines;
        first_entry[c + 1] = first_entry[c] + counts[c].entries;
    }
    const int64_t lines = first_row[num_chunks];
    if (lines != rows)
        fail({1, "the header says " + std::to_string(rows) + " rows but " + std::to_string(lines) +
                     " lines follow it (an empty row is an empty line)"});

    SparseMatrix out;
    out.rows = rows;
    out.cols = cols;
    const int64_t nnz = first_entry[num_chunks];
    out.indptr.assign(static_cast<size_t>(rows + 1), 0);
    out.indices.resize(static_cast<size_t>(nnz));
    out.data.resize(static_cast<size_t>(nnz));
    std::vector<Error> errors(static_cast<size_t>(num_chunks));
    parallel_for(num_chunks, 1, num_threads, [&](int64_t c0, int64_t c1) {
        for (int64_t c = c0; c < c1; ++c)
            errors[c] = parse_range(text + starts[c], text + starts[c + 1], first_row[c], first_entry[c], cols, out);
    });
    for (const Error& e : errors)
        if (e.line != 0) fail(e);
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
