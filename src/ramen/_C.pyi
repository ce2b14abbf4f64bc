"""
ramen's C++/CUDA kernels (random walks, pruning, triplet scoring, XC file parsing)

Signatures for editors and type checkers, generated from the built module by pybind11-stubgen
(`pybind11-stubgen ramen._C -o DIR`) and checked against it by tests/test_build.py. Reach the
module through `ramen._build.load_C()`. `triplet_mine_cuda` and `triplet_cuda_max_cols` exist
only in builds with CUDA kernels (`has_cuda()`).
"""
from __future__ import annotations
import collections.abc
import numpy
import numpy.typing
import typing
import typing_extensions
__all__: list[str] = ['balanced_clusters', 'bipartite_walk', 'check_csr', 'compact_edges', 'dot', 'first_non_finite', 'hardware_threads', 'has_cuda', 'hnsw_insert', 'hnsw_search', 'parse_sparse_text', 'philox4x32', 'prune_mask', 'random_walk_with_restart', 'read_sparse_text', 'transpose_structure', 'triplet_cuda_launch_plan', 'triplet_cuda_max_cols', 'triplet_mine_cpu', 'triplet_mine_cuda', 'triplet_sparse_backward_cpu', 'uniform01', 'walk_draw', 'write_sparse_text']
def balanced_clusters(emb: numpy.typing.NDArray[numpy.float32], *, cluster_size: typing.SupportsInt | typing.SupportsIndex, seed: typing.SupportsInt | typing.SupportsIndex, iters: typing.SupportsInt | typing.SupportsIndex, num_threads: typing.SupportsInt | typing.SupportsIndex) -> tuple:
    """
    Balanced recursive 2-means of unit rows: (order, starts), cluster c at order[starts[c]:starts[c + 1]].
    """
@typing.overload
def bipartite_walk(indptr: numpy.typing.NDArray[numpy.int32], indices: numpy.typing.NDArray[numpy.int32], t_indptr: numpy.typing.NDArray[numpy.int32], t_indices: numpy.typing.NDArray[numpy.int32], rows: typing.SupportsInt | typing.SupportsIndex, cols: typing.SupportsInt | typing.SupportsIndex, starts: numpy.typing.NDArray[numpy.int64], *, starts_are_rows: bool, keep_extra: bool, walk_length: typing.SupportsInt | typing.SupportsIndex, restart_prob: typing.SupportsFloat | typing.SupportsIndex, top_k: typing.SupportsInt | typing.SupportsIndex, seed: typing.SupportsInt | typing.SupportsIndex, num_threads: typing.SupportsInt | typing.SupportsIndex, progress: typing.Any, batch_starts: typing.SupportsInt | typing.SupportsIndex = 0) -> tuple:
    """
    Column visit counts of column -> row -> column walks with restart: (indptr, indices, data).
    """
@typing.overload
def bipartite_walk(indptr: numpy.typing.NDArray[numpy.int64], indices: numpy.typing.NDArray[numpy.int64], t_indptr: numpy.typing.NDArray[numpy.int64], t_indices: numpy.typing.NDArray[numpy.int64], rows: typing.SupportsInt | typing.SupportsIndex, cols: typing.SupportsInt | typing.SupportsIndex, starts: numpy.typing.NDArray[numpy.int64], *, starts_are_rows: bool, keep_extra: bool, walk_length: typing.SupportsInt | typing.SupportsIndex, restart_prob: typing.SupportsFloat | typing.SupportsIndex, top_k: typing.SupportsInt | typing.SupportsIndex, seed: typing.SupportsInt | typing.SupportsIndex, num_threads: typing.SupportsInt | typing.SupportsIndex, progress: typing.Any, batch_starts: typing.SupportsInt | typing.SupportsIndex = 0) -> tuple:
    """
    Column visit counts of column -> row -> column walks with restart: (indptr, indices, data).
    """
@typing.overload
def check_csr(indptr: numpy.typing.NDArray[numpy.int32], indices: numpy.typing.NDArray[numpy.int32], cols: typing.SupportsInt | typing.SupportsIndex, *, num_threads: typing.SupportsInt | typing.SupportsIndex) -> tuple:
    """
    First problem of a CSR structure: (kind, at, value); kind 0 = none, 1 = indptr[0] != 0, 2 = indptr decreases after row `at`, 3 = indptr[-1] > len(indices), 4 = index out of range at entry `at`.
    """
@typing.overload
def check_csr(indptr: numpy.typing.NDArray[numpy.int64], indices: numpy.typing.NDArray[numpy.int64], cols: typing.SupportsInt | typing.SupportsIndex, *, num_threads: typing.SupportsInt | typing.SupportsIndex) -> tuple:
    """
    First problem of a CSR structure: (kind, at, value); kind 0 = none, 1 = indptr[0] != 0, 2 = indptr decreases after row `at`, 3 = indptr[-1] > len(indices), 4 = index out of range at entry `at`.
    """
@typing.overload
def compact_edges(indptr: numpy.typing.NDArray[numpy.int32], indices: numpy.typing.NDArray[numpy.int32], rows: typing.SupportsInt | typing.SupportsIndex, cols: typing.SupportsInt | typing.SupportsIndex, keep: numpy.typing.NDArray[numpy.uint8], new_indptr: numpy.typing.NDArray[numpy.int64], data: numpy.ndarray | None, *, num_threads: typing.SupportsInt | typing.SupportsIndex) -> tuple:
    """
    The kept edges (keep != 0) at offsets new_indptr: (indices, data or None); data of itemsize 1, 2, 4 or 8 bytes.
    """
@typing.overload
def compact_edges(indptr: numpy.typing.NDArray[numpy.int64], indices: numpy.typing.NDArray[numpy.int64], rows: typing.SupportsInt | typing.SupportsIndex, cols: typing.SupportsInt | typing.SupportsIndex, keep: numpy.typing.NDArray[numpy.uint8], new_indptr: numpy.typing.NDArray[numpy.int64], data: numpy.ndarray | None, *, num_threads: typing.SupportsInt | typing.SupportsIndex) -> tuple:
    """
    The kept edges (keep != 0) at offsets new_indptr: (indices, data or None); data of itemsize 1, 2, 4 or 8 bytes.
    """
def dot(a: numpy.ndarray, b: numpy.ndarray) -> float:
    """
    Dot product by the pruning kernel's vector code.
    """
def first_non_finite(emb: numpy.ndarray, *, num_threads: typing.SupportsInt | typing.SupportsIndex) -> int:
    """
    The first row of a 2-d float32 / float16-bits array with a NaN or infinity, or -1.
    """
def hardware_threads() -> int:
    """
    Threads used when num_threads is None.
    """
def has_cuda() -> bool:
    """
    Whether this build contains the CUDA kernels.
    """
@typing.overload
def hnsw_insert(vectors: numpy.typing.NDArray[numpy.float32], level0: numpy.typing.NDArray[numpy.int32], upper: numpy.typing.NDArray[numpy.int32], level: numpy.typing.NDArray[numpy.int8], upper_row: numpy.typing.NDArray[numpy.int64], *, m: typing.SupportsInt | typing.SupportsIndex, m0: typing.SupportsInt | typing.SupportsIndex, entry_node: typing.SupportsInt | typing.SupportsIndex, entry_level: typing.SupportsInt | typing.SupportsIndex, begin: typing.SupportsInt | typing.SupportsIndex, end: typing.SupportsInt | typing.SupportsIndex, order: numpy.typing.NDArray[numpy.int64], ef_construction: typing.SupportsInt | typing.SupportsIndex, num_threads: typing.SupportsInt | typing.SupportsIndex) -> tuple:
    """
    Links nodes [begin, end) into the HNSW graph of float32 vectors, writing their own rows; returns (entry node, entry level, level0 nodes, their new rows, upper rows, their new rows): the changes to the rows of nodes [0, begin), left for the caller to write.
    """
@typing.overload
def hnsw_insert(vectors: numpy.typing.NDArray[numpy.uint16], level0: numpy.typing.NDArray[numpy.int32], upper: numpy.typing.NDArray[numpy.int32], level: numpy.typing.NDArray[numpy.int8], upper_row: numpy.typing.NDArray[numpy.int64], *, m: typing.SupportsInt | typing.SupportsIndex, m0: typing.SupportsInt | typing.SupportsIndex, entry_node: typing.SupportsInt | typing.SupportsIndex, entry_level: typing.SupportsInt | typing.SupportsIndex, begin: typing.SupportsInt | typing.SupportsIndex, end: typing.SupportsInt | typing.SupportsIndex, order: numpy.typing.NDArray[numpy.int64], ef_construction: typing.SupportsInt | typing.SupportsIndex, num_threads: typing.SupportsInt | typing.SupportsIndex) -> tuple:
    """
    Links nodes [begin, end) into the HNSW graph of float16 (as uint16 bits) vectors, writing their own rows; returns (entry node, entry level, level0 nodes, their new rows, upper rows, their new rows): the changes to the rows of nodes [0, begin), left for the caller to write.
    """
@typing.overload
def hnsw_search(vectors: numpy.typing.NDArray[numpy.float32], level0: numpy.typing.NDArray[numpy.int32], upper: numpy.typing.NDArray[numpy.int32], level: numpy.typing.NDArray[numpy.int8], upper_row: numpy.typing.NDArray[numpy.int64], *, m: typing.SupportsInt | typing.SupportsIndex, m0: typing.SupportsInt | typing.SupportsIndex, entry_node: typing.SupportsInt | typing.SupportsIndex, entry_level: typing.SupportsInt | typing.SupportsIndex, nodes: typing.SupportsInt | typing.SupportsIndex, alive: numpy.typing.NDArray[numpy.uint8] | None, queries: numpy.typing.NDArray[numpy.float32], k: typing.SupportsInt | typing.SupportsIndex, ef: typing.SupportsInt | typing.SupportsIndex, num_threads: typing.SupportsInt | typing.SupportsIndex) -> tuple:
    """
    Top-k (rows, inner products) of float32 queries in the HNSW graph of float32 vectors.
    """
@typing.overload
def hnsw_search(vectors: numpy.typing.NDArray[numpy.uint16], level0: numpy.typing.NDArray[numpy.int32], upper: numpy.typing.NDArray[numpy.int32], level: numpy.typing.NDArray[numpy.int8], upper_row: numpy.typing.NDArray[numpy.int64], *, m: typing.SupportsInt | typing.SupportsIndex, m0: typing.SupportsInt | typing.SupportsIndex, entry_node: typing.SupportsInt | typing.SupportsIndex, entry_level: typing.SupportsInt | typing.SupportsIndex, nodes: typing.SupportsInt | typing.SupportsIndex, alive: numpy.typing.NDArray[numpy.uint8] | None, queries: numpy.typing.NDArray[numpy.float32], k: typing.SupportsInt | typing.SupportsIndex, ef: typing.SupportsInt | typing.SupportsIndex, num_threads: typing.SupportsInt | typing.SupportsIndex) -> tuple:
    """
    Top-k (rows, inner products) of float32 queries in the HNSW graph of float16 (as uint16 bits) vectors.
    """
def parse_sparse_text(text: typing_extensions.Buffer, *, num_threads: typing.SupportsInt | typing.SupportsIndex = 0, chunk_bytes: typing.SupportsInt | typing.SupportsIndex = 1048576) -> tuple:
    """
    Parses XC sparse text held in a bytes-like object; same result as read_sparse_text.
    """
def philox4x32(counter: collections.abc.Sequence[typing.SupportsInt | typing.SupportsIndex], key: collections.abc.Sequence[typing.SupportsInt | typing.SupportsIndex]) -> tuple:
    """
    Philox-4x32-10 block function (for known-answer tests).
    """
@typing.overload
def prune_mask(indptr: numpy.typing.NDArray[numpy.int32], indices: numpy.typing.NDArray[numpy.int32], rows: typing.SupportsInt | typing.SupportsIndex, cols: typing.SupportsInt | typing.SupportsIndex, row_emb: numpy.typing.NDArray[numpy.float32], col_emb: numpy.typing.NDArray[numpy.float32], *, threshold: typing.SupportsFloat | typing.SupportsIndex, edge_order: str, num_threads: typing.SupportsInt | typing.SupportsIndex) -> tuple:
    """
    Edges whose endpoint embeddings have a dot product > threshold: (keep uint8, kept per row, order used).
    """
@typing.overload
def prune_mask(indptr: numpy.typing.NDArray[numpy.int32], indices: numpy.typing.NDArray[numpy.int32], rows: typing.SupportsInt | typing.SupportsIndex, cols: typing.SupportsInt | typing.SupportsIndex, row_emb: numpy.typing.NDArray[numpy.uint16], col_emb: numpy.typing.NDArray[numpy.uint16], *, threshold: typing.SupportsFloat | typing.SupportsIndex, edge_order: str, num_threads: typing.SupportsInt | typing.SupportsIndex) -> tuple:
    """
    The same with float16 embeddings passed as their uint16 bits.
    """
@typing.overload
def prune_mask(indptr: numpy.typing.NDArray[numpy.int64], indices: numpy.typing.NDArray[numpy.int64], rows: typing.SupportsInt | typing.SupportsIndex, cols: typing.SupportsInt | typing.SupportsIndex, row_emb: numpy.typing.NDArray[numpy.float32], col_emb: numpy.typing.NDArray[numpy.float32], *, threshold: typing.SupportsFloat | typing.SupportsIndex, edge_order: str, num_threads: typing.SupportsInt | typing.SupportsIndex) -> tuple:
    """
    Edges whose endpoint embeddings have a dot product > threshold: (keep uint8, kept per row, order used).
    """
@typing.overload
def prune_mask(indptr: numpy.typing.NDArray[numpy.int64], indices: numpy.typing.NDArray[numpy.int64], rows: typing.SupportsInt | typing.SupportsIndex, cols: typing.SupportsInt | typing.SupportsIndex, row_emb: numpy.typing.NDArray[numpy.uint16], col_emb: numpy.typing.NDArray[numpy.uint16], *, threshold: typing.SupportsFloat | typing.SupportsIndex, edge_order: str, num_threads: typing.SupportsInt | typing.SupportsIndex) -> tuple:
    """
    The same with float16 embeddings passed as their uint16 bits.
    """
@typing.overload
def random_walk_with_restart(indptr: numpy.typing.NDArray[numpy.int32], indices: numpy.typing.NDArray[numpy.int32], num_nodes: typing.SupportsInt | typing.SupportsIndex, starts: numpy.typing.NDArray[numpy.int64], *, walk_length: typing.SupportsInt | typing.SupportsIndex, restart_prob: typing.SupportsFloat | typing.SupportsIndex, top_k: typing.SupportsInt | typing.SupportsIndex, seed: typing.SupportsInt | typing.SupportsIndex, num_threads: typing.SupportsInt | typing.SupportsIndex, progress: typing.Any, batch_starts: typing.SupportsInt | typing.SupportsIndex = 0) -> tuple:
    """
    Visit counts of walks with restart from each start: (indptr int64, indices, data float32).
    """
@typing.overload
def random_walk_with_restart(indptr: numpy.typing.NDArray[numpy.int64], indices: numpy.typing.NDArray[numpy.int64], num_nodes: typing.SupportsInt | typing.SupportsIndex, starts: numpy.typing.NDArray[numpy.int64], *, walk_length: typing.SupportsInt | typing.SupportsIndex, restart_prob: typing.SupportsFloat | typing.SupportsIndex, top_k: typing.SupportsInt | typing.SupportsIndex, seed: typing.SupportsInt | typing.SupportsIndex, num_threads: typing.SupportsInt | typing.SupportsIndex, progress: typing.Any, batch_starts: typing.SupportsInt | typing.SupportsIndex = 0) -> tuple:
    """
    Visit counts of walks with restart from each start: (indptr int64, indices, data float32).
    """
def read_sparse_text(path: str, *, num_threads: typing.SupportsInt | typing.SupportsIndex = 0, chunk_bytes: typing.SupportsInt | typing.SupportsIndex = 1048576) -> tuple:
    """
    Reads an XC sparse text file: (rows, cols, indptr int64, indices int32, data float32). ValueError 'line N: ...' for malformed input.
    """
@typing.overload
def transpose_structure(indptr: numpy.typing.NDArray[numpy.int32], indices: numpy.typing.NDArray[numpy.int32], rows: typing.SupportsInt | typing.SupportsIndex, cols: typing.SupportsInt | typing.SupportsIndex, *, num_threads: typing.SupportsInt | typing.SupportsIndex = 0) -> tuple:
    """
    CSR structure of the transpose: (t_indptr, t_indices), same dtype; any num_threads gives the same.
    """
@typing.overload
def transpose_structure(indptr: numpy.typing.NDArray[numpy.int64], indices: numpy.typing.NDArray[numpy.int64], rows: typing.SupportsInt | typing.SupportsIndex, cols: typing.SupportsInt | typing.SupportsIndex, *, num_threads: typing.SupportsInt | typing.SupportsIndex = 0) -> tuple:
    """
    CSR structure of the transpose: (t_indptr, t_indices), same dtype; any num_threads gives the same.
    """
def triplet_cuda_launch_plan(*, rows: typing.SupportsInt | typing.SupportsIndex, cols: typing.SupportsInt | typing.SupportsIndex, optin_bytes: typing.SupportsInt | typing.SupportsIndex, static_bytes: typing.SupportsInt | typing.SupportsIndex, workspace_budget: typing.SupportsInt | typing.SupportsIndex = 268435456) -> dict:
    """
    The CUDA triplet kernel's launch sizes for rows x cols on a device with the given shared memory (host arithmetic: runs in every build).
    """
def triplet_cuda_max_cols(*, device: typing.SupportsInt | typing.SupportsIndex) -> int:
    """
    Widest M the CUDA triplet kernel keeps in shared memory on a device (wider M: global memory).
    """
def triplet_mine_cpu(*, scores: numpy.ndarray, pos_indptr: numpy.ndarray | None = None, pos_indices: numpy.ndarray | None = None, pos_mask: numpy.ndarray | None = None, exc_indptr: numpy.ndarray | None = None, exc_indices: numpy.ndarray | None = None, exc_mask: numpy.ndarray | None = None, margin: typing.SupportsFloat | typing.SupportsIndex, num_negatives: typing.SupportsInt | typing.SupportsIndex, temperature: typing.SupportsFloat | typing.SupportsIndex, loss: numpy.ndarray, grad: numpy.ndarray, count: numpy.ndarray, num_threads: typing.SupportsInt | typing.SupportsIndex = 0, sparse: bool = False) -> typing.Any:
    """
    Fused hard-negative triplet scoring of a score matrix on the CPU (see ramen.ops.triplet_loss).
    """
def triplet_mine_cuda(*, dtype: typing.SupportsInt | typing.SupportsIndex, scores: typing.SupportsInt | typing.SupportsIndex, rows: typing.SupportsInt | typing.SupportsIndex, cols: typing.SupportsInt | typing.SupportsIndex, pos_indptr: typing.SupportsInt | typing.SupportsIndex = 0, pos_indices: typing.SupportsInt | typing.SupportsIndex = 0, pos_nnz: typing.SupportsInt | typing.SupportsIndex = 0, pos_mask: typing.SupportsInt | typing.SupportsIndex = 0, exc_indptr: typing.SupportsInt | typing.SupportsIndex = 0, exc_indices: typing.SupportsInt | typing.SupportsIndex = 0, exc_nnz: typing.SupportsInt | typing.SupportsIndex = 0, exc_mask: typing.SupportsInt | typing.SupportsIndex = 0, margin: typing.SupportsFloat | typing.SupportsIndex, num_negatives: typing.SupportsInt | typing.SupportsIndex, temperature: typing.SupportsFloat | typing.SupportsIndex, loss: typing.SupportsInt | typing.SupportsIndex, grad: typing.SupportsInt | typing.SupportsIndex, count: typing.SupportsInt | typing.SupportsIndex, device: typing.SupportsInt | typing.SupportsIndex, stream: typing.SupportsInt | typing.SupportsIndex) -> None:
    """
    Fused hard-negative triplet scoring on CUDA: device pointers and a stream as integers, no host sync.
    """
def triplet_sparse_backward_cpu(*, indptr: numpy.ndarray, indices: numpy.ndarray, values: numpy.ndarray, q: numpy.ndarray, c: numpy.ndarray, row_scale: numpy.ndarray | None = None, scale: typing.SupportsFloat | typing.SupportsIndex = 1.0, dq: numpy.ndarray | None = None, dc: numpy.ndarray | None = None, num_threads: typing.SupportsInt | typing.SupportsIndex = 0) -> None:
    """
    dq = G c and dc = G^T q (scaled) from the triplet op's sparse G on the CPU; deterministic.
    """
def uniform01(words: numpy.typing.NDArray[numpy.uint32], p: typing.SupportsFloat | typing.SupportsIndex) -> tuple:
    """
    (uniform01(words), below(words, threshold24(p))): the RNG's float draw and the walks' restart test.
    """
def walk_draw(seed: typing.SupportsInt | typing.SupportsIndex, start: typing.SupportsInt | typing.SupportsIndex, hop: typing.SupportsInt | typing.SupportsIndex, which: typing.SupportsInt | typing.SupportsIndex, range: typing.SupportsInt | typing.SupportsIndex) -> int:
    """
    The walks' uniform edge choice in [0, range) (for tests of its rare paths).
    """
def write_sparse_text(path: str, rows: typing.SupportsInt | typing.SupportsIndex, cols: typing.SupportsInt | typing.SupportsIndex, *, indptr: typing.Annotated[numpy.typing.ArrayLike, numpy.int64], indices: typing.Annotated[numpy.typing.ArrayLike, numpy.int32], data: typing.Annotated[numpy.typing.ArrayLike, numpy.float32], num_threads: typing.SupportsInt | typing.SupportsIndex = 0) -> None:
    """
    Writes a CSR matrix (float32 values) in the XC sparse text format.
    """
__version__: str = '0.1.0'
