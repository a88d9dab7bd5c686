#include "backend.h"

#include <array>

#include <c10/util/Exception.h>

namespace aits {
namespace {

std::array<const GravityBackend*, static_cast<size_t>(c10::DeviceType::COMPILE_TIME_MAX_DEVICE_TYPES)>&
registry() {
  static std::array<const GravityBackend*, static_cast<size_t>(c10::DeviceType::COMPILE_TIME_MAX_DEVICE_TYPES)> r{};
  return r;
}

}  // namespace

void GravityBackend::pair_forward_with_statistics(const at::Tensor& pos, const at::Tensor& mass,
                                                  double softening, double G, at::Tensor& acc,
                                                  at::Tensor& stats) const {
  at::Tensor none;
  pair_forward(pos, mass, softening, G, acc, none);
  pair_statistics(pos, mass, softening, G, /*freefall=*/true, stats);
}

bool GravityBackend::kdk_step_with_statistics(const at::Tensor&, const at::Tensor&,
                                              const at::Tensor&, const at::Tensor&,
                                              const at::Tensor&, double, double, at::Tensor&,
                                              at::Tensor&, at::Tensor&, at::Tensor&) const {
  return false;
}

void GravityBackend::pair_statistics(const at::Tensor& pos, const at::Tensor&, double, double,
                                     bool, at::Tensor&) const {
  TORCH_CHECK(false, "aits: the pair statistics (aits.ops.pair_statistics, "
              "aits.ops.leapfrog_step_with_statistics) have a CPU kernel only, not one for device '",
              pos.device().str(), "'. There, use aits.leapfrog_step and "
              "aits.features.pairwise_stats (which falls back to torch).");
}

void GravityBackend::kdk_run(const KdkRunArgs& run) const {
  TORCH_CHECK(false, "aits.ops.kdk_run (the native loop of aits.simulate) has a CPU kernel only, "
              "not one for device '", run.pos.device().str(), "'. There, aits.simulate runs "
              "its Python loop (every policy, every device).");
}

void GravityBackend::encounter_features(const at::Tensor& pos, const at::Tensor&,
                                        const at::Tensor&, double, double, double, bool,
                                        at::Tensor&, at::Tensor&) const {
  TORCH_CHECK(false, "aits.ops.encounter_features has a CPU kernel only, not one for device '",
              pos.device().str(), "'. There, aits.encounter.encounter_features computes the "
              "features with torch.");
}

void GravityBackend::history_encounter_features(const at::Tensor& pos, const at::Tensor&,
                                                const at::Tensor&, const std::vector<at::Tensor>&,
                                                const std::vector<at::Tensor>&, double, double,
                                                double, at::Tensor&, at::Tensor&,
                                                at::Tensor&) const {
  TORCH_CHECK(false, "aits.ops.history_encounter_features has a CPU kernel only, not one for "
              "device '", pos.device().str(), "'. There, aits.encounter_history computes the "
              "features with torch.");
}

void GravityBackend::history_model_dt(const at::Tensor& pos, const at::Tensor&, const at::Tensor&,
                                      const std::vector<at::Tensor>&,
                                      const std::vector<at::Tensor>&, double, double, double,
                                      const std::vector<at::Tensor>&, NetActivation, double,
                                      at::Tensor&, at::Tensor&) const {
  TORCH_CHECK(false, "aits.ops.history_model_dt has a CPU kernel only, not one for device '",
              pos.device().str(), "'. There, aits.policies.ModelPolicy evaluates the "
              "features and the network with torch.");
}

void register_backend(c10::DeviceType device, const GravityBackend* backend) {
  registry()[static_cast<size_t>(device)] = backend;
}

const GravityBackend& backend_for(const at::Tensor& t) {
  const GravityBackend* b = registry()[static_cast<size_t>(t.device().type())];
  TORCH_CHECK(b != nullptr, "aits: no gravity kernels were built for device '",
              t.device().str(),
              "'. Rebuild aits with that back end enabled (for CUDA: a CUDA torch, nvcc on the PATH, "
              "AITS_CUDA=ON pip install --no-build-isolation .).");
  return *b;
}

}  // namespace aits
