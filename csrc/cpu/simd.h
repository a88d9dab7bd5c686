// Fixed-width vectors for the CPU pair kernels and a reciprocal square root
// that leaves the divider: a hardware estimate (AVX-512: rsqrt14, AVX2:
// rsqrtps, for float64 on the inputs rounded to float) or an integer-bit
// estimate, refined by Newton iterations
//   y <- y (3/2 - (x/2 y) y)
// to full precision (float64: about 1 ulp; float32: about 1 ulp). The product
// (x/2 y) y is formed in that order so that y^2 never overflows.
//
// Vectors are GCC/Clang vector extensions one native register wide (64 bytes
// with AVX-512, 32 with AVX2, 16 otherwise; W = bytes / sizeof(T) lanes), so
// that comparisons and selects stay vector instructions. Which estimate is
// used is decided at build time by the target flags (-march=native under
// AITS_NATIVE, or e.g. -mavx2 -mfma); `simd_instruction_set()` names it.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>

#if defined(__AVX512F__) || defined(__AVX2__)
#include <immintrin.h>
#endif

// Every helper is forced inline, so vectors stay in registers.
#define AITS_SIMD inline __attribute__((always_inline))

namespace aits {
namespace simd {

#if defined(__AVX512F__)
#define AITS_VEC_BYTES 64
#elif defined(__AVX2__) && defined(__FMA__)
#define AITS_VEC_BYTES 32
#else
#define AITS_VEC_BYTES 16
#endif

using f32v = float __attribute__((vector_size(AITS_VEC_BYTES)));
using f64v = double __attribute__((vector_size(AITS_VEC_BYTES)));
using i32v = int32_t __attribute__((vector_size(AITS_VEC_BYTES)));
using i64v = int64_t __attribute__((vector_size(AITS_VEC_BYTES)));
using u32v = uint32_t __attribute__((vector_size(AITS_VEC_BYTES)));
using u64v = uint64_t __attribute__((vector_size(AITS_VEC_BYTES)));
// The same vectors at their element's alignment (unaligned stores).
typedef float f32u __attribute__((vector_size(AITS_VEC_BYTES), aligned(4)));
typedef double f64u __attribute__((vector_size(AITS_VEC_BYTES), aligned(8)));

template <typename T>
struct Traits;
template <>
struct Traits<float> {
  using V = f32v;
  using I = i32v;
  using Unaligned = f32u;
  static constexpr int W = AITS_VEC_BYTES / 4;
};
template <>
struct Traits<double> {
  using V = f64v;
  using I = i64v;
  using Unaligned = f64u;
  static constexpr int W = AITS_VEC_BYTES / 8;
};

template <typename T>
using Vec = typename Traits<T>::V;
template <typename T>
using Mask = typename Traits<T>::I;

// "avx512f", "avx2" or "none": the estimate compiled into rsqrt() below.
constexpr const char* instruction_set() {
#if defined(__AVX512F__)
  return "avx512f";
#elif defined(__AVX2__) && defined(__FMA__)
  return "avx2";
#else
  return "none";
#endif
}

template <typename T>
AITS_SIMD Vec<T> broadcast(T v) {
  return Vec<T>{} + v;
}

template <typename T>
AITS_SIMD Vec<T> load(const T* p) {
  Vec<T> v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}

// The first n < W lanes from p, the others `fill`.
template <typename T>
AITS_SIMD Vec<T> load_partial(const T* p, int n, T fill) {
  Vec<T> v = broadcast<T>(fill);
  for (int l = 0; l < n; ++l) v[l] = p[l];
  return v;
}

// An unaligned store typed as T (a memcpy could alias anything and would make
// the compiler reload every pointer and size after each store).
template <typename T>
AITS_SIMD void store(T* p, const Vec<T>& v) {
  *reinterpret_cast<typename Traits<T>::Unaligned*>(p) = v;
}

// Lane l is true where lo < first + l < hi.
template <typename T>
AITS_SIMD Mask<T> lanes_between(int64_t lo, int64_t first, int64_t hi) {
  Mask<T> m;
  for (int l = 0; l < Traits<T>::W; ++l) m[l] = (first + l > lo && first + l < hi) ? -1 : 0;
  return m;
}

// All lanes true below n.
template <typename T>
AITS_SIMD Mask<T> lanes_below(int n) {
  Mask<T> m;
  for (int l = 0; l < Traits<T>::W; ++l) m[l] = l < n ? -1 : 0;
  return m;
}

// Lane sum in a fixed order (deterministic).
template <typename T>
AITS_SIMD T sum_lanes(const Vec<T>& v) {
  T s = 0;
  for (int l = 0; l < Traits<T>::W; ++l) s += v[l];
  return s;
}

// v itself, opaque to the optimiser: no multiply before it is fused with an
// add after it (a value that one branch returns and another selects gets the
// same bits in both).
template <typename V>
AITS_SIMD V opaque(V v) {
#if defined(__x86_64__) && (defined(__AVX512F__) || defined(__AVX2__))
  asm("" : "+v"(v));
#endif
  return v;
}

template <typename T>
AITS_SIMD Vec<T> newton(const Vec<T>& half_x, Vec<T> y) {
  return y * (T(1.5) - (half_x * y) * y);
}

// rsqrt(0) = inf and rsqrt(inf) = 0 exactly (Newton would give NaN there).
template <typename T>
AITS_SIMD Vec<T> exact_at_zero_and_inf(const Vec<T>& x, const Vec<T>& y) {
  constexpr T inf = std::numeric_limits<T>::infinity();
  const Vec<T> zero{};
  Vec<T> r = x == zero ? zero + inf : y;
  return x == zero + inf ? zero : r;
}

// Correctly rounded square root per lane.
AITS_SIMD f64v sqrt(const f64v& x) {
#if defined(__AVX512F__)
  return (f64v)_mm512_sqrt_pd((__m512d)x);
#elif defined(__AVX2__) && defined(__FMA__)
  return (f64v)_mm256_sqrt_pd((__m256d)x);
#else
  f64v r;
  for (int l = 0; l < Traits<double>::W; ++l) r[l] = std::sqrt(x[l]);
  return r;
#endif
}
AITS_SIMD f32v sqrt(const f32v& x) {
#if defined(__AVX512F__)
  return (f32v)_mm512_sqrt_ps((__m512)x);
#elif defined(__AVX2__) && defined(__FMA__)
  return (f32v)_mm256_sqrt_ps((__m256)x);
#else
  f32v r;
  for (int l = 0; l < Traits<float>::W; ++l) r[l] = std::sqrt(x[l]);
  return r;
#endif
}

// 1 / sqrt(x) per lane, correctly rounded square root and division: the
// divider's way (exact at 0 and inf as they are).
template <typename T>
AITS_SIMD Vec<T> inv_sqrt_divide(const Vec<T>& x) {
  return T(1) / sqrt(x);
}

// 1 / sqrt(x) per lane, for x >= 0 (NaN stays NaN).
AITS_SIMD f64v rsqrt(const f64v& x) {
#if defined(__AVX512F__)
  // rsqrt14: relative error < 2^-14; two iterations reach ~2^-52.
  const f64v h = x * 0.5;
  f64v y = (f64v)_mm512_rsqrt14_pd((__m512d)x);
  y = newton<double>(h, newton<double>(h, y));
  return exact_at_zero_and_inf<double>(x, y);
#else
#if defined(__AVX2__) && defined(__FMA__)
  // rsqrtps of x rounded to float (relative error < 1.5 * 2^-12 + 2^-24), three
  // iterations, for the lanes in float's normal range [2^-125, 2^125]; the
  // others (0, inf, NaN, the far ends: rare) take the integer-bit path below.
  // Each lane's result depends on that lane alone (the few-body loop keeps one
  // system per lane and must not see its neighbours).
  const i64v normal = (x >= 0x1p-125) & (x <= 0x1p125);
  const f64v h = x * 0.5;
  const f64v fast = opaque(newton<double>(h, newton<double>(h, newton<double>(
      h, (f64v)_mm256_cvtps_pd(_mm_rsqrt_ps(_mm256_cvtpd_ps((__m256d)x)))))));
  if (__builtin_expect(_mm256_movemask_pd((__m256d)normal) == 0xF, 1)) return fast;
#endif
  // Integer-bit estimate (relative error < 3.5 %), four iterations. Inputs
  // below 2^-600 (denormals included) are scaled by 2^600 first.
  const i64v tiny = x < 0x1p-600;
  const f64v xs = tiny ? x * 0x1p600 : x;
  f64v y = (f64v)(UINT64_C(0x5FE6EB50C7B537A9) - ((u64v)xs >> 1));
  const f64v hs = xs * 0.5;
  y = newton<double>(hs, newton<double>(hs, newton<double>(hs, newton<double>(hs, y))));
  y = tiny ? y * 0x1p300 : y;
  y = exact_at_zero_and_inf<double>(x, y);
#if defined(__AVX2__) && defined(__FMA__)
  return normal ? fast : y;
#else
  return y;
#endif
#endif
}

AITS_SIMD f32v rsqrt(const f32v& x) {
#if defined(__AVX512F__)
  // rsqrt14 (denormal inputs handled), one iteration reaches ~2^-24.
  f32v y = (f32v)_mm512_rsqrt14_ps((__m512)x);
  y = newton<float>(x * 0.5f, y);
  return exact_at_zero_and_inf<float>(x, y);
#elif defined(__AVX2__) && defined(__FMA__)
  // rsqrtps (relative error < 1.5 * 2^-12, denormal inputs read as 0), one
  // iteration (~2^-23); where a lane is 0, inf, NaN or below 2^-64 (rare), the
  // inputs below 2^-64 are scaled by 2^64 first and 0 and inf made exact.
  // Each lane's result depends on that lane alone (as for float64 above).
  const i32v normal = (x >= 0x1p-64f) & (x <= 0x1p126f);
  const f32v fast = opaque(newton<float>(x * 0.5f, (f32v)_mm256_rsqrt_ps((__m256)x)));
  if (__builtin_expect(_mm256_movemask_ps((__m256)normal) == 0xFF, 1)) return fast;
  const i32v tiny = x < 0x1p-64f;
  const f32v xs = tiny ? x * 0x1p64f : x;
  f32v y = (f32v)_mm256_rsqrt_ps((__m256)xs);
  y = newton<float>(xs * 0.5f, y);
  y = tiny ? y * 0x1p32f : y;
  return normal ? fast : exact_at_zero_and_inf<float>(x, y);
#else
  // Integer-bit estimate, three iterations; inputs below 2^-64 scaled.
  const i32v tiny = x < 0x1p-64f;
  const f32v xs = tiny ? x * 0x1p64f : x;
  f32v y = (f32v)(UINT32_C(0x5F375A86) - ((u32v)xs >> 1));
  const f32v hs = xs * 0.5f;
  y = newton<float>(hs, newton<float>(hs, newton<float>(hs, y)));
  y = tiny ? y * 0x1p32f : y;
  return exact_at_zero_and_inf<float>(x, y);
#endif
}

}  // namespace simd
}  // namespace aits
