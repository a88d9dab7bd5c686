#include "pair_kernel.h"

#include <atomic>
#include <string_view>

#include <c10/util/Exception.h>
#include <torch/library.h>

#include "cpu/simd.h"

namespace aits {
namespace {

// The default is the kernel measured faster for the build's instruction set:
// with AVX-512 "rsqrt" (2.0x "divide", float64 forward, docs/benchmarks.md);
// the AVX2 and portable builds ran "rsqrt" at 0.7-0.8x "divide" on the same
// Xeon, so they keep "divide" unless asked.
constexpr PairKernel kDefault =
    std::string_view(simd::instruction_set()) == "avx512f" ? PairKernel::kRsqrt : PairKernel::kDivide;

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
