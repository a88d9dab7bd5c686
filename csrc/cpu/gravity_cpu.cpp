// CPU back end: all-pairs kernels, threads over bodies (at::parallel_for, i.e.
// torch's OpenMP pool, so torch.set_num_threads applies), SIMD over partners.
// Positions and gradients are read in structure-of-arrays form (B, D, N) so that
// the inner loop over j is unit-stride and vectorises.
#include <vector>

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>

#include "backend.h"
#include "gravity.h"

namespace aits {
namespace {

// Enough pair interactions per task to amortise scheduling.
int64_t grain_for(int64_t n) { return std::max<int64_t>(1, 16384 / std::max<int64_t>(n, 1)); }

// (B, N, D) -> (B, D, N) contiguous.
at::Tensor to_soa(const at::Tensor& t) { return t.transpose(1, 2).contiguous(); }

template <typename T, int D, bool kAcc, bool kPhi>
void forward_kernel(const T* x, const T* mass, int64_t B, int64_t N, T eps2, T G, T* acc, T* phi) {
  at::parallel_for(0, B * N, grain_for(N), [&](int64_t begin, int64_t end) {
    for (int64_t idx = begin; idx < end; ++idx) {
      const int64_t b = idx / N, i = idx % N;
      const T* xb = x + b * D * N;
      const T* mb = mass + b * N;
      T xi[D];
      for (int c = 0; c < D; ++c) xi[c] = xb[c * N + i];
      T a0 = 0, a1 = 0, a2 = 0, p = 0;
      // j < i, then j > i: the self term is skipped by index, never by a test
      // on the distance, so coincident distinct bodies stay visible (non-finite).
      for (int part = 0; part < 2; ++part) {
        const int64_t j0 = part == 0 ? 0 : i + 1, j1 = part == 0 ? i : N;
#pragma omp simd reduction(+ : a0, a1, a2, p)
        for (int64_t j = j0; j < j1; ++j) {
          T d[D];
          T r2 = eps2;
          for (int c = 0; c < D; ++c) {
            d[c] = xb[c * N + j] - xi[c];
            r2 += d[c] * d[c];
          }
          T a[D] = {};
          T pp = 0;
          accumulate_pull<T, D>(d, r2, mb[j], a, pp);
          a0 += a[0];
          a1 += a[1];
          if constexpr (D == 3) a2 += a[2];
          p += pp;
        }
      }
      if constexpr (kAcc) {
        T* ai = acc + idx * D;
        ai[0] = G * a0;
        ai[1] = G * a1;
        if constexpr (D == 3) ai[2] = G * a2;
      }
      if constexpr (kPhi) phi[idx] = -G * p;
    }
  });
}

template <typename T, int D>
void backward_kernel(const T* x, const T* mass, const T* g, int64_t B, int64_t N, T eps2, T G,
                     T* grad_pos, T* grad_mass) {
  at::parallel_for(0, B * N, grain_for(N), [&](int64_t begin, int64_t end) {
    for (int64_t idx = begin; idx < end; ++idx) {
      const int64_t b = idx / N, k = idx % N;
      const T* xb = x + b * D * N;
      const T* gb = g + b * D * N;
      const T* mb = mass + b * N;
      const T mk = mb[k];
      T xk[D], gk[D];
      for (int c = 0; c < D; ++c) {
        xk[c] = xb[c * N + k];
        gk[c] = gb[c * N + k];
      }
      T gx0 = 0, gx1 = 0, gx2 = 0, gm = 0;
      for (int part = 0; part < 2; ++part) {
        const int64_t j0 = part == 0 ? 0 : k + 1, j1 = part == 0 ? k : N;
#pragma omp simd reduction(+ : gx0, gx1, gx2, gm)
        for (int64_t j = j0; j < j1; ++j) {
          T d[D], gj[D];
          T r2 = eps2;
          for (int c = 0; c < D; ++c) {
            d[c] = xb[c * N + j] - xk[c];
            gj[c] = gb[c * N + j];
            r2 += d[c] * d[c];
          }
          T gx[D] = {};
          T gmj = 0;
          accumulate_pull_backward<T, D>(d, r2, mk, mb[j], gk, gj, gx, gmj);
          gx0 += gx[0];
          gx1 += gx[1];
          if constexpr (D == 3) gx2 += gx[2];
          gm += gmj;
        }
      }
      T* out = grad_pos + idx * D;
      out[0] = G * gx0;
      out[1] = G * gx1;
      if constexpr (D == 3) out[2] = G * gx2;
      grad_mass[idx] = G * gm;
    }
  });
}

// U = -G sum_i m_i sum_{j>i} m_j / s_ij. Row i is summed by one thread and the
// rows are added in a fixed order, so the result does not depend on threading.
template <typename T, int D>
void potential_kernel(const T* x, const T* mass, int64_t B, int64_t N, T eps2, T G, T* energy) {
  std::vector<T> rows(static_cast<size_t>(B * N));
  const int64_t half = (N + 1) / 2;
  // Task t handles rows i and N-1-i, which together cost N-1 pairs: balanced.
  at::parallel_for(0, B * half, grain_for(N), [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      const int64_t b = t / half, r = t % half;
      const T* xb = x + b * D * N;
      const T* mb = mass + b * N;
      auto row = [&](int64_t i) {
        T xi[D];
        for (int c = 0; c < D; ++c) xi[c] = xb[c * N + i];
        T p = 0;
#pragma omp simd reduction(+ : p)
        for (int64_t j = i + 1; j < N; ++j) {
          T r2 = eps2;
          for (int c = 0; c < D; ++c) {
            const T dc = xb[c * N + j] - xi[c];
            r2 += dc * dc;
          }
          p += mb[j] * inverse_distance(r2);
        }
        rows[b * N + i] = mb[i] * p;
      };
      row(r);
      if (N - 1 - r != r) row(N - 1 - r);
    }
  });
  for (int64_t b = 0; b < B; ++b) {
    T u = 0;
    for (int64_t i = 0; i < N; ++i) u += rows[b * N + i];
    energy[b] = -G * u;
  }
}

template <typename Fn>
void dispatch_dim(int64_t D, Fn&& fn) {
  if (D == 2) {
    fn(std::integral_constant<int, 2>{});
  } else {
    fn(std::integral_constant<int, 3>{});
  }
}

class CpuBackend final : public GravityBackend {
 public:
  void pair_forward(const at::Tensor& pos, const at::Tensor& mass, double softening, double G,
                    at::Tensor& acc, at::Tensor& phi) const override {
    const at::Tensor x = to_soa(pos);
    const int64_t B = pos.size(0), N = pos.size(1);
    AT_DISPATCH_FLOATING_TYPES(pos.scalar_type(), "aits_pair_forward_cpu", [&] {
      const scalar_t eps2 = static_cast<scalar_t>(softening * softening);
      const scalar_t g = static_cast<scalar_t>(G);
      scalar_t* a = acc.defined() ? acc.data_ptr<scalar_t>() : nullptr;
      scalar_t* p = phi.defined() ? phi.data_ptr<scalar_t>() : nullptr;
      dispatch_dim(pos.size(2), [&](auto dim) {
        constexpr int D = decltype(dim)::value;
        const scalar_t* xp = x.data_ptr<scalar_t>();
        const scalar_t* mp = mass.data_ptr<scalar_t>();
        if (a && p) {
          forward_kernel<scalar_t, D, true, true>(xp, mp, B, N, eps2, g, a, p);
        } else if (a) {
          forward_kernel<scalar_t, D, true, false>(xp, mp, B, N, eps2, g, a, p);
        } else if (p) {
          forward_kernel<scalar_t, D, false, true>(xp, mp, B, N, eps2, g, a, p);
        }
      });
    });
  }

  void pair_backward(const at::Tensor& pos, const at::Tensor& mass, const at::Tensor& grad_acc,
                     double softening, double G, at::Tensor& grad_pos,
                     at::Tensor& grad_mass) const override {
    const at::Tensor x = to_soa(pos);
    const at::Tensor gsoa = to_soa(grad_acc);
    const int64_t B = pos.size(0), N = pos.size(1);
    AT_DISPATCH_FLOATING_TYPES(pos.scalar_type(), "aits_pair_backward_cpu", [&] {
      dispatch_dim(pos.size(2), [&](auto dim) {
        backward_kernel<scalar_t, decltype(dim)::value>(
            x.data_ptr<scalar_t>(), mass.data_ptr<scalar_t>(), gsoa.data_ptr<scalar_t>(), B, N,
            static_cast<scalar_t>(softening * softening), static_cast<scalar_t>(G),
            grad_pos.data_ptr<scalar_t>(), grad_mass.data_ptr<scalar_t>());
      });
    });
  }

  void potential(const at::Tensor& pos, const at::Tensor& mass, double softening, double G,
                 at::Tensor& energy) const override {
    const at::Tensor x = to_soa(pos);
    const int64_t B = pos.size(0), N = pos.size(1);
    AT_DISPATCH_FLOATING_TYPES(pos.scalar_type(), "aits_potential_cpu", [&] {
      dispatch_dim(pos.size(2), [&](auto dim) {
        potential_kernel<scalar_t, decltype(dim)::value>(
            x.data_ptr<scalar_t>(), mass.data_ptr<scalar_t>(), B, N,
            static_cast<scalar_t>(softening * softening), static_cast<scalar_t>(G),
            energy.data_ptr<scalar_t>());
      });
    });
  }
};

const CpuBackend cpu_backend;
const bool registered = (register_backend(c10::DeviceType::CPU, &cpu_backend), true);

}  // namespace
}  // namespace aits
