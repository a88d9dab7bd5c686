// Vectors over *systems* for the few-body kernels: lane l of every vector
// belongs to system b0 + l of a group of kLanes systems, so one vector
// instruction does the same arithmetic for kLanes small systems at once.
//
// kLanes is the float64 width of the build's vectors (simd.h: 8 with AVX-512,
// 4 with AVX2, 2 otherwise), for both dtypes: float32 groups use half-width
// float vectors, so that the float64 accumulators of their statistics (and
// every system's float64 time) have the same lanes.
//
// The inverse distance of a pair is either simd::rsqrt (the "rsqrt" pair
// kernel) or 1 / sqrt with a correctly rounded square root and division
// (the "divide" pair kernel: per lane the same bits as the scalar
// 1 / std::sqrt(r2)). Each lane's arithmetic never depends on the other
// lanes, so a system gets the same bits in any lane of any group.
#pragma once

#include <cstdint>
#include <limits>
#include <type_traits>

#include "cpu/simd.h"

namespace aits {
namespace lanes {

constexpr int kLanes = simd::Traits<double>::W;

template <typename T>
struct Types;
template <>
struct Types<double> {
  using V = simd::f64v;
  using M = simd::i64v;
};
template <>
struct Types<float> {
  typedef float V __attribute__((vector_size(kLanes * sizeof(float))));
  typedef int32_t M __attribute__((vector_size(kLanes * sizeof(int32_t))));
};

// kLanes values of T, one per system; M: a lane mask (-1 true, 0 false).
template <typename T>
using V = typename Types<T>::V;
template <typename T>
using M = typename Types<T>::M;
using F64 = simd::f64v;
using I64 = simd::i64v;

template <typename To, typename From>
AITS_SIMD V<To> cast(const From& v) {
  return __builtin_convertvector(v, V<To>);
}

// A mask of T's lanes as a mask of float64 lanes (and back).
template <typename T>
AITS_SIMD I64 wide(const M<T>& m) {
  return __builtin_convertvector(m, I64);
}
template <typename T>
AITS_SIMD M<T> narrow(const I64& m) {
  return __builtin_convertvector(m, M<T>);
}

template <typename T>
AITS_SIMD V<T> splat(T v) {
  return V<T>{} + v;
}

// Whether any lane of a mask is set: one vector test, not a loop over lanes.
template <typename Mask>
AITS_SIMD bool any(const Mask& mask) {
#if defined(__AVX512F__)
  if constexpr (sizeof(Mask) == 64) {
    return _mm512_test_epi64_mask((__m512i)mask, (__m512i)mask) != 0;
  }
#endif
#if defined(__AVX2__)
  if constexpr (sizeof(Mask) == 32) return !_mm256_testz_si256((__m256i)mask, (__m256i)mask);
#endif
  for (int l = 0; l < kLanes; ++l) {
    if (mask[l]) return true;
  }
  return false;
}

// Correctly rounded square root per lane (simd.h).
using simd::sqrt;

// float32: through float64, whose square root rounded to float32 is the
// correctly rounded float32 square root (53 >= 2 * 24 + 2 bits).
AITS_SIMD V<float> sqrt(const V<float>& x) { return cast<float>(sqrt(cast<double>(x))); }

// 1 / sqrt(x) per lane: the estimate of simd.h (about 1 ulp).
AITS_SIMD F64 rsqrt(const F64& x) { return simd::rsqrt(x); }
AITS_SIMD V<float> rsqrt(const V<float>& x) {
  return cast<float>(simd::rsqrt(cast<double>(x)));
}

// x / y per lane from a reciprocal estimate refined to about 1 ulp (AVX-512:
// rcp14, relative error < 2^-14, two Newton iterations; other builds divide),
// for y >= 0: x / 0 = x inf and x / inf = 0 x as IEEE division; NaN stays NaN.
AITS_SIMD F64 divide_estimate(const F64& x, const F64& y) {
#if defined(__AVX512F__)
  constexpr double inf = std::numeric_limits<double>::infinity();
  F64 r = (F64)_mm512_rcp14_pd((__m512d)y);
  r = r + r * (1.0 - y * r);
  r = r + r * (1.0 - y * r);
  r = y == 0 ? (F64{} + inf) : (y == inf ? F64{} : r);
  return x * r;
#else
  return x / y;
#endif
}
AITS_SIMD V<float> divide_estimate(const V<float>& x, const V<float>& y) {
  return cast<float>(divide_estimate(cast<double>(x), cast<double>(y)));
}

// The fast paths below return through simd::opaque, so that a lane gets the
// bits of the general path whichever path its group takes.
using simd::opaque;

// sqrt(x) per lane for x >= 0 as x rsqrt(x) from the estimate (about 1.5 ulp);
// sqrt(0) = 0, sqrt(inf) = inf, NaN stays NaN. float32 through float64.
AITS_SIMD F64 sqrt_estimate(const F64& x) {
  const F64 r = x * rsqrt(x);
  return x + x == x ? x : r;  // 0 and inf
}
AITS_SIMD V<float> sqrt_estimate(const V<float>& x) {
  return cast<float>(sqrt_estimate(cast<double>(x)));
}

// sqrt(x) and x / y for normal, finite x > 0 and y > 0 (no special cases to
// keep): the estimates above without their selects.
AITS_SIMD F64 sqrt_normal(const F64& x) {
#if defined(__AVX512F__)
  const F64 h = x * 0.5;
  F64 y = (F64)_mm512_rsqrt14_pd((__m512d)x);
  y = simd::newton<double>(h, simd::newton<double>(h, y));
  return opaque(x * y);
#else
  return opaque(x * rsqrt(x));  // sqrt_estimate's bits (not the exact root)
#endif
}
AITS_SIMD V<float> sqrt_normal(const V<float>& x) {
  return cast<float>(sqrt_normal(cast<double>(x)));
}
AITS_SIMD F64 divide_normal(const F64& x, const F64& y) {
#if defined(__AVX512F__)
  F64 r = (F64)_mm512_rcp14_pd((__m512d)y);
  r = r + r * (1.0 - y * r);
  r = r + r * (1.0 - y * r);
  return opaque(x * r);
#else
  return x / y;
#endif
}
AITS_SIMD V<float> divide_normal(const V<float>& x, const V<float>& y) {
  return cast<float>(divide_normal(cast<double>(x), cast<double>(y)));
}

// Lanes where x is a normal, finite number > 0.
template <typename Vec>
AITS_SIMD auto normal_positive(const Vec& x) {
  using E = std::remove_reference_t<decltype(x[0])>;
  return (x >= std::numeric_limits<E>::min()) & (x <= std::numeric_limits<E>::max());
}

// The two arithmetics a few-body kernel is built with: the inverse distance
// of a pair, and the square roots and divisions of Aarseth's criterion.
// "rsqrt": estimates refined to about 1 ulp, no divider; "divide": correctly
// rounded.
struct RsqrtInverse {
  template <typename Vec>
  AITS_SIMD Vec operator()(const Vec& r2) const { return rsqrt(r2); }
  template <typename Vec>
  AITS_SIMD Vec root(const Vec& x) const { return sqrt_estimate(x); }
  template <typename Vec>
  AITS_SIMD Vec divide(const Vec& x, const Vec& y) const { return divide_estimate(x, y); }
  // the same for normal, finite x, y > 0
  template <typename Vec>
  AITS_SIMD Vec root_normal(const Vec& x) const { return sqrt_normal(x); }
  template <typename Vec>
  AITS_SIMD Vec divide_normal(const Vec& x, const Vec& y) const { return lanes::divide_normal(x, y); }
};
struct DivideInverse {
  template <typename Vec>
  AITS_SIMD Vec operator()(const Vec& r2) const { return (Vec{} + 1) / sqrt(r2); }
  template <typename Vec>
  AITS_SIMD Vec root(const Vec& x) const { return sqrt(x); }
  template <typename Vec>
  AITS_SIMD Vec divide(const Vec& x, const Vec& y) const { return x / y; }
  template <typename Vec>
  AITS_SIMD Vec root_normal(const Vec& x) const { return sqrt(x); }
  template <typename Vec>
  AITS_SIMD Vec divide_normal(const Vec& x, const Vec& y) const { return x / y; }
};

template <typename Vec>
AITS_SIMD Vec min(const Vec& a, const Vec& b) {
  return a < b ? a : b;
}
template <typename Vec>
AITS_SIMD Vec max(const Vec& a, const Vec& b) {
  return a > b ? a : b;
}

// Lanes where x is finite: x * 0 is 0 for finite x and NaN for NaN and +-inf.
template <typename Vec>
AITS_SIMD auto finite(const Vec& x) {
  return x * 0 == 0;
}

// The systems [b0, b0 + n) of a group, n <= kLanes; lanes at or past n repeat
// system b0 + n - 1 (their results are computed and dropped), so that a
// system's lane arithmetic does not depend on the batch around it.
struct Group {
  int64_t b0;
  int n;
  int64_t system(int l) const { return b0 + (l < n ? l : n - 1); }
};

// Lane l of out[k] = p[system(l) * stride + k] for k < count.
template <typename T>
AITS_SIMD void gather(const T* p, const Group& g, int64_t stride, int64_t count, V<T>* out) {
  for (int l = 0; l < kLanes; ++l) {
    const T* s = p + g.system(l) * stride;
    for (int64_t k = 0; k < count; ++k) out[k][l] = s[k];
  }
}

// p[(b0 + l) * stride + k] = lane l of in[k], for the group's n systems.
template <typename T>
AITS_SIMD void scatter(T* p, const Group& g, int64_t stride, int64_t count, const V<T>* in) {
  for (int l = 0; l < g.n; ++l) {
    T* s = p + (g.b0 + l) * stride;
    for (int64_t k = 0; k < count; ++k) s[k] = in[k][l];
  }
}

}  // namespace lanes
}  // namespace aits
