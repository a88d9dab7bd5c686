"""pytest-benchmark cases of the simulation side (the pieces of ``suite.py``):

    pytest benchmarks/test_rollout.py --benchmark-only

One force evaluation, one model-policy step (features + network + step), one
Aarseth derivative pass and one call of each policy, on a Plummer sphere
(float64, CPU), and training throughput.
"""

from __future__ import annotations

import pytest
import torch

import rollout
from aits.ops import aarseth_derivatives
from aits.state import step

SIZES = [256, 1024]


@pytest.fixture(scope="module", params=SIZES, ids=lambda n: f"N{n}")
def state(request):
    return rollout.system(request.param).with_acceleration()


def test_force_evaluation(benchmark, state):
    benchmark(state.gravity_acceleration)


@torch.no_grad()
def test_model_policy_step(benchmark, state):
    policy = rollout.policy_for("model", state)
    end = benchmark(lambda: step(state, policy(state)))
    assert torch.isfinite(end.pos).all()


def test_aarseth_derivative_pass(benchmark, state):
    """What AarsethPolicy computes per call (acc, jerk, snap, crackle)."""
    out = benchmark(aarseth_derivatives, state.pos, state.vel, state.mass, state.softening,
                    state.G)
    assert all(torch.isfinite(t).all() for t in out)


def test_aarseth_derivative_cost_checks_then_times():
    c = rollout.aarseth_derivative_cost(256, repeats=2)
    assert set(c) == {"force_evaluation", "aarseth_derivatives", "ratio"}
    assert c["ratio"] == c["aarseth_derivatives"] / c["force_evaluation"]


@pytest.mark.parametrize("name", rollout.ROLLOUT_POLICIES)
def test_policy_call(benchmark, state, name):
    policy = rollout.policy_for(name, state)
    dt = benchmark(policy, state)
    assert float(dt) > 0


@pytest.mark.parametrize("n", [3, 256])
def test_rollout_per_step(benchmark, n):
    per_step = benchmark.pedantic(rollout.rollout_cost, args=("model", n, 5), rounds=1)
    assert per_step > 0


def test_training_throughput(benchmark):
    out = benchmark.pedantic(rollout.training_throughput, args=(10,), rounds=1)
    assert out["epoch2_steps_per_s"] > 0
