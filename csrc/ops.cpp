// Schemas of the aits ops (the only place they are written), their
// device-independent implementations, and the CPU registration.
//
// Each op validates its inputs with checks.h, brings them to the batched
// contiguous form (B, N, D), and calls the primitive kernels of the back end of
// the inputs' device (backend.h). Backward passes are ops too, built from the
// same primitives: O(N) extra memory, no N x N tensor anywhere.
#include "ops.h"

#include <Python.h>

#include <ATen/ATen.h>
#include <torch/library.h>

#include "backend.h"
#include "checks.h"

namespace aits {
namespace {

// (B,) -> (B, 1, 1), to scale per-system vectors.
Tensor per_system(const Tensor& v) { return v.view({-1, 1, 1}); }

// The kernels write every entry: outputs need no zero-filling.
Tensor forward_acc(const System& sys, const Tensor& pos, double softening, double G) {
  Tensor acc = at::empty_like(pos);
  Tensor none;
  if (acc.numel() > 0) backend_for(pos).pair_forward(pos, sys.mass, softening, G, acc, none);
  return acc;
}

// grad_pos and grad_mass of sum(grad_acc * accelerations(pos, mass)).
std::tuple<Tensor, Tensor> backward_acc(const System& sys, const Tensor& pos,
                                        const Tensor& grad_acc, double softening, double G) {
  Tensor grad_pos = at::empty_like(pos);
  Tensor grad_mass = at::empty_like(sys.mass);
  if (grad_pos.numel() > 0) {
    backend_for(pos).pair_backward(pos, sys.mass, grad_acc, softening, G, grad_pos, grad_mass);
  }
  return {grad_pos, grad_mass};
}

}  // namespace

Tensor accelerations(const Tensor& pos, const Tensor& mass, double softening, double G) {
  ValueChecks values("accelerations");
  const System sys = check_system("accelerations", pos, mass, softening, G, values);
  values.run();
  return sys.unbatch(forward_acc(sys, sys.pos, softening, G));
}

std::tuple<Tensor, Tensor> accelerations_backward(const Tensor& grad_acc, const Tensor& pos,
                                                  const Tensor& mass, double softening, double G) {
  ValueChecks values("accelerations_backward", /*enabled=*/false);
  const System sys = check_system("accelerations_backward", pos, mass, softening, G, values);
  const Tensor g = check_like_pos("accelerations_backward", "grad_acc", grad_acc, sys);
  auto [grad_pos, grad_mass] = backward_acc(sys, sys.pos, g, softening, G);
  return {sys.unbatch(grad_pos), sys.unbatch(grad_mass)};
}

Tensor potential_energy(const Tensor& pos, const Tensor& mass, double softening, double G) {
  ValueChecks values("potential_energy");
  const System sys = check_system("potential_energy", pos, mass, softening, G, values);
  values.run();
  Tensor energy = at::zeros({sys.B}, sys.pos.options());
  if (sys.B > 0 && sys.N > 1) backend_for(sys.pos).potential(sys.pos, sys.mass, softening, G, energy);
  return sys.batched ? energy : energy.squeeze(0);
}

// dU/dx_k = -m_k a_k and dU/dm_k = phi_k.
std::tuple<Tensor, Tensor> potential_energy_backward(const Tensor& grad_energy, const Tensor& pos,
                                                     const Tensor& mass, double softening, double G) {
  ValueChecks values("potential_energy_backward", /*enabled=*/false);
  const System sys = check_system("potential_energy_backward", pos, mass, softening, G, values);
  Tensor acc = at::empty_like(sys.pos);
  Tensor phi = at::empty_like(sys.mass);
  if (acc.numel() > 0) backend_for(sys.pos).pair_forward(sys.pos, sys.mass, softening, G, acc, phi);
  const Tensor g = grad_energy.reshape({sys.B, 1});
  const Tensor grad_pos = acc.mul_((-g * sys.mass).unsqueeze(-1));
  const Tensor grad_mass = phi.mul_(g);
  return {sys.unbatch(grad_pos), sys.unbatch(grad_mass)};
}

Tensor pair_statistics(const Tensor& pos, const Tensor& mass, double softening, double G,
                       bool freefall) {
  ValueChecks values("pair_statistics");
  const System sys = check_system("pair_statistics", pos, mass, softening, G, values);
  values.run();
  Tensor stats = at::empty({sys.B, 4}, sys.pos.options());
  if (sys.B > 0) {
    backend_for(sys.pos).pair_statistics(sys.pos, sys.mass, softening, G, freefall, stats);
  }
  return sys.batched ? stats : stats.squeeze(0);
}

std::tuple<Tensor, Tensor, Tensor, Tensor> aarseth_derivatives(const Tensor& pos, const Tensor& vel,
                                                               const Tensor& mass,
                                                               double softening, double G) {
  const char* op = "aarseth_derivatives";
  ValueChecks values(op);
  const System sys = check_system(op, pos, mass, softening, G, values);
  const Tensor v = check_like_pos(op, "vel", vel, sys);
  values.finite("vel", v);
  values.run();
  Tensor acc = at::empty_like(sys.pos), jerk = at::empty_like(sys.pos);
  Tensor snap = at::empty_like(sys.pos), crackle = at::empty_like(sys.pos);
  if (acc.numel() > 0) {
    backend_for(sys.pos).aarseth_derivatives(sys.pos, v, sys.mass, softening, G, acc, jerk, snap,
                                             crackle);
  }
  return {sys.unbatch(acc), sys.unbatch(jerk), sys.unbatch(snap), sys.unbatch(crackle)};
}

// The encounter features (aits/encounter.py) from Aarseth's derivatives and the
// pair times, as the back end computes them: feats (B, kEncounterFeatures) and
// times (B, kEncounterTimes) in the dtype of pos.
std::tuple<Tensor, Tensor> encounter_features(const Tensor& pos, const Tensor& vel,
                                              const Tensor& mass, double softening, double G,
                                              double clip, bool smooth) {
  const char* op = "encounter_features";
  check_number(op, "clip", clip, Sign::kPositive);
  ValueChecks values(op);
  const System sys = check_system(op, pos, mass, softening, G, values);
  const Tensor v = check_like_pos(op, "vel", vel, sys);
  values.finite("vel", v);
  values.run();
  Tensor feats = at::empty({sys.B, kEncounterFeatures}, sys.pos.options());
  Tensor times = at::empty({sys.B, kEncounterTimes}, sys.pos.options());
  if (sys.B > 0) {
    backend_for(sys.pos).encounter_features(sys.pos, v, sys.mass, softening, G, clip, smooth,
                                            feats, times);
  }
  if (sys.batched) return {feats, times};
  return {feats.squeeze(0), times.squeeze(0)};
}

// The inputs of the encounter-history ops, checked: the system, vel, and the K + 1
// accelerations and times.
struct HistoryInputs {
  System sys;
  Tensor v;
  std::vector<Tensor> a, t;
};

HistoryInputs check_history(const char* op, const Tensor& pos, const Tensor& vel,
                            const Tensor& mass, at::TensorList accs, at::TensorList times,
                            double softening, double G, double clip) {
  check_number(op, "clip", clip, Sign::kPositive);
  ValueChecks values(op);
  const System sys = check_system(op, pos, mass, softening, G, values);
  const Tensor v = check_like_pos(op, "vel", vel, sys);
  values.finite("vel", v);
  TORCH_CHECK_VALUE(accs.size() >= 4, "aits.", op, ": accs must hold at least 4 accelerations "
                    "(the current state's and 3 past ones: a crackle is a third derivative), got ",
                    accs.size(), ".");
  TORCH_CHECK_VALUE(accs.size() <= kHistoryMaxNodes, "aits.", op, ": accs holds ", accs.size(),
                    " accelerations, at most ", kHistoryMaxNodes, " are supported.");
  TORCH_CHECK_VALUE(times.size() == accs.size(), "aits.", op, ": times must hold one time per "
                    "acceleration (", accs.size(), "), got ", times.size(), ".");
  std::vector<Tensor> a, t;
  for (size_t k = 0; k < accs.size(); ++k) {
    a.push_back(check_like_pos(op, "accs[k]", accs[k], sys));
    values.finite("accs[k]", a.back());
    t.push_back(check_per_system_f64(op, "times[k]", times[k], sys));
  }
  values.run();
  return {sys, v, std::move(a), std::move(t)};
}

// The encounter-history features (aits/encounter_history.py) from the current state
// and K + 1 >= 4 accelerations with their times (the current state's first, then back
// in time): feats (B, kHistoryEncounterFeatures) and tau (B,) in the dtype of pos, and
// ready (B,) bool, false for a system whose times do not strictly decrease (its
// features and tau are then not defined; the caller takes the exact derivatives).
// The bodies whose window spans more than one of their Aarseth times take exact
// derivatives, with the force's softening.
std::tuple<Tensor, Tensor, Tensor> history_encounter_features(
    const Tensor& pos, const Tensor& vel, const Tensor& mass, at::TensorList accs,
    at::TensorList times, double softening, double G, double clip) {
  const HistoryInputs in = check_history("history_encounter_features", pos, vel, mass, accs,
                                         times, softening, G, clip);
  const System& sys = in.sys;
  const Tensor& v = in.v;
  const std::vector<Tensor>&a = in.a, &t = in.t;
  Tensor ready = at::empty({sys.B}, t[0].options().dtype(at::kBool));
  Tensor feats = at::empty({sys.B, kHistoryEncounterFeatures}, sys.pos.options());
  Tensor tau = at::empty({sys.B}, sys.pos.options());
  if (sys.B > 0) {
    backend_for(sys.pos).history_encounter_features(sys.pos, v, sys.mass, a, t, softening, G,
                                                    clip, feats, tau, ready);
  }
  if (sys.batched) return {feats, tau, ready};
  return {feats.squeeze(0), tau.squeeze(0), ready.squeeze(0)};
}

// Kick-drift-kick: v_half = v + a0 dt/2; x1 = x + v_half dt; v1 = v_half + a1 dt/2.
// With `statistics`, the force evaluation at x1 also yields pair_statistics(x1)
// (free-fall time included), in one pass where the back end fuses them; else
// the fourth output is empty.
std::tuple<Tensor, Tensor, Tensor, Tensor> leapfrog_step(const Tensor& pos, const Tensor& vel,
                                                         const Tensor& mass, const Tensor& dt,
                                                         double softening, double G,
                                                         const std::optional<Tensor>& acc,
                                                         bool statistics) {
  const char* op = "leapfrog_step";
  ValueChecks values(op);
  const System sys = check_system(op, pos, mass, softening, G, values);
  const Tensor v = check_like_pos(op, "vel", vel, sys);
  values.finite("vel", v);
  const Tensor h = per_system(check_dt(op, dt, sys, values));
  Tensor a0;
  if (acc.has_value()) {
    a0 = check_like_pos(op, "acc", *acc, sys);
    values.finite("acc", a0);
  }
  values.run();
  if (!a0.defined()) a0 = forward_acc(sys, sys.pos, softening, G);

  if (statistics && sys.B > 0) {
    Tensor x1 = at::empty_like(sys.pos), v1 = at::empty_like(sys.pos);
    Tensor a1 = at::empty_like(sys.pos), stats = at::empty({sys.B, 4}, sys.pos.options());
    if (backend_for(sys.pos).kdk_step_with_statistics(sys.pos, v, sys.mass, h.view({-1}), a0,
                                                      softening, G, x1, v1, a1, stats)) {
      return {sys.unbatch(x1), sys.unbatch(v1), sys.unbatch(a1), sys.unbatch(stats)};
    }
  }
  const Tensor half = h * 0.5;
  const Tensor v_half = at::addcmul(v, a0, half);
  const Tensor x1 = at::addcmul(sys.pos, v_half, h);
  Tensor a1, stats;
  if (statistics) {
    a1 = at::empty_like(x1);
    stats = at::empty({sys.B, 4}, x1.options());
    if (sys.B > 0) {
      backend_for(x1).pair_forward_with_statistics(x1, sys.mass, softening, G, a1, stats);
    }
    stats = sys.unbatch(stats);
  } else {
    a1 = forward_acc(sys, x1, softening, G);
    stats = at::empty({0}, x1.options());
  }
  const Tensor v1 = at::addcmul(v_half, a1, half);
  return {sys.unbatch(x1), sys.unbatch(v1), sys.unbatch(a1), stats};
}

// Reverse of leapfrog_step for upstream gradients of (pos1, vel1, acc1).
// Returns (grad_pos, grad_vel, grad_mass, grad_dt, grad_acc); grad_acc is zero
// when no acc was passed (a0 was then computed from pos, and its gradient went
// into grad_pos and grad_mass instead).
std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor> leapfrog_step_backward(
    const Tensor& grad_pos1, const Tensor& grad_vel1, const Tensor& grad_acc1, const Tensor& pos,
    const Tensor& vel, const Tensor& mass, const Tensor& dt, const Tensor& pos1,
    const Tensor& acc1, const std::optional<Tensor>& acc, double softening, double G) {
  const char* op = "leapfrog_step_backward";
  ValueChecks values(op, /*enabled=*/false);  // the forward checked the values
  const System sys = check_system(op, pos, mass, softening, G, values);
  const Tensor v = check_like_pos(op, "vel", vel, sys);
  const Tensor x1 = check_like_pos(op, "pos1", pos1, sys);
  const Tensor a1 = check_like_pos(op, "acc1", acc1, sys);
  const Tensor gx1_in = check_like_pos(op, "grad_pos1", grad_pos1, sys);
  const Tensor gv1 = check_like_pos(op, "grad_vel1", grad_vel1, sys);
  const Tensor ga1_in = check_like_pos(op, "grad_acc1", grad_acc1, sys);
  const Tensor h = per_system(check_dt(op, dt, sys, values));
  const bool acc_given = acc.has_value();
  const Tensor a0 = acc_given ? check_like_pos(op, "acc", *acc, sys)
                              : forward_acc(sys, sys.pos, softening, G);

  const Tensor half = h * 0.5;
  const Tensor v_half = at::addcmul(v, a0, half);
  // v1 = v_half + a1 dt/2
  const Tensor ga1 = at::addcmul(ga1_in, gv1, half);
  // a1 = A(x1, m)
  auto [gx1, grad_mass] = backward_acc(sys, x1, ga1, softening, G);
  gx1.add_(gx1_in);
  // x1 = x + v_half dt
  const Tensor gvh = at::addcmul(gv1, gx1, h);
  // v_half = v + a0 dt/2
  const Tensor ga0 = gvh * half;
  // d/d(dt) of the three lines: (gv1.a1 + gvh.a0) / 2 + gx1.v_half, per system
  Tensor dt_terms = gv1 * a1;
  dt_terms.addcmul_(gvh, a0).mul_(0.5).addcmul_(gx1, v_half);
  Tensor grad_dt = dt_terms.sum({1, 2});
  if (dt.dim() == 0) grad_dt = grad_dt.sum();

  Tensor grad_pos = gx1;
  Tensor grad_acc;
  if (acc_given) {
    grad_acc = ga0;
  } else {
    grad_acc = at::zeros_like(sys.pos);
    auto [gx0, gm0] = backward_acc(sys, sys.pos, ga0, softening, G);
    grad_pos.add_(gx0);
    grad_mass.add_(gm0);
  }
  return {sys.unbatch(grad_pos), sys.unbatch(gvh), sys.unbatch(grad_mass), grad_dt,
          sys.unbatch(grad_acc)};
}

// The layers of a native network: weight (K, out, in) and bias (K, out) of each,
// float64 on the CPU, chained from `inputs` inputs to one output, and finite
// where `finite` (a run checks once; a per-step op leaves it: a non-finite
// weight gives a non-finite dt, which the step refuses). Returns them contiguous.
std::vector<Tensor> check_net(const char* op, at::TensorList net, int64_t inputs,
                              bool finite = true) {
  TORCH_CHECK_VALUE(!net.empty() && net.size() % 2 == 0, "aits.", op, ": policy 'model' needs "
                    "net = [weight, bias] of every layer (an even, non-zero number of tensors), "
                    "got ", net.size(), " tensors.");
  std::vector<Tensor> out;
  const int64_t K = net[0].dim() == 3 ? net[0].size(0) : -1;
  int64_t width = inputs;
  for (size_t k = 0; k < net.size(); k += 2) {
    const Tensor &w = net[k], &b = net[k + 1];
    const size_t layer = k / 2;
    for (const Tensor* t : {&w, &b}) {
      TORCH_CHECK_TYPE(t->scalar_type() == at::kDouble && t->device().is_cpu(), "aits.", op,
                       ": net (layer ", layer, ") must be float64 CPU tensors, got ",
                       t->scalar_type(), " on ", t->device().str(), "; pass the network's "
                       "weights with .double().cpu().");
    }
    TORCH_CHECK_VALUE(w.dim() == 3 && w.size(0) == K && K >= 1 && w.size(2) == width &&
                          w.size(1) >= 1,
                      "aits.", op, ": the weight of net layer ", layer, " must have shape (K, "
                      "out, ", width, ") with the K of layer 0, got ", w.sizes(), ".");
    TORCH_CHECK_VALUE(b.dim() == 2 && b.size(0) == K && b.size(1) == w.size(1), "aits.", op,
                      ": the bias of net layer ", layer, " must have shape (", K, ", ",
                      w.size(1), "), got ", b.sizes(), ".");
    for (const Tensor* t : {&w, &b}) {
      TORCH_CHECK_VALUE(!finite || at::isfinite(*t).all().item<bool>(), "aits.", op,
                        ": net layer ", layer, " has non-finite weights; give a trained "
                        "network's weights.");
      out.push_back(t->contiguous());
    }
    width = w.size(1);
  }
  TORCH_CHECK_VALUE(width == 1, "aits.", op, ": the last net layer must have one output, got ",
                    width, ".");
  return out;
}

// The native network's activation by name.
NetActivation check_activation(const char* op, c10::string_view act) {
  TORCH_CHECK_VALUE(act == "tanh" || act == "relu", "aits.", op, ": unknown activation '", act,
                    "'; the native network has 'tanh' and 'relu'.");
  return act == "relu" ? NetActivation::kRelu : NetActivation::kTanh;
}

// The encounter-history model's dt (aits.policies.ModelPolicy of a TimeStepNet of
// that kind with the "aarseth" output): history_encounter_features, then the
// network (check_net's layers, tanh or relu, its dt_scale net_scale) on them, dt
// (B,) = its dt times Aarseth's time, in the dtype of pos; ready as the features'
// (dt undefined where it is false).
std::tuple<Tensor, Tensor> history_model_dt(
    const Tensor& pos, const Tensor& vel, const Tensor& mass, at::TensorList accs,
    at::TensorList times, double softening, double G, double clip, at::TensorList net,
    c10::string_view activation, double net_scale) {
  const char* op = "history_model_dt";
  const HistoryInputs in = check_history(op, pos, vel, mass, accs, times, softening, G, clip);
  const std::vector<Tensor> layers = check_net(op, net, kHistoryEncounterFeatures, false);
  const NetActivation act = check_activation(op, activation);
  check_number(op, "net_scale", net_scale, Sign::kPositive);
  const System& sys = in.sys;
  Tensor ready = at::empty({sys.B}, in.t[0].options().dtype(at::kBool));
  Tensor dt = at::empty({sys.B}, sys.pos.options());
  if (sys.B > 0) {
    backend_for(sys.pos).history_model_dt(sys.pos, in.v, sys.mass, in.a, in.t, softening, G,
                                          clip, layers, act, net_scale, dt, ready);
  }
  if (sys.batched) return {dt, ready};
  return {dt.squeeze(0), ready.squeeze(0)};
}

std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor> kdk_run(
    const Tensor& pos, const Tensor& vel, const Tensor& mass, const Tensor& acc,
    const Tensor& time, const Tensor& t_stop, int64_t max_steps, c10::string_view policy,
    double value, double softening, double G, bool diagnostics, double threshold, double floor,
    double fail_above, bool stop_diverged, at::TensorList net, c10::string_view activation,
    double net_scale, double clip, bool smooth, bool orbit, bool symmetric, int64_t history) {
  const char* op = "kdk_run";
  TORCH_CHECK_VALUE(pos.dim() == 3, "aits.", op, ": pos must be a batch (B, N, D); for one "
                    "system pass pos.unsqueeze(0) (and the same for the other inputs).");
  const std::string name(policy.data(), policy.size());
  TORCH_CHECK_VALUE(name == "fixed" || name == "aarseth" || name == "model", "aits.", op,
                    ": unknown policy '", name, "'; valid: 'fixed' (value = dt), 'aarseth' "
                    "(value = eta) and 'model' (value = the factor on the network's dt).");
  check_number(op, name == "fixed" ? "dt" : name == "aarseth" ? "eta" : "dt_scale", value,
               Sign::kPositive);
  std::vector<Tensor> layers;
  NetActivation act = NetActivation::kTanh;
  if (name == "model") {
    TORCH_CHECK_VALUE(smooth || !orbit, "aits.", op, ": orbit is the encounter-orbit kind, "
                      "which is smooth: pass smooth=True too.");
    TORCH_CHECK_VALUE(history == 0 || (history >= 3 && history < kHistoryMaxNodes), "aits.", op,
                      ": history is the encounter-history kind's number of past states, 3 to ",
                      kHistoryMaxNodes - 1, " (0: an encounter kind), got ", history, ".");
    TORCH_CHECK_VALUE(history == 0 || (!smooth && !orbit), "aits.", op, ": history (the "
                      "encounter-history kind) excludes smooth and orbit.");
    layers = check_net(op, net, history > 0 ? kHistoryEncounterFeatures
                                            : kEncounterFeatures + (orbit ? 1 : 0));
    act = check_activation(op, activation);
    check_number(op, "net_scale", net_scale, Sign::kPositive);
    check_number(op, "clip", clip, Sign::kPositive);
  } else {
    TORCH_CHECK_VALUE(net.empty() && history == 0, "aits.", op, ": net and history are for "
                      "policy 'model', not '", name, "'.");
  }
  TORCH_CHECK_VALUE(max_steps >= 1, "aits.", op, ": max_steps must be >= 1, got ", max_steps, ".");
  check_number(op, "threshold", threshold, Sign::kPositive);
  check_number(op, "floor", floor, Sign::kNonNegative);
  check_number(op, "fail_above", fail_above, Sign::kPositive, /*allow_inf=*/true);
  ValueChecks values(op);
  const System sys = check_system(op, pos, mass, softening, G, values);
  const Tensor v = check_like_pos(op, "vel", vel, sys);
  const Tensor a = check_like_pos(op, "acc", acc, sys);
  const Tensor t0 = check_per_system_f64(op, "time", time, sys);
  const Tensor t1 = check_per_system_f64(op, "t_stop", t_stop, sys);
  values.finite("vel", v);
  values.finite("acc", a);
  values.finite("time", t0);
  values.run();
  TORCH_CHECK_VALUE(!at::isnan(t1).any().item<bool>(), "aits.", op,
                    ": t_stop contains NaN; give each system's end time (inf: no end).");

  KdkRunArgs run;
  run.pos = sys.pos;
  run.vel = v;
  run.mass = sys.mass;
  run.acc = a;
  run.time = t0;
  run.t_stop = t1;
  run.softening = softening;
  run.G = G;
  run.policy = name == "fixed" ? RunPolicy::kFixed
                : name == "aarseth" ? RunPolicy::kAarseth : RunPolicy::kModel;
  run.value = value;
  run.net = std::move(layers);
  run.activation = act;
  run.net_scale = net_scale;
  run.clip = clip;
  run.smooth = smooth;
  run.orbit = orbit;
  run.history = history;
  run.symmetric = symmetric;
  run.max_steps = max_steps;
  run.diagnostics = diagnostics;
  run.threshold = threshold;
  run.floor = floor;
  run.fail_above = fail_above;
  run.stop_diverged = stop_diverged;
  run.pos1 = at::empty_like(sys.pos);
  run.vel1 = at::empty_like(sys.pos);
  run.acc1 = at::empty_like(sys.pos);
  run.time1 = at::empty_like(t0);
  run.counts = at::empty({sys.B, 5}, t0.options().dtype(at::kLong));
  run.stats = at::empty({sys.B, 11}, t0.options());
  run.totals = at::empty({sys.B, 2, 12}, t0.options());
  if (sys.B > 0) backend_for(sys.pos).kdk_run(run);
  return {run.pos1, run.vel1, run.acc1, run.time1, run.counts, run.stats, run.totals};
}

TORCH_LIBRARY(aits, m) {
  m.def("accelerations(Tensor pos, Tensor mass, float softening=0.0, float G=1.0) -> Tensor");
  m.def(
      "accelerations_backward(Tensor grad_acc, Tensor pos, Tensor mass, float softening, float G)"
      " -> (Tensor, Tensor)");
  m.def("potential_energy(Tensor pos, Tensor mass, float softening=0.0, float G=1.0) -> Tensor");
  m.def(
      "potential_energy_backward(Tensor grad_energy, Tensor pos, Tensor mass, float softening,"
      " float G) -> (Tensor, Tensor)");
  m.def(
      "pair_statistics(Tensor pos, Tensor mass, float softening=0.0, float G=1.0,"
      " bool freefall=True) -> Tensor");
  m.def(
      "aarseth_derivatives(Tensor pos, Tensor vel, Tensor mass, float softening=0.0,"
      " float G=1.0) -> (Tensor, Tensor, Tensor, Tensor)");
  m.def(
      "leapfrog_step(Tensor pos, Tensor vel, Tensor mass, Tensor dt, float softening=0.0,"
      " float G=1.0, Tensor? acc=None, bool statistics=False) -> (Tensor, Tensor, Tensor, Tensor)");
  m.def(
      "leapfrog_step_backward(Tensor grad_pos1, Tensor grad_vel1, Tensor grad_acc1, Tensor pos,"
      " Tensor vel, Tensor mass, Tensor dt, Tensor pos1, Tensor acc1, Tensor? acc, float softening,"
      " float G) -> (Tensor, Tensor, Tensor, Tensor, Tensor)");
  m.def(
      "encounter_features(Tensor pos, Tensor vel, Tensor mass, float softening, float G,"
      " float clip, bool smooth=False) -> (Tensor, Tensor)");
  m.def(
      "history_encounter_features(Tensor pos, Tensor vel, Tensor mass, Tensor[] accs,"
      " Tensor[] times, float softening, float G, float clip) -> (Tensor, Tensor, Tensor)");
  m.def(
      "history_model_dt(Tensor pos, Tensor vel, Tensor mass, Tensor[] accs, Tensor[] times,"
      " float softening, float G, float clip, Tensor[] net, str activation, float net_scale)"
      " -> (Tensor, Tensor)");
  m.def(
      "kdk_run(Tensor pos, Tensor vel, Tensor mass, Tensor acc, Tensor time, Tensor t_stop,"
      " int max_steps, str policy, float value, float softening, float G, bool diagnostics,"
      " float threshold, float floor, float fail_above, bool stop_diverged, Tensor[] net,"
      " str activation, float net_scale, float clip, bool smooth=False, bool orbit=False,"
      " bool symmetric=False, int history=0)"
      " -> (Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)");
  // CPU pair-kernel selection (implemented in cpu/pair_kernel.cpp).
  m.def("set_pair_kernel(str name) -> ()");
  m.def("pair_kernel() -> str");
  m.def("simd_instruction_set() -> str");
}

void register_op_impls(torch::Library& m) {
  m.impl("accelerations", &accelerations);
  m.impl("accelerations_backward", &accelerations_backward);
  m.impl("potential_energy", &potential_energy);
  m.impl("potential_energy_backward", &potential_energy_backward);
  m.impl("pair_statistics", &pair_statistics);
  m.impl("aarseth_derivatives", &aarseth_derivatives);
  m.impl("leapfrog_step", &leapfrog_step);
  m.impl("leapfrog_step_backward", &leapfrog_step_backward);
  m.impl("kdk_run", &kdk_run);
  m.impl("encounter_features", &encounter_features);
  m.impl("history_encounter_features", &history_encounter_features);
  m.impl("history_model_dt", &history_model_dt);
}

TORCH_LIBRARY_IMPL(aits, CPU, m) { register_op_impls(m); }

}  // namespace aits

// Importing aits._C runs the registrations above; the module itself is empty.
PyMODINIT_FUNC PyInit__C(void) {
  static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};
  return PyModule_Create(&module);
}
