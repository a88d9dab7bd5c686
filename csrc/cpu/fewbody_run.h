// A native multi-step loop for few-body ensembles: kick-drift-kick leapfrog of
// every system up to its end time, with per-system dt chosen in the loop (a
// fixed dt, Aarseth's criterion, or a trained time-step network: an
// aits.model.TimeStepNet with encounter features and Aarseth's time as its
// unit, lane_net.h), the bookkeeping of aits.simulate (steps, dt statistics,
// the step that lands on t_end, energy errors and the divergence check) kept
// per system. It is aits.simulate's loop for the policies that need no Python
// per step (aits/native_run.py), step for step:
//
//   each pass, for each running system: stop at t_end (t_stop - t <= tol) or at
//   the step limit; h = the policy's dt (a system whose h is not finite and
//   > 0 stops, "bad-dt"); dt = min(h, T(t_stop - t)); one KDK step; a
//   non-finite result (the energy with diagnostics, else the state) stops the
//   system and is not kept ("non-finite"); else the step is taken, landing
//   exactly on t_stop when dt >= T(t_stop - t); with diagnostics the step's and
//   the whole run's relative energy errors are measured, and a whole-run error
//   above fail_above marks the system diverged (and stops it when asked).
//
// Vectorised across systems as the few-body kernels (fewbody_kernels.h): a
// thread owns a range of systems and runs them kLanes at a time; a lane whose
// system stops takes the range's next system, so systems needing many steps
// do not leave lanes idle. Every lane's arithmetic is its own, so a system's
// results do not depend on the batch, its lane or the thread count.
//
// Aarseth's criterion reads the pair table and the acceleration of the step
// that ended at the state (the same inverse distances; the acceleration equal
// to the derivatives' own to rounding), so each step costs one inverse
// distance per pair: dt = sqrt(min_i eta (|a||s| + |j|^2) / (|j||c| + |s|^2)),
// a body whose ratio is NaN (no force) not limiting it. Under the "rsqrt" pair
// kernel its roots and division are refined estimates too (lanes.h).
//
// The model policy computes the same derivatives, then each system's encounter
// features and Aarseth time as aits.ops.encounter_features does
// (encounter_kernels.h, per lane), and the network for the whole group at once:
// dt = value * (the network's dt) * tau_A, as aits.policies.ModelPolicy. For the
// encounter-history kind each lane keeps the accelerations and times of its last
// cfg.history states instead, and its features come from them as the op
// history_encounter_features computes them (history_kernels.h), the derivatives
// computed only while a lane's window is not yet full or not usable.
#pragma once

#include <cmath>
#include <limits>
#include <type_traits>
#include <vector>

#include <ATen/Parallel.h>

#include "cpu/encounter_kernels.h"
#include "cpu/fewbody_kernels.h"
#include "cpu/history_kernels.h"
#include "cpu/lane_net.h"

namespace aits {
namespace fewbody {

// Columns of the per-system outputs.
enum RunCount : int { kSteps, kStop, kLanded, kGatePasses, kDivergedStep, kCounts };
enum RunStat : int {
  kDtMin, kDtMax, kDtSum, kDtLast, kLandDt, kErrMax, kErrFinal, kStepErrMax, kDivergedTime,
  kDivergedErr, kDtTried, kStats
};
// Columns of the conserved totals (aits/ops.py, KDK_RUN_TOTALS), at the start
// and at the end of the run: momentum and angular momentum about the origin
// (x, y, z; in 2-D the angular momentum's z alone, the rest 0), sum_i m_i |v_i|,
// sum_i m_i |x_i| |v_i|, the kinetic and potential energy, the total mass and
// the mass-weighted rms distance from the centre of mass.
enum RunTotal : int {
  kPx, kPy, kPz, kLx, kLy, kLz, kMassSpeed, kMassRadiusSpeed, kKinetic, kPotential, kMass, kRms,
  kTotals
};
// Stop codes (column kStop).
constexpr int64_t kStopTEnd = 0, kStopLimit = 1, kStopNonFinite = 2, kStopBadDt = 3,
                  kStopDiverged = 4;

struct RunConfig {
  RunPolicy policy;    // fixed: dt = value; Aarseth: eta = value; model: dt = value * net's
  double value;
  int64_t max_steps;   // a running system stops after this many steps
  bool diagnostics;    // energies every step
  double threshold;    // the energy gate (gate passes)
  double floor;        // rel_dE's floor on the energy scale
  double fail_above;   // whole-run |dE/E| above which a system diverged (inf: never)
  bool stop_diverged;
  const lane_net::Net* net;  // the model policy's network (else unused)
  double clip;               // the model's encounter features' clip
  bool smooth;               // ... and their kind: encounter-smooth (else encounter)
  bool orbit;                // ... encounter-orbit (with smooth): one input more
  int64_t history;           // ... encounter-history with this many past states (0: not)
  bool symmetric;            // the symmetric integrator's reversible recurrence on the
                             // policy's proposal (aits.integrators.SymmetricKDK)
};

// The most inputs the model's network takes (the encounter-orbit kind's).
constexpr int kNetInputs = kEncounterFeatures + 1;

template <typename T>
struct RunIO {
  const T *x, *v, *mass, *a;
  const double *time, *t_stop;
  T *x_out, *v_out, *a_out;
  double* time_out;
  int64_t* counts;  // (B, kCounts)
  double* stats;    // (B, kStats)
};

namespace run_detail {

using lanes::F64;
using lanes::I64;

template <typename T>
using Mask = lanes::M<T>;

template <typename T, int D>
AITS_SIMD void select(const Mask<T>& m, Bodies<T>& to, const Bodies<T>& from, int64_t N) {
  for (int64_t i = 0; i < N; ++i) {
    for (int c = 0; c < D; ++c) to(i, c) = m ? from(i, c) : to(i, c);
  }
}

template <typename T>
AITS_SIMD void select(const Mask<T>& m, PairTable<T>& to, const PairTable<T>& from, int64_t N) {
  for (int64_t i = 0; i < N; ++i) {
    for (int64_t j = 0; j < N; ++j) {
      if (j != i) to.v[i][j] = m ? from.v[i][j] : to.v[i][j];
    }
  }
}

// Kinetic energy sum_i m_i |v_i|^2 / 2 per lane.
template <typename T, int D>
AITS_SIMD V<T> kinetic(const Bodies<T>& v, const V<T>* m, int64_t N) {
  V<T> k{};
  for (int64_t i = 0; i < N; ++i) {
    V<T> v2 = v(i, 0) * v(i, 0);
    for (int c = 1; c < D; ++c) v2 += v(i, c) * v(i, c);
    k += m[i] * v2;
  }
  return T(0.5) * k;
}

// |b - a| / max(|a|, floor scale_a, tiny), as aits.simulate's rel.
AITS_SIMD F64 rel(const F64& a, const F64& b, const F64& scale_a, double floor) {
  const F64 denom = lanes::max(lanes::max(a < 0 ? -a : a, floor * scale_a),
                               lanes::splat<double>(std::numeric_limits<double>::min()));
  const F64 d = b - a;
  return (d < 0 ? -d : d) / denom;
}

AITS_SIMD F64 nan_to_inf(const F64& x) {
  return x == x ? x : lanes::splat<double>(std::numeric_limits<double>::infinity());
}

// sqrt(x) sqrt(y) per lane as sqrt(x y), one root instead of two; the two roots
// where x y overflows or leaves the normal range.
template <typename T, typename Inv>
AITS_SIMD V<T> product_of_roots(const V<T>& x, const V<T>& y, const Inv& arith) {
  const V<T> p = x * y;
  const auto normal = lanes::normal_positive(p);
  if (!lanes::any(~normal)) return arith.root_normal(p);
  return normal ? arith.root(p) : arith.root(x) * arith.root(y);
}

// Aarseth's dt per lane from the acceleration and its derivatives (A, J, S, C)
// of every body at the state.
template <typename T, int D, typename Inv>
AITS_SIMD V<T> aarseth_dt(const Bodies<T>& A, const Bodies<T>& J, const Bodies<T>& S,
                          const Bodies<T>& C, int64_t N, T eta, const Inv& arith) {
  const V<T> inf = lanes::splat<T>(std::numeric_limits<T>::infinity());
  V<T> best = inf;
  for (int64_t i = 0; i < N; ++i) {
    V<T> a2 = A(i, 0) * A(i, 0), j2 = J(i, 0) * J(i, 0), s2 = S(i, 0) * S(i, 0),
         c2 = C(i, 0) * C(i, 0);
    for (int c = 1; c < D; ++c) {
      a2 += A(i, c) * A(i, c);
      j2 += J(i, c) * J(i, c);
      s2 += S(i, c) * S(i, c);
      c2 += C(i, c) * C(i, c);
    }
    const V<T> num = product_of_roots<T>(a2, s2, arith) + j2;
    const V<T> den = product_of_roots<T>(j2, c2, arith) + s2;
    const bool normal = !lanes::any(~(lanes::normal_positive(num) & lanes::normal_positive(den)));
    V<T> dt2 = eta * (normal ? arith.divide_normal(num, den) : arith.divide(num, den));
    dt2 = dt2 == dt2 ? dt2 : inf;
    best = lanes::min(dt2, best);  // torch's amin: the smaller, in body order
  }
  return lanes::any(~lanes::normal_positive(best)) ? arith.root(best) : arith.root_normal(best);
}

// kLanes lanes of one thread's systems (see the file comment): a lane whose
// system stops takes the range's next system. A pass is four phases (derive,
// propose, advance, commit) so that a thread can interleave two groups: their
// dependency chains (the criterion's roots and divisions above all) are
// independent, and the processor overlaps them.
template <typename T, int D, RunPolicy kPolicy, bool kDiagnostics, int kN, typename Inv>
struct LaneGroup {
  static constexpr bool kDerive = kPolicy != RunPolicy::kFixed;  // needs the derivatives
  static constexpr double inf = std::numeric_limits<double>::infinity();
  static constexpr double nan = std::numeric_limits<double>::quiet_NaN();

  const RunIO<T>& io;
  const int64_t n_;  // N; kN when > 0 (known at compile time)
  const T eps2, G;
  const RunConfig& cfg;
  const Inv& inverse;
  int64_t& next;  // the range's next system, shared by the groups of a thread
  const int64_t end;
  const bool watch;
  const T fixed_dt, eta;

  // the lanes' systems (-1: empty) and state
  int64_t sys[kLanes];
  Bodies<T> X{}, Vel{}, A{};
  V<T> m[kMaxBodies<T>] = {};
  PairTable<T> inv{};
  F64 t{}, t_stop{}, tol{}, dt_min{}, dt_max{}, dt_sum{}, dt_last{}, land_dt{}, E0{}, s0{},
      Ep{}, sp{}, err_max{}, err_final{}, step_max{}, div_time{}, div_err{}, dt_tried{};
  I64 steps{}, landed{}, passes{}, div_step{}, stop{}, active{};
  V<T> prev{};  // the last step taken (0: none yet), for cfg.symmetric
  // the pass in flight: its step, and the state it would end in
  V<T> dt{};
  F64 dt64{}, E1{}, s1{};
  I64 bad{}, land{}, ok{};
  Bodies<T> X1{}, V1{}, A1{};
  PairTable<T> inv1{};
  Bodies<T> dA{}, dJ{}, dS{}, dC{};  // Aarseth's derivatives at the state
  std::vector<F64> net_scratch;      // the model's inputs and layer outputs
  // the encounter-history kind: the accelerations and times of the last
  // cfg.history states (newest first), how many each lane holds, and scratch
  std::vector<Bodies<T>> hist_a;
  std::vector<F64> hist_t;
  I64 filled{};
  std::vector<double> diff_scratch;

  LaneGroup(const RunIO<T>& io_, int64_t N_, T eps2_, T G_, const RunConfig& cfg_,
            const Inv& inverse_, int64_t& next_, int64_t end_)
      : io(io_), n_(N_), eps2(eps2_), G(G_), cfg(cfg_), inverse(inverse_), next(next_), end(end_),
        watch(kDiagnostics && std::isfinite(cfg_.fail_above)),
        fixed_dt(static_cast<T>(cfg_.value)), eta(static_cast<T>(cfg_.value)) {
    for (int l = 0; l < kLanes; ++l) sys[l] = -1;
    if constexpr (kPolicy == RunPolicy::kModel) {
      net_scratch.resize(kNetInputs + 2 * cfg.net->width);
      hist_a.resize(cfg.history);
      hist_t.resize(cfg.history);
      diff_scratch.resize((cfg.history + 4) * kMaxBodies<T> * D);
    }
    active = refill();
  }

  int64_t bodies() const { return kN > 0 ? kN : n_; }

  // Lane l's bodies of b into out (N, D), and its masses into ms (N).
  void gather(const Bodies<T>& b, int l, T* out) const {
    const int64_t N = bodies();
    for (int64_t i = 0; i < N; ++i) {
      for (int c = 0; c < D; ++c) out[i * D + c] = b(i, c)[l];
    }
  }
  void gather_masses(int l, T* ms) const {
    for (int64_t i = 0; i < bodies(); ++i) ms[i] = m[i][l];
  }

  void load(int l, int64_t b) {
    const int64_t N = bodies();
    sys[l] = b;
    for (int64_t i = 0; i < N; ++i) {
      for (int c = 0; c < D; ++c) {
        const int64_t k = (b * N + i) * D + c;
        X(i, c)[l] = io.x[k];
        Vel(i, c)[l] = io.v[k];
        A(i, c)[l] = io.a[k];
      }
      m[i][l] = io.mass[b * N + i];
    }
    t[l] = io.time[b];
    prev[l] = T(0);
    filled[l] = 0;
    t_stop[l] = io.t_stop[b];
    tol[l] = std::isfinite(t_stop[l]) ? 1e-12 * std::max(std::abs(t_stop[l]), 1.0) : 0.0;
    dt_min[l] = inf;
    dt_max[l] = dt_sum[l] = err_max[l] = err_final[l] = step_max[l] = 0.0;
    dt_last[l] = land_dt[l] = div_time[l] = div_err[l] = dt_tried[l] = nan;
    steps[l] = landed[l] = passes[l] = div_step[l] = 0;
    stop[l] = -1;
  }

  void finish(int l) {
    const int64_t b = sys[l], o = b * bodies() * D;
    gather(X, l, io.x_out + o);
    gather(Vel, l, io.v_out + o);
    gather(A, l, io.a_out + o);
    io.time_out[b] = t[l];
    int64_t* n = io.counts + b * kCounts;
    n[kSteps] = steps[l];
    n[kStop] = stop[l];
    n[kLanded] = landed[l];
    n[kGatePasses] = passes[l];
    n[kDivergedStep] = div_step[l];
    double* s = io.stats + b * kStats;
    s[kDtMin] = dt_min[l];
    s[kDtMax] = dt_max[l];
    s[kDtSum] = dt_sum[l];
    s[kDtLast] = dt_last[l];
    s[kLandDt] = land_dt[l];
    s[kErrMax] = kDiagnostics ? err_max[l] : nan;
    s[kErrFinal] = kDiagnostics ? err_final[l] : nan;
    s[kStepErrMax] = kDiagnostics ? step_max[l] : nan;
    s[kDivergedTime] = div_time[l];
    s[kDivergedErr] = div_err[l];
    s[kDtTried] = dt_tried[l];
    sys[l] = -1;
  }

  // Empty lanes take the next systems; the new lanes' pair tables (and start
  // energies) are computed for the whole group and kept for those lanes only.
  // Returns the mask of lanes holding a system.
  I64 refill() {
    const int64_t N = bodies();
    I64 fresh{};
    for (int l = 0; l < kLanes; ++l) {
      if (sys[l] < 0 && next < end) {
        load(l, next++);
        fresh[l] = -1;
      }
    }
    if (lanes::any(fresh)) {
      const Mask<T> f = lanes::narrow<T>(fresh);
      PairTable<T> table;
      pair_inverses<T, D>(X, N, eps2, inverse, table);
      select<T>(f, inv, table, N);
      if constexpr (kDiagnostics) {
        const V<T> K = kinetic<T, D>(Vel, m, N), U = potential_energy<T>(m, N, G, inv);
        const F64 E = lanes::cast<double>(K + U);
        const F64 sc = lanes::cast<double>(K + (U < 0 ? -U : U));
        E0 = fresh ? E : E0;
        s0 = fresh ? sc : s0;
        Ep = fresh ? E : Ep;
        sp = fresh ? sc : sp;
      }
    }
    I64 held{};
    for (int l = 0; l < kLanes; ++l) held[l] = sys[l] >= 0 ? -1 : 0;
    return held;
  }

  // Lanes of `done` stop with their codes set; the emptied lanes are refilled.
  void retire(const I64& done) {
    for (int l = 0; l < kLanes; ++l) {
      if (done[l] && sys[l] >= 0) finish(l);
    }
    active = refill();
  }

  // The stops at the start of a pass (t_end, then the step limit), until none
  // is due; false when the group holds no system any more.
  bool ready() {
    while (lanes::any(active)) {
      const I64 at_end = active & (t_stop - t <= tol);
      const I64 at_limit = active & ~at_end & (steps >= cfg.max_steps);
      if (!lanes::any(at_end | at_limit)) return true;
      stop = at_end ? I64{} + kStopTEnd : (at_limit ? I64{} + kStopLimit : stop);
      retire(at_end | at_limit);
    }
    return false;
  }

  // Aarseth's derivatives at the state (the criterion's), from the state's
  // acceleration (its force pass's, or the one loaded with the system). The
  // encounter-history kind takes them in history_dt, only where a lane needs them.
  void derive() {
    if constexpr (kDerive) {
      if (kPolicy != RunPolicy::kModel || cfg.history == 0) exact_derivatives();
    }
  }

  void exact_derivatives() {
    const int64_t N = bodies();
    for (int64_t i = 0; i < N; ++i) {
      for (int c = 0; c < D; ++c) dA(i, c) = A(i, c);
    }
    derivatives<T, D, true>(X, Vel, m, N, G, inv, dA, dJ, dS, dC);
  }

  // The network's dt per lane: each held lane's encounter features and Aarseth
  // time from its state and derivatives (as the op encounter_features), the
  // network on every lane at once (an empty lane's inputs are zeros), then
  // dt = value * net * tau_A, in T as ModelPolicy has it.
  V<T> model_dt() {
    if (cfg.history > 0) return history_dt();
    const int64_t N = bodies();
    const encounter_kernels::Inputs in{1, N, double(eps2), double(G), cfg.clip,
                                       double(std::numeric_limits<T>::min()), cfg.smooth};
    F64* x = net_scratch.data();
    F64 tau{};
    T xs[kMaxBodies<T> * D], vs[kMaxBodies<T> * D], as[kMaxBodies<T> * D],
        js[kMaxBodies<T> * D], ss[kMaxBodies<T> * D], cs[kMaxBodies<T> * D], ms[kMaxBodies<T>];
    T feats[kEncounterFeatures], times[kEncounterTimes];
    const int inputs = kEncounterFeatures + (cfg.orbit ? 1 : 0);
    for (int l = 0; l < kLanes; ++l) {
      if (sys[l] < 0) {
        for (int f = 0; f < inputs; ++f) x[f][l] = 0.0;
        continue;
      }
      gather(X, l, xs);
      gather(Vel, l, vs);
      gather(dA, l, as);
      gather(dJ, l, js);
      gather(dS, l, ss);
      gather(dC, l, cs);
      gather_masses(l, ms);
      encounter_kernels::system_features<T, D>(xs, vs, ms, as, js, ss, cs, in, feats, times);
      for (int f = 0; f < kEncounterFeatures; ++f) x[f][l] = double(feats[f]);
      if (cfg.orbit) {  // rounded to T, as the op's features are
        x[kEncounterFeatures][l] = double(static_cast<T>(encounter_kernels::orbit_shape<T, D>(
            xs, vs, ms, N, double(times[4]), double(G), cfg.clip, in.tiny)));
      }
      tau[l] = double(times[0]);
    }
    const F64 net = lane_net::forward(*cfg.net, x, x + kNetInputs);
    const V<T> dt = lanes::cast<T>(net * tau);
    return cfg.value == 1.0 ? dt : dt * static_cast<T>(cfg.value);
  }

  // model_dt for the encounter-history kind: each held lane's features and Aarseth
  // time from its acceleration and those of its last cfg.history states (as the op
  // history_encounter_features), or, while the window is not full or not usable
  // (history_kernels::system_features), from the exact derivatives, computed for
  // the group only when a lane needs them.
  V<T> history_dt() {
    const int64_t N = bodies(), K = cfg.history;
    const history_kernels::Inputs in{1, N, K, double(eps2), double(G), cfg.clip,
                                     double(std::numeric_limits<T>::min())};
    F64* x = net_scratch.data();
    F64 tau{};
    constexpr int64_t kMax = kMaxBodies<T> * D;
    T xs[kLanes][kMax], vs[kLanes][kMax], ms[kLanes][kMaxBodies<T>];
    T nodes[history_kernels::kMaxNodes][kMax];
    const T* node_ptr[history_kernels::kMaxNodes];
    double times[history_kernels::kMaxNodes];
    T feats[kHistoryEncounterFeatures], tau_l;
    int64_t rows[kMaxBodies<T>];
    bool exact[kLanes] = {};
    bool any_exact = false;
    for (int l = 0; l < kLanes; ++l) {
      if (sys[l] < 0) {
        for (int f = 0; f < kHistoryEncounterFeatures; ++f) x[f][l] = 0.0;
        continue;
      }
      gather(X, l, xs[l]);
      gather(Vel, l, vs[l]);
      gather_masses(l, ms[l]);
      exact[l] = filled[l] < K;
      if (!exact[l]) {
        for (int64_t k = 0; k <= K; ++k) {
          gather(k == 0 ? A : hist_a[k - 1], l, nodes[k]);
          node_ptr[k] = nodes[k];
          times[k] = k == 0 ? t[l] : hist_t[k - 1][l];
        }
        exact[l] = !history_kernels::system_features<T, D>(
            xs[l], vs[l], ms[l], node_ptr, times, in, diff_scratch.data(), rows, feats, &tau_l);
      }
      if (exact[l]) {
        any_exact = true;
        continue;
      }
      for (int f = 0; f < kHistoryEncounterFeatures; ++f) x[f][l] = double(feats[f]);
      tau[l] = double(tau_l);
    }
    if (any_exact) {
      exact_derivatives();
      T as[kMax], das[kMax], js[kMax], ss[kMax], cs[kMax];
      for (int l = 0; l < kLanes; ++l) {
        if (!exact[l]) continue;
        gather(A, l, as);
        gather(dA, l, das);
        gather(dJ, l, js);
        gather(dS, l, ss);
        gather(dC, l, cs);
        history_kernels::features_from<T, T, D>(xs[l], vs[l], ms[l], as, das, js, ss, cs, in,
                                                feats, &tau_l);
        for (int f = 0; f < kHistoryEncounterFeatures; ++f) x[f][l] = double(feats[f]);
        tau[l] = double(tau_l);
      }
    }
    const F64 net = lane_net::forward(*cfg.net, x, x + kNetInputs);
    const V<T> dt = lanes::cast<T>(net * tau);
    return cfg.value == 1.0 ? dt : dt * static_cast<T>(cfg.value);
  }

  // The reversible recurrence of adaptive Verlet on the proposal h, in T as
  // aits.integrators.SymmetricKDK._recurrence: 1 / dt = 2 / h - 1 / prev, h where
  // that is not > 0 and where dt leaves [h / 2, 2 h]; the first step h.
  V<T> reversible(const V<T>& h) const {
    const auto started = prev > T(0);
    const V<T> inv = T(2) / h - T(1) / (started ? prev : h);
    const V<T> rec = T(1) / lanes::max(inv, lanes::splat<T>(std::numeric_limits<T>::min()));
    V<T> out = inv > T(0) ? rec : h;
    out = (out < h / T(2)) | (out > T(2) * h) ? h : out;
    return started ? out : h;
  }

  // The policy's step (under cfg.symmetric through the recurrence), clipped to the
  // time left.
  void propose() {
    const int64_t N = bodies();
    V<T> h;
    if constexpr (kPolicy == RunPolicy::kAarseth) {
      h = aarseth_dt<T, D>(dA, dJ, dS, dC, N, eta, inverse);
    } else if constexpr (kPolicy == RunPolicy::kModel) {
      h = model_dt();
    } else {
      h = lanes::splat<T>(fixed_dt);
    }
    bad = active & ~lanes::wide<T>((h > 0) & (h < std::numeric_limits<T>::infinity()));
    if (cfg.symmetric) h = reversible(h);
    const V<T> rem = lanes::cast<T>(t_stop - t);
    dt = lanes::min(h, rem);
    land = lanes::wide<T>(dt >= rem);
    dt64 = lanes::cast<double>(dt);
  }

  // One KDK step into X1, V1, A1 (and the energy there), and whether it is finite.
  void advance() {
    const int64_t N = bodies();
    const V<T> half = dt * T(0.5);
    for (int64_t i = 0; i < N; ++i) {
      for (int c = 0; c < D; ++c) {
        V1(i, c) = Vel(i, c) + A(i, c) * half;
        X1(i, c) = X(i, c) + V1(i, c) * dt;
      }
    }
    pair_inverses<T, D>(X1, N, eps2, inverse, inv1);
    accelerations_symmetric<T, D>(X1, m, N, G, inv1, A1);
    for (int64_t i = 0; i < N; ++i) {
      for (int c = 0; c < D; ++c) V1(i, c) += A1(i, c) * half;
    }
    if constexpr (kDiagnostics) {
      const V<T> K = kinetic<T, D>(V1, m, N), U = potential_energy<T>(m, N, G, inv1);
      E1 = lanes::cast<double>(K + U);
      s1 = lanes::cast<double>(K + (U < 0 ? -U : U));
      ok = lanes::finite(E1);
    } else {
      // as aits.simulate's check: the sum of every position and velocity entry is
      // finite exactly when they all are (short of overflow near T's maximum)
      V<T> sx{}, sv{};
      for (int64_t i = 0; i < N; ++i) {
        for (int c = 0; c < D; ++c) {
          sx += X1(i, c);
          sv += V1(i, c);
        }
      }
      ok = lanes::wide<T>(lanes::finite(sx + sv));
    }
  }

  // Takes the step where it is finite and the dt good, with the bookkeeping;
  // stops the lanes that went bad or diverged.
  void commit() {
    const int64_t N = bodies();
    const I64 nonfinite = active & ~bad & ~ok;
    const I64 taken = active & ~bad & ok;
    const Mask<T> keep = lanes::narrow<T>(taken);
    if constexpr (kPolicy == RunPolicy::kModel) {
      if (cfg.history > 0) {  // the state the step left joins the window, newest first
        for (int64_t k = cfg.history - 1; k > 0; --k) {
          select<T, D>(keep, hist_a[k], hist_a[k - 1], N);
          hist_t[k] = taken ? hist_t[k - 1] : hist_t[k];
        }
        select<T, D>(keep, hist_a[0], A, N);
        hist_t[0] = taken ? t : hist_t[0];
        filled -= taken & (filled < cfg.history);  // masks are -1
      }
    }
    select<T, D>(keep, X, X1, N);
    select<T, D>(keep, Vel, V1, N);
    select<T, D>(keep, A, A1, N);
    if constexpr (kDerive || kDiagnostics) select<T>(keep, inv, inv1, N);
    t = taken ? (land ? t_stop : t + dt64) : t;
    steps -= taken;  // masks are -1
    const I64 own = taken & ~land, landing = taken & land;
    dt_sum += own ? dt64 : F64{};
    dt_min = own ? lanes::min(dt_min, dt64) : dt_min;
    dt_max = own ? lanes::max(dt_max, dt64) : dt_max;
    land_dt = landing ? dt64 : land_dt;
    landed = landing ? I64{} + 1 : landed;
    dt_last = taken ? dt64 : dt_last;
    prev = keep ? dt : prev;
    dt_tried = active & ~bad ? dt64 : dt_tried;
    I64 diverged{};
    if constexpr (kDiagnostics) {
      const F64 err = rel(Ep, E1, sp, cfg.floor);
      const F64 run = nan_to_inf(rel(E0, E1, s0, cfg.floor));
      err_final = taken ? run : err_final;
      err_max = taken ? lanes::max(err_max, run) : err_max;
      step_max = taken ? lanes::max(step_max, nan_to_inf(err)) : step_max;
      passes -= taken & (err < cfg.threshold);
      Ep = taken ? E1 : Ep;
      sp = taken ? s1 : sp;
      if (watch) {
        diverged = taken & (run > cfg.fail_above);
        const I64 first = diverged & (div_step == 0);
        div_step = first ? steps : div_step;
        div_time = first ? t : div_time;
        div_err = first ? run : div_err;
        if (!cfg.stop_diverged) diverged = I64{};
      }
    }
    const I64 stopped = bad | nonfinite | diverged;
    if (lanes::any(stopped)) {
      stop = bad ? I64{} + kStopBadDt
                 : (nonfinite ? I64{} + kStopNonFinite
                              : (diverged ? I64{} + kStopDiverged : stop));
      retire(stopped);
    }
  }
};

// The systems [begin, end) of one thread: two lane groups, their passes
// interleaved phase by phase.
template <typename T, int D, RunPolicy kPolicy, bool kDiagnostics, int kN, typename Inv>
void run_range(const RunIO<T>& io, int64_t begin, int64_t end, int64_t N, T eps2, T G,
               const RunConfig& cfg, const Inv& inverse) {
  using Group = LaneGroup<T, D, kPolicy, kDiagnostics, kN, Inv>;
  int64_t next = begin;
  Group a(io, N, eps2, G, cfg, inverse, next, end), b(io, N, eps2, G, cfg, inverse, next, end);
  while (true) {
    const bool ra = a.ready(), rb = b.ready();
    if (!ra && !rb) break;
    if (ra) a.derive();
    if (rb) b.derive();
    if (ra) a.propose();
    if (rb) b.propose();
    if (ra) a.advance();
    if (rb) b.advance();
    if (ra) a.commit();
    if (rb) b.commit();
  }
}

}  // namespace run_detail

// The totals (RunTotal) of one system, x and v (N, D), m (N), in float64, as
// aits.simulate's torch expressions (aits.state, aits.simulation): the centre
// of mass weighs by m / sum m, or 1 / N where sum m = 0.
template <typename T, int D>
void system_totals(const T* x, const T* v, const T* m, int64_t N, double eps2, double G,
                   double* out) {
  for (int k = 0; k < kTotals; ++k) out[k] = 0.0;
  double com[D] = {};
  for (int64_t i = 0; i < N; ++i) {
    const T* xi = x + i * D;
    const T* vi = v + i * D;
    const double mi = m[i];
    double v2 = 0.0, x2 = 0.0;
    for (int c = 0; c < D; ++c) {
      const double vc = vi[c], xc = xi[c];
      out[kPx + c] += mi * vc;
      v2 += vc * vc;
      x2 += xc * xc;
      com[c] += mi * xc;
    }
    const double x0 = xi[0], x1 = xi[1], v0 = vi[0], v1 = vi[1];
    if constexpr (D == 2) {
      out[kLz] += mi * (x0 * v1 - x1 * v0);
    } else {
      const double x2c = xi[2], v2c = vi[2];
      out[kLx] += mi * (x1 * v2c - x2c * v1);
      out[kLy] += mi * (x2c * v0 - x0 * v2c);
      out[kLz] += mi * (x0 * v1 - x1 * v0);
    }
    const double speed = std::sqrt(v2);
    out[kMassSpeed] += mi * speed;
    out[kMassRadiusSpeed] += mi * std::sqrt(x2) * speed;
    out[kKinetic] += mi * v2;
    out[kMass] += mi;
  }
  out[kKinetic] *= 0.5;
  const double M = out[kMass];
  for (int c = 0; c < D; ++c) {
    if (M > 0) {
      com[c] /= M;
    } else {
      com[c] = 0.0;
      for (int64_t i = 0; i < N; ++i) com[c] += double(x[i * D + c]);
      com[c] /= static_cast<double>(std::max<int64_t>(N, 1));
    }
  }
  double r2m = 0.0, U = 0.0;
  for (int64_t i = 0; i < N; ++i) {
    double r2 = 0.0;
    for (int c = 0; c < D; ++c) {
      const double d = double(x[i * D + c]) - com[c];
      r2 += d * d;
    }
    r2m += double(m[i]) * r2;
    for (int64_t j = i + 1; j < N; ++j) {
      double s2 = eps2;
      for (int c = 0; c < D; ++c) {
        const double d = double(x[i * D + c]) - double(x[j * D + c]);
        s2 += d * d;
      }
      U -= double(m[i]) * double(m[j]) / std::sqrt(s2);
    }
  }
  out[kPotential] = G * U;
  out[kRms] = std::sqrt(r2m / std::max(M, std::numeric_limits<double>::min()));
}

// system_totals of each of the B systems of x, v (B, N, D), m (B, N) into
// out (B, stride) at column offset 0 of each row.
template <typename T, int D>
void totals(const T* x, const T* v, const T* m, int64_t B, int64_t N, double eps2, double G,
            double* out, int64_t stride) {
  at::parallel_for(0, B, 256, [&](int64_t begin, int64_t end) {
    for (int64_t b = begin; b < end; ++b) {
      system_totals<T, D>(x + b * N * D, v + b * N * D, m + b * N, N, eps2, G, out + b * stride);
    }
  });
}

// Runs every system of the batch (B systems of N bodies, (B, N, D) inputs, a
// the gravitational acceleration at x; time and t_stop (B,) float64, t_stop
// inf for no end time) as described above, writing the end states and the
// per-system counts and statistics.
template <typename T, int D, typename Inv>
void kdk_run(const RunIO<T>& io, int64_t B, int64_t N, T eps2, T G, const RunConfig& cfg,
             const Inv& inverse) {
  const auto range = [&](auto policy, auto diagnostics) {
    at::parallel_for(0, B, 4 * kLanes, [&](int64_t begin, int64_t end) {
      constexpr RunPolicy kP = decltype(policy)::value;
      constexpr bool kDiag = decltype(diagnostics)::value;
      if (N == 3) {
        run_detail::run_range<T, D, kP, kDiag, 3>(io, begin, end, N, eps2, G, cfg, inverse);
      } else {
        run_detail::run_range<T, D, kP, kDiag, 0>(io, begin, end, N, eps2, G, cfg, inverse);
      }
    });
  };
  const auto with_diagnostics = [&](auto policy) {
    cfg.diagnostics ? range(policy, std::true_type{}) : range(policy, std::false_type{});
  };
  using P = RunPolicy;
  switch (cfg.policy) {
    case P::kFixed:
      return with_diagnostics(std::integral_constant<P, P::kFixed>{});
    case P::kAarseth:
      return with_diagnostics(std::integral_constant<P, P::kAarseth>{});
    case P::kModel:
      return with_diagnostics(std::integral_constant<P, P::kModel>{});
  }
}

}  // namespace fewbody
}  // namespace aits
