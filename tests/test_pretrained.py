"""The model shipped with aits: it loads without unpickling, is small, records how it
was made, meets its recorded accuracy, and is what --policy model uses by default."""

from __future__ import annotations

import json
import math

import pytest
import torch

import aits
from aits.pretrained_model import PRETRAINED, pretrained_info, pretrained_path
from aits.policies import ModelPolicy, make_policy
from aits.simulate import main as simulate_main


SHIPPED = [PRETRAINED, "generalist", "generalist-history"]


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_model_is_small_loads_weights_only_and_records_its_making(name):
    path = pretrained_path(name)
    assert path.stat().st_size < 2 * 2**20
    data = torch.load(path, weights_only=True)  # plain tensors and containers only
    assert {"model_config", "model", "config"} <= set(data)
    info = pretrained_info(name)
    assert info["name"] == name and info["seed"] == info["trained_with"]["seed"]
    assert info["aits_version"] and info["git_commit"]
    assert info["trained_with"]["output"] == data["model_config"]["output"]


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_model_meets_its_recorded_accuracy(name):
    check = pretrained_info(name)["accuracy_check"]
    policy = aits.pretrained(name)
    assert isinstance(policy, ModelPolicy)
    r = aits.simulate(aits.make_scenario(check["scenario"]), policy,
                      t_end=check["orbits"] * 2 * math.pi, integrator=check["integrator"],
                      observers=[])
    assert r.stop_reason == "t_end"
    assert r.energy_error_max <= 1.05 * check["energy_error_max"]
    assert abs(r.force_evaluations - check["force_evaluations"]) <= \
        0.02 * check["force_evaluations"]


def test_model_policy_without_checkpoint_is_the_shipped_model(caplog):
    with caplog.at_level("INFO", logger="aits.policies"):
        policy = make_policy("model")
    assert "pretrained" in caplog.text
    state = aits.make_scenario("binary-e0.9")
    assert float(policy(state)) == float(aits.pretrained()(state))


def test_simulate_runs_the_shipped_model_by_default(tmp_path):
    out = tmp_path / "run"
    assert simulate_main(["--scenario", "binary-e0.9", "--orbits", "1", "--out", str(out),
                          "--quiet"]) == 0
    result = json.loads((out / "result.json").read_text())
    assert result["policy"] == "model" and result["stop_reason"] == "t_end"


def test_unknown_shipped_model_lists_the_shipped_ones():
    with pytest.raises(FileNotFoundError, match=f"shipped: .*{PRETRAINED}"):
        pretrained_path("nope")


def test_generalist_is_the_whole_run_preset():
    info = pretrained_info("generalist")
    assert info["trained_with"]["objective"] == "whole-run"
    assert info["trained_with"]["population"] == "generalist"
    assert info["trained_with"]["feature_type"] == "encounter-smooth"
    assert info["seeds"] == [0, 7, 8, 9, 11]
    net = aits.pretrained("generalist").net
    assert net.spec.kind == "encounter-smooth" and net.members == 5


def test_generalist_history_is_its_preset_and_keeps_its_window():
    info = pretrained_info("generalist-history")
    assert info["trained_with"]["objective"] == "whole-run"
    assert info["trained_with"]["feature_type"] == "encounter-history"
    assert info["trained_with"]["history_len"] == 4 and info["seeds"] == [0, 5, 6, 7, 9]
    policy = aits.pretrained("generalist-history")
    assert policy.history_len == 4 and policy.net.members == 5
    # the native loop and the Python loop: the same run
    state = aits.make_scenario("binary-e0.9")
    a = aits.simulate(state, policy, t_end=2 * math.pi, observers=[])
    b = aits.simulate(state, policy, t_end=2 * math.pi, observers=[], native=False)
    assert a.force_evaluations == b.force_evaluations
    assert a.energy_error_max == pytest.approx(b.energy_error_max, rel=1e-8)
