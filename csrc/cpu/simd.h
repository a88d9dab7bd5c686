// Fixed-width vectors for the CPU pair kernels and a reciprocal square root
// that leaves the divider: a hardware estimate (AVX-512: rsqrt14, AVX2:
// rsqrtps) or an integer-bit estimate, refined by Newton iterations
//   y <- y (3/2 - (x/2 y) y)
// to full precision (float64: about 1 ulp; float32: about 1 ulp). The product
// (x/2 y) y is formed in that order so that y^2 never overflows.
//
// Vectors are GCC/Clang vector extensions of 64 bytes (W = 64 / sizeof(T)
// lanes): one AVX-512 register, two AVX2 ones, four SSE2 ones; the compiler
// lowers the arithmetic to whatever the target has. Which estimate is used is
// decided at build time by the target flags (-march=native under AITS_NATIVE,
// or -mavx2 -mfma); `simd_instruction_set()` names it.
#pragma once

#include <cstdint>
#include <cstring>
#include <limits>

#if defined(__AVX512F__) || defined(__AVX2__)
#include <immintrin.h>
#endif

namespace aits {
namespace simd {

using f32x16 = float __attribute__((vector_size(64)));
using f64x8 = double __attribute__((vector_size(64)));
using i32x16 = int32_t __attribute__((vector_size(64)));
using i64x8 = int64_t __attribute__((vector_size(64)));

template <typename T>
struct Traits;
template <>
struct Traits<float> {
  using V = f32x16;
  using I = i32x16;
  static constexpr int W = 16;
};
template <>
struct Traits<double> {
  using V = f64x8;
  using I = i64x8;
  static constexpr int W = 8;
};

template <typename T>
using Vec = typename Traits<T>::V;
template <typename T>
using Mask = typename Traits<T>::I;

// "avx512f", "avx2" or "none": the estimate compiled into rsqrt() below.
inline const char* instruction_set() {
#if defined(__AVX512F__)
  return "avx512f";
#elif defined(__AVX2__) && defined(__FMA__)
  return "avx2";
#else
  return "none";
#endif
}

template <typename T>
inline Vec<T> broadcast(T v) {
  return Vec<T>{} + v;
}

template <typename T>
inline Vec<T> load(const T* p) {
  Vec<T> v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}

// The first n < W lanes from p, the others `fill`.
template <typename T>
inline Vec<T> load_partial(const T* p, int n, T fill) {
  Vec<T> v = broadcast<T>(fill);
  for (int l = 0; l < n; ++l) v[l] = p[l];
  return v;
}

// All lanes true below n.
template <typename T>
inline Mask<T> lanes_below(int n) {
  Mask<T> m;
  for (int l = 0; l < Traits<T>::W; ++l) m[l] = l < n ? -1 : 0;
  return m;
}

// Lane sum in a fixed order (deterministic).
template <typename T>
inline T sum_lanes(const Vec<T>& v) {
  T s = 0;
  for (int l = 0; l < Traits<T>::W; ++l) s += v[l];
  return s;
}

template <typename T>
inline Vec<T> newton(const Vec<T>& half_x, Vec<T> y) {
  return y * (T(1.5) - (half_x * y) * y);
}

// rsqrt(0) = inf and rsqrt(inf) = 0 exactly (Newton would give NaN there).
template <typename T>
inline Vec<T> exact_at_zero_and_inf(const Vec<T>& x, const Vec<T>& y) {
  constexpr T inf = std::numeric_limits<T>::infinity();
  const Vec<T> zero{};
  Vec<T> r = x == zero ? zero + inf : y;
  return x == zero + inf ? zero : r;
}

// 1 / sqrt(x) per lane, for x >= 0 (NaN stays NaN).
inline f64x8 rsqrt(const f64x8& x) {
#if defined(__AVX512F__)
  // rsqrt14: relative error < 2^-14; two iterations reach ~2^-52.
  const f64x8 h = x * 0.5;
  f64x8 y = (f64x8)_mm512_rsqrt14_pd((__m512d)x);
  y = newton<double>(h, newton<double>(h, y));
  return exact_at_zero_and_inf<double>(x, y);
#else
  // Integer-bit estimate (relative error < 3.5 %), four iterations. Inputs
  // below 2^-600 (denormals included) are scaled by 2^600 first.
  const i64x8 tiny = x < 0x1p-600;
  const f64x8 xs = tiny ? x * 0x1p600 : x;
  f64x8 y = (f64x8)(INT64_C(0x5FE6EB50C7B537A9) - ((i64x8)xs >> 1));
  const f64x8 hs = xs * 0.5;
  y = newton<double>(hs, newton<double>(hs, newton<double>(hs, newton<double>(hs, y))));
  y = tiny ? y * 0x1p300 : y;
  return exact_at_zero_and_inf<double>(x, y);
#endif
}

inline f32x16 rsqrt(const f32x16& x) {
#if defined(__AVX512F__)
  // rsqrt14 (denormal inputs handled), one iteration reaches ~2^-24.
  f32x16 y = (f32x16)_mm512_rsqrt14_ps((__m512)x);
  y = newton<float>(x * 0.5f, y);
  return exact_at_zero_and_inf<float>(x, y);
#elif defined(__AVX2__) && defined(__FMA__)
  // rsqrtps (relative error < 1.5 * 2^-12, denormal inputs read as 0): inputs
  // below 2^-64 are scaled by 2^64 first; one iteration reaches ~2^-23.
  const i32x16 tiny = x < 0x1p-64f;
  const f32x16 xs = tiny ? x * 0x1p64f : x;
  __m256 half[2];
  std::memcpy(half, &xs, sizeof(xs));
  half[0] = _mm256_rsqrt_ps(half[0]);
  half[1] = _mm256_rsqrt_ps(half[1]);
  f32x16 y;
  std::memcpy(&y, half, sizeof(y));
  y = newton<float>(xs * 0.5f, y);
  y = tiny ? y * 0x1p32f : y;
  return exact_at_zero_and_inf<float>(x, y);
#else
  // Integer-bit estimate, three iterations; inputs below 2^-64 scaled.
  const i32x16 tiny = x < 0x1p-64f;
  const f32x16 xs = tiny ? x * 0x1p64f : x;
  f32x16 y = (f32x16)(INT32_C(0x5F375A86) - ((i32x16)xs >> 1));
  const f32x16 hs = xs * 0.5f;
  y = newton<float>(hs, newton<float>(hs, newton<float>(hs, y)));
  y = tiny ? y * 0x1p32f : y;
  return exact_at_zero_and_inf<float>(x, y);
#endif
}

}  // namespace simd
}  // namespace aits
