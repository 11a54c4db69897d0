// Host-callable launchers of the CUDA kernels (kernels/cuda/*.cu).
//
// Plain C++: no CUDA types. Pointers are device pointers, `stream` is a
// cudaStream_t passed as void* (nullptr: the legacy default stream). Each
// launcher enqueues its kernels asynchronously and returns a cudaError_t as
// int (0: success); error_string() turns it into text. A launch argument the
// kernels cannot run with throws hilcore::KernelError naming the condition
// (kernels/common/check.h). Empty inputs (zero rows) launch nothing and return
// 0. Node ids inside the pipeline are int32 (n < 2^31), offsets int64. Count
// and fill passes are separate launchers, their arguments grouped in the
// structs below. The binding layer (bindings/cuda_*.cpp) checks sizes; the
// Python layer allocates every buffer with torch and does the exclusive scans
// between a count pass and its fill pass.
#pragma once
#include <cstdint>

namespace hilcore {
namespace cuda {

const char* error_string(int status);
// CUDA driver version at run time (1000 * major + 10 * minor; 0: no driver, -1: query failed)
// and the CUDART_VERSION of the toolkit this library was compiled with (runtime_cuda.cu).
int driver_version();
int runtime_version_built();

// ---- argument structs --------------------------------------------------------
// Sparse rows with int32 columns (CSR): row i's entries at [ptr[i], ptr[i + 1]) of
// idx (and val, when the rows carry values: V, V', the postings). An output of a
// fill pass is written through the same struct (idx and val are then outputs).
struct DeviceRows {
  const int64_t* ptr = nullptr;
  int32_t* idx = nullptr;
  float* val = nullptr;
};

// A kNN ranking: rank [n, ld_rank] int64, row i = i's neighbours best first (i at
// column 0), first k1 columns used, entries in [0, n); kh1 = min(round_half_even(k1/2) + 1, k1).
struct Ranking {
  const int64_t* rank = nullptr;
  int64_t n = 0;
  int64_t ld_rank = 0;
  int k1 = 0;
  int kh1 = 0;
};

// One launch of the last Jaccard stage: the listed rows ids [m] and the hash-table
// regions of its warps (see "Sparse Jaccard" below). shared: the regions live in
// dynamic shared memory (8 per block); else `regions` warps each own
// region_slots slots of the global scratch buffers.
struct TableLaunch {
  const int64_t* ids = nullptr;
  int64_t m = 0;
  bool shared = true;
  int64_t regions = 0;
  int64_t region_slots = 0;
  int32_t* scratch_keys = nullptr;  // [regions * region_slots] (global launches)
  float* scratch_vals = nullptr;    // [regions * region_slots] (global launches of the fill pass)
};

// Where the fill pass stages each listed row's kept pairs: row i's at
// idx/val[offsets[i - row0] ...], room offsets[i - row0 + 1] - offsets[i - row0].
struct PairStaging {
  int64_t row0 = 0;
  const int64_t* offsets = nullptr;
  int64_t* kept = nullptr;  // [n]: kept[i] = pairs staged for row i
  int32_t* idx = nullptr;
  float* val = nullptr;
};

// The CSR distances DBSCAN reads: row i's stored (j, d) at [indptr[i], indptr[i + 1]);
// neighbours of i: i and every stored j != i with d <= eps (float32 compare).
struct Distances {
  const int64_t* indptr = nullptr;
  const int64_t* indices = nullptr;
  const float* data = nullptr;
  int64_t n = 0;
  float eps = 0.f;
};

// The bits of a stage's device error word (*err, preset to 0): a table too big for
// its region, or one that filled up, sets a bit instead of overrunning.
constexpr int kErrCountRegion = 1;  // count pass: a row's table is larger than its launch's region
constexpr int kErrCountFull = 2;    // count pass: a row's keys-only table filled up
constexpr int kErrFillRegion = 4;   // fill pass: a row's table is larger than its launch's region
constexpr int kErrFillStaging = 8;  // fill pass: a row kept more pairs than its staging room

// ---- k-reciprocal Jaccard (jaccard_cuda.cu) ---------------------------------
// rank: [n, ld_rank] int64, row i = i's neighbours best first (i at column 0),
// first k1 columns used, entries in [0, n). kh1 = min(round_half_even(k1/2) + 1, k1).
// f1 [n, k1]: f1[i, c] = 1 iff i is among the first k1 entries of rank[rank[i, c]].
// fh [n, kh1]: fh[i, c] = 1 iff i is among the first kh1 entries of rank[rank[i, c]].
int krecip_flags(const Ranking& r, uint8_t* f1, uint8_t* fh, void* stream);

// Expansion, raw (with repeats): R(i, k1) followed by R(c, kh) of every
// qualifying c in R(i, k1). Count pass writes raw_count [n]; fill pass writes
// raw[raw_ptr[i] ...] (raw_ptr = exclusive scan of raw_count, [n+1]).
// (raw: ptr = raw_ptr, idx = raw, no values)
int expand_count(const Ranking& r, const uint8_t* f1, const uint8_t* fh, int64_t* raw_count, void* stream);
int expand_fill(const Ranking& r, const uint8_t* f1, const uint8_t* fh, const DeviceRows& raw, void* stream);

// Unique: first[p] = 1 iff raw[p] does not occur earlier in its row; e_count[i]
// = distinct values of row i.
int unique_count(const DeviceRows& raw, int64_t n, uint8_t* first, int64_t* e_count, void* stream);
// E(i) sorted ascending into e_idx[e_ptr[i] ...] and the softmax weights
// V[i, j] = softmax_j(-(2 - 2 x_i.x_j)) into e_val. x: [n, d] float32 row-major.
// (e: ptr = e_ptr, the scan of e_count; idx and val are written)
int unique_weights(const float* x, int64_t n, int64_t d, const DeviceRows& raw, const uint8_t* first,
                   const DeviceRows& e, void* stream);

// Local query expansion V'[i] = mean over a < k2 of V[rank[i, a]] (union of
// sorted supports). Count pass: q_count [n]; fill pass: q_idx/q_val at q_ptr.
// (the first k2 columns of r's ranking; q: ptr = the scan of q_count, idx and val written)
int query_expansion_count(const DeviceRows& e, const Ranking& r, int k2, int64_t* q_count, void* stream);
int query_expansion_fill(const DeviceRows& e, const Ranking& r, int k2, const DeviceRows& q, void* stream);

// Sparse Jaccard over V' (CSR q_*) and its transpose (postings p_*: for each
// column t, the rows holding t in ascending row order, with their values).
// Per-row hash tables: kernels/cuda/jaccard_table.h. Rows are given as a list
// ids [m] (int64 row numbers, TableLaunch). Each warp owns a region of region_slots
// slots (a power of two >= 32, >= every listed row's table): `shared` puts the
// regions in dynamic shared memory (8 per block; region_slots at most the
// pass's kJaccard*SmemSlots, and what jaccard_smem_slots reports), else in global
// memory, where the launch runs exactly `regions` warps (a multiple of 8), warp
// w owning scratch[w * region_slots, (w + 1) * region_slots). A table too big
// for its region, or a table that fills up, sets a kErr* bit of *err (device int,
// preset to 0) instead of overrunning. q: V' (values), p: its postings (idx = rows).
constexpr int64_t kJaccardPartnersSmemSlots = 2048;  // int32 keys: 8 KiB per warp, 64 KiB per 256-thread block
constexpr int64_t kJaccardRowsSmemSlots = 1024;      // int32 key + float value: 8 KiB per warp, 64 KiB per block
// The largest shared-memory regions the current device allows (per pass, <= the
// constants above; 0: none), from its opt-in shared memory per block.
int jaccard_smem_slots(int64_t* partners_slots, int64_t* rows_slots);

// slots[i] = capacity_for(min(n, sum over t in supp(i) of |postings(t)|)): a
// power of two >= 32 with room for every distinct partner at load <= 1/2.
int jaccard_slots(const DeviceRows& q, const DeviceRows& p, int64_t n, int64_t* slots, void* stream);
// The count pass: the exact distinct partners of each listed row (keys-only table
// of bound_slots[i] slots): partners[i], and slots[i] = capacity_for(partners[i]).
int jaccard_rows_count(const DeviceRows& q, const DeviceRows& p, const TableLaunch& launch,
                       const int64_t* bound_slots, int64_t* partners, int64_t* slots, int* err, void* stream);
// The fill pass: m(i, j) = sum_t min(V'[i, t], V'[j, t]) in ascending t
// (bit-identical to m(j, i)) in a table of slots[i] slots, then the kept pairs:
// j == i (stored as 0), or m > 0 and d = max(0, 1 - m/(2 - m)) <= max_distance.
// Row i's kept (j, d) go to its staging (PairStaging; room >= its partners) in
// table order, kept[i] their count.
int jaccard_rows_fill(const DeviceRows& q, const DeviceRows& p, const TableLaunch& launch, const int64_t* slots,
                      float max_distance, const PairStaging& out, int* err, void* stream);

// ---- DBSCAN on CSR distances (dbscan_cuda.cu) --------------------------------
// Neighbours of i: i and every stored j != i with data <= eps (Distances).
// core[i] = 1 iff neighbours >= min_samples.
int dbscan_core(const Distances& g, int64_t min_samples, uint8_t* core, void* stream);
// Union-find over core-core edges (hook the larger root under the smaller), then
// root[i] = the smallest core index of i's component for core i, -1 otherwise.
// parent: [n] int32 scratch.
int dbscan_components(const Distances& g, const uint8_t* core, int32_t* parent, int32_t* root, void* stream);
// root_cum[r] = number of component roots <= r (inclusive scan of root[r] == r).
// labels[i] = root_cum[root[i]] - 1 for core i; for the rest the smallest such
// label over core neighbours, else -1.
int dbscan_labels(const Distances& g, const uint8_t* core, const int32_t* root, const int64_t* root_cum,
                  int64_t* labels, void* stream);

}  // namespace cuda
}  // namespace hilcore
