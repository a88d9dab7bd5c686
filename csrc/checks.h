// Input checks shared by every op and every device: written once, here.
// Each failure names the op, the argument, what was expected and how to fix it.
#pragma once

#include <string>
#include <vector>

#include <ATen/core/Tensor.h>

namespace aits {

// A validated system, always batched: pos (B, N, D), mass (B, N), contiguous.
struct System {
  at::Tensor pos;
  at::Tensor mass;
  bool batched;  // false when the caller passed (N, D) / (N,)
  int64_t B, N, D;

  // Drops the batch axis again for an unbatched caller.
  at::Tensor unbatch(const at::Tensor& t) const { return batched ? t : t.squeeze(0); }
};

enum class Sign { kAny, kNonNegative, kPositive, kNonZero };

// Value checks (finiteness, signs) need the data. On the CPU each is one pass
// over it, done at once; on a GPU reading it back is a synchronisation, so the
// checks are collected and read back together in run().
class ValueChecks {
 public:
  // enabled = false: shape checks only (backward ops: the forward checked the values).
  explicit ValueChecks(const char* op, bool enabled = true) : op_(op), enabled_(enabled) {}
  void finite(const char* name, const at::Tensor& t) { require(name, t, Sign::kAny); }
  void finite_non_negative(const char* name, const at::Tensor& t) {
    require(name, t, Sign::kNonNegative);
  }
  void finite_positive(const char* name, const at::Tensor& t) {
    require(name, t, Sign::kPositive);
  }
  // A signed step: negative integrates backward, zero is refused.
  void finite_non_zero(const char* name, const at::Tensor& t) {
    require(name, t, Sign::kNonZero);
  }
  // Raises ValueError for the first failed check.
  void run() const;

 private:
  void require(const char* name, const at::Tensor& t, Sign sign);

  const char* op_;
  bool enabled_;
  std::string failure_;             // CPU: the first failure found
  std::vector<at::Tensor> ok_;      // other devices: one flag per check
  std::vector<std::string> messages_;
};

// pos (N, D) or (B, N, D), mass (N,) or (B, N), softening >= 0, G > 0.
// Shape, dtype and device problems raise at once; value checks go to `values`.
System check_system(const char* op, const at::Tensor& pos, const at::Tensor& mass,
                    double softening, double G, ValueChecks& values);

// A tensor that must look like sys.pos (e.g. vel, acc, a gradient); returns it
// batched and contiguous.
at::Tensor check_like_pos(const char* op, const char* name, const at::Tensor& t,
                          const System& sys);

// dt: a 0-d tensor, or (B,) for a batched system, finite and non-zero (negative
// integrates backward); returns it as (B,).
at::Tensor check_dt(const char* op, const at::Tensor& dt, const System& sys,
                    ValueChecks& values);

// A float64 vector of one value per system (B,), e.g. the systems' times;
// returns it contiguous. Shape, dtype and device only.
at::Tensor check_per_system_f64(const char* op, const char* name, const at::Tensor& t,
                                const System& sys);

// A scalar argument: finite (or +inf where allow_inf) and of the sign.
void check_number(const char* op, const char* name, double value, Sign sign,
                  bool allow_inf = false);

}  // namespace aits
