// Few-body CPU kernels: many small systems (N <= kMaxBodies<T>), one whole
// system per loop iteration, a plain scalar loop over its pairs.
//
// The all-pairs kernels of gravity_cpu.cpp and aarseth_kernels.h are built for
// one system of many bodies: SIMD over partners, an (B, D, N) copy of the
// inputs, vector lanes set up and combined per row. For three bodies that
// set-up costs many times the two pair interactions of a row. These kernels
// read the (B, N, D) tensors in place and keep no per-row lanes.
//
// Agreement: for N <= kMaxBodies<T> (at most W - 1 partners a row, W the lane
// count of the generic kernels), the generic divide kernels sum every row
// sequentially, j = 0, 1, ... on each side of i, then add the two sides; these
// kernels do exactly that with the same pair formulas (gravity.h), so
// forward, forward-with-statistics and potential are bit-identical to the
// generic "divide" kernels. Aarseth's derivatives use 1 / sqrt per pair
// instead of the generic kernel's vector rsqrt estimate: equal to rounding.
//
// Determinism: each system is summed by one thread in a fixed order, so the
// results do not depend on the thread count.
#pragma once

#include <cmath>
#include <limits>
#include <type_traits>

#include <ATen/Parallel.h>

#include "gravity.h"

namespace aits {
namespace fewbody {

// The largest N these kernels take: W bodies (W = 64 bytes / sizeof(T), the
// generic kernels' lane count), so that every row has fewer than W partners.
template <typename T>
constexpr int64_t kMaxBodies = 64 / sizeof(T);

// Systems per parallel task: about 4096 pair interactions.
inline int64_t grain(int64_t N) { return std::max<int64_t>(1, 4096 / std::max<int64_t>(N * N, 1)); }

// Body j of a system stored (N, D): a Vec3 with z = 0 in 2-D.
template <typename T, int D>
AITS_HD Vec3<T> body(const T* p, int64_t j) {
  return {p[j * D], p[j * D + 1], D == 3 ? p[j * D + 2] : T(0)};
}

template <typename T>
AITS_HD Vec3<T> rel(const Vec3<T>& a, const Vec3<T>& b) {
  return {a.x - b.x, a.y - b.y, a.z - b.z};
}

// acc (B, N, D) and/or phi (B, N) of positions x (B, N, D): as the generic
// forward kernel, "divide" form.
template <typename T, int D, bool kAcc, bool kPhi>
void forward(const T* x, const T* mass, int64_t B, int64_t N, T eps2, T G, T* acc, T* phi) {
  at::parallel_for(0, B, grain(N), [&](int64_t begin, int64_t end) {
    for (int64_t b = begin; b < end; ++b) {
      const T* xb = x + b * N * D;
      const T* mb = mass + b * N;
      // every pair's 1 / s once (symmetric in i, j, bit for bit): independent
      // roots and divisions, pipelined
      T invs[kMaxBodies<T>][kMaxBodies<T>];
      for (int64_t i = 0; i < N; ++i) {
        const Vec3<T> xi = body<T, D>(xb, i);
        for (int64_t j = i + 1; j < N; ++j) {
          const Vec3<T> d = rel(body<T, D>(xb, j), xi);
          invs[i][j] = invs[j][i] = inverse_distance(eps2 + dot(d, d));
        }
      }
      for (int64_t i = 0; i < N; ++i) {
        const Vec3<T> xi = body<T, D>(xb, i);
        // each side of i summed in order from its first partner, then the two added
        const auto side = [&](int64_t j0, int64_t j1, T (&s)[4]) {
          for (int64_t j = j0; j < j1; ++j) {
            const Vec3<T> d = rel(body<T, D>(xb, j), xi);
            const T inv = invs[i][j], pot = mb[j] * inv, w = pot * inv;  // pull_scale
            if constexpr (kAcc) {
              s[0] += w * (d.x * inv);
              s[1] += w * (d.y * inv);
              if constexpr (D == 3) s[2] += w * (d.z * inv);
            }
            if constexpr (kPhi) s[3] += pot;
          }
        };
        T lo[4] = {0, 0, 0, 0}, hi[4] = {0, 0, 0, 0};
        side(0, i, lo);
        side(i + 1, N, hi);
        if constexpr (kAcc) {
          for (int c = 0; c < D; ++c) acc[(b * N + i) * D + c] = G * (lo[c] + hi[c]);
        }
        if constexpr (kPhi) phi[b * N + i] = -G * (lo[3] + hi[3]);
      }
    }
  });
}

// acc (B, N, D) and stats (B, 4) as the generic fused forward-with-statistics
// kernel: A is its accumulator type (double for float32), the helpers are its
// own (passed in so that both kernels share one definition of each).
template <typename T, int D, typename A, typename Helpers>
void forward_statistics(const T* x, const T* mass, int64_t B, int64_t N, T eps2, T G, T* acc,
                        T* stats, const Helpers& h, bool parallel = true) {
  constexpr A inf = std::numeric_limits<A>::infinity();
  static_assert(kMaxBodies<T> <= 16, "fixed-size pair tables");
  const auto systems = [&](int64_t begin, int64_t end) {
    for (int64_t b = begin; b < end; ++b) {
      const T* xb = x + b * N * D;
      const T* mb = mass + b * N;
      // over all rows: min s^2, sum s, max s^2, max q (merged row by row)
      A t_min = inf, t_sum = 0, t_max = 0, t_q = 0;
      // every pair's s^2 and 1 / s once (both are symmetric in i, j, bit for bit),
      // in a loop of independent roots and divisions that pipelines
      T s2s[kMaxBodies<T>][kMaxBodies<T>], invs[kMaxBodies<T>][kMaxBodies<T>];
      for (int64_t i = 0; i < N; ++i) {
        const Vec3<T> xi = body<T, D>(xb, i);
        for (int64_t j = i + 1; j < N; ++j) {
          const Vec3<T> d = rel(body<T, D>(xb, j), xi);
          const T s2 = h.distinct_s2(eps2 + dot(d, d), d);
          s2s[i][j] = s2s[j][i] = s2;
          invs[i][j] = invs[j][i] = inverse_distance(s2);
        }
      }
      for (int64_t i = 0; i < N; ++i) {
        const Vec3<T> xi = body<T, D>(xb, i);
        const T mi = mb[i];
        // each side of i summed in order from its first partner, then the two merged
        struct Side {
          A ax = 0, ay = 0, az = 0, mn = std::numeric_limits<A>::infinity(), sm = 0, mx = 0,
            q = 0;
        };
        const auto side = [&](int64_t j0, int64_t j1) {
          Side r;
          for (int64_t j = j0; j < j1; ++j) {
            const Vec3<T> d = rel(body<T, D>(xb, j), xi);
            const T s2 = s2s[i][j], inv = invs[i][j];
            const T w = mb[j] * inv * inv;  // pull_scale's (m_j / s) / s
            r.ax += w * (d.x * inv);
            r.ay += w * (d.y * inv);
            if constexpr (D == 3) r.az += w * (d.z * inv);
            const A as2 = s2;
            r.mn = as2 < r.mn ? as2 : r.mn;
            r.sm += s2 * inv;
            r.mx = as2 > r.mx ? as2 : r.mx;
            const A qq = h.template freefall_weight<A>(mi + mb[j], inv);
            r.q = qq > r.q ? qq : r.q;
          }
          return r;
        };
        const Side lo = side(0, i), hi = side(i + 1, N);
        acc[(b * N + i) * D] = static_cast<T>(A(G) * (lo.ax + hi.ax));
        acc[(b * N + i) * D + 1] = static_cast<T>(A(G) * (lo.ay + hi.ay));
        if constexpr (D == 3) acc[(b * N + i) * D + 2] = static_cast<T>(A(G) * (lo.az + hi.az));
        const A r_min = hi.mn < lo.mn ? hi.mn : lo.mn;
        const A r_sum = lo.sm + hi.sm;
        const A r_max = hi.mx > lo.mx ? hi.mx : lo.mx;
        const A r_q = hi.q > lo.q ? hi.q : lo.q;
        t_min = r_min < t_min ? r_min : t_min;
        t_sum += r_sum;
        t_max = r_max > t_max ? r_max : t_max;
        t_q = r_q > t_q ? r_q : t_q;
      }
      T* o = stats + b * 4;
      o[0] = N > 1 ? static_cast<T>(std::sqrt(t_min)) : T(0);
      o[1] = N > 1 ? static_cast<T>(t_sum / (A(N) * A(N - 1))) : T(0);
      o[2] = static_cast<T>(std::sqrt(t_max));
      o[3] = h.template freefall_time<T>(A(G), t_q, t_min);
    }
  };
  if (parallel) {
    at::parallel_for(0, B, grain(N), systems);
  } else {
    systems(0, B);
  }
}

// One fused kick-drift-kick step of every system (dt (B,)): v_half = v + a0
// dt/2, x1 = x + v_half dt, then acc1 and stats of x1 as forward_statistics,
// v1 = v_half + a1 dt/2. The kicks are written out per system, so the compiler
// may contract them into fused multiply-adds: equal to the composed step to
// rounding, not bit for bit.
template <typename T, int D, typename A, typename Helpers>
void kdk_statistics(const T* x, const T* v, const T* mass, const T* dt, const T* a0, int64_t B,
                    int64_t N, T eps2, T G, T* x1, T* v1, T* a1, T* stats, const Helpers& h) {
  at::parallel_for(0, B, grain(N), [&](int64_t begin, int64_t end) {
    for (int64_t b = begin; b < end; ++b) {
      const T step = dt[b], half = dt[b] * T(0.5);
      for (int64_t k = b * N * D; k < (b + 1) * N * D; ++k) {
        const T vh = v[k] + a0[k] * half;
        v1[k] = vh;  // v_half until the second kick
        x1[k] = x[k] + vh * step;
      }
      forward_statistics<T, D, A>(x1 + b * N * D, mass + b * N, 1, N, eps2, G, a1 + b * N * D,
                                  stats + b * 4, h, /*parallel=*/false);
      for (int64_t k = b * N * D; k < (b + 1) * N * D; ++k) v1[k] += a1[k] * half;
    }
  });
}

// energy (B,): U = -G sum_i m_i sum_{j>i} m_j / s_ij, as the generic kernel.
template <typename T, int D>
void potential(const T* x, const T* mass, int64_t B, int64_t N, T eps2, T G, T* energy) {
  at::parallel_for(0, B, grain(N), [&](int64_t begin, int64_t end) {
    for (int64_t b = begin; b < end; ++b) {
      const T* xb = x + b * N * D;
      const T* mb = mass + b * N;
      T u = 0;
      for (int64_t i = 0; i < N; ++i) {
        const Vec3<T> xi = body<T, D>(xb, i);
        T p = 0;
        for (int64_t j = i + 1; j < N; ++j) {
          const Vec3<T> d = rel(body<T, D>(xb, j), xi);
          p += mb[j] * inverse_distance(eps2 + dot(d, d));
        }
        u += mb[i] * p;
      }
      energy[b] = -G * u;
    }
  });
}

// Aarseth's derivatives (acc, jerk, snap, crackle, each (B, N, D)) of
// positions x and velocities v (B, N, D): the two symmetric passes of
// aarseth_kernels.h, pair (i, j) once for i < j, per system in order.
template <typename T, int D>
void derivatives(const T* x, const T* v, const T* mass, int64_t B, int64_t N, T eps2, T G,
                 T* acc, T* jerk, T* snap, T* crackle) {
  at::parallel_for(0, B, grain(N), [&](int64_t begin, int64_t end) {
    T A[kMaxBodies<T>][D], J[kMaxBodies<T>][D], S[kMaxBodies<T>][D], C[kMaxBodies<T>][D];
    for (int64_t b = begin; b < end; ++b) {
      const T* xb = x + b * N * D;
      const T* vb = v + b * N * D;
      const T* mb = mass + b * N;
      for (int64_t i = 0; i < N; ++i) {
        for (int c = 0; c < D; ++c) A[i][c] = J[i][c] = S[i][c] = C[i][c] = T(0);
      }
      // pass 1: acc and jerk
      for (int64_t i = 0; i < N; ++i) {
        for (int64_t j = i + 1; j < N; ++j) {
          T dx[D], dv[D], tA[D], tJ[D];
          T r2 = eps2;
          for (int c = 0; c < D; ++c) {
            dx[c] = xb[j * D + c] - xb[i * D + c];
            dv[c] = vb[j * D + c] - vb[i * D + c];
            r2 += dx[c] * dx[c];
          }
          const T inv3 = aarseth_acc_jerk_terms<D, T>(dx, dv, T(1) / std::sqrt(r2), tA, tJ);
          const T qi = mb[j] * inv3, qj = mb[i] * inv3;
          for (int c = 0; c < D; ++c) {
            A[i][c] += qi * tA[c];
            J[i][c] += qi * tJ[c];
            A[j][c] -= qj * tA[c];
            J[j][c] -= qj * tJ[c];
          }
        }
      }
      for (int64_t i = 0; i < N; ++i) {
        for (int c = 0; c < D; ++c) {
          A[i][c] *= G;
          J[i][c] *= G;
        }
      }
      // pass 2: snap and crackle (from every body's acc and jerk)
      for (int64_t i = 0; i < N; ++i) {
        for (int64_t j = i + 1; j < N; ++j) {
          T dx[D], dv[D], da[D], dk[D], tS[D], tC[D];
          T r2 = eps2;
          for (int c = 0; c < D; ++c) {
            dx[c] = xb[j * D + c] - xb[i * D + c];
            dv[c] = vb[j * D + c] - vb[i * D + c];
            da[c] = A[j][c] - A[i][c];
            dk[c] = J[j][c] - J[i][c];
            r2 += dx[c] * dx[c];
          }
          const T inv3 =
              aarseth_snap_crackle_terms<D, T>(dx, dv, da, dk, T(1) / std::sqrt(r2), tS, tC);
          const T qi = mb[j] * inv3, qj = mb[i] * inv3;
          for (int c = 0; c < D; ++c) {
            S[i][c] += qi * tS[c];
            C[i][c] += qi * tC[c];
            S[j][c] -= qj * tS[c];
            C[j][c] -= qj * tC[c];
          }
        }
      }
      for (int64_t i = 0; i < N; ++i) {
        for (int c = 0; c < D; ++c) {
          const int64_t o = (b * N + i) * D + c;
          acc[o] = A[i][c];
          jerk[o] = J[i][c];
          snap[o] = G * S[i][c];
          crackle[o] = G * C[i][c];
        }
      }
    }
  });
}

}  // namespace fewbody
}  // namespace aits
