// The encounter features of aits.encounter on the CPU, one system at a time (the
// pairs of a system of more than one row block, 64 bodies, in vectors and in the
// row blocks of aarseth_kernels over the threads when the batch has fewer systems
// than threads):
// what the Python path computes with some fifty small torch ops per call (the
// per-body Aarseth times, the pairwise free-fall and collision times, the
// energy time and the fourteen log ratios), from the acceleration and its three
// time derivatives that the caller computed (the aarseth_derivatives kernels).
// Arithmetic in float64 whatever the input dtype; the outputs are cast back.
// The reference is aits/encounter.py, whose docstrings give every definition;
// the column orders are ENCOUNTER_NAMES (features; with `smooth`,
// SMOOTH_ENCOUNTER_NAMES, whose columns 6-11 are ratios of sums over the bodies)
// and EncounterTimes (times).
#pragma once

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include <ATen/Parallel.h>

#include "backend.h"
#include "cpu/aarseth_kernels.h"
#include "cpu/simd.h"

namespace aits {
namespace encounter_kernels {

constexpr int kFeatures = kEncounterFeatures;
// times: Aarseth's minimum and geometric mean, free-fall, collision, energy
constexpr int kTimes = kEncounterTimes;

struct Inputs {
  int64_t B, N;
  double eps2, G, clip, tiny;  // tiny: the smallest normal number of the input dtype
  bool smooth;                 // columns 6-11 from sums over the bodies
};

// log(num / den) as aits.encounter._log_ratio: 0 where both are 0 or the
// result is NaN, +-clip where it is infinite, clipped to [-clip, clip].
inline double log_ratio(double num, double den, double clip, double tiny) {
  if (num == 0.0 && den == 0.0) return 0.0;
  // std::max(NaN, tiny) keeps the NaN, as torch's clamp_min does
  const double out = std::log(std::max(num, tiny)) - std::log(std::max(den, tiny));
  if (std::isnan(out)) return 0.0;
  return std::min(std::max(out, -clip), clip);
}

// What one system's pairs i < k give: the smallest squared free-fall time
// (softened), the smallest collision time (unsoftened) and -sum m_i m_k / s_ik
// (the potential energy over G).
struct PairTimes {
  double tff2, coll, pot;
};

// PairTimes of the pairs whose first body is a row in [i0, i1).
template <typename T, int D>
PairTimes pair_times(const T* x, const T* v, const T* m, const T* a, int64_t N, const Inputs& in,
                     int64_t i0, int64_t i1) {
  PairTimes out{std::numeric_limits<double>::infinity(), std::numeric_limits<double>::infinity(),
                0.0};
  for (int64_t i = i0; i < i1; ++i) {
    for (int64_t k = i + 1; k < N; ++k) {
      double r2 = 0.0, v2 = 0.0, a2 = 0.0;
      for (int d = 0; d < D; ++d) {
        const double dx = double(x[k * D + d]) - double(x[i * D + d]);
        const double dv = double(v[k * D + d]) - double(v[i * D + d]);
        const double da = double(a[k * D + d]) - double(a[i * D + d]);
        r2 += dx * dx;
        v2 += dv * dv;
        a2 += da * da;
      }
      const double soft = std::sqrt(r2 + in.eps2), r = std::sqrt(r2);
      out.tff2 = std::min(out.tff2, soft * soft * soft / (in.G * (double(m[i]) + double(m[k]))));
      const double t1 = r / std::sqrt(v2), t2 = std::sqrt(r / std::sqrt(a2));
      if (!std::isnan(t1) && !std::isnan(t2)) out.coll = std::min(out.coll, std::min(t1, t2));
      out.pot -= double(m[i]) * double(m[k]) / soft;
    }
  }
  return out;
}

// One system in float64 columns for the vector pass: x, v, a as D rows of Np
// (N and then W lanes of zeros, so that a load at any k < N stays inside) and m.
template <int D>
struct Columns {
  int64_t Np;
  std::vector<double> x, v, a, m;
  template <typename T>
  Columns(const T* px, const T* pv, const T* pa, const T* pm, int64_t N)
      : Np(N + simd::Traits<double>::W), x(D * Np), v(D * Np), a(D * Np), m(Np) {
    for (int64_t k = 0; k < N; ++k) {
      for (int d = 0; d < D; ++d) {
        x[d * Np + k] = double(px[k * D + d]);
        v[d * Np + k] = double(pv[k * D + d]);
        a[d * Np + k] = double(pa[k * D + d]);
      }
      m[k] = double(pm[k]);
    }
  }
};

// A running minimum of num / den over vector lanes without dividing: (num, den)
// of the smallest quotient so far, den >= 0 ((1, 0) is +inf); a candidate wins
// where num * best_den < best_num * den, so one with den = 0 never does. The
// quotient is formed once, at the end.
struct LaneMinQuotient {
  using V = simd::Vec<double>;
  V num = simd::broadcast<double>(1.0), den{};
  AITS_SIMD void offer(const simd::Mask<double>& ok, const V& n, const V& d) {
    const simd::Mask<double> win = ok && n * den < num * d;
    num = win ? n : num;
    den = win ? d : den;
  }
  AITS_SIMD double lane(int l) const { return num[l] / den[l]; }
};

// pair_times over rows [i0, i1) with the partners k > i in vectors of W, off the
// divider: 1/s by simd::rsqrt (the potential m_i m_k / s and s^3 = s^2 (s^2 / s)),
// the minima of s^3 / (m_i + m_k), r^2 / |v_ik|^2 and r^2 / |a_ik|^2 as
// LaneMinQuotient, so one division and root per lane at the end: t_ff^2 =
// min(s^3 / (m_i + m_k)) / G and the collision time min(sqrt(min r^2 / |v|^2),
// (min r^2 / |a|^2)^(1/4)), which is min over pairs of min(r/|v|, sqrt(r/|a|)); a
// pair with r = 0 and |v| = 0 or |a| = 0 (0/0) is skipped, as by pair_times. These
// agree with pair_times to a few ulp (1/s to ~1 ulp, each quotient rounded once);
// the potential is summed per lane along a row, then over the lanes in order.
template <int D>
PairTimes pair_times_vec(const Columns<D>& c, int64_t N, const Inputs& in, int64_t i0,
                         int64_t i1) {
  using V = simd::Vec<double>;
  constexpr int W = simd::Traits<double>::W;
  const V zero{}, eps2 = simd::broadcast<double>(in.eps2);
  LaneMinQuotient ff, by_v, by_a;
  double pot = 0.0;
  for (int64_t i = i0; i < i1; ++i) {
    double xi[D], vi[D], ai[D];
    for (int d = 0; d < D; ++d) {
      xi[d] = c.x[d * c.Np + i], vi[d] = c.v[d * c.Np + i], ai[d] = c.a[d * c.Np + i];
    }
    const double mi = c.m[i];
    V row_pot{};
    for (int64_t k = i + 1; k < N; k += W) {
      V r2{}, v2{}, a2{};
      for (int d = 0; d < D; ++d) {
        const V dx = simd::load(&c.x[d * c.Np + k]) - xi[d];
        const V dv = simd::load(&c.v[d * c.Np + k]) - vi[d];
        const V da = simd::load(&c.a[d * c.Np + k]) - ai[d];
        r2 += dx * dx;
        v2 += dv * dv;
        a2 += da * da;
      }
      const simd::Mask<double> live = simd::lanes_below<double>(int(std::min<int64_t>(N - k, W)));
      const V mk = simd::load(&c.m[k]);
      const V s2 = r2 + eps2, inv_s = simd::rsqrt(s2);
      ff.offer(live, s2 > zero ? s2 * (s2 * inv_s) : zero, mi + mk);  // s = 0: 0, not 0 inf
      const simd::Mask<double> defined = live && (r2 > zero || (v2 > zero && a2 > zero));
      by_v.offer(defined, r2, v2);
      by_a.offer(defined, r2, a2);
      row_pot -= live ? mi * mk * inv_s : zero;
    }
    pot += simd::sum_lanes<double>(row_pot);
  }
  constexpr double inf = std::numeric_limits<double>::infinity();
  PairTimes out{inf, inf, pot};
  for (int l = 0; l < W; ++l) {
    out.tff2 = std::min(out.tff2, ff.lane(l) / in.G);
    out.coll = std::min({out.coll, std::sqrt(by_v.lane(l)), std::sqrt(std::sqrt(by_a.lane(l)))});
  }
  return out;
}

// The pair times of pair_times_vec taken by the two passes of
// aarseth_kernels::derivatives (float64) as they visit the pairs, so the encounter
// features need no pass of their own: the same minima and potential per pair, kept
// per task of each system and combined in task order (the tasks are set by N
// alone: the same bits for any thread count). s^2 and 1/s are the pass's own (eps^2
// added first), so the values agree with pair_times_vec's to a few ulp.
class PairTimesObserver {
 public:
  using V = simd::Vec<double>;
  struct Acc {
    LaneMinQuotient ff, by_v, by_a;
    V pot{};
  };
  PairTimesObserver(int64_t B, int64_t N)
      : tasks_(aarseth_kernels::RowBlocks(N).tasks), accs_(static_cast<size_t>(B * tasks_)) {}
  Acc* acc(int64_t task) { return &accs_[static_cast<size_t>(task)]; }

  // Pass 1 (K = 2, rel: x, v) takes the free-fall minimum, the potential and the
  // minimum of r^2 / |v|^2 over the pairs with r > 0; pass 2 (K = 4, rel: x, v, a,
  // j) the minimum of r^2 / |a|^2 and, for coincident pairs (r = 0), r^2 / |v|^2
  // where both |v| and |a| are > 0 (else 0/0: skipped, as pair_times_vec does).
  // Split so that neither pass holds every accumulator in registers at once.
  template <bool kEdge, int K, int D>
  static AITS_SIMD void observe(Acc* acc, const V (&rel)[K][D], const V& s2, const V& inv_s,
                                const simd::Mask<double>& mask, double mi, const V& mk) {
    static_assert(K == 2 || K == 4, "the derivatives' pass 1 or pass 2");
    const V zero{};
    const simd::Mask<double> live =
        kEdge ? mask : simd::lanes_below<double>(simd::Traits<double>::W);
    V r2{}, v2{};
    for (int d = 0; d < D; ++d) {
      r2 += rel[0][d] * rel[0][d];
      v2 += rel[1][d] * rel[1][d];
    }
    if constexpr (K == 2) {
      acc->ff.offer(live, s2 > zero ? s2 * (s2 * inv_s) : zero, mi + mk);  // s = 0: 0, not 0 inf
      acc->by_v.offer(live && r2 > zero, r2, v2);
      acc->pot -= live ? mi * mk * inv_s : zero;
    } else {
      V a2{};
      for (int d = 0; d < D; ++d) a2 += rel[2][d] * rel[2][d];
      const simd::Mask<double> both = live && v2 > zero && a2 > zero;
      acc->by_v.offer(both && r2 == zero, r2, v2);
      acc->by_a.offer((live && r2 > zero) || both, r2, a2);
    }
  }

  // System b's PairTimes (as pair_times_vec's): its tasks in order.
  PairTimes system(int64_t b, double G) const {
    constexpr double inf = std::numeric_limits<double>::infinity();
    PairTimes out{inf, inf, 0.0};
    for (int64_t t = 0; t < tasks_; ++t) {
      const Acc& a = accs_[static_cast<size_t>(b * tasks_ + t)];
      out.pot += simd::sum_lanes<double>(a.pot);
      for (int l = 0; l < simd::Traits<double>::W; ++l) {
        out.tff2 = std::min(out.tff2, a.ff.lane(l) / G);
        out.coll = std::min({out.coll, std::sqrt(a.by_v.lane(l)),
                             std::sqrt(std::sqrt(a.by_a.lane(l)))});
      }
    }
    return out;
  }

 private:
  int64_t tasks_;
  std::vector<Acc> accs_;
};

// PairTimes of every pair. One row block (N <= 64): pair_times. More: the vector
// pass, row by row in the row blocks of aarseth_kernels (set by N alone), the rows
// then combined in row order, so the bits are the same whether the blocks run on
// one thread or (rows_parallel) on several.
template <typename T, int D>
PairTimes all_pair_times(const T* x, const T* v, const T* m, const T* a, int64_t N,
                         const Inputs& in, bool rows_parallel) {
  const aarseth_kernels::RowBlocks blocks(N);
  if (blocks.nb == 1) return pair_times<T, D>(x, v, m, a, N, in, 0, N);
  const Columns<D> cols(x, v, a, m, N);
  std::vector<PairTimes> rows(static_cast<size_t>(N));
  const auto tasks = [&](int64_t begin, int64_t end) {
    for (int64_t task = begin; task < end; ++task) {
      blocks.for_rows(task, N, [&](int64_t i) {
        rows[i] = pair_times_vec<D>(cols, N, in, i, i + 1);
      });
    }
  };
  if (rows_parallel) {
    at::parallel_for(0, blocks.tasks, 1, tasks);
  } else {
    tasks(0, blocks.tasks);
  }
  PairTimes out = rows[0];
  for (int64_t i = 1; i < N; ++i) {
    out.tff2 = std::min(out.tff2, rows[i].tff2);
    out.coll = std::min(out.coll, rows[i].coll);
    out.pot += rows[i].pot;
  }
  return out;
}

// The masses of one system: their sum, smallest and largest.
struct MassStats {
  double M, m_min, m_max;
};

template <typename T>
MassStats mass_stats(const T* m, int64_t N) {
  MassStats out{0.0, std::numeric_limits<double>::infinity(),
                -std::numeric_limits<double>::infinity()};
  for (int64_t i = 0; i < N; ++i) {
    out.M += double(m[i]);
    out.m_min = std::min(out.m_min, double(m[i]));
    out.m_max = std::max(out.m_max, double(m[i]));
  }
  return out;
}

// The mass-weighted mean of p (N, D) over one system's bodies, m (N), M = sum m > 0.
template <typename T, int D>
void mass_mean(const T* p, const T* m, int64_t N, double M, double (&out)[D]) {
  for (int d = 0; d < D; ++d) out[d] = 0.0;
  for (int64_t i = 0; i < N; ++i) {
    for (int d = 0; d < D; ++d) out[d] += double(m[i]) / M * double(p[i * D + d]);
  }
}

// The kinetic energy of one system, v (N, D), m (N), in its centre-of-mass frame
// (M = sum m > 0).
template <typename T, int D>
double com_kinetic(const T* v, const T* m, int64_t N, double M) {
  double vcom[D];
  mass_mean<T, D>(v, m, N, M, vcom);
  double kin = 0.0;
  for (int64_t i = 0; i < N; ++i) {
    double sq = 0.0;
    for (int d = 0; d < D; ++d) {
      const double u = double(v[i * D + d]) - vcom[d];
      sq += u * u;
    }
    kin += double(m[i]) * sq;
  }
  return 0.5 * kin;
}

// Aarseth's ingredients summed over the bodies of one system, body by body: the
// smallest Aarseth time, the log-sum of the finite ones (their geometric mean) and
// the sums S_x = sum |x|, S_xy = sum |x||y| that the smooth columns take.
// Aarseth's time of a body of |a|, |j|, |s|, |c| (inf for 0/0: no force, no step limit).
inline double aarseth_time(double an, double jn, double sn, double cn) {
  const double tau = std::sqrt((an * sn + jn * jn) / (jn * cn + sn * sn));
  return std::isnan(tau) ? std::numeric_limits<double>::infinity() : tau;
}

struct AarsethSums {
  double tau_min = std::numeric_limits<double>::infinity(), log_tau_sum = 0.0;
  double sa = 0.0, sj = 0.0, ss = 0.0, sc = 0.0, sas = 0.0, sjj = 0.0, sjc = 0.0, sss = 0.0;
  int64_t felt = 0;

  // Adds a body of |a|, |j|, |s|, |c|; returns its Aarseth time (inf for 0/0: no force).
  double add(double an, double jn, double sn, double cn) {
    constexpr double inf = std::numeric_limits<double>::infinity();
    const double tau = aarseth_time(an, jn, sn, cn);
    tau_min = std::min(tau_min, tau);
    if (tau > 0 && tau < inf) {
      ++felt;
      log_tau_sum += std::log(tau);
    }
    sa += an, sj += jn, ss += sn, sc += cn;
    sas += an * sn, sjj += jn * jn, sjc += jn * cn, sss += sn * sn;
    return tau;
  }

  double gmean() const {
    return felt > 0 ? std::exp(log_tau_sum / double(felt)) : std::numeric_limits<double>::infinity();
  }

  // SMOOTH_ENCOUNTER_NAMES[6:12] (HISTORY_ENCOUNTER_NAMES[3:9]) into out[0, 6).
  void smooth_columns(double clip, double tiny, double* out) const {
    const double tau_sum = std::sqrt((sas + sjj) / (sjc + sss));
    out[0] = log_ratio(sjj, sas, clip, tiny);
    out[1] = log_ratio(sss, sjc, clip, tiny);
    out[2] = log_ratio(tau_sum, tau_min, clip, tiny);
    out[3] = log_ratio(sa, sj * tau_min, clip, tiny);
    out[4] = 0.5 * log_ratio(sa, ss * tau_min * tau_min, clip, tiny);
    out[5] = log_ratio(sa, sc * tau_min * tau_min * tau_min, clip, tiny) / 3.0;
  }
};

// One system: x, v, a, j, s, c (N, D), m (N); feats (kFeatures), times (kTimes);
// given: its PairTimes if already known (PairTimesObserver), else all_pair_times
// computes them, over every thread with rows_parallel.
template <typename T, int D>
void system_features(const T* x, const T* v, const T* m, const T* a, const T* j, const T* s,
                     const T* c, const Inputs& in, T* feats, T* times,
                     bool rows_parallel = false, const PairTimes* given = nullptr) {
  constexpr double inf = std::numeric_limits<double>::infinity();
  const int64_t N = in.N;
  const double clip = in.clip, tiny = in.tiny;
  const auto norm = [](const T* p, int64_t i) {
    double sq = 0.0;
    for (int d = 0; d < D; ++d) sq += double(p[i * D + d]) * double(p[i * D + d]);
    return std::sqrt(sq);
  };
  const MassStats mass = mass_stats(m, N);
  const double M = mass.M, m_min = mass.m_min, m_max = mass.m_max;
  if (!(M > 0)) {  // no mass (a padded slot): features 0, no time limits
    for (int k = 0; k < kFeatures; ++k) feats[k] = T(0);
    for (int k = 0; k < kTimes; ++k) times[k] = T(inf);
    return;
  }
  // per body: Aarseth's time, the first body of the smallest, the log ratios q1, q2;
  // the sums over the bodies
  AarsethSums sums;
  double q1_sum = 0.0, q2_sum = 0.0, ak = 0.0, jk = 0.0, sk = 0.0, q1k = 0.0, q2k = 0.0;
  for (int64_t i = 0; i < N; ++i) {
    const double an = norm(a, i), jn = norm(j, i), sn = norm(s, i), cn = norm(c, i);
    const double smallest = sums.tau_min;
    const double tau = sums.add(an, jn, sn, cn);
    const double q1 = log_ratio(jn * jn, an * sn, clip, tiny);
    const double q2 = log_ratio(sn * sn, jn * cn, clip, tiny);
    if (i == 0 || tau < smallest) ak = an, jk = jn, sk = sn, q1k = q1, q2k = q2;
    q1_sum += q1;
    q2_sum += q2;
  }
  const double tau_min = sums.tau_min, gmean = sums.gmean();
  // pairs: the free-fall time (softened), the collision time (unsoftened), the
  // potential energy; the kinetic energy in the centre-of-mass frame
  const double kin = com_kinetic<T, D>(v, m, N, M);
  const PairTimes pairs =
      given != nullptr ? *given : all_pair_times<T, D>(x, v, m, a, N, in, rows_parallel);
  const double tff2 = pairs.tff2, coll = pairs.coll, pot = in.G * pairs.pot;
  const double tff = std::sqrt(tff2);
  const double E = kin + pot;
  const double t_energy = E != 0 ? in.G * std::pow(M, 2.5) / std::pow(2 * std::abs(E), 1.5) : inf;
  const double out[kFeatures] = {
      std::log(double(std::max<int64_t>(N, 1))),
      log_ratio(tau_min, t_energy, clip, tiny),
      log_ratio(gmean, tau_min, clip, tiny),
      log_ratio(tff, tau_min, clip, tiny),
      log_ratio(coll, tau_min, clip, tiny),
      log_ratio(tff, t_energy, clip, tiny),
      q1k,
      q2k,
      q1_sum / double(N),
      q2_sum / double(N),
      log_ratio(ak, jk * tau_min, clip, tiny),
      0.5 * log_ratio(ak, sk * tau_min * tau_min, clip, tiny),
      log_ratio(2 * kin, std::abs(pot), clip, tiny),
      log_ratio(m_min, m_max, clip, tiny),
  };
  for (int k = 0; k < kFeatures; ++k) feats[k] = static_cast<T>(out[k]);
  if (in.smooth) {  // SMOOTH_ENCOUNTER_NAMES[6:12]
    double smooth[6];
    sums.smooth_columns(clip, tiny, smooth);
    for (int k = 0; k < 6; ++k) feats[6 + k] = static_cast<T>(smooth[k]);
  }
  const double t[kTimes] = {tau_min, gmean, tff, coll, t_energy};
  for (int k = 0; k < kTimes; ++k) times[k] = static_cast<T>(t[k]);
}

// The encounter-orbit kind's last column (aits.encounter._orbit_shape) of one
// system, x, v (N, D), m (N): log(2 L^2 |E| M / (G^2 P^3)) with L the angular
// momentum and E the energy in the centre-of-mass frame (|E| from the energy time
// t_energy = G M^(5/2) / (2 |E|)^(3/2)), M the total mass, P = sum_{i<k} m_i m_k;
// log(1 - e^2) of a Kepler binary. 0 for a system without mass.
template <typename T, int D>
double orbit_shape(const T* x, const T* v, const T* m, int64_t N, double t_energy, double G,
                   double clip, double tiny) {
  double M = 0.0, m2 = 0.0;
  for (int64_t i = 0; i < N; ++i) {
    M += double(m[i]);
    m2 += double(m[i]) * double(m[i]);
  }
  if (!(M > 0)) return 0.0;
  double xc[D], vc[D];
  mass_mean<T, D>(x, m, N, M, xc);
  mass_mean<T, D>(v, m, N, M, vc);
  double L[3] = {};  // in 2-D the z component alone; in 1-D none
  for (int64_t i = 0; i < N; ++i) {
    double r[D], u[D];
    for (int d = 0; d < D; ++d) {
      r[d] = double(x[i * D + d]) - xc[d];
      u[d] = double(v[i * D + d]) - vc[d];
    }
    if constexpr (D == 3) {
      L[0] += double(m[i]) * (r[1] * u[2] - r[2] * u[1]);
      L[1] += double(m[i]) * (r[2] * u[0] - r[0] * u[2]);
      L[2] += double(m[i]) * (r[0] * u[1] - r[1] * u[0]);
    } else if constexpr (D == 2) {
      L[2] += double(m[i]) * (r[0] * u[1] - r[1] * u[0]);
    }
  }
  const double L2 = L[0] * L[0] + L[1] * L[1] + L[2] * L[2];
  const double E = std::pow(G * std::pow(M, 2.5) / t_energy, 2.0 / 3.0) / 2;  // 0 at inf
  const double P = (M * M - m2) / 2;
  return log_ratio(2 * L2 * E * M, G * G * P * P * P, clip, tiny);
}

// Every system of the batch: x, v, a, j, s, c (B, N, D), m (B, N);
// feats (B, kFeatures), times (B, kTimes); pairs: the systems' PairTimes (B) if
// already known (PairTimesObserver), else null.
template <typename T, int D>
void features(const T* x, const T* v, const T* m, const T* a, const T* j, const T* s, const T* c,
              const Inputs& in, T* feats, T* times, const PairTimes* pairs = nullptr) {
  const int64_t stride = in.N * D;
  const auto one = [&](int64_t b, bool rows_parallel) {
    const int64_t o = b * stride;
    system_features<T, D>(x + o, v + o, m + b * in.N, a + o, j + o, s + o, c + o, in,
                          feats + b * kFeatures, times + b * kTimes, rows_parallel,
                          pairs == nullptr ? nullptr : pairs + b);
  };
  if (pairs == nullptr && aarseth_kernels::RowBlocks(in.N).nb > 1 &&
      in.B < at::get_num_threads()) {
    // few large systems: threads over each one's row blocks
    for (int64_t b = 0; b < in.B; ++b) one(b, true);
    return;
  }
  at::parallel_for(0, in.B, 64, [&](int64_t begin, int64_t end) {
    for (int64_t b = begin; b < end; ++b) one(b, false);
  });
}

}  // namespace encounter_kernels
}  // namespace aits
