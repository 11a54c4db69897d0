// Segments are independent: OpenMP hands whole segments (all runs) to threads,
// so every number below is computed in one fixed order per segment and the
// result does not depend on the thread count.
#include "cpu/subcluster_cpu.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "common/check.h"
#include "cpu/rowsum.h"

#if defined(__SSE2__)
#include "cpu/x86/lanes_sse2.h"
#endif

namespace hilcore {
namespace {

// The float32 dot product of every distance below, in one fixed order (the order GCC's
// `omp simd reduction` loop had at SSE2 width, which this code replaced bit for bit): four lanes, lane l
// adds the products of the columns 4 q + l, q ascending; the d % 4 tail columns go to lane 0 in
// order; then (((0 + l0) + l1) + l2) + l3. No fused multiply-add (-ffp-contract=off).
// dots<G> evaluates G independent pairs (pa[g], pb[g]) at once, each in exactly that order: the
// same bits as G calls of dot(), G times the independent chains.
template <int G>
inline void dots(const float* const* pa, const float* const* pb, int64_t d, float* out) {
  const int64_t d4 = d & ~int64_t{3};
  float l[G][4];
#if defined(__SSE2__)
  x86::lanes4_dot_sse2<G>(pa, pb, d4, l);
#else
  for (int g = 0; g < G; ++g) l[g][0] = l[g][1] = l[g][2] = l[g][3] = 0.f;
  for (int64_t q = 0; q < d4; q += 4)
    for (int g = 0; g < G; ++g)
      for (int r = 0; r < 4; ++r) l[g][r] = l[g][r] + pa[g][q + r] * pb[g][q + r];
#endif
  for (int g = 0; g < G; ++g) {
    for (int64_t t = d4; t < d; ++t) l[g][0] = l[g][0] + pa[g][t] * pb[g][t];
    out[g] = (((0.f + l[g][0]) + l[g][1]) + l[g][2]) + l[g][3];
  }
}

inline float dot(const float* a, const float* b, int64_t d) {
  float s;
  dots<1>(&a, &b, d, &s);
  return s;
}

// n pairs (pa[p], pb[p]) -> out[p], four at a time.
void dots_n(const float* const* pa, const float* const* pb, int64_t n, int64_t d, float* out) {
  int64_t p = 0;
  for (; p + 4 <= n; p += 4) dots<4>(pa + p, pb + p, d, out + p);
  switch (n - p) {
    case 3: dots<3>(pa + p, pb + p, d, out + p); break;
    case 2: dots<2>(pa + p, pb + p, d, out + p); break;
    case 1: dots<1>(pa + p, pb + p, d, out + p); break;
    default: break;
  }
}

// Score of member x against centre c from xc = dot(x, c): |c|^2 - 2 x.c (|x|^2 is common to the row;
// ties: the first minimum), and the seeding's squared distance. Every distance the k-means evaluates is
// one of these two expressions of a dot(), so the bounded and the plain loops compute the same bits
// for the pairs they both evaluate.
inline float score(float cc, float xc) { return cc - 2.f * xc; }
inline float seed_d2(float xx, float ccn, float xc) { return std::max(xx + ccn - 2.f * xc, 0.f); }

// float64 norms and distances for the bounds only (never for an assignment): four partial sums, so
// they vectorise; their rounding (~d 2^-53 relative) is far inside kTiny below.
double norm64(const float* a, int64_t d) {
  double s[4] = {0.0, 0.0, 0.0, 0.0};
  const int64_t d4 = d & ~int64_t{3};
  for (int64_t q = 0; q < d4; q += 4)
    for (int r = 0; r < 4; ++r) s[r] += static_cast<double>(a[q + r]) * static_cast<double>(a[q + r]);
  for (int64_t q = d4; q < d; ++q) s[0] += static_cast<double>(a[q]) * static_cast<double>(a[q]);
  return std::sqrt((s[0] + s[1]) + (s[2] + s[3]));
}

// Squared distances |a - b|^2 in float32 for the bounds only (never for an assignment), G pairs at once.
// Every term is non-negative, so whatever the order the computed sum s satisfies
// s (1 - g) <= |a - b|^2 <= s (1 + 2 g) (g below; one rounding each for the difference, the square
// and every addition), up to underflow (kAbs).
template <int G>
inline void sqdiffs(const float* const* pa, const float* const* pb, int64_t d, float* out) {
  const int64_t d4 = d & ~int64_t{3};
  float l[G][4];
#if defined(__SSE2__)
  x86::lanes4_sqdiff_sse2<G>(pa, pb, d4, l);
#else
  for (int g = 0; g < G; ++g) l[g][0] = l[g][1] = l[g][2] = l[g][3] = 0.f;
  for (int64_t q = 0; q < d4; q += 4)
    for (int g = 0; g < G; ++g)
      for (int r = 0; r < 4; ++r) {
        const float t = pa[g][q + r] - pb[g][q + r];
        l[g][r] = l[g][r] + t * t;
      }
#endif
  for (int g = 0; g < G; ++g) {
    for (int64_t t = d4; t < d; ++t) {
      const float v = pa[g][t] - pb[g][t];
      l[g][0] = l[g][0] + v * v;
    }
    out[g] = ((l[g][0] + l[g][1]) + l[g][2]) + l[g][3];
  }
}

void sqdiff_n(const float* const* pa, const float* const* pb, int64_t n, int64_t d, float* out) {
  int64_t p = 0;
  for (; p + 4 <= n; p += 4) sqdiffs<4>(pa + p, pb + p, d, out + p);
  for (; p < n; ++p) sqdiffs<1>(pa + p, pb + p, d, out + p);
}

// Rigorous rounding bound of the float32 scores above. For any summation order,
// |fl(a.b) - a.b| <= gamma_d |a| |b| with gamma_d = d u / (1 - d u), u = 2^-24 (Higham, Accuracy and
// Stability, 3.1); the one or two further roundings of score()/seed_d2() add at most 2u of the
// magnitudes involved. So |score - (|c|^2 - 2 x.c)| <= g (|c|^2 + 2 |x| |c|) and
// |seed_d2 - |x - c|^2| <= g (|x| + |c|)^2 with g = gamma_d + 4u. kTiny (relative) covers the float64
// arithmetic of the bounds themselves (errors ~1e-16 relative).
constexpr double kU = 0x1p-24;
constexpr double kTiny = 1e-9;
inline double slack_g(int64_t d) { return static_cast<double>(d) * kU / (1.0 - static_cast<double>(d) * kU) + 4 * kU; }

// Distances moved by centres and distances between centres, rounded so that bounds stay valid: a lower
// bound shrinks by a little more than the centre moved, an upper bound grows by a little more.
inline double up(double v) { return v * (1.0 + kTiny) + 1e-12; }
inline double down(double v) { return v * (1.0 - kTiny) - 1e-12; }
constexpr double kAbs = 1e-30;  // covers float32 underflow in the squared distances of sqdiffs
// bounds of |a - b| from a computed sqdiffs value s
inline double dist_upper(float s, double g) { return up(std::sqrt(static_cast<double>(s) * (1.0 + 2.0 * g) + kAbs)); }
inline double dist_lower(float s, double g) {
  return down(std::sqrt(std::max(0.0, static_cast<double>(s) * (1.0 - g) - kAbs)));
}
// an upper bound of |c| from cc = dot(c, c) (cc >= |c|^2 (1 - gamma_d))
inline double norm_upper(float cc, double g) { return up(std::sqrt(static_cast<double>(cc) * (1.0 + 2.0 * g) + kAbs)); }

struct Run {
  std::vector<float> cen;
  std::vector<int64_t> cnt, first;
  double inertia;
  int64_t evals = 0;  // member-centre distance evaluations (calls of dot(x_i, c))
};

// One k-means run (k-means++ seeding + Lloyd) on the rows x [n, d] of one segment. xx: float32 |x_i|^2
// (dot(x_i, x_i)), nx: float64 |x_i|. bounded: skip the distances that rigorous bounds prove cannot
// change the outcome (below); the result is bit for bit the plain loop's.
//
// Seeding, bounded: i's current minimum mind2_i was computed against seed o_i; U_i bounds the true
// |x_i - s_{o_i}| from above (mind2_i plus the rounding bound). For the new seed c the triangle
// inequality gives |x_i - c| >= |s_{o_i} - c| - U_i =: lb; when lb^2 exceeds mind2_i by more than the
// rounding bound, the computed seed_d2 would be >= mind2_i and std::min keeps mind2_i: it is skipped.
//
// Lloyd, bounded (Elkan's per-centre bounds): U_i >= true |x_i - c_{a_i}|, L_ij <= true |x_i - c_j|,
// kept valid across a centre move of delta_j (an upper bound of |c_j' - c_j|) by U += delta_a,
// L -= delta_j. The first step starts from the seeding's bounds (the centres are the seeds). Centre j
// is excluded for row i when L_ij^2 - U_i^2 > 2E + tiny, E the rounding bound of a score: then the
// computed score of j is strictly above the computed score of a, so j is neither the minimum nor tied
// with it. The row's new assignment is the first minimum, in index order, of the scores it did compute
// (a's always among them when any other is computed): exactly the plain loop's first minimum over all
// k scores. A centre whose members did not change is not recomputed (same members in the same order:
// the same float64 sums, the same bits) and moves by 0. (Elkan's centre-centre bound is left out: in
// these dimensions it rarely excludes a centre and costs k^2 / 2 distances a step.)
// One k-means run as a small object: the state below, one method per phase (seeding, the two kinds of
// assignment step, the update, the final assignment and inertia).
struct KMeansRun {
  const float* x;
  const float* xx;
  const double* nx;
  int64_t n, d, k;
  const double* u;
  bool bounded;
  double g;
  float inf = std::numeric_limits<float>::infinity();
  std::vector<float> cen, cc;
  int64_t evals = 0;
  // pairs to evaluate: (pa[p], pb[p]) -> val[p]; every distance goes through these, dots_n four at a time
  std::vector<const float*> pa, pb;
  std::vector<float> val;
  std::vector<int64_t> who;  // the row (or row * k + centre) of each pair
  // seeding state: the seed of each row's minimum, an upper bound of its distance, lower bounds per seed
  std::vector<int64_t> owner;
  std::vector<double> uo, lbs;
  // Lloyd state
  std::vector<int64_t> a, prev, cnt;
  std::vector<double> sums, ub, lb, delta;
  std::vector<float> sc, newc;
  std::vector<char> chg, cc_ok;  // cc_ok[j]: cc[j] is the norm of the current centre j
  bool have_bounds = false, moved = false;
  // gram: [n, n] dot(x_p, x_q) of the segment's rows when the caller built it (bounded runs of small
  // segments): the seeds are rows, so every seeding distance and the first Lloyd step's scores are
  // look-ups (dot is symmetric bit for bit: the products commute, the order of the sum is the same)
  const float* gram = nullptr;
  std::vector<int64_t> sidx;  // the row of every seed

  KMeansRun(const float* x_, const float* xx_, const double* nx_, int64_t n_, int64_t d_, int64_t k_,
            const double* u_, bool bounded_)
      : x(x_), xx(xx_), nx(nx_), n(n_), d(d_), k(k_), u(u_), bounded(bounded_), g(slack_g(d_)), cen(k_ * d_),
        cc(k_), owner(bounded_ ? n_ : 0, -1), uo(bounded_ ? n_ : 0), lbs(bounded_ ? n_ * k_ : 0), a(n_, -1),
        prev(n_, -1), cnt(k_, 0), sums(k_ * d_), ub(n_), lb(n_ * k_), delta(k_, 0.0), sc(n_ * k_), newc(d_),
        chg(k_), cc_ok(k_, 0), sidx(k_, 0) {
    pa.reserve(n * k);
    pb.reserve(n * k);
    who.reserve(n * k);
  }

  void run_pairs() {
    val.resize(pa.size());
    dots_n(pa.data(), pb.data(), static_cast<int64_t>(pa.size()), d, val.data());
    evals += static_cast<int64_t>(pa.size());
  }
  void clear_pairs() { pa.clear(); pb.clear(); who.clear(); }
  int64_t pick_uniform(double uu) const {
    return std::min(static_cast<int64_t>(std::floor(uu * static_cast<double>(n))), n - 1);
  }
  double seed_err(int64_t i, double nc) const {
    return g * (nx[i] + nc) * (nx[i] + nc) + kTiny * (1.0 + nx[i] * nx[i] + nc * nc);
  }

  // the new seed's lower-bounded distances to the earlier seeds (sd[p], p < t - 1)
  void seed_distances(int64_t t, const float* c, std::vector<double>& sd) {
    clear_pairs();
    for (int64_t p = 0; p + 1 < t; ++p) { pa.push_back(cen.data() + p * d); pb.push_back(c); }
    val.resize(pa.size());
    sqdiff_n(pa.data(), pb.data(), static_cast<int64_t>(pa.size()), d, val.data());
    for (int64_t p = 0; p + 1 < t; ++p) sd[p] = dist_lower(val[p], g);
  }

  // k-means++ seeding, one candidate per step
  void seed() {
    sidx[0] = pick_uniform(u[0]);
    std::memcpy(cen.data(), x + sidx[0] * d, sizeof(float) * d);
    const bool bnd = bounded && gram == nullptr;  // with the Gram matrix every distance is a look-up
    std::vector<float> mind2(n, inf), d2v(n);
    std::vector<char> need(n);
    std::vector<double> cs(n), sd(k);
    for (int64_t t = 1; t < k; ++t) {
      const float* c = cen.data() + (t - 1) * d;
      const float ccn = gram ? xx[sidx[t - 1]] : dot(c, c, d);  // xx[j] = dot(x_j, x_j), the same bits
      const double nc = bnd ? norm_upper(ccn, g) : 0.0;
      if (bnd && t > 1) seed_distances(t, c, sd);
      clear_pairs();
      for (int64_t i = 0; i < n; ++i) {
        need[i] = 1;
        if (gram) {
          need[i] = 0;
          d2v[i] = seed_d2(xx[i], ccn, gram[i * n + sidx[t - 1]]);
        } else if (bounded && owner[i] >= 0) {
          const double lbv = sd[owner[i]] - uo[i];
          need[i] = !(lbv > 0 && lbv * lbv > static_cast<double>(mind2[i]) + seed_err(i, nc));  // seed_d2 >= mind2
          if (!need[i]) lbs[i * k + t - 1] = lbv;
        }
        if (need[i]) { pa.push_back(x + i * d); pb.push_back(c); who.push_back(i); }
      }
      run_pairs();
      for (size_t p = 0; p < who.size(); ++p) d2v[who[p]] = seed_d2(xx[who[p]], ccn, val[p]);
      double acc = 0.0;
      for (int64_t i = 0; i < n; ++i) {
        if (need[i] || gram) {
          const float d2 = d2v[i];
          if (bnd) {
            const double e = seed_err(i, nc);
            lbs[i * k + t - 1] = down(std::sqrt(std::max(0.0, static_cast<double>(d2) - e)));
            if (d2 < mind2[i]) {
              owner[i] = t - 1;
              uo[i] = up(std::sqrt(static_cast<double>(d2) + e));
            }
          }
          mind2[i] = std::min(mind2[i], d2);
        }
        acc += static_cast<double>(mind2[i]);
        cs[i] = acc;
      }
      int64_t j;
      if (acc > 0) {
        const double target = u[t] * acc;
        j = std::upper_bound(cs.begin(), cs.end(), target) - cs.begin();  // first cs > target
        j = std::min(j, n - 1);
      } else {
        j = pick_uniform(u[t]);
      }
      sidx[t] = j;
      std::memcpy(cen.data() + t * d, x + j * d, sizeof(float) * d);
    }
    if (bnd && k > 1) {
      // the seeding's bounds are valid for the first Lloyd step (the centres are the seeds): candidate =
      // the seed of the row's seeding minimum, the last seed's lower bound unknown (0)
      for (int64_t i = 0; i < n; ++i) {
        a[i] = owner[i];
        ub[i] = uo[i];
        for (int64_t j = 0; j + 1 < k; ++j) lb[i * k + j] = lbs[i * k + j];
        lb[i * k + k - 1] = 0.0;
      }
      have_bounds = true;
    }
  }

  void norms() {  // cc[j] = dot(c_j, c_j), computed again only for the centres that changed since
    for (int64_t j = 0; j < k; ++j)
      if (!cc_ok[j]) {
        cc[j] = dot(cen.data() + j * d, cen.data() + j * d, d);
        cc_ok[j] = 1;
      }
  }
  int64_t first_min(const float* s) const {  // the plain loop's rule: first minimum
    float bs = inf;
    int64_t best = 0;
    for (int64_t j = 0; j < k; ++j)
      if (s[j] < bs) { bs = s[j]; best = j; }
    return best;
  }

  void assign_plain() {
    norms();
    clear_pairs();
    for (int64_t i = 0; i < n; ++i)
      for (int64_t j = 0; j < k; ++j) { pa.push_back(x + i * d); pb.push_back(cen.data() + j * d); }
    run_pairs();
    for (int64_t i = 0; i < n * k; ++i) sc[i] = score(cc[i % k], val[i]);
    for (int64_t i = 0; i < n; ++i) a[i] = first_min(sc.data() + i * k);
  }

  // bounds of true distances from computed scores, and the exclusion test (see one_run's comment)
  double ncm = 0.0;  // an upper bound of every centre's norm (this step)
  double err(int64_t i) const { return g * (ncm * ncm + 2.0 * nx[i] * ncm); }
  double tiny(int64_t i) const { return kTiny * (1.0 + nx[i] * nx[i] + ncm * ncm); }
  double upper(int64_t i, float s) const {
    return up(std::sqrt(std::max(0.0, static_cast<double>(s) + nx[i] * nx[i] + err(i) + tiny(i))));
  }
  double lower(int64_t i, float s) const {
    return down(std::sqrt(std::max(0.0, static_cast<double>(s) + nx[i] * nx[i] - err(i) - tiny(i))));
  }
  bool excluded(int64_t i, int64_t j) const {  // centre j provably scores above the candidate a[i]
    const double ui = ub[i], l = lb[i * k + j];
    return l > 0 && l * l - ui * ui > 2.0 * err(i) + tiny(i);
  }

  // pass 1 of a bounded step: move the bounds with the centres; rows whose every other centre is excluded
  // keep a[i]; the others get the score of their current centre (and a tighter upper bound). Returns them.
  std::vector<int64_t> bounded_pass1() {
    clear_pairs();
    for (int64_t i = 0; i < n; ++i) {
      double* li = lb.data() + i * k;
      if (moved) {
        if (delta[a[i]] > 0) ub[i] += up(delta[a[i]]);
        for (int64_t j = 0; j < k; ++j)
          if (delta[j] > 0) li[j] = std::max(0.0, li[j] - up(delta[j]));
      }
      bool all = true;
      for (int64_t j = 0; j < k && all; ++j) all = (j == a[i]) || excluded(i, j);
      if (!all) { pa.push_back(x + i * d); pb.push_back(cen.data() + a[i] * d); who.push_back(i); }
    }
    run_pairs();
    for (size_t p = 0; p < who.size(); ++p) {
      const int64_t i = who[p];
      float* si = sc.data() + i * k;
      for (int64_t j = 0; j < k; ++j) si[j] = inf;  // excluded centres: above a[i]'s score, never the minimum
      si[a[i]] = score(cc[a[i]], val[p]);
      ub[i] = upper(i, si[a[i]]);
    }
    return std::vector<int64_t>(who.begin(), who.end());
  }

  // the first Lloyd step with the Gram matrix: the centres are the seeds, every score a look-up
  void assign_from_gram() {
    norms();
    ncm = 0.0;
    for (int64_t j = 0; j < k; ++j) ncm = std::max(ncm, norm_upper(cc[j], g));
    for (int64_t i = 0; i < n; ++i) {
      for (int64_t j = 0; j < k; ++j) sc[i * k + j] = score(cc[j], gram[i * n + sidx[j]]);
      a[i] = first_min(sc.data() + i * k);
      ub[i] = upper(i, sc[i * k + a[i]]);
      for (int64_t j = 0; j < k; ++j) lb[i * k + j] = lower(i, sc[i * k + j]);
    }
    have_bounds = true;
  }

  void assign_bounded() {
    norms();
    ncm = 0.0;
    for (int64_t j = 0; j < k; ++j) ncm = std::max(ncm, norm_upper(cc[j], g));
    if (!have_bounds) {  // first step without the seeding's bounds: every distance
      assign_plain();
      for (int64_t i = 0; i < n; ++i) {
        ub[i] = upper(i, sc[i * k + a[i]]);
        for (int64_t j = 0; j < k; ++j) lb[i * k + j] = lower(i, sc[i * k + j]);
      }
      have_bounds = true;
      return;
    }
    const std::vector<int64_t> rows = bounded_pass1();
    // pass 2: the centres the tighter bound does not exclude
    clear_pairs();
    for (int64_t i : rows)
      for (int64_t j = 0; j < k; ++j)
        if (j != a[i] && !excluded(i, j)) {
          pa.push_back(x + i * d); pb.push_back(cen.data() + j * d); who.push_back(i * k + j);
        }
    run_pairs();
    for (size_t p = 0; p < who.size(); ++p) {
      const int64_t i = who[p] / k, j = who[p] % k;
      sc[who[p]] = score(cc[j], val[p]);
      lb[who[p]] = lower(i, sc[who[p]]);
    }
    for (int64_t i : rows) {
      const int64_t best = first_min(sc.data() + i * k);
      if (best != a[i]) {
        lb[i * k + a[i]] = lower(i, sc[i * k + a[i]]);
        ub[i] = upper(i, sc[i * k + best]);
        a[i] = best;
      }
    }
  }

  // the mean of every sub-cluster whose members changed (all of them in the plain loop)
  void update(int64_t it) {
    for (int64_t j = 0; j < k; ++j) chg[j] = !bounded || it == 0;
    if (bounded && it > 0)
      for (int64_t i = 0; i < n; ++i)
        if (a[i] != prev[i]) chg[a[i]] = chg[prev[i]] = 1;
    for (int64_t j = 0; j < k; ++j)
      if (chg[j]) {
        std::fill(sums.begin() + j * d, sums.begin() + (j + 1) * d, 0.0);
        cnt[j] = 0;
      }
    const rowsum::AddFn add = rowsum::ops().add;
    for (int64_t i = 0; i < n; ++i) {
      if (!chg[a[i]]) continue;
      double* s = sums.data() + a[i] * d;
      const float* xr = x + i * d;
      add(s, xr, d);
      ++cnt[a[i]];
    }
    moved = false;
    for (int64_t j = 0; j < k; ++j) {
      delta[j] = 0.0;
      if (!chg[j] || cnt[j] == 0) continue;
      float* cj = cen.data() + j * d;
      rowsum::ops().mean(sums.data() + j * d, cnt[j], d, newc.data());
      if (std::memcmp(newc.data(), cj, sizeof(float) * d) == 0) continue;  // the same centre, the same bits
      cc_ok[j] = 0;
      if (bounded) {  // how far the centre moved (an upper bound)
        const float* pn = newc.data();
        const float* po = cj;
        float s2;
        sqdiffs<1>(&pn, &po, d, &s2);
        delta[j] = dist_upper(s2, g);
        moved = true;
      }
      std::memcpy(cj, newc.data(), sizeof(float) * d);
    }
    prev = a;
  }

  // the winner's outputs: member counts, first member, inertia (inf with an empty sub-cluster)
  void finish(int64_t pos0, Run& out) {
    std::fill(cnt.begin(), cnt.end(), 0);
    std::vector<int64_t> first(k, std::numeric_limits<int64_t>::max());
    clear_pairs();
    for (int64_t i = 0; i < n; ++i) { pa.push_back(x + i * d); pb.push_back(cen.data() + a[i] * d); }
    run_pairs();
    double inertia = 0.0;
    for (int64_t i = 0; i < n; ++i) {
      const int64_t j = a[i];
      float d2 = xx[i] + cc[j] - 2.f * val[i];
      inertia += static_cast<double>(std::max(d2, 0.f));
      ++cnt[j];
      first[j] = std::min(first[j], pos0 + i);
    }
    for (int64_t j = 0; j < k; ++j)
      if (cnt[j] == 0) inertia = std::numeric_limits<double>::infinity();
    out.cen = std::move(cen);
    out.cnt = std::move(cnt);
    out.first = std::move(first);
    out.inertia = inertia;
    out.evals = evals;
  }
};

// g [n, n]: dot(x_p, x_q) for p <= q, mirrored (dot is symmetric bit for bit). Returns the dots evaluated.
int64_t gram_matrix(const float* x, int64_t n, int64_t d, std::vector<float>& g) {
  g.assign(n * n, 0.f);
  std::vector<const float*> pa, pb;
  std::vector<int64_t> at;
  for (int64_t p = 0; p < n; ++p)
    for (int64_t q = p; q < n; ++q) { pa.push_back(x + p * d); pb.push_back(x + q * d); at.push_back(p * n + q); }
  std::vector<float> v(pa.size());
  dots_n(pa.data(), pb.data(), static_cast<int64_t>(pa.size()), d, v.data());
  for (size_t i = 0; i < at.size(); ++i) {
    const int64_t p = at[i] / n, q = at[i] % n;
    g[p * n + q] = g[q * n + p] = v[i];
  }
  return static_cast<int64_t>(pa.size());
}

void one_run(const float* x, const float* xx, const double* nx, int64_t n, int64_t d, int64_t k, int64_t iters,
             const double* u, int64_t pos0, bool bounded, const float* gram, Run& out) {
  KMeansRun r(x, xx, nx, n, d, k, u, bounded);
  r.gram = bounded ? gram : nullptr;
  r.seed();
  bool converged = false;
  for (int64_t it = 0; it < iters; ++it) {
    if (!bounded) r.assign_plain();
    else if (it == 0 && r.gram) r.assign_from_gram();
    else r.assign_bounded();
    if (it > 0 && r.a == r.prev) { converged = true; break; }
    r.update(it);
  }
  // the final assignment: when the loop stopped on an unchanged assignment the centres did not move
  // since, and assigning again gives that same assignment
  if (!bounded) r.assign_plain();
  else if (!converged) r.assign_bounded();
  r.finish(pos0, out);
}

// The rows of one segment, contiguous, with their float32 |x|^2 (dot(x, x)) and float64 |x|: read in place
// (rows = null: the segment is xm's rows start .. start + n) or gathered through the row ids rows[start + t]
// into a buffer of the thread (the same values either way, so the same bits).
struct SegmentRows {
  std::vector<float> buf, xx;
  std::vector<double> nx;
  const float* x = nullptr;
  void load(const float* xm, const int64_t* rows, int64_t start, int64_t n, int64_t d) {
    if (rows) {
      buf.resize(n * d);
      for (int64_t t = 0; t < n; ++t) std::memcpy(buf.data() + t * d, xm + rows[start + t] * d, sizeof(float) * d);
      x = buf.data();
    } else {
      x = xm + start * d;
    }
    xx.resize(n);
    nx.resize(n);
    for (int64_t t = 0; t < n; ++t) {
      xx[t] = dot(x + t * d, x + t * d, d);
      nx[t] = norm64(x + t * d, d);
    }
  }
};

// Every run of one segment of n rows (starting at position pos0 of the members); the lowest inertia wins.
void segment_kmeans(const SegmentRows& seg, int64_t pos0, int64_t n, int64_t d, int64_t k, int64_t runs,
                    int64_t iters, const double* u, bool bounded, float* cen, int64_t* cnt, int64_t* first,
                    int64_t* evals) {
  Run best, cur;
  best.inertia = std::numeric_limits<double>::infinity();
  // bounded runs of a segment small enough that its Gram matrix costs fewer distances than the runs'
  // seedings (runs (k - 1) n) take it: n (n + 1) / 2 dots, shared by every run
  std::vector<float> gram;
  int64_t ev = 0;
  if (bounded && k > 1 && n + 1 < 2 * runs * (k - 1)) ev = gram_matrix(seg.x, n, d, gram);
  for (int64_t r = 0; r < runs; ++r) {
    one_run(seg.x, seg.xx.data(), seg.nx.data(), n, d, k, iters, u + r * k, pos0, bounded,
            gram.empty() ? nullptr : gram.data(), cur);
    ev += cur.evals;
    if (cur.inertia < best.inertia || r == 0) std::swap(best, cur);  // strict: ties keep the earlier run
  }
  std::memcpy(cen, best.cen.data(), sizeof(float) * k * d);
  *evals = ev;
  const bool ok = std::isfinite(best.inertia);
  for (int64_t j = 0; j < k; ++j) {
    cnt[j] = ok ? best.cnt[j] : 0;
    first[j] = best.first[j];
  }
}

}  // namespace

int cluster_centers_cpu(const float* x, int64_t n, int64_t d, const int64_t* labels, int64_t c, float* out) {
  HILCORE_CHECK_MSG(n >= 0 && d > 0 && c > 0, values({{"n", n}, {"d", d}, {"c", c}}));
  for (int64_t i = 0; i < n; ++i)
    HILCORE_CHECK_MSG(labels[i] >= -1 && labels[i] < c,
                      "labels[" + std::to_string(i) + "] = " + std::to_string(labels[i]) + ": expected -1 or a cluster in [0, " +
                          std::to_string(c) + ")");
  // the members of every cluster in ascending row order (a counting sort), then one cluster per task: its
  // rows are read whole (contiguous, prefetched) and summed into one float64 row, in ascending row order
  // per column (the sums do not depend on the thread count)
  std::vector<int64_t> start(c + 1, 0);
  for (int64_t i = 0; i < n; ++i)
    if (labels[i] >= 0) ++start[labels[i] + 1];
  for (int64_t j = 0; j < c; ++j) start[j + 1] += start[j];
  std::vector<int64_t> members(start[c]), fill(start.begin(), start.end() - 1);
  for (int64_t i = 0; i < n; ++i)
    if (labels[i] >= 0) members[fill[labels[i]]++] = i;
  const rowsum::Ops& rs = rowsum::ops();
#pragma omp parallel
  {
    std::vector<double> s(d);
#pragma omp for schedule(dynamic, 4)
    for (int64_t j = 0; j < c; ++j) {
      const int64_t cnt = start[j + 1] - start[j];
      float* o = out + j * d;
      if (cnt == 0) { std::fill(o, o + d, 0.f); continue; }
      std::fill(s.begin(), s.end(), 0.0);
      for (int64_t t = start[j]; t < start[j + 1]; ++t) {
        const float* xr = x + members[t] * d;
        rs.add(s.data(), xr, d);
      }
      rs.mean(s.data(), cnt, d, o);
    }
  }
  return 0;
}

int kmeans_segments_cpu(const float* xm, int64_t m, int64_t d, const int64_t* starts, const int64_t* sizes,
                        int64_t e, int64_t k, int64_t runs, int64_t iters, const double* u, bool bounded,
                        float* cen, int64_t* cnt, int64_t* first, int64_t* evals, const int64_t* rows,
                        const int64_t* cen_rows) {
  HILCORE_CHECK_MSG(m >= 0 && d > 0 && e >= 0 && k > 0 && runs > 0 && iters > 0,
                    values({{"m", m}, {"d", d}, {"e", e}, {"k", k}, {"runs", runs}, {"iters", iters}}));
  for (int64_t s = 0; s < e; ++s)
    HILCORE_CHECK_MSG(sizes[s] > k && starts[s] >= 0 && starts[s] + sizes[s] <= m,
                      "segment " + std::to_string(s) + ": " +
                          values({{"start", starts[s]}, {"size", sizes[s]}, {"k", k}, {"m", m}}) +
                          ": expected more than k rows inside xm");
#pragma omp parallel
  {
    SegmentRows seg;
#pragma omp for schedule(dynamic, 1)
    for (int64_t s = 0; s < e; ++s) {
      seg.load(xm, rows, starts[s], sizes[s], d);
      float* cs = cen + (cen_rows ? cen_rows[s] : s) * k * d;
      segment_kmeans(seg, starts[s], sizes[s], d, k, runs, iters, u + s * runs * k, bounded, cs, cnt + s * k,
                     first + s * k, evals + s);
    }
  }
  return 0;
}

}  // namespace hilcore
