#include "pair_kernel.h"

#include <atomic>

#include <c10/util/Exception.h>
#include <torch/library.h>

#include "cpu/simd.h"

namespace aits {
namespace {

std::atomic<PairKernel> selected{PairKernel::kRsqrt};

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
                      "'; valid names are 'rsqrt' (default) and 'divide'.");
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
