// The pair statistics' per-pair rules, shared by the CPU and CUDA kernels of
// pair_statistics (min, mean and max of the softened distance s over pairs
// i != j, and the minimum free-fall time sqrt(s^3 / (G (m_i + m_j)))).
//
// Each body's row over its partners keeps four accumulators in StatAcc<T>:
// min s^2, sum of s, max s^2 and max q = (m_i + m_j) / s^3; a system's rows are
// merged in a fixed order, then stats = (sqrt(min s^2), sum / (N (N - 1)),
// sqrt(max s^2), freefall_time(G, max q, min s^2)).
#pragma once

#include <cmath>
#include <type_traits>

#include "gravity.h"

namespace aits {

// The statistics' accumulator type: double for float32 inputs, so that
// q = (m_i + m_j) / s^3 (which overflows float32 below s ~ 1e-13) is
// representable wherever the free-fall time is.
template <typename T>
using StatAcc = std::conditional_t<std::is_same_v<T, float>, double, T>;

// T's smallest positive (subnormal) value.
template <typename T>
AITS_HD T smallest_positive() {
  if constexpr (std::is_same_v<T, float>) {
    return 0x1p-149f;
  } else {
    return 0x1p-1074;
  }
}

// q = (m_i + m_j) / s^3 from the pair's 1 / s, as (M / s^2) (1 / s) in A.
template <typename A, typename T>
AITS_HD A freefall_weight(T M, T inv) {
  return static_cast<A>(M * inv * inv) * static_cast<A>(inv);
}

// The minimum free-fall time sqrt(1 / (G max q)) in T. 0 only when two bodies
// coincide (min_s == 0): where q overflows or the time underflows for distinct
// bodies (float64: s below ~1e-102), T's smallest positive value, a lower bound.
template <typename T, typename A>
AITS_HD T freefall_time(A G, A max_q, A min_s) {
  const T t = static_cast<T>(std::sqrt(A(1) / (G * max_q)));
  return (t == T(0) && min_s > A(0)) ? smallest_positive<T>() : t;
}

// s^2 of a pair for the statistics: distinct bodies whose s^2 underflows to 0
// (float32: separations below ~3e-23) count as the smallest positive s^2, so
// that only coincident bodies give s = 0 and a free-fall time of 0.
template <typename T>
AITS_HD T distinct_s2(T s2, const Vec3<T>& d) {
  const T l1 = std::abs(d.x) + std::abs(d.y) + std::abs(d.z);
  return (s2 == T(0) && l1 > T(0)) ? smallest_positive<T>() : s2;
}

// Merges one value into row accumulator k (0: min, 1: sum, 2 and 3: max); a
// NaN value (0 * inf, a massless coincident pair) leaves a min or max as it was.
template <typename A>
AITS_HD void merge_row_stat(int k, A& acc, A t) {
  if (k == 1) {
    acc += t;
  } else if (k == 0) {
    acc = t < acc ? t : acc;
  } else {
    acc = t > acc ? t : acc;
  }
}

}  // namespace aits
