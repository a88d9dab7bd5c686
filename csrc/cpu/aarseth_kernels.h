// Aarseth's derivatives on the CPU: the acceleration, jerk, snap and crackle of
// every body (gravity.h has the pair formulas) in two all-pairs passes,
//   pass 1: acc and jerk of every body (from positions and velocities);
//   pass 2: snap and crackle (they need every body's acc and jerk).
//
// Each pass visits every pair i < j once: the pair's mass-free terms t (odd in
// the relative vectors) give body i +(m_j / s^3) t and body j -(m_i / s^3) t,
// half the pair work of a row-per-body sum. Partners go W at a time through
// vector lanes with one simd::rsqrt per pair. The body arrays are copied to
// (B, D, Np) with Np = N rounded up to W (zero padding), so every load is a
// full vector; lanes outside i < j < N are masked by index, never by a test
// on the distance (coincident bodies without softening give NaN, as the
// force does).
//
// Determinism: the rows of a system are cut into blocks that depend on N only,
// never on the thread count. A task owns two blocks (r and nb - 1 - r, so that
// the triangle's work is balanced) and sums into its own (2, D, Np) buffer: its
// rows' sums over partners j > i, and their pull on those partners. The last
// task of a system to finish adds its buffers in task order, so every sum has
// a fixed order and the result is the same on every run and for every thread
// count.
// Extra memory: tasks x 2 D Np values per system, at most 16 tasks
// (16 x 6 x 8 = 768 bytes per body in 3-D float64).
#pragma once

#include <algorithm>
#include <atomic>
#include <type_traits>
#include <utility>
#include <vector>

#include <ATen/Parallel.h>

#include "cpu/simd.h"
#include "gravity.h"

namespace aits {
namespace aarseth_kernels {

using simd::Vec;

template <typename T>
constexpr int64_t kW = simd::Traits<T>::W;

// N rounded up to a multiple of the vector width.
template <typename T>
int64_t padded(int64_t N) {
  return (N + kW<T> - 1) / kW<T> * kW<T>;
}

// The row blocks of one system of N bodies: nb blocks of tb rows (the last
// may be shorter), about 64 rows each and at most 32 of them; task r of
// `tasks` owns blocks r and nb - 1 - r.
struct RowBlocks {
  int64_t nb, tb, tasks;
  explicit RowBlocks(int64_t N)
      : nb(std::clamp<int64_t>((N + 63) / 64, 1, 32)), tb((N + nb - 1) / nb), tasks((nb + 1) / 2) {}

  template <typename Row>
  void for_rows(int64_t task, int64_t N, const Row& row) const {
    const auto block = [&](int64_t k) {
      for (int64_t i = k * tb; i < std::min(N, (k + 1) * tb); ++i) row(i);
    };
    block(task);
    if (nb - 1 - task != task) block(nb - 1 - task);
  }
};

// v where the mask is set, 0 elsewhere (a select: NaN in a dropped lane stays out).
template <typename T, bool kEdge>
AITS_SIMD Vec<T> keep(const simd::Mask<T>& mask, const Vec<T>& v) {
  if constexpr (kEdge) {
    return mask ? v : Vec<T>{};
  } else {
    return v;
  }
}

// The pairs (i, j), j in [j, j + W), of one row: adds body i's shares to s0, s1
// and subtracts body j's from the task buffer rows acc0, acc1 (D rows of Np
// each). kEdge: the first or last vector of the row, lanes outside i < j < N masked.
// cols[k][c]: coordinate c of input k of this system (positions first).
// obs: the pass's observer, shown every vector of pairs (Obs::observe).
template <typename T, int D, int K, bool kEdge, typename Terms, typename Obs>
AITS_SIMD void pair_vector(const Terms& terms, const T* const (&cols)[K][D], const T* mb,
                           const T (&own)[K][D], T mi, T eps2, int64_t i, int64_t j, int64_t N,
                           T* __restrict acc0, T* __restrict acc1, int64_t Np,
                           Vec<T> (&s0)[D], Vec<T> (&s1)[D], typename Obs::Acc* obs) {
  simd::Mask<T> mask{};
  if constexpr (kEdge) mask = simd::lanes_between<T>(i, j, N);
  Vec<T> rel[K][D], t0[D], t1[D];
  for (int k = 0; k < K; ++k) {
    for (int c = 0; c < D; ++c) rel[k][c] = simd::load(cols[k][c] + j) - own[k][c];
  }
  Vec<T> r2 = eps2 + rel[0][0] * rel[0][0];
  for (int c = 1; c < D; ++c) r2 += rel[0][c] * rel[0][c];
  const Vec<T> inv = simd::rsqrt(r2), mj = simd::load(mb + j);
  const Vec<T> inv3 = terms(rel, inv, t0, t1);
  Obs::template observe<kEdge>(obs, rel, r2, inv, mask, mi, mj);
  const Vec<T> qi = mj * inv3;                        // m_j / s^3, on body i
  const Vec<T> qj = keep<T, kEdge>(mask, mi * inv3);  // m_i / s^3, on body j
  for (int c = 0; c < D; ++c) {
    s0[c] += keep<T, kEdge>(mask, qi * t0[c]);
    s1[c] += keep<T, kEdge>(mask, qi * t1[c]);
    T* p0 = acc0 + c * Np + j;
    T* p1 = acc1 + c * Np + j;
    simd::store<T>(p0, simd::load(p0) - keep<T, kEdge>(mask, qj * t0[c]));
    simd::store<T>(p1, simd::load(p1) - keep<T, kEdge>(mask, qj * t1[c]));
  }
}

// Row i of one system against its partners j > i (see pair_vector).
template <typename T, int D, int K, typename Terms, typename Obs>
void pair_row(const Terms& terms, const T* const (&cols)[K][D], const T* mb, T eps2, int64_t i,
              int64_t N, int64_t Np, T* __restrict acc0, T* __restrict acc1,
              typename Obs::Acc* obs) {
  constexpr int64_t W = kW<T>;
  T own[K][D];
  for (int k = 0; k < K; ++k) {
    for (int c = 0; c < D; ++c) own[k][c] = cols[k][c][i];
  }
  const T mi = mb[i];
  Vec<T> s0[D] = {}, s1[D] = {};
  const int64_t first = (i + 1) / W * W;  // the vector holding partner i + 1
  const int64_t full_end = N / W * W;
  if (first < N) {
    pair_vector<T, D, K, true, Terms, Obs>(terms, cols, mb, own, mi, eps2, i, first, N, acc0,
                                             acc1, Np, s0, s1, obs);
  }
  int64_t j = first + W;
  for (; j < full_end; j += W) {
    pair_vector<T, D, K, false, Terms, Obs>(terms, cols, mb, own, mi, eps2, i, j, N, acc0, acc1,
                                            Np, s0, s1, obs);
  }
  if (j < N) {
    pair_vector<T, D, K, true, Terms, Obs>(terms, cols, mb, own, mi, eps2, i, j, N, acc0, acc1,
                                           Np, s0, s1, obs);
  }
  for (int c = 0; c < D; ++c) {
    acc0[c * Np + i] += simd::sum_lanes<T>(s0[c]);
    acc1[c * Np + i] += simd::sum_lanes<T>(s1[c]);
  }
}

// A pass's observer: shown every vector of pairs a pass visits, with their
// relative vectors rel (K x D, positions first), s^2 = r^2 + eps^2, 1/s, the
// lanes' mask (kEdge only: lanes outside i < j < N are off; all are on otherwise)
// and the masses; it accumulates into the Acc of the visiting task. This one does
// nothing (the plain pass); encounter_kernels::PairTimesObserver takes the pair
// times of the encounter features from both passes of derivatives().
struct NoObserver {
  struct Acc {};
  Acc* acc(int64_t) { return nullptr; }
  template <bool kEdge, typename... Args>
  static AITS_SIMD void observe(Args&&...) {}
};

// One symmetric pass over the pairs of every system. in: K padded (B, D, Np)
// arrays of body vectors whose differences the pair terms take (positions
// first); mass (B, Np) padded with 0. terms(rel, inv, t0, t1) -> 1 / s^3 fills
// the two mass-free terms of W pairs. Writes G times the two sums to out0 and
// out1 (B, N, D) and, when soa0 is not null, to soa0 and soa1 (padded
// (B, D, Np), padding untouched) as well. buf: scratch, resized here (each
// task zeroes its own part). obs: shown every pair; task t (of RowBlocks(N).tasks)
// of system b accumulates into obs.acc(b * tasks + t).
template <typename T, int D, int K, typename Terms, typename Obs = NoObserver>
void symmetric_pass(const T* const (&in)[K], const T* mass, int64_t B, int64_t N, T eps2, T G,
                    const Terms& terms, std::vector<T>& buf, T* out0, T* out1, T* soa0,
                    T* soa1, Obs&& obs = Obs{}) {
  const RowBlocks blocks(N);
  const int64_t Np = padded<T>(N);
  const int64_t stride = 2 * D * Np;  // one task's buffer: rows (q, c) at (q D + c) Np
  buf.resize(static_cast<size_t>(B * blocks.tasks * stride));
  constexpr int64_t kChunk = 256;

  // G times the sums of bodies [j0, j0 + n) of system b, n <= kChunk: the task
  // buffers added in task order.
  const auto finish = [&](int64_t b, int64_t j0, int64_t n) {
    T s[kChunk];
    for (int q = 0; q < 2; ++q) {
      T* out = q == 0 ? out0 : out1;
      T* soa = q == 0 ? soa0 : soa1;
      for (int c = 0; c < D; ++c) {
        const T* rows = buf.data() + b * blocks.tasks * stride + (q * D + c) * Np + j0;
        std::copy(rows, rows + n, s);
        for (int64_t t = 1; t < blocks.tasks; ++t) {
          for (int64_t j = 0; j < n; ++j) s[j] += rows[t * stride + j];
        }
        for (int64_t j = 0; j < n; ++j) out[(b * N + j0 + j) * D + c] = G * s[j];
        if (soa != nullptr) {
          for (int64_t j = 0; j < n; ++j) soa[(b * D + c) * Np + j0 + j] = G * s[j];
        }
      }
    }
  };

  // tasks of each system done so far: the last one to finish adds the buffers
  // (in task order, whichever thread that is), so no second parallel region
  // (and barrier) is needed
  std::vector<std::atomic<int64_t>> done(static_cast<size_t>(B));
  for (auto& d : done) d.store(0, std::memory_order_relaxed);
  const int64_t pairs_per_task = std::max<int64_t>(1, N * N / 2 / blocks.tasks);
  at::parallel_for(0, B * blocks.tasks, std::max<int64_t>(1, 16384 / pairs_per_task),
                   [&](int64_t begin, int64_t end) {
    for (int64_t task = begin; task < end; ++task) {
      const int64_t b = task / blocks.tasks;
      T* acc = buf.data() + task * stride;
      std::fill(acc, acc + stride, T(0));
      const T* cols[K][D];
      for (int k = 0; k < K; ++k) {
        for (int c = 0; c < D; ++c) cols[k][c] = in[k] + (b * D + c) * Np;
      }
      using O = std::remove_reference_t<Obs>;
      typename O::Acc* seen = obs.acc(task);
      blocks.for_rows(task % blocks.tasks, N, [&](int64_t i) {
        pair_row<T, D, K, Terms, O>(terms, cols, mass + b * Np, eps2, i, N, Np, acc, acc + D * Np,
                                    seen);
      });
      // acq_rel: the finisher sees every other task's buffer of this system
      if (done[b].fetch_add(1, std::memory_order_acq_rel) + 1 == blocks.tasks) {
        for (int64_t j0 = 0; j0 < N; j0 += kChunk) finish(b, j0, std::min(N - j0, kChunk));
      }
    }
  });
}

// (B, D, N) -> (B, D, Np), zero-padded.
template <typename T>
std::vector<T> pad_rows(const T* src, int64_t rows, int64_t N, int64_t Np) {
  std::vector<T> out(static_cast<size_t>(rows * Np), T(0));
  for (int64_t r = 0; r < rows; ++r) std::copy(src + r * N, src + (r + 1) * N, out.data() + r * Np);
  return out;
}

// acc, jerk, snap, crackle: (B, N, D) outputs; x, v: (B, D, N) positions and
// velocities; mass (B, N). obs: both passes' observer (rel: x, v in pass 1; x, v,
// acc, jerk in pass 2).
template <typename T, int D, typename Obs = NoObserver>
void derivatives(const T* x, const T* v, const T* mass, int64_t B, int64_t N, T eps2, T G,
                 T* acc, T* jerk, T* snap, T* crackle, Obs&& obs = Obs{}) {
  const int64_t Np = padded<T>(N);
  const std::vector<T> xp = pad_rows(x, B * D, N, Np), vp = pad_rows(v, B * D, N, Np);
  const std::vector<T> mp = pad_rows(mass, B, N, Np);
  // pass 1's acc and jerk, padded, for pass 2
  std::vector<T> ap(static_cast<size_t>(B * D * Np), T(0)), kp(ap.size(), T(0));
  std::vector<T> buf;
  const T* pass1[2] = {xp.data(), vp.data()};
  symmetric_pass<T, D, 2>(
      pass1, mp.data(), B, N, eps2, G,
      [](const Vec<T> (&rel)[2][D], const Vec<T>& inv, Vec<T> (&tA)[D], Vec<T> (&tJ)[D])
          __attribute__((always_inline)) {
            return aarseth_acc_jerk_terms<D, T>(rel[0], rel[1], inv, tA, tJ);
          },
      buf, acc, jerk, ap.data(), kp.data(), obs);
  const T* pass2[4] = {xp.data(), vp.data(), ap.data(), kp.data()};
  symmetric_pass<T, D, 4>(
      pass2, mp.data(), B, N, eps2, G,
      [](const Vec<T> (&rel)[4][D], const Vec<T>& inv, Vec<T> (&tS)[D], Vec<T> (&tC)[D])
          __attribute__((always_inline)) {
            return aarseth_snap_crackle_terms<D, T>(rel[0], rel[1], rel[2], rel[3], inv, tS, tC);
          },
      buf, snap, crackle, nullptr, nullptr, std::forward<Obs>(obs));
}

}  // namespace aarseth_kernels
}  // namespace aits
