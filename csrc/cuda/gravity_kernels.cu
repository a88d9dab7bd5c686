// CUDA back end, raw kernels: tiled shared-memory all-pairs sums (the classic
// GPU direct-sum design; the Aarseth derivatives use plain loops, see there). Only cuda_runtime.h and gravity.h are included, so
// this file compiles with nvcc alone; backend_cuda.cpp wraps it for torch.
//
// Tiling: a block of kTile threads owns kTile consecutive bodies i of one
// system (grid.x over bodies, grid.y over systems), one body per thread. It
// walks the system's bodies j in tiles of kTile: every thread loads one body
// of the tile into shared memory, the block synchronises, and each thread adds
// the whole tile's pull on its own body from shared memory (a broadcast read).
// Each body is read from global memory N / kTile times instead of N times,
// and nothing of size N x N exists.
//
// Excluded pairs (the self pair j == i; j <= i in the potential's i < j sum)
// are skipped by index, never by a test on the distance: their squared
// distance is replaced by +inf, so 1/s = 0 and they add exactly 0, while
// coincident *distinct* bodies with softening 0 still give inf/NaN, as on the
// CPU. Only the diagonal tile (the block's own bodies) pays for that test.
#include <math_constants.h>

#include <algorithm>

#include "cuda/gravity_cuda.h"
#include "gravity.h"
#include "pair_stats.h"

// Unrolls the per-dimension loops (D = 2 or 3).
#define AITS_UNROLL _Pragma("unroll")

namespace aits {
namespace cuda {
namespace {

// Threads per block = bodies per tile. 256 keeps 8 blocks resident per SM.
constexpr int kTile = 256;
// Systems per launch: grid.y is limited to 65535.
constexpr int64_t kMaxGridY = 65535;

template <typename T>
__device__ __forceinline__ T infinity();
template <>
__device__ __forceinline__ float infinity<float>() { return CUDART_INF_F; }
template <>
__device__ __forceinline__ double infinity<double>() { return CUDART_INF; }

// A body, (x_0, .., x_{D-1}, m), or a gradient vector, padded to 4 values so
// that a thread reads it from shared memory in one 16-byte (float) or two
// (double) loads, broadcast to the whole warp.
template <typename T>
struct alignas(4 * sizeof(T)) Packed {
  T v[4];
};

template <typename T, int D>
__device__ __forceinline__ Packed<T> load_body(const T* pos, const T* mass, int j) {
  Packed<T> b;
AITS_UNROLL
  for (int c = 0; c < D; ++c) b.v[c] = pos[static_cast<int64_t>(j) * D + c];
  b.v[D] = mass[j];
  return b;
}

template <typename T, int D>
__device__ __forceinline__ Packed<T> load_vector(const T* v, int j) {
  Packed<T> g;
AITS_UNROLL
  for (int c = 0; c < D; ++c) g.v[c] = v[static_cast<int64_t>(j) * D + c];
  return g;
}

// Puts bodies [base, base + kTile) of one system (and their upstream gradients
// when grad != nullptr) into shared memory; slots past n are left stale and
// never read. The first barrier lets every thread finish the previous tile.
template <typename T, int D>
__device__ __forceinline__ void load_tile(Packed<T>* bodies, Packed<T>* grads, const T* pos,
                                          const T* mass, const T* grad, int n, int base) {
  __syncthreads();
  const int j = base + static_cast<int>(threadIdx.x);
  if (j < n) {
    bodies[threadIdx.x] = load_body<T, D>(pos, mass, j);
    if (grad != nullptr) grads[threadIdx.x] = load_vector<T, D>(grad, j);
  }
  __syncthreads();
}

// The first D components of a packed body or gradient as a Vec3 (z = 0 in 2-D).
template <typename T, int D>
__device__ __forceinline__ Vec3<T> as_vec(const Packed<T>& b) {
  return {b.v[0], b.v[1], D == 3 ? b.v[2] : T(0)};
}

// d = x_j - x_i.
template <typename T, int D>
__device__ __forceinline__ Vec3<T> separation(const Packed<T>& xi, const Packed<T>& xj) {
  const Vec3<T> a = as_vec<T, D>(xi), b = as_vec<T, D>(xj);
  return {b.x - a.x, b.y - a.y, b.z - a.z};
}

// Which pairs of a tile a thread skips: none, its own body (tile slot == t),
// or every slot <= t (the diagonal tile of the i < j potential sum).
enum class Skip { kNone, kSelf, kUpTo };

template <Skip kSkip>
__device__ __forceinline__ bool skipped(int k, int t) {
  return (kSkip == Skip::kSelf && k == t) || (kSkip == Skip::kUpTo && k <= t);
}

// Adds the pull of tile slots [0, count) on body xi: a += (m_j / s^2)(d / s), p += m_j / s
// (the range-safe form of gravity.h, as on the CPU).
template <typename T, int D, Skip kSkip>
__device__ __forceinline__ void pull_tile(const Packed<T>* tile, int count, const Packed<T>& xi,
                                          T eps2, T (&a)[D], T& p) {
  const int t = static_cast<int>(threadIdx.x);
#pragma unroll 8
  for (int k = 0; k < count; ++k) {
    const Packed<T> xj = tile[k];
    const Vec3<T> d = separation<T, D>(xi, xj);
    T r2 = eps2 + dot(d, d);
    if (skipped<kSkip>(k, t)) r2 = infinity<T>();
    T inv, pot;
    const T w = pull_scale(r2, xj.v[D], inv, pot);  // m_j / s^2: no 1 / s^3 formed
    a[0] += w * (d.x * inv);
    a[1] += w * (d.y * inv);
    if constexpr (D == 3) a[2] += w * (d.z * inv);
    p += pot;
  }
}

// Adds tile slots [0, count)'s share of dL/dx_k and dL/dm_k for body xk with
// upstream gradient gk (gravity.h has the formulas).
template <typename T, int D, Skip kSkip>
__device__ __forceinline__ void pull_back_tile(const Packed<T>* bodies, const Packed<T>* grads,
                                               int count, const Packed<T>& xk, const T (&gk)[D],
                                               T eps2, T (&gx)[D], T& gm) {
  const int t = static_cast<int>(threadIdx.x);
  const Vec3<T> gk3{gk[0], gk[1], D == 3 ? gk[2] : T(0)};
#pragma unroll 4
  for (int k = 0; k < count; ++k) {
    const Packed<T> xj = bodies[k];
    const Vec3<T> d = separation<T, D>(xk, xj);
    T r2 = eps2 + dot(d, d);
    if (skipped<kSkip>(k, t)) r2 = infinity<T>();
    const Vec3<T> t3 =
        pull_backward_scaled(d, r2, xk.v[D], xj.v[D], gk3, as_vec<T, D>(grads[k]), gm);
    gx[0] += t3.x;
    gx[1] += t3.y;
    if constexpr (D == 3) gx[2] += t3.z;
  }
}

// Sums, for this thread's body xi, the pull of the system's bodies j tile by
// tile: every j != i, or with kUpper only j > i (the loop then starts at the
// block's own, diagonal tile). a += m_j d / s^3, p += m_j / s.
template <typename T, int D, bool kUpper>
__device__ __forceinline__ void sum_pulls(const T* pos, const T* mass, int n, T eps2,
                                          const Packed<T>& xi, T (&a)[D], T& p) {
  __shared__ Packed<T> tile[kTile];
  const int first = static_cast<int>(blockIdx.x) * kTile;
  for (int base = kUpper ? first : 0; base < n; base += kTile) {
    load_tile<T, D>(tile, nullptr, pos, mass, nullptr, n, base);
    const int count = min(kTile, n - base);
    if (base == first) {
      pull_tile<T, D, kUpper ? Skip::kUpTo : Skip::kSelf>(tile, count, xi, eps2, a, p);
    } else {
      pull_tile<T, D, Skip::kNone>(tile, count, xi, eps2, a, p);
    }
  }
}

// acc = G sum_{j != i} m_j d_ij / s^3 and/or phi = -G sum_{j != i} m_j / s.
// Threads past n stand in for body n - 1 (they still load tiles) and write nothing.
template <typename T, int D, bool kAcc, bool kPhi>
__global__ void __launch_bounds__(kTile)
    pair_forward_kernel(const T* __restrict__ pos, const T* __restrict__ mass, int n, T eps2, T G,
                        T* __restrict__ acc, T* __restrict__ phi) {
  const int64_t sys = blockIdx.y;
  pos += sys * n * D;
  mass += sys * n;
  const int i = static_cast<int>(blockIdx.x) * kTile + static_cast<int>(threadIdx.x);
  const Packed<T> xi = load_body<T, D>(pos, mass, min(i, n - 1));
  T a[D] = {};
  T p = T(0);
  sum_pulls<T, D, false>(pos, mass, n, eps2, xi, a, p);
  if (i >= n) return;
  if (kAcc) {
AITS_UNROLL
    for (int c = 0; c < D; ++c) acc[(sys * n + i) * D + c] = G * a[c];
  }
  if (kPhi) phi[sys * n + i] = -G * p;
}

// rows[i] = m_i sum_{j > i} m_j / s_ij. Blocks further down do less work;
// many blocks per SM even that out.
template <typename T, int D>
__global__ void __launch_bounds__(kTile)
    potential_rows_kernel(const T* __restrict__ pos, const T* __restrict__ mass, int n, T eps2,
                          T* __restrict__ rows) {
  const int64_t sys = blockIdx.y;
  pos += sys * n * D;
  mass += sys * n;
  const int i = static_cast<int>(blockIdx.x) * kTile + static_cast<int>(threadIdx.x);
  const Packed<T> xi = load_body<T, D>(pos, mass, min(i, n - 1));
  T a[D] = {};  // unused: the compiler drops the acceleration terms
  T p = T(0);
  sum_pulls<T, D, true>(pos, mass, n, eps2, xi, a, p);
  if (i < n) rows[sys * n + i] = xi.v[D] * p;
}

// energy[b] = -G sum_i rows[b, i], one block per system, in a fixed order:
// thread t adds rows t, t + kTile, ... in turn, then a shared-memory tree
// halves the kTile partial sums. Same launch, same bits, every run.
template <typename T>
__global__ void __launch_bounds__(kTile)
    sum_rows_kernel(const T* __restrict__ rows, int n, T G, T* __restrict__ energy) {
  __shared__ T part[kTile];
  const int t = static_cast<int>(threadIdx.x);
  rows += static_cast<int64_t>(blockIdx.x) * n;
  T s = T(0);
  for (int i = t; i < n; i += kTile) s += rows[i];
  part[t] = s;
  for (int width = kTile / 2; width > 0; width /= 2) {
    __syncthreads();
    if (t < width) part[t] += part[t + width];
  }
  if (t == 0) energy[blockIdx.x] = -G * part[0];
}

// grad_pos_k = G sum_{j != k} K_kj (m_k g_j - m_j g_k), grad_mass_k = -G sum g_j.d/s^3.
template <typename T, int D>
__global__ void __launch_bounds__(kTile)
    pair_backward_kernel(const T* __restrict__ pos, const T* __restrict__ mass,
                         const T* __restrict__ grad, int n, T eps2, T G,
                         T* __restrict__ grad_pos, T* __restrict__ grad_mass) {
  __shared__ Packed<T> bodies[kTile];
  __shared__ Packed<T> grads[kTile];
  const int64_t sys = blockIdx.y;
  pos += sys * n * D;
  grad += sys * n * D;
  mass += sys * n;
  const int first = static_cast<int>(blockIdx.x) * kTile;
  const int k = first + static_cast<int>(threadIdx.x);
  const Packed<T> xk = load_body<T, D>(pos, mass, min(k, n - 1));
  const Packed<T> gk_packed = load_vector<T, D>(grad, min(k, n - 1));
  T gk[D];
AITS_UNROLL
  for (int c = 0; c < D; ++c) gk[c] = gk_packed.v[c];
  T gx[D] = {};
  T gm = T(0);
  for (int base = 0; base < n; base += kTile) {
    load_tile<T, D>(bodies, grads, pos, mass, grad, n, base);
    const int count = min(kTile, n - base);
    if (base == first) {
      pull_back_tile<T, D, Skip::kSelf>(bodies, grads, count, xk, gk, eps2, gx, gm);
    } else {
      pull_back_tile<T, D, Skip::kNone>(bodies, grads, count, xk, gk, eps2, gx, gm);
    }
  }
  if (k >= n) return;
AITS_UNROLL
  for (int c = 0; c < D; ++c) grad_pos[(sys * n + k) * D + c] = G * gx[c];
  grad_mass[sys * n + k] = G * gm;
}

// The pair statistics (pair_stats.h has the rules): one body per thread over
// every partner j != i, tile by tile as sum_pulls, into the row accumulators st
// (min s^2, sum of s, max s^2, max q in StatAcc<T>); with kAcc the pull a as
// pull_tile's too (the fused force pass). The self pair is skipped by index,
// only in the diagonal tile (kDiagonal).
template <typename T, int D, bool kAcc, bool kDiagonal>
__device__ __forceinline__ void statistics_tile(const Packed<T>* tile, int count,
                                                const Packed<T>& xi, T eps2, T (&a)[D],
                                                StatAcc<T> (&st)[4]) {
  using A = StatAcc<T>;
  const int t = static_cast<int>(threadIdx.x);
#pragma unroll 4
  for (int k = 0; k < count; ++k) {
    if (kDiagonal && k == t) continue;
    const Packed<T> xj = tile[k];
    const Vec3<T> d = separation<T, D>(xi, xj);
    const T r2 = eps2 + dot(d, d);
    if constexpr (kAcc) {
      T inv, pot;
      const T w = pull_scale(r2, xj.v[D], inv, pot);
      a[0] += w * (d.x * inv);
      a[1] += w * (d.y * inv);
      if constexpr (D == 3) a[2] += w * (d.z * inv);
    }
    const T s2 = distinct_s2(r2, d), s = std::sqrt(s2);
    const A v[4] = {A(s2), A(s), A(s2), freefall_weight<A>(xi.v[D] + xj.v[D], T(1) / s)};
AITS_UNROLL
    for (int c = 0; c < 4; ++c) merge_row_stat(c, st[c], v[c]);
  }
}

// rows[(sys n + i) 4 + 0..3]: body i's row statistics; with kAcc also acc as
// pair_forward_kernel's. Threads past n stand in for body n - 1 and write nothing.
template <typename T, int D, bool kAcc>
__global__ void __launch_bounds__(kTile)
    statistics_rows_kernel(const T* __restrict__ pos, const T* __restrict__ mass, int n, T eps2,
                           T G, T* __restrict__ acc, StatAcc<T>* __restrict__ rows) {
  using A = StatAcc<T>;
  __shared__ Packed<T> tile[kTile];
  const int64_t sys = blockIdx.y;
  pos += sys * n * D;
  mass += sys * n;
  const int first = static_cast<int>(blockIdx.x) * kTile;
  const int i = first + static_cast<int>(threadIdx.x);
  const Packed<T> xi = load_body<T, D>(pos, mass, min(i, n - 1));
  T a[D] = {};
  A st[4] = {infinity<A>(), A(0), A(0), A(0)};
  for (int base = 0; base < n; base += kTile) {
    load_tile<T, D>(tile, nullptr, pos, mass, nullptr, n, base);
    const int count = min(kTile, n - base);
    if (base == first) {
      statistics_tile<T, D, kAcc, true>(tile, count, xi, eps2, a, st);
    } else {
      statistics_tile<T, D, kAcc, false>(tile, count, xi, eps2, a, st);
    }
  }
  if (i >= n) return;
  if constexpr (kAcc) {
AITS_UNROLL
    for (int c = 0; c < D; ++c) acc[(sys * n + i) * D + c] = G * a[c];
  }
AITS_UNROLL
  for (int c = 0; c < 4; ++c) rows[(sys * n + i) * 4 + c] = st[c];
}

// stats[b] = (min s, mean s, max s, min free-fall time or NaN) from system b's
// rows, one block per system, merged in a fixed order as sum_rows_kernel sums:
// deterministic for a given N.
template <typename T>
__global__ void __launch_bounds__(kTile)
    combine_statistics_kernel(const StatAcc<T>* __restrict__ rows, int n, T G, bool freefall,
                              T* __restrict__ stats) {
  using A = StatAcc<T>;
  __shared__ A part[4][kTile];
  const int t = static_cast<int>(threadIdx.x);
  rows += static_cast<int64_t>(blockIdx.x) * n * 4;
  A st[4] = {infinity<A>(), A(0), A(0), A(0)};
  for (int i = t; i < n; i += kTile) {
AITS_UNROLL
    for (int c = 0; c < 4; ++c) merge_row_stat(c, st[c], rows[static_cast<int64_t>(i) * 4 + c]);
  }
AITS_UNROLL
  for (int c = 0; c < 4; ++c) part[c][t] = st[c];
  for (int width = kTile / 2; width > 0; width /= 2) {
    __syncthreads();
    if (t < width) {
AITS_UNROLL
      for (int c = 0; c < 4; ++c) merge_row_stat(c, part[c][t], part[c][t + width]);
    }
  }
  if (t != 0) return;
  T* o = stats + static_cast<int64_t>(blockIdx.x) * 4;
  o[0] = n > 1 ? static_cast<T>(std::sqrt(part[0][0])) : T(0);
  o[1] = n > 1 ? static_cast<T>(part[1][0] / (A(n) * A(n - 1))) : T(0);
  o[2] = static_cast<T>(std::sqrt(part[2][0]));
  o[3] = freefall ? freefall_time<T>(A(G), part[3][0], part[0][0]) : static_cast<T>(CUDART_NAN);
}

// Aarseth's derivatives (gravity.h has the pair formulas): plain loops, one
// thread per body i over every partner j != i, read from global memory (every
// thread of a warp reads the same j: one broadcast load). Pass 1 writes acc
// and jerk, pass 2 reads them back for snap and crackle.
template <typename T, int D>
__device__ __forceinline__ void load_d(const T* __restrict__ u, int j, T (&out)[D]) {
AITS_UNROLL
  for (int c = 0; c < D; ++c) out[c] = u[static_cast<int64_t>(j) * D + c];
}

// out = u_j - own.
template <typename T, int D>
__device__ __forceinline__ void relative_d(const T* __restrict__ u, int j, const T (&own)[D],
                                           T (&out)[D]) {
AITS_UNROLL
  for (int c = 0; c < D; ++c) out[c] = u[static_cast<int64_t>(j) * D + c] - own[c];
}

template <typename T, int D>
__device__ __forceinline__ T softened_r2(const T (&x)[D], T eps2) {
  T r2 = eps2;
AITS_UNROLL
  for (int c = 0; c < D; ++c) r2 += x[c] * x[c];
  return r2;
}

template <typename T, int D>
__global__ void __launch_bounds__(kTile)
    aarseth_acc_jerk_kernel(const T* __restrict__ pos, const T* __restrict__ vel,
                            const T* __restrict__ mass, int n, T eps2, T G, T* __restrict__ acc,
                            T* __restrict__ jerk) {
  const int64_t sys = blockIdx.y;
  pos += sys * n * D;
  vel += sys * n * D;
  mass += sys * n;
  const int i = static_cast<int>(blockIdx.x) * kTile + static_cast<int>(threadIdx.x);
  if (i >= n) return;
  T xi[D], vi[D], sa[D] = {}, sk[D] = {};
  load_d<T, D>(pos, i, xi);
  load_d<T, D>(vel, i, vi);
  for (int j = 0; j < n; ++j) {
    if (j == i) continue;
    T x[D], v[D], tA[D], tJ[D];
    relative_d<T, D>(pos, j, xi, x);
    relative_d<T, D>(vel, j, vi, v);
    const T q =
        mass[j] * aarseth_acc_jerk_terms<D, T>(x, v, inverse_distance(softened_r2<T, D>(x, eps2)), tA, tJ);
AITS_UNROLL
    for (int c = 0; c < D; ++c) {
      sa[c] += q * tA[c];
      sk[c] += q * tJ[c];
    }
  }
AITS_UNROLL
  for (int c = 0; c < D; ++c) {
    acc[(sys * n + i) * D + c] = G * sa[c];
    jerk[(sys * n + i) * D + c] = G * sk[c];
  }
}

template <typename T, int D>
__global__ void __launch_bounds__(kTile)
    aarseth_snap_crackle_kernel(const T* __restrict__ pos, const T* __restrict__ vel,
                                const T* __restrict__ mass, const T* __restrict__ acc,
                                const T* __restrict__ jerk, int n, T eps2, T G,
                                T* __restrict__ snap, T* __restrict__ crackle) {
  const int64_t sys = blockIdx.y;
  pos += sys * n * D;
  vel += sys * n * D;
  acc += sys * n * D;
  jerk += sys * n * D;
  mass += sys * n;
  const int i = static_cast<int>(blockIdx.x) * kTile + static_cast<int>(threadIdx.x);
  if (i >= n) return;
  T xi[D], vi[D], ai[D], ki[D], ss[D] = {}, sc[D] = {};
  load_d<T, D>(pos, i, xi);
  load_d<T, D>(vel, i, vi);
  load_d<T, D>(acc, i, ai);
  load_d<T, D>(jerk, i, ki);
  for (int j = 0; j < n; ++j) {
    if (j == i) continue;
    T x[D], v[D], a[D], k[D], tS[D], tC[D];
    relative_d<T, D>(pos, j, xi, x);
    relative_d<T, D>(vel, j, vi, v);
    relative_d<T, D>(acc, j, ai, a);
    relative_d<T, D>(jerk, j, ki, k);
    const T q = mass[j] * aarseth_snap_crackle_terms<D, T>(
                              x, v, a, k, inverse_distance(softened_r2<T, D>(x, eps2)), tS, tC);
AITS_UNROLL
    for (int c = 0; c < D; ++c) {
      ss[c] += q * tS[c];
      sc[c] += q * tC[c];
    }
  }
AITS_UNROLL
  for (int c = 0; c < D; ++c) {
    snap[(sys * n + i) * D + c] = G * ss[c];
    crackle[(sys * n + i) * D + c] = G * sc[c];
  }
}

// Calls launch(first_system, systems) for chunks of at most kMaxGridY systems;
// returns the first launch error.
template <typename Launch>
cudaError_t over_system_chunks(int64_t B, Launch&& launch) {
  for (int64_t b0 = 0; b0 < B; b0 += kMaxGridY) {
    launch(b0, static_cast<unsigned>(std::min(kMaxGridY, B - b0)));
    const cudaError_t err = cudaGetLastError();
    if (err != cudaSuccess) return err;
  }
  return cudaSuccess;
}

// Calls fn with std::integral_constant<int, D> for D = 2 or 3.
template <typename Fn>
cudaError_t dispatch_dim(int D, Fn&& fn) {
  if (D == 2) return fn(std::integral_constant<int, 2>{});
  if (D == 3) return fn(std::integral_constant<int, 3>{});
  return cudaErrorInvalidValue;
}

unsigned tiles(int64_t N) { return static_cast<unsigned>((N + kTile - 1) / kTile); }

}  // namespace

template <typename T>
cudaError_t launch_pair_forward(const T* pos, const T* mass, int64_t B, int64_t N, int D,
                                T eps2, T G, T* acc, T* phi, cudaStream_t stream) {
  return dispatch_dim(D, [&](auto dim) {
    constexpr int kD = decltype(dim)::value;
    return over_system_chunks(B, [&](int64_t b0, unsigned systems) {
      const dim3 grid(tiles(N), systems);
      const int n = static_cast<int>(N);
      const T* x = pos + b0 * N * kD;
      const T* m = mass + b0 * N;
      T* a = acc ? acc + b0 * N * kD : nullptr;
      T* p = phi ? phi + b0 * N : nullptr;
      if (a && p) {
        pair_forward_kernel<T, kD, true, true><<<grid, kTile, 0, stream>>>(x, m, n, eps2, G, a, p);
      } else if (a) {
        pair_forward_kernel<T, kD, true, false><<<grid, kTile, 0, stream>>>(x, m, n, eps2, G, a, p);
      } else if (p) {
        pair_forward_kernel<T, kD, false, true><<<grid, kTile, 0, stream>>>(x, m, n, eps2, G, a, p);
      }
    });
  });
}

template <typename T>
cudaError_t launch_pair_backward(const T* pos, const T* mass, const T* grad_acc, int64_t B,
                                 int64_t N, int D, T eps2, T G, T* grad_pos, T* grad_mass,
                                 cudaStream_t stream) {
  return dispatch_dim(D, [&](auto dim) {
    constexpr int kD = decltype(dim)::value;
    return over_system_chunks(B, [&](int64_t b0, unsigned systems) {
      pair_backward_kernel<T, kD><<<dim3(tiles(N), systems), kTile, 0, stream>>>(
          pos + b0 * N * kD, mass + b0 * N, grad_acc + b0 * N * kD, static_cast<int>(N), eps2,
          G, grad_pos + b0 * N * kD, grad_mass + b0 * N);
    });
  });
}

template <typename T>
cudaError_t launch_potential(const T* pos, const T* mass, int64_t B, int64_t N, int D, T eps2,
                             T G, T* rows, T* energy, cudaStream_t stream) {
  const cudaError_t err = dispatch_dim(D, [&](auto dim) {
    constexpr int kD = decltype(dim)::value;
    return over_system_chunks(B, [&](int64_t b0, unsigned systems) {
      potential_rows_kernel<T, kD><<<dim3(tiles(N), systems), kTile, 0, stream>>>(
          pos + b0 * N * kD, mass + b0 * N, static_cast<int>(N), eps2, rows + b0 * N);
    });
  });
  if (err != cudaSuccess) return err;
  sum_rows_kernel<T><<<static_cast<unsigned>(B), kTile, 0, stream>>>(rows, static_cast<int>(N), G,
                                                                     energy);
  return cudaGetLastError();
}

template <typename T>
cudaError_t launch_pair_statistics(const T* pos, const T* mass, int64_t B, int64_t N, int D,
                                   T eps2, T G, bool freefall, T* acc, StatAcc<T>* rows,
                                   T* stats, cudaStream_t stream) {
  const cudaError_t err = N == 0 ? cudaSuccess : dispatch_dim(D, [&](auto dim) {
    constexpr int kD = decltype(dim)::value;
    return over_system_chunks(B, [&](int64_t b0, unsigned systems) {
      const dim3 grid(tiles(N), systems);
      const int n = static_cast<int>(N);
      const T* x = pos + b0 * N * kD;
      const T* m = mass + b0 * N;
      StatAcc<T>* r = rows + b0 * N * 4;
      if (acc) {
        statistics_rows_kernel<T, kD, true>
            <<<grid, kTile, 0, stream>>>(x, m, n, eps2, G, acc + b0 * N * kD, r);
      } else {
        statistics_rows_kernel<T, kD, false>
            <<<grid, kTile, 0, stream>>>(x, m, n, eps2, G, nullptr, r);
      }
    });
  });
  if (err != cudaSuccess) return err;
  combine_statistics_kernel<T><<<static_cast<unsigned>(B), kTile, 0, stream>>>(
      rows, static_cast<int>(N), G, freefall, stats);
  return cudaGetLastError();
}

template <typename T>
cudaError_t launch_aarseth_derivatives(const T* pos, const T* vel, const T* mass, int64_t B,
                                       int64_t N, int D, T eps2, T G, T* acc, T* jerk, T* snap,
                                       T* crackle, cudaStream_t stream) {
  return dispatch_dim(D, [&](auto dim) {
    constexpr int kD = decltype(dim)::value;
    return over_system_chunks(B, [&](int64_t b0, unsigned systems) {
      const dim3 grid(tiles(N), systems);
      const int n = static_cast<int>(N);
      const int64_t off = b0 * N * kD;
      aarseth_acc_jerk_kernel<T, kD><<<grid, kTile, 0, stream>>>(
          pos + off, vel + off, mass + b0 * N, n, eps2, G, acc + off, jerk + off);
      aarseth_snap_crackle_kernel<T, kD><<<grid, kTile, 0, stream>>>(
          pos + off, vel + off, mass + b0 * N, acc + off, jerk + off, n, eps2, G, snap + off,
          crackle + off);
    });
  });
}

#define AITS_INSTANTIATE(T)                                                                     \
  template cudaError_t launch_pair_forward<T>(const T*, const T*, int64_t, int64_t, int, T, T, \
                                              T*, T*, cudaStream_t);                           \
  template cudaError_t launch_pair_backward<T>(const T*, const T*, const T*, int64_t, int64_t, \
                                               int, T, T, T*, T*, cudaStream_t);               \
  template cudaError_t launch_potential<T>(const T*, const T*, int64_t, int64_t, int, T, T, T*, \
                                           T*, cudaStream_t);                                  \
  template cudaError_t launch_aarseth_derivatives<T>(const T*, const T*, const T*, int64_t,    \
                                                     int64_t, int, T, T, T*, T*, T*, T*,       \
                                                     cudaStream_t);                            \
  template cudaError_t launch_pair_statistics<T>(const T*, const T*, int64_t, int64_t, int, T, \
                                                 T, bool, T*, StatAcc<T>*, T*, cudaStream_t);
AITS_INSTANTIATE(float)
AITS_INSTANTIATE(double)
#undef AITS_INSTANTIATE

}  // namespace cuda
}  // namespace aits
