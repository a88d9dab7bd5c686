// The device-independent implementations of the aits ops. ops.cpp registers
// them for CPU; the CUDA wrapper registers the very same functions for CUDA.
// Schemas live in one place: the TORCH_LIBRARY block in ops.cpp.
#pragma once

#include <optional>
#include <tuple>

#include <ATen/core/Tensor.h>
#include <c10/util/string_view.h>

namespace torch {
class Library;
}

namespace aits {

using at::Tensor;

Tensor accelerations(const Tensor& pos, const Tensor& mass, double softening, double G);

std::tuple<Tensor, Tensor> accelerations_backward(const Tensor& grad_acc, const Tensor& pos,
                                                  const Tensor& mass, double softening, double G);

Tensor potential_energy(const Tensor& pos, const Tensor& mass, double softening, double G);

std::tuple<Tensor, Tensor> potential_energy_backward(const Tensor& grad_energy, const Tensor& pos,
                                                     const Tensor& mass, double softening, double G);

// (B, 4) or (4,): min, mean, max pairwise distance, min free-fall time.
// Not differentiable (used for features, under no_grad).
Tensor pair_statistics(const Tensor& pos, const Tensor& mass, double softening, double G,
                       bool freefall);

// (acc, jerk, snap, crackle), each shaped like pos: the acceleration of mutual
// gravity and its first three time derivatives (Aarseth's criterion).
// Not differentiable (used by the time-step criteria, under no_grad).
std::tuple<Tensor, Tensor, Tensor, Tensor> aarseth_derivatives(const Tensor& pos, const Tensor& vel,
                                                               const Tensor& mass,
                                                               double softening, double G);

// (pos1, vel1, acc1, stats): stats = pair_statistics(pos1) when `statistics`,
// else an empty tensor.
std::tuple<Tensor, Tensor, Tensor, Tensor> leapfrog_step(const Tensor& pos, const Tensor& vel,
                                                         const Tensor& mass, const Tensor& dt,
                                                         double softening, double G,
                                                         const std::optional<Tensor>& acc,
                                                         bool statistics);

std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor> leapfrog_step_backward(
    const Tensor& grad_pos1, const Tensor& grad_vel1, const Tensor& grad_acc1, const Tensor& pos,
    const Tensor& vel, const Tensor& mass, const Tensor& dt, const Tensor& pos1,
    const Tensor& acc1, const std::optional<Tensor>& acc, double softening, double G);

// The encounter features of aits.encounter from Aarseth's derivatives and the pair
// times (on the CPU in float64 above 64 bodies the pair times ride in the
// derivatives' two passes; else one pass of their own): feats (B, kEncounterFeatures)
// and times (B, kEncounterTimes); smooth: the encounter-smooth kind (columns 6-11
// from sums over the bodies).
std::tuple<Tensor, Tensor> encounter_features(const Tensor& pos, const Tensor& vel,
                                              const Tensor& mass, double softening, double G,
                                              double clip, bool smooth);

// The encounter-history features of aits.encounter_history, O(N): from the current
// state (pos, vel, mass) and K + 1 >= 4 accelerations (like pos) with their times
// ((B,) float64; the current state's first, then strictly back in time), feats
// (B, 11), Aarseth's time tau (B,) and ready (B,) bool, false where a system's
// times do not strictly decrease (its outputs are then undefined). A body whose
// window spans more than one of its Aarseth times takes its exact derivatives
// (O(N) each, with the force's softening).
std::tuple<Tensor, Tensor, Tensor> history_encounter_features(
    const Tensor& pos, const Tensor& vel, const Tensor& mass, at::TensorList accs,
    at::TensorList times, double softening, double G, double clip);

// The encounter-history model's dt: history_encounter_features, then the
// network net ([weight (K, out, in), bias (K, out)] of each layer, float64 CPU;
// activation "tanh" or "relu"; net_scale its dt_scale) on them: dt (B,) = its dt
// times Aarseth's time in the dtype of pos, and ready (B,) bool as the features'.
std::tuple<Tensor, Tensor> history_model_dt(
    const Tensor& pos, const Tensor& vel, const Tensor& mass, at::TensorList accs,
    at::TensorList times, double softening, double G, double clip, at::TensorList net,
    c10::string_view activation, double net_scale);

// The native loop of aits.simulate for fixed dt ("fixed", value = dt), Aarseth's
// criterion ("aarseth", value = eta) and a trained time-step network ("model",
// value = the factor on its dt; net = [weight (K, out, in), bias (K, out)] of
// each layer, float64, with activation, net_scale its dt_scale, clip the
// encounter features' clip, smooth and orbit their kind: encounter, encounter-smooth
// or, both set, encounter-orbit; history > 0 the encounter-history kind with that many
// past states) under kick-drift-kick (symmetric: each proposal
// through the symmetric integrator's reversible recurrence), CPU few-body sizes
// (cpu/fewbody_run.h): every system of the batch run until t_stop (B,) float64
// (inf: no end) or max_steps steps. acc: the gravitational acceleration at pos.
// Returns (pos1, vel1, acc1, time1, counts (B, 5) int64, stats (B, 11) float64,
// totals (B, 2, 12) float64); aits/ops.py names the columns.
std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor> kdk_run(
    const Tensor& pos, const Tensor& vel, const Tensor& mass, const Tensor& acc,
    const Tensor& time, const Tensor& t_stop, int64_t max_steps, c10::string_view policy,
    double value, double softening, double G, bool diagnostics, double threshold, double floor,
    double fail_above, bool stop_diverged, at::TensorList net, c10::string_view activation,
    double net_scale, double clip, bool smooth, bool orbit, bool symmetric, int64_t history);

// Registers every function above under its schema name, for one dispatch key
// (TORCH_LIBRARY_IMPL(aits, CPU / CUDA, m) { register_op_impls(m); }).
void register_op_impls(torch::Library& m);

}  // namespace aits
