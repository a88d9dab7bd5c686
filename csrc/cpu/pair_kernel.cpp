#include "pair_kernel.h"

#include <atomic>
#include <string_view>

#include <c10/util/Exception.h>
#include <torch/library.h>

#include "cpu/simd.h"

namespace aits {
namespace {

// The default is the kernel measured faster for the build's instruction set
// (docs/benchmarks.md, float64 forward against "divide"): "rsqrt" with AVX-512
// (2.2x) and AVX2 (1.46x, sharing the work with the divider); the portable
// build ran "rsqrt" at 0.7-0.8x on the same Xeon, so it keeps "divide" unless asked.
constexpr PairKernel kDefault =
    std::string_view(simd::instruction_set()) == "none" ? PairKernel::kDivide : PairKernel::kRsqrt;

std::atomic<PairKernel> selected{kDefault};

}  // namespace

PairKernel current_pair_kernel() { return selected.load(std::memory_order_relaxed); }

void set_pair_kernel(c10::string_view name) {
  const std::string n(name.data(), name.size());
  if (n == "rsqrt") {
    selected.store(PairKernel::kRsqrt);
  } else if (n == "divide") {
    selected.store(PairKernel::kDivide);
  } else {
    TORCH_CHECK_VALUE(false, "aits.ops.set_pair_kernel: unknown pair kernel '", n,
                      "'; valid names are 'rsqrt' and 'divide'.");
  }
}

std::string pair_kernel() {
  return current_pair_kernel() == PairKernel::kRsqrt ? "rsqrt" : "divide";
}

std::string simd_instruction_set() { return simd::instruction_set(); }

// Schemas in ops.cpp; these ops take no tensors, so one kernel serves every
// dispatch key.
TORCH_LIBRARY_FRAGMENT(aits, m) {
  m.impl("set_pair_kernel", &set_pair_kernel);
  m.impl("pair_kernel", &pair_kernel);
  m.impl("simd_instruction_set", &simd_instruction_set);
}

}  // namespace aits
