// Pair-interaction math shared by the CPU and CUDA kernels.
//
// Conventions (one system, bodies i and j):
//   d_ij  = x_j - x_i                       separation vector
//   s_ij  = sqrt(|d_ij|^2 + eps^2)          softened distance
//   a_i   = G sum_{j != i} m_j d_ij / s_ij^3
//   phi_i = -G sum_{j != i} m_j / s_ij       (potential per unit mass)
//   U     = -G sum_{i < j} m_i m_j / s_ij = 1/2 sum_i m_i phi_i
//
// Backward of the accelerations for a loss L with upstream g_i = dL/da_i:
//   dL/dx_k = G sum_{j != k} K_kj (m_k g_j - m_j g_k),  K v = v/s^3 - 3 d (d.v)/s^5
//   dL/dm_k = G sum_{j != k} g_j . (x_k - x_j) / s_kj^3
// Both are O(N) per body with O(1) state: no N x N buffer exists anywhere.
#pragma once

#if defined(__CUDACC__)
#define AITS_HD __host__ __device__ __forceinline__
#else
#define AITS_HD inline __attribute__((always_inline))
#endif

#if !defined(__CUDACC__)
#include <cmath>
#endif

// Unrolls the tiny per-dimension loops (D = 2 or 3) on either compiler.
#if defined(__CUDACC__)
#define AITS_UNROLL _Pragma("unroll")
#else
#define AITS_UNROLL _Pragma("GCC unroll 3")
#endif

namespace aits {

#if defined(__CUDA_ARCH__)
// GPU reciprocal square roots. float: the flush-to-zero form is a single
// MUFU.RSQ; the default one wraps it in a 3-instruction fix-up for r2 below
// 1.2e-38 (where 1/s^3 overflows float anyway), a sixth of the pair's cost.
__device__ __forceinline__ float device_rsqrt(float x) {
  float y;
  asm("rsqrt.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}
__device__ __forceinline__ double device_rsqrt(double x) { return rsqrt(x); }
#endif

// 1 / sqrt(r2), the softened inverse distance.
template <typename T>
AITS_HD T inverse_distance(T r2) {
#if defined(__CUDA_ARCH__)
  return device_rsqrt(r2);
#else
  return T(1) / std::sqrt(r2);
#endif
}

// Accumulates body j's pull on body i: acc += m_j d inv^3 and, when wanted,
// pot += m_j inv (the caller applies -G).
template <typename T, int D>
AITS_HD void accumulate_pull(const T (&d)[D], T r2, T mj, T (&acc)[D], T& pot) {
  const T inv = inverse_distance(r2);
  const T w = mj * inv * inv * inv;
AITS_UNROLL
  for (int c = 0; c < D; ++c) acc[c] += w * d[c];
  pot += mj * inv;
}

// Accumulates pair (k, j)'s share of dL/dx_k and dL/dm_k (the caller applies G).
// gk, gj: upstream gradients dL/da of bodies k and j.
template <typename T, int D>
AITS_HD void accumulate_pull_backward(const T (&d)[D], T r2, T mk, T mj,
                                      const T (&gk)[D], const T (&gj)[D],
                                      T (&gx)[D], T& gm) {
  const T inv = inverse_distance(r2);
  const T inv2 = inv * inv;
  const T inv3 = inv2 * inv;
  const T inv5 = inv3 * inv2;
  T u[D];
  T du = T(0), dg = T(0);
AITS_UNROLL
  for (int c = 0; c < D; ++c) {
    u[c] = mk * gj[c] - mj * gk[c];
    du += d[c] * u[c];
    dg += d[c] * gj[c];
  }
  const T three_du_inv5 = T(3) * du * inv5;
AITS_UNROLL
  for (int c = 0; c < D; ++c) gx[c] += u[c] * inv3 - d[c] * three_du_inv5;
  gm -= dg * inv3;
}

}  // namespace aits
