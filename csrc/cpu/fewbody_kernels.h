// Few-body CPU kernels: many small systems (N <= kMaxBodies<T>), vectorised
// across systems. A group of lanes::kLanes systems (8 with AVX-512, 4 with
// AVX2) is gathered from the (B, N, D) tensors into vectors whose lane l is
// system b0 + l, and every pair formula runs on whole vectors: no per-row
// vector set-up (which costs the all-pairs kernels of gravity_cpu.cpp many
// times the two pair interactions of a three-body row), and kLanes systems'
// square roots and divisions per instruction instead of one.
//
// The tail of a batch (B not a multiple of kLanes) is a partial group: its
// unused lanes repeat the group's last system and are never stored.
//
// Inverse distances: simd::rsqrt under the "rsqrt" pair kernel, a correctly
// rounded 1 / sqrt under "divide" (lanes.h). Within a system the sums keep
// the order of the generic kernels (each side of body i from its first
// partner, then the two sides added), so the results agree with the generic
// kernels and aits.reference to rounding (float64: ~1e-15 relative).
//
// Determinism: every lane's arithmetic is independent of the other lanes and
// of the group, so a system gets the same bits alone, in any batch, and for
// any thread count (threads take whole groups).
#pragma once

#include <algorithm>
#include <cmath>
#include <limits>
#include <type_traits>

#include <ATen/Parallel.h>

#include "cpu/lanes.h"
#include "gravity.h"

namespace aits {
namespace fewbody {

using lanes::Group;
using lanes::kLanes;
using lanes::V;
using lanes::F64;

// The largest N these kernels take: 64 bytes / sizeof(T) (8 float64, 16 float32).
template <typename T>
constexpr int64_t kMaxBodies = 64 / sizeof(T);

// Groups per parallel task: about 4096 pair interactions.
inline int64_t grain(int64_t N) {
  return std::max<int64_t>(1, 4096 / std::max<int64_t>(N * N * kLanes, 1));
}

// Calls fn(Group) for every group of kLanes systems of the batch (the last
// one partial), whole groups per thread.
template <typename Fn>
void for_groups(int64_t B, int64_t N, const Fn& fn) {
  const int64_t groups = (B + kLanes - 1) / kLanes;
  at::parallel_for(0, groups, grain(N), [&](int64_t begin, int64_t end) {
    for (int64_t g = begin; g < end; ++g) {
      fn(Group{g * kLanes, static_cast<int>(std::min<int64_t>(kLanes, B - g * kLanes))});
    }
  });
}

// The bodies of a group: coordinate c of body i at [i * D + c].
template <typename T>
struct Bodies {
  V<T> v[kMaxBodies<T> * 3];
  V<T>& operator()(int64_t i, int c) { return v[i * 3 + c]; }
  const V<T>& operator()(int64_t i, int c) const { return v[i * 3 + c]; }
};

// (B, N, D) -> Bodies of a group, and back.
template <typename T, int D>
AITS_SIMD void load_bodies(const T* p, const Group& g, int64_t N, Bodies<T>& out) {
  V<T> flat[kMaxBodies<T> * D];
  lanes::gather(p, g, N * D, N * D, flat);
  for (int64_t i = 0; i < N; ++i) {
    for (int c = 0; c < D; ++c) out(i, c) = flat[i * D + c];
  }
}
template <typename T, int D>
AITS_SIMD void store_bodies(T* p, const Group& g, int64_t N, const Bodies<T>& in) {
  V<T> flat[kMaxBodies<T> * D];
  for (int64_t i = 0; i < N; ++i) {
    for (int c = 0; c < D; ++c) flat[i * D + c] = in(i, c);
  }
  lanes::scatter(p, g, N * D, N * D, flat);
}

// A symmetric table of per-pair vectors (i != j).
template <typename T>
struct PairTable {
  V<T> v[kMaxBodies<T>][kMaxBodies<T>];
};

template <typename T, int D>
AITS_SIMD V<T> norm2(const V<T> (&d)[D]) {
  V<T> s = d[0] * d[0];
  for (int c = 1; c < D; ++c) s += d[c] * d[c];
  return s;
}

template <typename T, int D>
AITS_SIMD void separation(const Bodies<T>& x, int64_t i, int64_t j, V<T> (&d)[D]) {
  for (int c = 0; c < D; ++c) d[c] = x(j, c) - x(i, c);
}

// Every pair's 1 / s (symmetric in i, j, bit for bit).
template <typename T, int D, typename Inv>
AITS_SIMD void pair_inverses(const Bodies<T>& x, int64_t N, T eps2, const Inv& inverse,
                             PairTable<T>& inv) {
  for (int64_t i = 0; i < N; ++i) {
    for (int64_t j = i + 1; j < N; ++j) {
      V<T> d[D];
      separation<T, D>(x, i, j, d);
      inv.v[i][j] = inv.v[j][i] = inverse(eps2 + norm2<T, D>(d));
    }
  }
}

// acc (G included) of every body from the pair table, as the generic forward
// kernel: each side of i summed from its first partner, then the two added.
template <typename T, int D>
AITS_SIMD void accelerations(const Bodies<T>& x, const V<T>* m, int64_t N, T G,
                             const PairTable<T>& inv, Bodies<T>& acc) {
  for (int64_t i = 0; i < N; ++i) {
    const auto side = [&](int64_t j0, int64_t j1, V<T>(&sum)[D]) __attribute__((always_inline)) {
      for (int64_t j = j0; j < j1; ++j) {
        V<T> d[D];
        separation<T, D>(x, i, j, d);
        const V<T> s = inv.v[i][j], w = m[j] * s * s;  // pull_scale's (m_j / s) / s
        for (int c = 0; c < D; ++c) sum[c] += w * (d[c] * s);
      }
    };
    V<T> lo[D] = {}, hi[D] = {};
    side(0, i, lo);
    side(i + 1, N, hi);
    for (int c = 0; c < D; ++c) acc(i, c) = G * (lo[c] + hi[c]);
  }
}

// acc as accelerations(), each pair (i < j) once: body i gets +m_j d / s^3,
// body j -m_i d / s^3, in pair order (half the pair work; equal to
// accelerations() to rounding, not bit for bit).
template <typename T, int D>
AITS_SIMD void accelerations_symmetric(const Bodies<T>& x, const V<T>* m, int64_t N, T G,
                                       const PairTable<T>& inv, Bodies<T>& acc) {
  for (int64_t i = 0; i < N; ++i) {
    for (int c = 0; c < D; ++c) acc(i, c) = V<T>{};
  }
  for (int64_t i = 0; i < N; ++i) {
    for (int64_t j = i + 1; j < N; ++j) {
      V<T> d[D];
      separation<T, D>(x, i, j, d);
      const V<T> s = inv.v[i][j], s2 = s * s;
      const V<T> wi = m[j] * s2, wj = m[i] * s2;  // pull_scale's m / s^2
      for (int c = 0; c < D; ++c) {
        const V<T> e = d[c] * s;
        acc(i, c) += wi * e;
        acc(j, c) -= wj * e;
      }
    }
  }
  if (G != T(1)) {  // x * 1 == x: skipping it changes no bit
    for (int64_t i = 0; i < N; ++i) {
      for (int c = 0; c < D; ++c) acc(i, c) *= G;
    }
  }
}

// U = -G sum_i m_i sum_{j>i} m_j / s_ij per lane, as the generic kernel.
template <typename T>
AITS_SIMD V<T> potential_energy(const V<T>* m, int64_t N, T G, const PairTable<T>& inv) {
  V<T> u{};
  for (int64_t i = 0; i < N; ++i) {
    V<T> p{};
    for (int64_t j = i + 1; j < N; ++j) p += m[j] * inv.v[i][j];
    u += m[i] * p;
  }
  return -G * u;
}

// A group's positions, masses and every pair's inverse distance: what the
// position-only kernels (forward, potential) start from.
template <typename T>
struct Positioned {
  Bodies<T> x;
  V<T> m[kMaxBodies<T>];
  PairTable<T> inv;
};

template <typename T, int D, typename Inv>
AITS_SIMD void load_positioned(const T* x, const T* mass, const Group& g, int64_t N, T eps2,
                               const Inv& inverse, Positioned<T>& out) {
  load_bodies<T, D>(x, g, N, out.x);
  lanes::gather(mass, g, N, N, out.m);
  pair_inverses<T, D>(out.x, N, eps2, inverse, out.inv);
}

// acc (B, N, D) and/or phi (B, N) of positions x (B, N, D).
template <typename T, int D, bool kAcc, bool kPhi, typename Inv>
void forward(const T* x, const T* mass, int64_t B, int64_t N, T eps2, T G, T* acc, T* phi,
             const Inv& inverse) {
  for_groups(B, N, [&](const Group& g) {
    Positioned<T> in;
    load_positioned<T, D>(x, mass, g, N, eps2, inverse, in);
    const Bodies<T>& X = in.x;
    const auto& m = in.m;
    const PairTable<T>& inv = in.inv;
    if constexpr (kAcc) {
      Bodies<T> a;
      accelerations<T, D>(X, m, N, G, inv, a);
      store_bodies<T, D>(acc, g, N, a);
    }
    if constexpr (kPhi) {
      V<T> p[kMaxBodies<T>];
      for (int64_t i = 0; i < N; ++i) {
        V<T> lo{}, hi{};
        for (int64_t j = 0; j < i; ++j) lo += m[j] * inv.v[i][j];
        for (int64_t j = i + 1; j < N; ++j) hi += m[j] * inv.v[i][j];
        p[i] = -G * (lo + hi);
      }
      lanes::scatter(phi, g, N, N, p);
    }
  });
}

// energy (B,) = U of every system.
template <typename T, int D, typename Inv>
void potential(const T* x, const T* mass, int64_t B, int64_t N, T eps2, T G, T* energy,
               const Inv& inverse) {
  for_groups(B, N, [&](const Group& g) {
    Positioned<T> in;
    load_positioned<T, D>(x, mass, g, N, eps2, inverse, in);
    const V<T> u = potential_energy<T>(in.m, N, G, in.inv);
    lanes::scatter(energy, g, 1, 1, &u);
  });
}

// ------------------------------------------------------- forces with statistics
//
// The statistics of gravity_cpu.cpp's fused kernel, per lane, with float64
// accumulators for both dtypes (its StatAcc): min s^2, sum s, max s^2 and max
// q = (m_i + m_j) / s^3 over the pairs, then min s, mean s, max s and the
// minimum free-fall time sqrt(1 / (G max q)). The lane forms of its helpers:
//   distinct_s2: distinct bodies whose s^2 underflows to 0 count as the
//     smallest positive s^2 (only coincident bodies give s = 0);
//   freefall_weight: q = (M / s^2) (1 / s), the product taken in float64;
//   freefall_time: T's smallest positive value where the time underflows for
//     distinct bodies (0 only when two bodies coincide).

template <typename T, int D, typename Inv>
AITS_SIMD void forces_statistics(const Bodies<T>& x, const V<T>* m, int64_t N, T eps2, T G,
                                 const Inv& inverse, Bodies<T>& acc, V<T> (&stats)[4]) {
  constexpr double inf = std::numeric_limits<double>::infinity();
  const V<T> tiny = lanes::splat<T>(std::numeric_limits<T>::denorm_min());
  PairTable<T> s2s, inv;
  for (int64_t i = 0; i < N; ++i) {
    for (int64_t j = i + 1; j < N; ++j) {
      V<T> d[D];
      separation<T, D>(x, i, j, d);
      auto apart = d[0] != 0;
      for (int c = 1; c < D; ++c) apart |= d[c] != 0;
      V<T> s2 = eps2 + norm2<T, D>(d);
      s2 = (s2 == 0) & apart ? tiny : s2;
      s2s.v[i][j] = s2s.v[j][i] = s2;
      inv.v[i][j] = inv.v[j][i] = inverse(s2);
    }
  }
  accelerations<T, D>(x, m, N, G, inv, acc);
  // over all rows: min s^2, sum s, max s^2, max q; each row's two sides merged first
  F64 t_min = lanes::splat<double>(inf), t_sum{}, t_max{}, t_q{};
  for (int64_t i = 0; i < N; ++i) {
    F64 mn[2] = {lanes::splat<double>(inf), lanes::splat<double>(inf)}, sm[2] = {}, mx[2] = {},
        q[2] = {};
    for (int64_t j = 0; j < N; ++j) {
      if (j == i) continue;
      const int k = j < i ? 0 : 1;
      const V<T> s = inv.v[i][j];
      const F64 s2 = lanes::cast<double>(s2s.v[i][j]);
      mn[k] = lanes::min(s2, mn[k]);
      sm[k] += lanes::cast<double>(s2s.v[i][j] > 0 ? s2s.v[i][j] * s : V<T>{});  // coincident: 0
      mx[k] = lanes::max(s2, mx[k]);
      const F64 qq = lanes::cast<double>((m[i] + m[j]) * s * s) * lanes::cast<double>(s);
      q[k] = lanes::max(qq, q[k]);
    }
    t_min = lanes::min(lanes::min(mn[1], mn[0]), t_min);
    t_sum += sm[0] + sm[1];
    t_max = lanes::max(lanes::max(mx[1], mx[0]), t_max);
    t_q = lanes::max(lanes::max(q[1], q[0]), t_q);
  }
  if (N > 1) {
    stats[0] = lanes::cast<T>(lanes::sqrt(t_min));
    stats[1] = lanes::cast<T>(t_sum / (double(N) * double(N - 1)));
  } else {
    stats[0] = stats[1] = V<T>{};
  }
  stats[2] = lanes::cast<T>(lanes::sqrt(t_max));
  const V<T> t = lanes::cast<T>(lanes::sqrt(1.0 / (double(G) * t_q)));
  stats[3] = (t == 0) & lanes::narrow<T>(t_min > 0) ? tiny : t;
}

// acc (B, N, D) and stats (B, 4) of positions x (B, N, D).
template <typename T, int D, typename Inv>
void forward_statistics(const T* x, const T* mass, int64_t B, int64_t N, T eps2, T G, T* acc,
                        T* stats, const Inv& inverse) {
  for_groups(B, N, [&](const Group& g) {
    Bodies<T> X, a;
    V<T> m[kMaxBodies<T>], st[4];
    load_bodies<T, D>(x, g, N, X);
    lanes::gather(mass, g, N, N, m);
    forces_statistics<T, D>(X, m, N, eps2, G, inverse, a, st);
    store_bodies<T, D>(acc, g, N, a);
    lanes::scatter(stats, g, 4, 4, st);
  });
}

// One fused kick-drift-kick step of every system (dt (B,)): v_half = v + a0
// dt/2, x1 = x + v_half dt, then acc1 and stats of x1 as forward_statistics,
// v1 = v_half + a1 dt/2. The compiler may contract the kicks into fused
// multiply-adds: equal to the composed step to rounding, not bit for bit.
template <typename T, int D, typename Inv>
void kdk_statistics(const T* x, const T* v, const T* mass, const T* dt, const T* a0, int64_t B,
                    int64_t N, T eps2, T G, T* x1, T* v1, T* a1, T* stats, const Inv& inverse) {
  for_groups(B, N, [&](const Group& g) {
    Bodies<T> X, Vel, A;
    V<T> m[kMaxBodies<T>], step, st[4];
    load_bodies<T, D>(x, g, N, X);
    load_bodies<T, D>(v, g, N, Vel);
    load_bodies<T, D>(a0, g, N, A);
    lanes::gather(mass, g, N, N, m);
    lanes::gather(dt, g, 1, 1, &step);
    const V<T> half = step * T(0.5);
    for (int64_t i = 0; i < N; ++i) {
      for (int c = 0; c < D; ++c) {
        Vel(i, c) += A(i, c) * half;  // v_half until the second kick
        X(i, c) += Vel(i, c) * step;
      }
    }
    forces_statistics<T, D>(X, m, N, eps2, G, inverse, A, st);
    for (int64_t i = 0; i < N; ++i) {
      for (int c = 0; c < D; ++c) Vel(i, c) += A(i, c) * half;
    }
    store_bodies<T, D>(x1, g, N, X);
    store_bodies<T, D>(v1, g, N, Vel);
    store_bodies<T, D>(a1, g, N, A);
    lanes::scatter(stats, g, 4, 4, st);
  });
}

// ------------------------------------------------------------ Aarseth's derivatives

// Acc, jerk, snap and crackle (G included) of a group from the pair table:
// the two symmetric passes of aarseth_kernels.h, pair (i, j) once for i < j,
// in order. kAccGiven: A holds the acceleration already (e.g. the step's
// force pass, equal to pass 1's to rounding) and pass 1 sums the jerk only.
template <typename T, int D, bool kAccGiven = false>
AITS_SIMD void derivatives(const Bodies<T>& x, const Bodies<T>& v, const V<T>* m, int64_t N,
                           T G, const PairTable<T>& inv, Bodies<T>& A, Bodies<T>& J,
                           Bodies<T>& S, Bodies<T>& C) {
  for (int64_t i = 0; i < N; ++i) {
    for (int c = 0; c < D; ++c) {
      if constexpr (!kAccGiven) A(i, c) = V<T>{};
      J(i, c) = S(i, c) = C(i, c) = V<T>{};
    }
  }
  // pass 1: acc and jerk
  for (int64_t i = 0; i < N; ++i) {
    for (int64_t j = i + 1; j < N; ++j) {
      V<T> dx[D], dv[D], tA[D], tJ[D];
      for (int c = 0; c < D; ++c) {
        dx[c] = x(j, c) - x(i, c);
        dv[c] = v(j, c) - v(i, c);
      }
      const V<T> inv3 = aarseth_acc_jerk_terms<D, T>(dx, dv, inv.v[i][j], tA, tJ);
      const V<T> qi = m[j] * inv3, qj = m[i] * inv3;
      for (int c = 0; c < D; ++c) {
        if constexpr (!kAccGiven) {
          A(i, c) += qi * tA[c];
          A(j, c) -= qj * tA[c];
        }
        J(i, c) += qi * tJ[c];
        J(j, c) -= qj * tJ[c];
      }
    }
  }
  if (G != T(1)) {  // x * 1 == x: skipping it changes no bit
    for (int64_t i = 0; i < N; ++i) {
      for (int c = 0; c < D; ++c) {
        if constexpr (!kAccGiven) A(i, c) *= G;
        J(i, c) *= G;
      }
    }
  }
  // pass 2: snap and crackle (from every body's acc and jerk)
  for (int64_t i = 0; i < N; ++i) {
    for (int64_t j = i + 1; j < N; ++j) {
      V<T> dx[D], dv[D], da[D], dk[D], tS[D], tC[D];
      for (int c = 0; c < D; ++c) {
        dx[c] = x(j, c) - x(i, c);
        dv[c] = v(j, c) - v(i, c);
        da[c] = A(j, c) - A(i, c);
        dk[c] = J(j, c) - J(i, c);
      }
      const V<T> inv3 = aarseth_snap_crackle_terms<D, T>(dx, dv, da, dk, inv.v[i][j], tS, tC);
      const V<T> qi = m[j] * inv3, qj = m[i] * inv3;
      for (int c = 0; c < D; ++c) {
        S(i, c) += qi * tS[c];
        C(i, c) += qi * tC[c];
        S(j, c) -= qj * tS[c];
        C(j, c) -= qj * tC[c];
      }
    }
  }
  if (G != T(1)) {
    for (int64_t i = 0; i < N; ++i) {
      for (int c = 0; c < D; ++c) {
        S(i, c) *= G;
        C(i, c) *= G;
      }
    }
  }
}

// acc, jerk, snap, crackle (B, N, D) of positions x and velocities v (B, N, D).
template <typename T, int D, typename Inv>
void derivatives(const T* x, const T* v, const T* mass, int64_t B, int64_t N, T eps2, T G,
                 T* acc, T* jerk, T* snap, T* crackle, const Inv& inverse) {
  for_groups(B, N, [&](const Group& g) {
    Bodies<T> X, Vel, A, J, S, C;
    V<T> m[kMaxBodies<T>];
    load_bodies<T, D>(x, g, N, X);
    load_bodies<T, D>(v, g, N, Vel);
    lanes::gather(mass, g, N, N, m);
    PairTable<T> inv;
    pair_inverses<T, D>(X, N, eps2, inverse, inv);
    derivatives<T, D>(X, Vel, m, N, G, inv, A, J, S, C);
    store_bodies<T, D>(acc, g, N, A);
    store_bodies<T, D>(jerk, g, N, J);
    store_bodies<T, D>(snap, g, N, S);
    store_bodies<T, D>(crackle, g, N, C);
  });
}

}  // namespace fewbody
}  // namespace aits
