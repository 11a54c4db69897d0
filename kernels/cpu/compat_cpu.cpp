#include "cpu/compat_cpu.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <string>

#include "common/check.h"

namespace hilcore {

uint16_t f32_to_f16(float f) {
  uint32_t x;
  std::memcpy(&x, &f, 4);
  const uint16_t sign = static_cast<uint16_t>((x >> 16) & 0x8000u);
  const uint32_t ax = x & 0x7fffffffu;
  if (ax >= 0x7f800000u) return sign | (ax > 0x7f800000u ? 0x7e00u : 0x7c00u);  // NaN / inf
  if (ax >= 0x477ff000u) return sign | 0x7c00u;  // >= 65520: rounds to inf
  if (ax < 0x38800000u) {  // below 2^-14: a subnormal half, m * 2^-24 with m = round-half-even(|f| * 2^24)
    float a;
    std::memcpy(&a, &ax, 4);
    const float m = std::nearbyint(a * 16777216.0f);  // exact scaling; default rounding mode: to nearest even
    return sign | static_cast<uint16_t>(m);
  }
  uint32_t h = (ax >> 13) - (112u << 10);  // rebias the exponent (127 - 15 = 112)
  const uint32_t rest = ax & 0x1fffu;
  if (rest > 0x1000u || (rest == 0x1000u && (h & 1u))) ++h;  // a carry into the exponent is right
  return sign | static_cast<uint16_t>(h);
}

float f16_to_f32(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t e = (h >> 10) & 0x1fu, m = h & 0x3ffu;
  uint32_t x;
  if (e == 0) {
    const float v = static_cast<float>(m) * 5.9604644775390625e-08f;  // m * 2^-24, exact
    std::memcpy(&x, &v, 4);
    x |= sign;
  } else if (e == 31) {
    x = sign | 0x7f800000u | (m << 13);
  } else {
    x = sign | ((e + 112u) << 23) | (m << 13);
  }
  float f;
  std::memcpy(&f, &x, 4);
  return f;
}

namespace {

inline float round_half(float v) { return f16_to_f32(f32_to_f16(v)); }

}  // namespace

int compat_dense_jaccard(const int64_t* indptr, const int64_t* indices, const float* vals, int64_t n, bool half,
                         void* out, int num_threads) {
  HILCORE_CHECK_MSG(n >= 0, values({{"n", n}}));
  const int64_t nnz = indptr[n];
  // inverted index: for every column t, the (row, value) pairs with V'[row, t] != 0, rows ascending
  std::vector<int64_t> col_ptr(n + 1, 0);
  for (int64_t p = 0; p < nnz; ++p) ++col_ptr[indices[p] + 1];
  for (int64_t t = 0; t < n; ++t) col_ptr[t + 1] += col_ptr[t];
  std::vector<int64_t> inv_row(nnz);
  std::vector<float> inv_val(nnz);
  {
    std::vector<int64_t> fill(col_ptr.begin(), col_ptr.end() - 1);
    for (int64_t i = 0; i < n; ++i)
      for (int64_t p = indptr[i]; p < indptr[i + 1]; ++p) {
        const int64_t q = fill[indices[p]]++;
        inv_row[q] = i;
        inv_val[q] = vals[p];
      }
  }
  const int nt = num_threads < 1 ? 1 : num_threads;
#pragma omp parallel num_threads(nt)
  {
    std::vector<float> acc(static_cast<size_t>(n));
#pragma omp for schedule(dynamic, 16)
    for (int64_t i = 0; i < n; ++i) {
      std::fill(acc.begin(), acc.end(), 0.0f);
      for (int64_t p = indptr[i]; p < indptr[i + 1]; ++p) {
        const float vi = vals[p];
        const int64_t t = indices[p];
        for (int64_t q = col_ptr[t]; q < col_ptr[t + 1]; ++q) {
          const int64_t j = inv_row[q];
          const float s = acc[j] + std::min(vi, inv_val[q]);
          acc[j] = half ? round_half(s) : s;
        }
      }
      if (half) {
        uint16_t* row = static_cast<uint16_t*>(out) + i * n;
        for (int64_t j = 0; j < n; ++j) {
          const float m = acc[j];
          const float den = round_half(2.0f - m);
          const float r = round_half(1.0f - round_half(m / den));
          row[j] = r < 0.0f ? 0 : f32_to_f16(r);
        }
      } else {
        float* row = static_cast<float*>(out) + i * n;
        for (int64_t j = 0; j < n; ++j) {
          const float m = acc[j];
          const float den = 2.0f - m;
          const float r = 1.0f - m / den;
          row[j] = r < 0.0f ? 0.0f : r;
        }
      }
    }
  }
  return 0;
}

void compat_query_expansion(const int64_t* indptr, const int64_t* indices, const float* vals, const int64_t* rank,
                            int64_t n, int64_t k2, bool half, std::vector<int64_t>* qptr, std::vector<int64_t>* qidx,
                            std::vector<float>* qval, int num_threads) {
  HILCORE_CHECK_MSG(n >= 0 && k2 >= 1, values({{"n", n}, {"k2", k2}}));
  const int nt = num_threads < 1 ? 1 : num_threads;
  std::vector<std::vector<int64_t>> tidx(nt);
  std::vector<std::vector<float>> tval(nt);
  std::vector<int64_t> len(n), start(n);
  std::vector<int> owner(n);
#pragma omp parallel num_threads(nt)
  {
    const int th = omp_get_thread_num();
    std::vector<float> acc(static_cast<size_t>(n));
    std::vector<uint8_t> seen(static_cast<size_t>(n), 0);
    std::vector<int64_t> touched;
#pragma omp for schedule(dynamic, 64)
    for (int64_t i = 0; i < n; ++i) {
      touched.clear();
      for (int64_t q = 0; q < k2; ++q) {  // ranking order: the first value, then float32 adds in order
        const int64_t r = rank[i * k2 + q];
        for (int64_t p = indptr[r]; p < indptr[r + 1]; ++p) {
          const int64_t t = indices[p];
          if (seen[t]) {
            acc[t] = acc[t] + vals[p];
          } else {
            seen[t] = 1;
            acc[t] = vals[p];
            touched.push_back(t);
          }
        }
      }
      std::sort(touched.begin(), touched.end());
      start[i] = static_cast<int64_t>(tidx[th].size());
      owner[i] = th;
      for (const int64_t t : touched) {
        seen[t] = 0;
        float m = static_cast<float>(static_cast<double>(acc[t]) / static_cast<double>(k2));  // np.mean's division
        if (half) m = round_half(m);
        if (m != 0.0f) {  // the original's support is V' != 0 (float16 means can round to 0)
          tidx[th].push_back(t);
          tval[th].push_back(m);
        }
      }
      len[i] = static_cast<int64_t>(tidx[th].size()) - start[i];
    }
  }
  qptr->assign(n + 1, 0);
  for (int64_t i = 0; i < n; ++i) (*qptr)[i + 1] = (*qptr)[i] + len[i];
  qidx->resize((*qptr)[n]);
  qval->resize((*qptr)[n]);
#pragma omp parallel for schedule(static) num_threads(nt)
  for (int64_t i = 0; i < n; ++i) {
    std::copy_n(tidx[owner[i]].begin() + start[i], len[i], qidx->begin() + (*qptr)[i]);
    std::copy_n(tval[owner[i]].begin() + start[i], len[i], qval->begin() + (*qptr)[i]);
  }
}

int csr_symmetric(const int64_t* indptr, const int64_t* indices, int64_t n, int num_threads) {
  HILCORE_CHECK_MSG(n >= 0, values({{"n", n}}));
  int unsorted = 0, missing = 0;
  const int nt = num_threads < 1 ? 1 : num_threads;
#pragma omp parallel for schedule(dynamic, 256) reduction(| : unsorted, missing) num_threads(nt)
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t p = indptr[i]; p < indptr[i + 1]; ++p) {
      if (p > indptr[i] && indices[p] <= indices[p - 1]) unsorted = 1;
      const int64_t j = indices[p];
      if (j != i && !std::binary_search(indices + indptr[j], indices + indptr[j + 1], i)) missing = 1;
    }
  }
  return unsorted ? -1 : (missing ? 0 : 1);
}

namespace {

// 32-bit words that may alias the matrix's elements (a float16 element is read as its uint16 bits).
typedef uint32_t __attribute__((may_alias)) word32;

// (a << 32) | b with a = sum_k w_k and b = sum_k w_k (2k + 1), mod 2^32 (a loop the compiler vectorises).
template <typename W>
inline uint64_t word_print(const W* w, int64_t m) {
  uint32_t a = 0, b = 0, odd = 1;
  for (int64_t k = 0; k < m; ++k, odd += 2u) {
    const uint32_t v = w[k];
    a += v;
    b += v * odd;
  }
  return (static_cast<uint64_t>(a) << 32) | b;
}

// A row's fingerprint (see compat_cpu.h): its elements as 32-bit words (a float16 widened, a float64 as its low
// then high word, as they lie in memory on a little-endian machine).
inline uint64_t row_print(const float* row, int64_t n) { return word_print(reinterpret_cast<const word32*>(row), n); }
inline uint64_t row_print(const double* row, int64_t n) {
  return word_print(reinterpret_cast<const word32*>(row), 2 * n);
}
inline uint64_t row_print(const uint16_t* row, int64_t n) { return word_print(row, n); }

// V is the compare type (float or double): x[i, j] <= eps (as float64) <=> load(x[i, j]) <= e, e being eps rounded
// down to V (every value of the matrix is exactly a V value). One row at a time: a vectorisable pass checks the
// values, a second (the row is in cache) lists the columns within e.
template <typename T, typename V, typename Load>
int eps_rows(const T* x, int64_t n, int64_t ld, V e, Load load, std::vector<int64_t>* indptr,
             std::vector<int64_t>* indices, int64_t* bad_row, uint64_t* prints, int nt) {
  const V top = std::numeric_limits<V>::max();
  std::vector<std::vector<int64_t>> cols(nt), counts(nt);
  std::vector<int64_t> first_bad(nt, -1), start(nt + 1, 0);
  for (int t = 0; t <= nt; ++t) start[t] = n * t / nt;
#pragma omp parallel for schedule(static, 1) num_threads(nt)
  for (int t = 0; t < nt; ++t) {
    std::vector<int64_t>& c = cols[t];
    std::vector<int64_t>& k = counts[t];
    for (int64_t i = start[t]; i < start[t + 1]; ++i) {
      const T* row = x + i * ld;
      int ok = 1;
      for (int64_t j = 0; j < n; ++j) {
        const V v = load(row[j]);
        ok &= (v >= V(0)) & (v <= top);  // false for NaN, negative or inf
      }
      if (!ok) {
        first_bad[t] = i;
        break;
      }
      if (prints != nullptr) prints[i] = row_print(row, n);  // the row is in cache
      const size_t before = c.size();
      for (int64_t j = 0; j < n; ++j)
        if (load(row[j]) <= e) c.push_back(j);
      k.push_back(static_cast<int64_t>(c.size() - before));
    }
  }
  *bad_row = -1;
  for (int t = 0; t < nt; ++t)
    if (first_bad[t] >= 0) {
      *bad_row = first_bad[t];
      return 0;
    }
  indptr->assign(n + 1, 0);
  int64_t r = 0;
  for (int t = 0; t < nt; ++t)
    for (int64_t cnt : counts[t]) {
      (*indptr)[r + 1] = (*indptr)[r] + cnt;
      ++r;
    }
  indices->resize((*indptr)[n]);
  int64_t off = 0;
  for (int t = 0; t < nt; ++t) {
    std::copy(cols[t].begin(), cols[t].end(), indices->begin() + off);
    off += static_cast<int64_t>(cols[t].size());
    std::vector<int64_t>().swap(cols[t]);
  }
  return 0;
}

// eps (a float64) rounded down to float: for any float v, double(v) <= eps <=> v <= the result.
float floor_to_float(double eps) {
  float e = static_cast<float>(eps);
  if (static_cast<double>(e) > eps) e = std::nextafter(e, -std::numeric_limits<float>::infinity());
  return e;
}

}  // namespace

int dense_eps_rows(const void* x, int kind, int64_t n, int64_t ld, double eps, std::vector<int64_t>* indptr,
                   std::vector<int64_t>* indices, int64_t* bad_row, uint64_t* prints, int num_threads) {
  HILCORE_CHECK_MSG(n >= 0 && ld >= n && kind >= 0 && kind <= 2,
                    "expected n >= 0, ld >= n and kind 0 (float32), 1 (float64) or 2 (float16), " +
                        values({{"n", n}, {"ld", ld}, {"kind", kind}}));
  const int nt = static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(num_threads < 1 ? 1 : num_threads,
                                                                         std::max<int64_t>(n, 1))));
  if (kind == 0)
    return eps_rows(static_cast<const float*>(x), n, ld, floor_to_float(eps), [](float v) { return v; }, indptr,
                    indices, bad_row, prints, nt);
  if (kind == 1)
    return eps_rows(static_cast<const double*>(x), n, ld, eps, [](double v) { return v; }, indptr, indices,
                    bad_row, prints, nt);
  return eps_rows(static_cast<const uint16_t*>(x), n, ld, floor_to_float(eps), [](uint16_t h) { return f16_to_f32(h); },
                  indptr, indices, bad_row, prints, nt);
}

void row_fingerprints(const void* x, int kind, int64_t rows, int64_t n, int64_t ld, uint64_t* out, int num_threads) {
  HILCORE_CHECK_MSG(rows >= 0 && n >= 0 && ld >= n && kind >= 0 && kind <= 2,
                    "expected rows >= 0, n >= 0, ld >= n and kind 0, 1 or 2, " +
                        values({{"rows", rows}, {"n", n}, {"ld", ld}, {"kind", kind}}));
  const int nt = num_threads < 1 ? 1 : num_threads;
#pragma omp parallel for schedule(static) num_threads(nt)
  for (int64_t i = 0; i < rows; ++i) {
    if (kind == 0) out[i] = row_print(static_cast<const float*>(x) + i * ld, n);
    else if (kind == 1) out[i] = row_print(static_cast<const double*>(x) + i * ld, n);
    else out[i] = row_print(static_cast<const uint16_t*>(x) + i * ld, n);
  }
}

}  // namespace hilcore
