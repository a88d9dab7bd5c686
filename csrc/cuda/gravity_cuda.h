// Launchers of the raw CUDA gravity kernels (gravity_kernels.cu). Plain C++ over
// device pointers and a stream: no torch here, so the kernels compile with nvcc
// alone (CPU-only CI compile-checks them) and backend_cuda.cpp, compiled only
// with a CUDA torch, is the one place that talks to torch.
//
// Every pointer is device memory of one system batch, contiguous:
//   pos, vel, grad_acc, acc, jerk, snap, crackle, grad_pos (B, N, D);
//   mass, phi, grad_mass, rows (B, N) (the statistics' rows: (B, N, 4));
//   energy (B,), stats (B, 4). D is 2 or 3, N >= 1, N < 2^31. Outputs are overwritten.
// Each launcher enqueues its kernels on `stream` and returns cudaGetLastError().
#pragma once

#include <cstdint>

#include <cuda_runtime.h>

#include "pair_stats.h"

namespace aits {
namespace cuda {

// acc and/or phi (either may be nullptr = not wanted), as GravityBackend::pair_forward.
template <typename T>
cudaError_t launch_pair_forward(const T* pos, const T* mass, int64_t B, int64_t N, int D,
                                T eps2, T G, T* acc, T* phi, cudaStream_t stream);

// grad_pos and grad_mass of sum(grad_acc * acc), as GravityBackend::pair_backward.
template <typename T>
cudaError_t launch_pair_backward(const T* pos, const T* mass, const T* grad_acc, int64_t B,
                                 int64_t N, int D, T eps2, T G, T* grad_pos, T* grad_mass,
                                 cudaStream_t stream);

// energy[b] = -G sum_{i<j} m_i m_j / s_ij. rows is (B, N) scratch for the
// per-body partial sums, reduced in a fixed order: the result is deterministic.
template <typename T>
cudaError_t launch_potential(const T* pos, const T* mass, int64_t B, int64_t N, int D, T eps2,
                             T G, T* rows, T* energy, cudaStream_t stream);

// acc, jerk, snap and crackle, as GravityBackend::aarseth_derivatives: two
// kernels on `stream`, the second reading the first's acc and jerk.
template <typename T>
cudaError_t launch_aarseth_derivatives(const T* pos, const T* vel, const T* mass, int64_t B,
                                       int64_t N, int D, T eps2, T G, T* acc, T* jerk, T* snap,
                                       T* crackle, cudaStream_t stream);

// stats as GravityBackend::pair_statistics (the free-fall time NaN unless
// freefall) and, unless acc is nullptr, acc as pair_forward from the same pass
// over the pairs. rows is (B, N, 4) StatAcc<T> scratch for each body's row
// statistics, merged per system in a fixed order: the result is deterministic.
template <typename T>
cudaError_t launch_pair_statistics(const T* pos, const T* mass, int64_t B, int64_t N, int D,
                                   T eps2, T G, bool freefall, T* acc, StatAcc<T>* rows,
                                   T* stats, cudaStream_t stream);

}  // namespace cuda
}  // namespace aits
