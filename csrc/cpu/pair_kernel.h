// Which CPU pair kernel the ops use, chosen at run time so that one process
// can compare them: "rsqrt" (reciprocal-square-root estimate refined by Newton
// iterations, simd.h; the default in AVX-512 builds) or "divide" (one square
// root and one division per pair, the original kernels; the default
// otherwise). Process-wide, not per thread.
#pragma once

#include <string>

#include <c10/util/string_view.h>

namespace aits {

enum class PairKernel { kRsqrt, kDivide };

PairKernel current_pair_kernel();

// Op aits::set_pair_kernel(str name): ValueError naming the valid names.
void set_pair_kernel(c10::string_view name);

// Op aits::pair_kernel() -> str.
std::string pair_kernel();

// Op aits::simd_instruction_set() -> str: "avx512f", "avx2" or "none".
std::string simd_instruction_set();

}  // namespace aits
