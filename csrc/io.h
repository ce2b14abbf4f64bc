// Sparse matrices in the text format of the Extreme Classification Repository.
//
// The format: a first line "rows cols", then one line per row of whitespace-separated
// "col:value" entries (a bare "col" means value 1); an empty line is an empty row. Column ids are
// 0-based. Parsing splits the text into fixed byte ranges of whole lines and parses them in
// parallel; the result does not depend on the number of threads.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace ramen::io {

// A CSR matrix with float32 values; column ids ascend within each row.
struct SparseMatrix {
    int64_t rows = 0;
    int64_t cols = 0;
    std::vector<int64_t> indptr;   // (rows + 1,)
    std::vector<int32_t> indices;  // (nnz,)
    std::vector<float> data;       // (nnz,)
};

// The whole content of a file (not zero-terminated).
struct FileBuffer {
    std::unique_ptr<char[]> data;
    int64_t size = 0;
};

// Reads a whole file. Throws std::invalid_argument when it cannot be read.
FileBuffer read_file(const std::string& path);

// Parses the text format held in text[0, size). Throws std::invalid_argument("line N: ...") for
// a malformed header, a header whose row count disagrees with the lines that follow, a column id
// that is negative, not an integer, >= the header's column count or repeated within its row, and
// a value that is not a finite number (a finite one too small for a float reads as +-0). Messages
// are ASCII (other bytes quoted as \xHH). Rows are sorted by column id. `chunk_bytes`: the text
// each parallel task parses (whole lines from that many bytes on); it changes no result.
constexpr int64_t kDefaultChunkBytes = int64_t{1} << 20;
SparseMatrix parse_sparse_text(const char* text, int64_t size, int num_threads,
                               int64_t chunk_bytes = kDefaultChunkBytes);

// Writes a CSR matrix in the text format to `path` (values in their shortest round-trip form).
// indptr: (rows + 1,), indices/data: (indptr[rows],). Throws std::invalid_argument on I/O errors.
void write_sparse_text(const std::string& path, int64_t rows, int64_t cols, const int64_t* indptr,
                       const int32_t* indices, const float* data, int num_threads);

}  // namespace ramen::io
