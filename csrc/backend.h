// The seam between the device-independent op layer (ops.cpp) and the device
// back ends (cpu/, cuda/). A back end supplies four primitive kernels with the
// same signature on every device (pair_forward, pair_backward, potential,
// aarseth_derivatives) and may add the pair statistics (pair_statistics, and
// its fusion with the force pass); everything else (checks, batching, the
// leapfrog composition, backward formulas) is written once in ops.cpp.
#pragma once

#include <vector>

#include <ATen/core/Tensor.h>
#include <c10/core/DeviceType.h>

namespace aits {

// The columns of the encounter_features op's outputs: aits.features.ENCOUNTER_NAMES
// and the fields of aits.encounter.EncounterTimes.
constexpr int kEncounterFeatures = 14;
constexpr int kEncounterTimes = 5;
// The columns of the history_encounter_features op's features:
// aits.features.HISTORY_ENCOUNTER_NAMES.
constexpr int kHistoryEncounterFeatures = 11;
// The most accelerations (the window's K past states and the current one) it takes.
constexpr int kHistoryMaxNodes = 16;

// How kdk_run chooses each step: a fixed dt (value), Aarseth's criterion
// (eta = value), or a trained time-step network (aits.model.TimeStepNet with
// encounter features and Aarseth's time as its unit) times value.
enum class RunPolicy { kFixed, kAarseth, kModel };
// The hidden layers' activation of a kdk_run network.
enum class NetActivation { kTanh, kRelu };

// The inputs and preallocated outputs of GravityBackend::kdk_run: pos, vel,
// acc (B, N, D), mass (B, N), time and t_stop (B,) float64 (t_stop inf: no
// end), all contiguous and validated; outputs pos1, vel1, acc1 (B, N, D),
// time1 (B,), counts (B, 5) int64, stats (B, 11) float64 and totals (B, 2, 12)
// float64, the conserved totals at the start and the end (columns in aits/ops.py,
// KDK_RUN_COUNTS, KDK_RUN_STATS and KDK_RUN_TOTALS). For RunPolicy::kModel,
// net holds each layer's weight (K, out, in) and bias (K, out), float64 and
// contiguous, the first layer taking the kEncounterFeatures features and the
// last giving one output; net_scale is the network's dt_scale, clip the
// features' clip (aits.encounter.CLIP) and smooth their kind (encounter-smooth
// when true, else encounter); orbit (with smooth): the encounter-orbit kind, one
// input more (kEncounterFeatures + 1); history > 0: the encounter-history kind with
// that many past states (kHistoryEncounterFeatures inputs).
struct KdkRunArgs {
  at::Tensor pos, vel, mass, acc, time, t_stop;
  double softening, G;
  RunPolicy policy;
  double value;
  int64_t max_steps;
  bool diagnostics;
  double threshold, floor, fail_above;
  bool stop_diverged;
  std::vector<at::Tensor> net;
  NetActivation activation;
  double net_scale, clip;
  bool smooth, orbit;
  int64_t history;  // the encounter-history kind's past states (0: an encounter kind)
  bool symmetric;  // the symmetric integrator's recurrence on each proposal
  at::Tensor pos1, vel1, acc1, time1, counts, stats, totals;
};

// Every tensor handed to a back end is contiguous, on the back end's device, of
// one floating dtype, and already validated:
//   pos (B, N, D) with D in {2, 3}, mass (B, N). Outputs are preallocated.
class GravityBackend {
 public:
  virtual ~GravityBackend() = default;

  // acc (B, N, D): a_i = G sum_{j != i} m_j d_ij / s_ij^3.
  // phi (B, N): phi_i = -G sum_{j != i} m_j / s_ij.
  // Either output may be an undefined tensor, meaning "not wanted".
  virtual void pair_forward(const at::Tensor& pos, const at::Tensor& mass,
                            double softening, double G, at::Tensor& acc,
                            at::Tensor& phi) const = 0;

  // Vector-Jacobian product of pair_forward's acc with grad_acc (B, N, D):
  // grad_pos (B, N, D) and grad_mass (B, N).
  virtual void pair_backward(const at::Tensor& pos, const at::Tensor& mass,
                             const at::Tensor& grad_acc, double softening,
                             double G, at::Tensor& grad_pos,
                             at::Tensor& grad_mass) const = 0;

  // energy (B,): U = -G sum_{i<j} m_i m_j / s_ij, summed in an order that
  // does not depend on the number of threads (deterministic).
  virtual void potential(const at::Tensor& pos, const at::Tensor& mass,
                         double softening, double G,
                         at::Tensor& energy) const = 0;

  // Aarseth's derivatives of mutual gravity (gravity.h has the pair formulas),
  // from vel (B, N, D) too: acc as pair_forward, and its first three time
  // derivatives jerk, snap and crackle, each (B, N, D). Two passes over the
  // pairs (acc and jerk of every body, then snap and crackle, which need them);
  // not differentiable.
  virtual void aarseth_derivatives(const at::Tensor& pos, const at::Tensor& vel,
                                   const at::Tensor& mass, double softening, double G,
                                   at::Tensor& acc, at::Tensor& jerk, at::Tensor& snap,
                                   at::Tensor& crackle) const = 0;

  // acc as pair_forward and stats as pair_statistics (with the free-fall
  // time), of the same positions. The default runs the two one after the
  // other; a back end may fuse them into one pass over the pairs.
  virtual void pair_forward_with_statistics(const at::Tensor& pos, const at::Tensor& mass,
                                            double softening, double G, at::Tensor& acc,
                                            at::Tensor& stats) const;

  // One kick-drift-kick step with the statistics of its end positions, fused:
  // v_half = v + a0 dt/2, x1 = x + v_half dt, (a1, stats) as
  // pair_forward_with_statistics(x1), v1 = v_half + a1 dt/2; dt (B,), the
  // rest (B, N, D), stats (B, 4), all contiguous, outputs preallocated.
  // Returns false (writing nothing) where the back end has no fused form for
  // these inputs; the caller then composes the step from the primitives.
  virtual bool kdk_step_with_statistics(const at::Tensor& pos, const at::Tensor& vel,
                                        const at::Tensor& mass, const at::Tensor& dt,
                                        const at::Tensor& acc0, double softening, double G,
                                        at::Tensor& pos1, at::Tensor& vel1, at::Tensor& acc1,
                                        at::Tensor& stats) const;

  // stats (B, 4): min, mean and max of the softened pairwise distances
  // s = sqrt(r^2 + eps^2) over i != j, and the minimum pairwise free-fall time
  // sqrt(s^3 / (G (m_i + m_j))) when `freefall` (else NaN).
  // The CPU and CUDA back ends have it; the default raises a clear error.
  virtual void pair_statistics(const at::Tensor& pos, const at::Tensor& mass,
                               double softening, double G, bool freefall,
                               at::Tensor& stats) const;

  // The multi-step loop of aits.simulate for the classical policies (the op
  // kdk_run, ops.h): every system of the batch run to t_stop or the step
  // limit. Only the CPU back end has it, for the few-body sizes; the default
  // raises a clear error.
  virtual void kdk_run(const KdkRunArgs& run) const;

  // The encounter features of aits.encounter (the op encounter_features, ops.h)
  // from pos, vel and mass: Aarseth's derivatives (as aarseth_derivatives), then
  // feats (B, kEncounterFeatures) and times (B, kEncounterTimes), log ratios
  // clipped to [-clip, clip]; smooth: columns 6-11 of the encounter-smooth kind
  // (sums over the bodies). Only the CPU back end has it; the default raises a
  // clear error (aits.encounter falls back to torch elsewhere).
  virtual void encounter_features(const at::Tensor& pos, const at::Tensor& vel,
                                  const at::Tensor& mass, double softening, double G,
                                  double clip, bool smooth, at::Tensor& feats,
                                  at::Tensor& times) const;

  // The encounter-history features of aits.encounter_history (the op
  // history_encounter_features, ops.h) from pos, vel and mass (the current state),
  // accs, K + 1 accelerations (B, N, D) (the current state's first, then back in
  // time), and times, their (B,) float64 times, softening the force's (the exact
  // derivatives of the bodies the window does not resolve take it): feats (B,
  // kHistoryEncounterFeatures), tau (B,), Aarseth's minimum time, and ready (B,)
  // bool, whether the window is usable (its times strictly decreasing).
  // Only the CPU back end has it; the default raises a clear error.
  virtual void history_encounter_features(const at::Tensor& pos, const at::Tensor& vel,
                                          const at::Tensor& mass,
                                          const std::vector<at::Tensor>& accs,
                                          const std::vector<at::Tensor>& times,
                                          double softening, double G, double clip,
                                          at::Tensor& feats, at::Tensor& tau,
                                          at::Tensor& ready) const;

  // The encounter-history model's dt (the op history_model_dt, ops.h): those
  // features, then the network of layers (check_net's) with activation and
  // net_scale: dt (B,) and ready (B,) bool. Only the CPU back end has it; the
  // default raises a clear error.
  virtual void history_model_dt(const at::Tensor& pos, const at::Tensor& vel,
                                const at::Tensor& mass, const std::vector<at::Tensor>& accs,
                                const std::vector<at::Tensor>& times, double softening, double G,
                                double clip, const std::vector<at::Tensor>& layers,
                                NetActivation activation, double net_scale, at::Tensor& dt,
                                at::Tensor& ready) const;
};

// Called once per device type from a static initializer of each back end.
void register_backend(c10::DeviceType device, const GravityBackend* backend);

// The back end for t's device; a clear error when none was built.
const GravityBackend& backend_for(const at::Tensor& t);

}  // namespace aits
