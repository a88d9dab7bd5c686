#include "checks.h"

#include <cmath>
#include <utility>

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <c10/util/Exception.h>

namespace aits {
namespace {

std::string shape_str(const at::Tensor& t) {
  std::string s = "(";
  for (int64_t k = 0; k < t.dim(); ++k) {
    s += (k ? ", " : "") + std::to_string(t.size(k));
  }
  return s + (t.dim() == 1 ? ",)" : ")");
}

void check_tensor_kind(const char* op, const char* name, const at::Tensor& t,
                       const at::Tensor& like) {
  TORCH_CHECK_VALUE(t.defined(), "aits.", op, ": ", name, " is missing (got None).");
  TORCH_CHECK_TYPE(t.scalar_type() == like.scalar_type(), "aits.", op, ": ", name,
                   " has dtype ", t.scalar_type(), " but pos has dtype ", like.scalar_type(),
                   "; convert it with .to(pos.dtype).");
  TORCH_CHECK_VALUE(t.device() == like.device(), "aits.", op, ": ", name, " is on ", t.device(),
                    " but pos is on ", like.device(), "; move it with .to(pos.device).");
}

}  // namespace

namespace {

const char* sign_message(Sign sign) {
  switch (sign) {
    case Sign::kNonNegative:
      return " contains negative values; every entry must be >= 0.";
    case Sign::kNonZero:
      return " contains zeros; every step must be non-zero (negative integrates backward).";
    default:
      return " contains values <= 0; every entry must be > 0.";
  }
}

// CPU: one pass over the data, no temporaries. Returns (all finite, all of the sign).
// Whether every entry of p[0, n) is finite, and whether every entry has the sign:
// W independent lanes (one AVX-512 register of T) so that the loop vectorises
// without reassociating anything. x * 0 is 0 for finite x and NaN for NaN and
// +-inf, so a lane's sum of them stays 0 exactly when its entries are finite;
// the sign is a lane minimum (entries > 0, >= 0) or a count of zeros.
template <typename T, Sign kSign>
std::pair<bool, bool> scan_values(const T* __restrict p, int64_t n) {
  constexpr int W = 64 / sizeof(T);
  T nonfinite[W], low[W], zeros[W];
  for (int l = 0; l < W; ++l) {
    nonfinite[l] = T(0);
    low[l] = T(1);
    zeros[l] = T(0);
  }
  const auto visit = [&](int l, T v) {
    nonfinite[l] += v * T(0);
    if constexpr (kSign == Sign::kNonNegative || kSign == Sign::kPositive) {
      low[l] = v < low[l] ? v : low[l];
    }
    if constexpr (kSign == Sign::kNonZero) zeros[l] += v == T(0) ? T(1) : T(0);
  };
  int64_t k = 0;
  for (; k + W <= n; k += W) {
    for (int l = 0; l < W; ++l) visit(l, p[k + l]);
  }
  for (int l = 0; k < n; ++k, ++l) visit(l, p[k]);
  bool finite = true, signed_ok = true;
  for (int l = 0; l < W; ++l) {
    finite &= nonfinite[l] == T(0);
    if constexpr (kSign == Sign::kNonNegative) signed_ok &= low[l] >= T(0);
    if constexpr (kSign == Sign::kPositive) signed_ok &= low[l] > T(0);
    if constexpr (kSign == Sign::kNonZero) signed_ok &= zeros[l] == T(0);
  }
  return {finite, signed_ok};
}

std::pair<bool, bool> scan_cpu(const at::Tensor& t, Sign sign) {
  const at::Tensor c = t.contiguous();
  std::pair<bool, bool> result{true, true};
  AT_DISPATCH_FLOATING_TYPES(c.scalar_type(), "aits_value_checks", [&] {
    const scalar_t* p = c.data_ptr<scalar_t>();
    const int64_t n = c.numel();
    switch (sign) {
      case Sign::kNonNegative:
        result = scan_values<scalar_t, Sign::kNonNegative>(p, n);
        break;
      case Sign::kPositive:
        result = scan_values<scalar_t, Sign::kPositive>(p, n);
        break;
      case Sign::kNonZero:
        result = scan_values<scalar_t, Sign::kNonZero>(p, n);
        break;
      default:
        result = scan_values<scalar_t, Sign::kAny>(p, n);
    }
  });
  return result;
}

}  // namespace

void ValueChecks::require(const char* name, const at::Tensor& t, Sign sign) {
  if (!enabled_ || t.numel() == 0) return;
  const std::string finite_message =
      std::string(name) + " contains NaN or infinite values; every entry must be finite.";
  if (t.device().is_cpu()) {
    if (!failure_.empty()) return;  // the first failure is the one reported
    const auto [finite, signed_ok] = scan_cpu(t, sign);
    if (!finite) {
      failure_ = finite_message;
    } else if (!signed_ok) {
      failure_ = std::string(name) + sign_message(sign);
    }
    return;
  }
  ok_.push_back(at::isfinite(t).all());
  messages_.push_back(finite_message);
  if (sign == Sign::kAny) return;
  ok_.push_back(sign == Sign::kNonNegative ? (t >= 0).all()
                : sign == Sign::kNonZero   ? (t != 0).all()
                                           : (t > 0).all());
  messages_.push_back(std::string(name) + sign_message(sign));
}

void ValueChecks::run() const {
  TORCH_CHECK_VALUE(failure_.empty(), "aits.", op_, ": ", failure_);
  if (ok_.empty()) return;
  const at::Tensor flags = at::stack(ok_).to(at::kCPU);  // the one read-back
  const bool* f = flags.data_ptr<bool>();
  for (size_t k = 0; k < ok_.size(); ++k) {
    TORCH_CHECK_VALUE(f[k], "aits.", op_, ": ", messages_[k]);
  }
}

System check_system(const char* op, const at::Tensor& pos, const at::Tensor& mass,
                    double softening, double G, ValueChecks& values) {
  TORCH_CHECK_VALUE(pos.defined() && mass.defined(), "aits.", op, ": pos and mass are required.");
  TORCH_CHECK_TYPE(pos.scalar_type() == at::kFloat || pos.scalar_type() == at::kDouble, "aits.",
                   op, ": pos must be float32 or float64, got ", pos.scalar_type(),
                   "; convert with pos.double() or pos.float().");
  TORCH_CHECK_VALUE((pos.dim() == 2 || pos.dim() == 3) && (pos.size(-1) == 2 || pos.size(-1) == 3),
                    "aits.", op, ": pos must have shape (N, D) or (B, N, D) with D = 2 or 3, got ",
                    shape_str(pos), ".");
  check_tensor_kind(op, "mass", mass, pos);
  TORCH_CHECK_VALUE(mass.dim() == pos.dim() - 1 && mass.sizes() == pos.sizes().slice(0, pos.dim() - 1),
                    "aits.", op, ": mass must have shape ", shape_str(pos.select(-1, 0)),
                    " to match pos of shape ", shape_str(pos), ", got ", shape_str(mass), ".");
  TORCH_CHECK_VALUE(std::isfinite(softening) && softening >= 0, "aits.", op,
                    ": softening must be a finite number >= 0, got ", softening, ".");
  TORCH_CHECK_VALUE(std::isfinite(G) && G > 0, "aits.", op,
                    ": G must be a finite number > 0, got ", G, ".");

  System sys;
  sys.batched = pos.dim() == 3;
  sys.pos = (sys.batched ? pos : pos.unsqueeze(0)).contiguous();
  sys.mass = (sys.batched ? mass : mass.unsqueeze(0)).contiguous();
  sys.B = sys.pos.size(0);
  sys.N = sys.pos.size(1);
  sys.D = sys.pos.size(2);
  values.finite("pos", sys.pos);
  values.finite_non_negative("mass", sys.mass);
  return sys;
}

at::Tensor check_like_pos(const char* op, const char* name, const at::Tensor& t,
                          const System& sys) {
  check_tensor_kind(op, name, t, sys.pos);
  const bool same = sys.batched ? t.sizes() == sys.pos.sizes()
                                : t.dim() == 2 && t.sizes() == sys.pos.sizes().slice(1);
  TORCH_CHECK_VALUE(same, "aits.", op, ": ", name, " must have the same shape as pos ",
                    shape_str(sys.batched ? sys.pos : sys.pos.squeeze(0)), ", got ", shape_str(t), ".");
  return (sys.batched ? t : t.unsqueeze(0)).contiguous();
}

at::Tensor check_dt(const char* op, const at::Tensor& dt, const System& sys, ValueChecks& values) {
  check_tensor_kind(op, "dt", dt, sys.pos);
  const bool ok = dt.dim() == 0 || (sys.batched && dt.dim() == 1 && dt.size(0) == sys.B);
  TORCH_CHECK_VALUE(ok, "aits.", op, ": dt must be a 0-d tensor",
                    sys.batched ? " or have shape (B,) = (" + std::to_string(sys.B) + ",)" : std::string(),
                    ", got shape ", shape_str(dt), ".");
  values.finite_non_zero("dt", dt);
  return dt.dim() == 0 ? dt.expand({sys.B}).contiguous() : dt.contiguous();
}

at::Tensor check_per_system_f64(const char* op, const char* name, const at::Tensor& t,
                                const System& sys) {
  TORCH_CHECK_VALUE(t.defined(), "aits.", op, ": ", name, " is missing (got None).");
  TORCH_CHECK_TYPE(t.scalar_type() == at::kDouble, "aits.", op, ": ", name,
                   " must be float64 (times accumulate many small steps), got ", t.scalar_type(),
                   "; convert it with .double().");
  TORCH_CHECK_VALUE(t.device() == sys.pos.device(), "aits.", op, ": ", name, " is on ",
                    t.device(), " but pos is on ", sys.pos.device(),
                    "; move it with .to(pos.device).");
  TORCH_CHECK_VALUE(t.dim() == 1 && t.size(0) == sys.B, "aits.", op, ": ", name,
                    " must have shape (B,) = (", sys.B, ",), got ", shape_str(t), ".");
  return t.contiguous();
}

void check_number(const char* op, const char* name, double value, Sign sign, bool allow_inf) {
  const bool finite = std::isfinite(value) || (allow_inf && value == INFINITY);
  TORCH_CHECK_VALUE(finite, "aits.", op, ": ", name, " must be a finite number",
                    allow_inf ? " (or inf)" : "", ", got ", value, ".");
  const bool ok = sign == Sign::kPositive      ? value > 0
                  : sign == Sign::kNonNegative ? value >= 0
                  : sign == Sign::kNonZero     ? value != 0
                                               : true;
  TORCH_CHECK_VALUE(ok, "aits.", op, ": ", name, " must be ",
                    sign == Sign::kPositive ? "> 0" : sign == Sign::kNonNegative ? ">= 0" : "non-zero",
                    ", got ", value, ".");
}

}  // namespace aits
