// Kernels of hilcore.compat: the widely used dense Jaccard matrix with its own arithmetic, and the
// rows of a dense precomputed distance matrix within eps (scikit-learn's DBSCAN neighbourhoods).
#pragma once
#include <cstdint>
#include <vector>

namespace hilcore {

// IEEE binary16 <-> binary32, round to nearest even (NumPy's float16 conversions).
uint16_t f32_to_f16(float f);
float f16_to_f32(uint16_t h);

// The dense [n, n] matrix of the original compute_jaccard_distance from its V' (CSR: indptr [n+1],
// indices [nnz] ascending per row, vals [nnz] > 0; in half mode every value is a float16 value):
//   acc_i[j] = sum over t in row i, ascending, of min(V'[i, t], V'[j, t]), added one term at a time
//              to a zero row (float32 adds; half mode: float32 add, then rounded to float16);
//   out[i, j] = 1 - acc/(2 - acc), each operation float32 (half mode: each rounded to float16),
//              negative results set to 0 (pairs that share no t give exactly 1).
// out: float32 [n, n] (half = false) or uint16 float16 bits [n, n] (half = true), row-major.
// Rows run in parallel; each row's arithmetic is sequential, so the result does not depend on threads.
// Returns 0; a violated precondition throws hilcore::KernelError naming it (kernels/common/check.h).
int compat_dense_jaccard(const int64_t* indptr, const int64_t* indices, const float* vals, int64_t n, bool half,
                         void* out, int num_threads);

// The original's query expansion V'[i] = np.mean(V[rank[i, :k2]], axis=0) on V as CSR (indptr [n+1], indices
// ascending per row, vals: V's values in the matrix dtype, as float32; rank row-major [n, k2]): per column t,
// the values of the rows rank[i, 0], rank[i, 1], ... holding t, the first taken as it is and the next added in
// that order in float32 (NumPy's mean over axis 0 adds the rows one after the other), divided by k2 in float64
// and rounded to float32 (half: then to float16, as the original's float16 mean). Entries whose mean is 0 are
// dropped (the original's support is V' != 0). Output: CSR qptr [n+1], qidx (ascending per row), qval.
void compat_query_expansion(const int64_t* indptr, const int64_t* indices, const float* vals, const int64_t* rank,
                            int64_t n, int64_t k2, bool half, std::vector<int64_t>* qptr, std::vector<int64_t>* qidx,
                            std::vector<float>* qval, int num_threads);

// Entries of a dense [n, n] matrix within eps, row by row (kind: 0 float32, 1 float64, 2 float16 bits).
// Row i's stride is ld elements. Kept: x[i, j] <= eps compared exactly in float64 (every float32 / float16
// value is a float64 value; the caller passes eps already rounded as scikit-learn compares it).
// indptr [n+1] and indices (ascending per row, the diagonal included when within eps) are filled.
// bad_row: the first row holding a NaN, an infinity or a negative value (-1 when none; then nothing
// else is meaningful). prints (nullptr: not computed): [n], row i's fingerprint (row_fingerprints).
// Returns 0; a violated precondition throws hilcore::KernelError naming it (kernels/common/check.h).
int dense_eps_rows(const void* x, int kind, int64_t n, int64_t ld, double eps, std::vector<int64_t>* indptr,
                   std::vector<int64_t>* indices, int64_t* bad_row, uint64_t* prints, int num_threads);

// Whether the relation {(i, j) : j in row i, j != i} of a CSR (indptr [n+1], indices in [0, n)) is symmetric:
// 1 yes, 0 no, -1 a row's columns are not strictly ascending (unknown: the caller checks another way).
int csr_symmetric(const int64_t* indptr, const int64_t* indices, int64_t n, int num_threads);

// Fingerprints of `rows` rows of n elements (kind as above, row stride ld elements): the row's bits as 32-bit
// words w_k (a float16 widened, a float64 as its low then high word), out[i] = (a << 32) | b with
// a = sum_k w_k and b = sum_k w_k (2k + 1), both mod 2^32: every change of one float16 / float32 element changes
// b (2k + 1 is odd, so invertible mod 2^32); other changes go unnoticed only when they cancel in both sums
// (a float64 element whose two words both change by 2^31, e.g. its bits 31 and 63 flipped together, is one).
// hilcore.compat.DBSCAN compares them to notice a matrix changed in place between fit and components_.
void row_fingerprints(const void* x, int kind, int64_t rows, int64_t n, int64_t ld, uint64_t* out, int num_threads);

}  // namespace hilcore
