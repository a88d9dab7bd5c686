// CUDA back end, torch side: the GravityBackend for CUDA tensors and the CUDA
// registration of the ops. Compiled only against a CUDA torch; the kernels
// themselves live in gravity_kernels.cu behind plain launchers.
//
// Every launch runs under a device guard for the inputs' GPU, on torch's
// current stream for that GPU, and is checked right after it is enqueued.
#include <climits>

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "backend.h"
#include "cuda/gravity_cuda.h"
#include "ops.h"

namespace aits {
namespace {

// Raises a RuntimeError naming the kernel when its launch failed.
void check_launch(cudaError_t err, const char* kernel) {
  TORCH_CHECK(err == cudaSuccess, "aits: CUDA kernel ", kernel, " failed to launch: ",
              cudaGetErrorName(err), " (", cudaGetErrorString(err), ").");
}

// The kernels index bodies with 32-bit ints.
void check_size(const at::Tensor& pos) {
  TORCH_CHECK_VALUE(pos.size(1) <= INT_MAX, "aits: the CUDA kernels support at most ", INT_MAX,
                    " bodies per system, got ", pos.size(1), ".");
}

template <typename T>
T* ptr_or_null(at::Tensor& t) {
  return t.defined() ? t.data_ptr<T>() : nullptr;
}

class CudaBackend final : public GravityBackend {
 public:
  void pair_forward(const at::Tensor& pos, const at::Tensor& mass, double softening, double G,
                    at::Tensor& acc, at::Tensor& phi) const override {
    check_size(pos);
    const c10::cuda::CUDAGuard guard(pos.device());
    const cudaStream_t stream = c10::cuda::getCurrentCUDAStream(pos.device().index());
    AT_DISPATCH_FLOATING_TYPES(pos.scalar_type(), "aits_pair_forward_cuda", [&] {
      check_launch(cuda::launch_pair_forward<scalar_t>(
                       pos.data_ptr<scalar_t>(), mass.data_ptr<scalar_t>(), pos.size(0),
                       pos.size(1), static_cast<int>(pos.size(2)),
                       static_cast<scalar_t>(softening * softening), static_cast<scalar_t>(G),
                       ptr_or_null<scalar_t>(acc), ptr_or_null<scalar_t>(phi), stream),
                   "pair_forward");
    });
  }

  void pair_backward(const at::Tensor& pos, const at::Tensor& mass, const at::Tensor& grad_acc,
                     double softening, double G, at::Tensor& grad_pos,
                     at::Tensor& grad_mass) const override {
    check_size(pos);
    const c10::cuda::CUDAGuard guard(pos.device());
    const cudaStream_t stream = c10::cuda::getCurrentCUDAStream(pos.device().index());
    AT_DISPATCH_FLOATING_TYPES(pos.scalar_type(), "aits_pair_backward_cuda", [&] {
      check_launch(cuda::launch_pair_backward<scalar_t>(
                       pos.data_ptr<scalar_t>(), mass.data_ptr<scalar_t>(),
                       grad_acc.data_ptr<scalar_t>(), pos.size(0), pos.size(1),
                       static_cast<int>(pos.size(2)),
                       static_cast<scalar_t>(softening * softening), static_cast<scalar_t>(G),
                       grad_pos.data_ptr<scalar_t>(), grad_mass.data_ptr<scalar_t>(), stream),
                   "pair_backward");
    });
  }

  void potential(const at::Tensor& pos, const at::Tensor& mass, double softening, double G,
                 at::Tensor& energy) const override {
    check_size(pos);
    const c10::cuda::CUDAGuard guard(pos.device());
    const cudaStream_t stream = c10::cuda::getCurrentCUDAStream(pos.device().index());
    at::Tensor rows = at::empty_like(mass);  // per-body partial sums, (B, N)
    AT_DISPATCH_FLOATING_TYPES(pos.scalar_type(), "aits_potential_cuda", [&] {
      check_launch(cuda::launch_potential<scalar_t>(
                       pos.data_ptr<scalar_t>(), mass.data_ptr<scalar_t>(), pos.size(0),
                       pos.size(1), static_cast<int>(pos.size(2)),
                       static_cast<scalar_t>(softening * softening), static_cast<scalar_t>(G),
                       rows.data_ptr<scalar_t>(), energy.data_ptr<scalar_t>(), stream),
                   "potential");
    });
  }

  void pair_statistics(const at::Tensor& pos, const at::Tensor& mass, double softening, double G,
                       bool freefall, at::Tensor& stats) const override {
    at::Tensor none;
    statistics(pos, mass, softening, G, freefall, none, stats);
  }

  void pair_forward_with_statistics(const at::Tensor& pos, const at::Tensor& mass,
                                    double softening, double G, at::Tensor& acc,
                                    at::Tensor& stats) const override {
    statistics(pos, mass, softening, G, /*freefall=*/true, acc, stats);
  }

  void aarseth_derivatives(const at::Tensor& pos, const at::Tensor& vel, const at::Tensor& mass,
                           double softening, double G, at::Tensor& acc, at::Tensor& jerk,
                           at::Tensor& snap, at::Tensor& crackle) const override {
    check_size(pos);
    const c10::cuda::CUDAGuard guard(pos.device());
    const cudaStream_t stream = c10::cuda::getCurrentCUDAStream(pos.device().index());
    AT_DISPATCH_FLOATING_TYPES(pos.scalar_type(), "aits_aarseth_derivatives_cuda", [&] {
      check_launch(cuda::launch_aarseth_derivatives<scalar_t>(
                       pos.data_ptr<scalar_t>(), vel.data_ptr<scalar_t>(),
                       mass.data_ptr<scalar_t>(), pos.size(0), pos.size(1),
                       static_cast<int>(pos.size(2)),
                       static_cast<scalar_t>(softening * softening), static_cast<scalar_t>(G),
                       acc.data_ptr<scalar_t>(), jerk.data_ptr<scalar_t>(),
                       snap.data_ptr<scalar_t>(), crackle.data_ptr<scalar_t>(), stream),
                   "aarseth_derivatives");
    });
  }

 private:
  // stats (B, 4) and, when acc is defined, acc from the same pass over the pairs.
  static void statistics(const at::Tensor& pos, const at::Tensor& mass, double softening,
                         double G, bool freefall, at::Tensor& acc, at::Tensor& stats) {
    check_size(pos);
    const c10::cuda::CUDAGuard guard(pos.device());
    const cudaStream_t stream = c10::cuda::getCurrentCUDAStream(pos.device().index());
    AT_DISPATCH_FLOATING_TYPES(pos.scalar_type(), "aits_pair_statistics_cuda", [&] {
      using A = StatAcc<scalar_t>;
      at::Tensor rows = at::empty({pos.size(0), pos.size(1), 4},  // per-body rows
                                  pos.options().dtype(c10::CppTypeToScalarType<A>::value));
      check_launch(cuda::launch_pair_statistics<scalar_t>(
                       pos.data_ptr<scalar_t>(), mass.data_ptr<scalar_t>(), pos.size(0),
                       pos.size(1), static_cast<int>(pos.size(2)),
                       static_cast<scalar_t>(softening * softening), static_cast<scalar_t>(G),
                       freefall, ptr_or_null<scalar_t>(acc), rows.data_ptr<A>(),
                       stats.data_ptr<scalar_t>(), stream),
                   "pair_statistics");
    });
  }
};

const CudaBackend cuda_backend;
const bool registered = (register_backend(c10::DeviceType::CUDA, &cuda_backend), true);

}  // namespace

TORCH_LIBRARY_IMPL(aits, CUDA, m) { register_op_impls(m); }

}  // namespace aits
