// The time-step network of aits.model (TimeStepNet: an MLP, or an ensemble of K
// such networks on the same inputs) evaluated for kLanes systems at once, for
// the native loop's model policy (fewbody_run.h): lane l of every vector
// belongs to the lane's system (lanes.h), so each weight is read once per
// group of kLanes systems and every multiply-add is a vector instruction.
// Arithmetic in float64; each lane's results do not depend on the other lanes.
//
// What it computes is TimeStepNet.forward for the "aarseth" output: member k's
// output z_k = head(act(... act(W_1 x + b_1) ...)), then
//   K = 1:  dt = scale * softplus(z_1)
//   K > 1:  dt = scale * exp(mean_k log softplus(z_k))   (the geometric mean)
// to be multiplied by Aarseth's time of the state by the caller.
#pragma once

#include <cmath>
#include <cstdint>
#include <vector>

#include "backend.h"
#include "cpu/lanes.h"

namespace aits {
namespace lane_net {

using lanes::F64;
using lanes::I64;
using lanes::kLanes;

// One layer of every member: weight (K, out, in) and bias (K, out), row-major.
struct Layer {
  int64_t in, out;
  const double* weight;
  const double* bias;
};

struct Net {
  int64_t members = 1;
  std::vector<Layer> layers;  // the hidden layers, then the head (out = 1)
  NetActivation activation = NetActivation::kTanh;
  double scale = 1.0;  // TimeStepNet.dt_scale
  int64_t width = 0;   // the widest layer's output
};

// tanh per lane, to a few ulp: tanh|x| = e / (e + 2) with e = expm1(2|x|), the
// sign restored. expm1(y) for y = n ln2 + r (|r| <= ln2 / 2, the split of ln2
// in two parts keeps n ln2 exact) is 2^n expm1(r) + (2^n - 1), expm1(r) from its
// Taylor series to r^13 (the next term is below 1e-17 relative). |x| is capped
// at 20, where tanh rounds to 1. Exact at 0 (and -0), NaN stays NaN.
AITS_SIMD F64 tanh(const F64& x) {
  constexpr double kInvLn2 = 1.4426950408889634074;
  constexpr double kLn2Hi = 6.93147180369123816490e-01;  // 32 significant bits
  constexpr double kLn2Lo = 1.90821492927058770002e-10;
  constexpr double kShift = 6755399441055744.0;  // 1.5 * 2^52: x + kShift rounds x to an integer
  const F64 ax = x < 0 ? -x : x;
  const F64 y = 2.0 * (ax < 20.0 ? ax : lanes::splat<double>(20.0));
  const F64 shifted = y * kInvLn2 + kShift;  // kShift + n, n = round(y / ln2) in [0, 58]
  const F64 n = shifted - kShift;
  const F64 r = (y - n * kLn2Hi) - n * kLn2Lo;
  F64 p = lanes::splat<double>(1.0 / 6227020800.0);  // 1 / 13!
  constexpr double kInverseFactorials[] = {
      1.0 / 479001600.0, 1.0 / 39916800.0, 1.0 / 3628800.0, 1.0 / 362880.0, 1.0 / 40320.0,
      1.0 / 5040.0,      1.0 / 720.0,      1.0 / 120.0,     1.0 / 24.0,     1.0 / 6.0,
      1.0 / 2.0,         1.0};
  for (double c : kInverseFactorials) p = p * r + c;
  p = p * r;  // expm1(r)
  // 2^n from the bits of kShift + n: its low bits hold n
  const I64 bits = ((I64)shifted - (I64)(lanes::splat<double>(kShift)) + 1023) << 52;
  const F64 two_n = (F64)bits;
  const F64 e = two_n * p + (two_n - 1.0);
  const F64 t = e / (e + 2.0);
  const F64 signed_t = x < 0 ? -t : t;
  return x == x ? signed_t : x;
}

AITS_SIMD F64 activate(const F64& x, NetActivation act) {
  return act == NetActivation::kTanh ? tanh(x) : (x > 0 ? x : F64{});
}

// softplus as torch's (beta 1, threshold 20: z itself above 20), per lane.
inline double softplus(double z) { return z > 20.0 ? z : std::log1p(std::exp(z)); }

// Rows [0, R) of one layer (w: their weights, R x in; b: their biases):
// out[r] = act(b[r] + sum_i w[r][i] h[i]), without act for the head. R rows at
// once keep R independent chains of multiply-adds in flight.
template <int R>
AITS_SIMD void layer_rows(const double* w, const double* b, int64_t in, const F64* h, F64* out,
                          bool last, NetActivation act) {
  F64 s[R] = {};
  for (int64_t i = 0; i < in; ++i) {
    const F64 hi = h[i];
    for (int r = 0; r < R; ++r) s[r] += w[r * in + i] * hi;
  }
  for (int r = 0; r < R; ++r) {
    const F64 z = s[r] + b[r];
    out[r] = last ? z : activate(z, act);
  }
}

// Rows per block of layer_rows: enough chains for two multiply-add pipes.
constexpr int kBlock = 8;

// The network's dt per lane (before the time scale) for the inputs x (the
// first layer's `in` vectors); scratch holds 2 * net.width vectors.
inline F64 forward(const Net& net, const F64* x, F64* scratch) {
  F64 log_sum{}, single{};
  for (int64_t k = 0; k < net.members; ++k) {
    const F64* h = x;
    F64* out = scratch;
    for (size_t li = 0; li < net.layers.size(); ++li) {
      const Layer& L = net.layers[li];
      const double* W = L.weight + k * L.out * L.in;
      const double* b = L.bias + k * L.out;
      const bool last = li + 1 == net.layers.size();
      int64_t o = 0;
      for (; o + kBlock <= L.out; o += kBlock) {
        layer_rows<kBlock>(W + o * L.in, b + o, L.in, h, out + o, last, net.activation);
      }
      for (; o < L.out; ++o) layer_rows<1>(W + o * L.in, b + o, L.in, h, out + o, last,
                                            net.activation);
      h = out;
      out = out == scratch ? scratch + net.width : scratch;
    }
    for (int l = 0; l < kLanes; ++l) {
      const double sp = softplus(h[0][l]);
      if (net.members == 1) {
        single[l] = sp;
      } else {
        log_sum[l] += std::log(sp);
      }
    }
  }
  if (net.members == 1) return net.scale * single;
  F64 dt;
  for (int l = 0; l < kLanes; ++l) dt[l] = std::exp(log_sum[l] / double(net.members));
  return net.scale * dt;
}

}  // namespace lane_net
}  // namespace aits
