"""``python -m aits.evaluate``: bisection, the report files, the REBOUND column, errors."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from aits import evaluate
from aits.checkpoint import save_checkpoint
from aits.features import FeatureSpec
from aits.ics import kepler_orbit
from aits.model import TimeStepNet
from aits.policies import FixedPolicy, FreeFallPolicy
from aits.simulation import simulate

T_END = 1.5


@pytest.mark.parametrize("make, first", [(FixedPolicy, 0.05), (FreeFallPolicy, 0.5)])
@pytest.mark.parametrize("target", [1e-5, 3e-4])
def test_bisection_reaches_its_target_tolerance(make, first, target):
    s = kepler_orbit(0.7)
    tuned = evaluate.tune(lambda p: simulate(s, make(p), t_end=T_END), target, first,
                          rtol=0.05, max_runs=40)
    err = float(np.max(tuned.result.energy_error))
    assert tuned.matched
    assert target / 1.05 <= err <= target
    assert tuned.runs <= 40


def test_tune_reports_a_miss_and_refuses_a_bad_target():
    s = kepler_orbit(0.5)
    tuned = evaluate.tune(lambda p: simulate(s, FixedPolicy(p), t_end=T_END), 1e-6, 0.01,
                          rtol=1e-9, max_runs=3)
    assert not tuned.matched and tuned.runs == 3
    with pytest.raises(ValueError, match="target must be finite and > 0"):
        evaluate.tune(lambda p: None, math.inf, 1.0)


def test_a_diverged_run_counts_as_too_large_and_its_row_says_so(tmp_path):
    s = kepler_orbit(0.5)
    # fail_above below the target: every run that reaches it diverges, whatever its error
    tuned = evaluate.tune(lambda p: simulate(s, FixedPolicy(p), t_end=T_END, fail_above=1e-4),
                          3e-4, 0.05, max_runs=12)
    assert tuned.result.energy_error_max <= 1e-4 and not tuned.result.diverged
    assert all(err == math.inf for p, _, err in tuned.trials if p > tuned.param)
    out = tmp_path / "eval"
    assert evaluate.main(["--scenarios", "binary-e0.99", "--policies", "fixed", "--tolerance",
                          "1e-4", "--max-runs", "2", "--t-end", "3.3", "--no-rebound",
                          "--no-position-error", "--out", str(out), "--quiet"]) == 0
    row = json.loads((out / "evaluation.json").read_text())["scenarios"]["binary-e0.99"][
        "rows"][0]
    assert row["status"] == "diverged" and "diverged at t=" in row["note"]
    assert row["energy_error_max"] < 0.2  # stopped at the divergence, no runaway number
    assert "diverged at t=" in (out / "evaluation.md").read_text()


def test_markdown_table():
    assert evaluate.markdown_table(["a", "b"], [[1, "x"]]) == "| a | b |\n|---|---|\n| 1 | x |"


def _checkpoint(tmp_path):
    spec = FeatureSpec(kind="basic", normalize="state")
    net = TimeStepNet(spec, hidden=[8], dropout=0.0, output="dynamical", dt_init=0.05).double()
    path = tmp_path / "model.pt"
    save_checkpoint(path, {"model_config": net.config(), "model": net.state_dict()})
    return path


def test_evaluate_cli_writes_report(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(evaluate, "rebound_available", lambda: False)
    out = tmp_path / "eval"
    assert evaluate.main(["--checkpoint", str(_checkpoint(tmp_path)), "--scenarios", "binary-e0.5",
                          "--policies", "fixed", "freefall", "--t-end", "1.0", "--rtol", "0.2",
                          "--out", str(out)]) == 0
    report = json.loads((out / "evaluation.json").read_text())
    sc = report["scenarios"]["binary-e0.5"]
    labels = [r["policy"] for r in sc["rows"]]
    assert labels == ["model/kdk", "fixed/kdk", "freefall/kdk"]
    model_err = sc["rows"][0]["energy_error_max"]
    assert sc["target"] == pytest.approx(model_err)
    for row in sc["rows"][1:]:
        assert row["energy_error_max"] <= sc["target"]
        assert set(row) >= {"steps", "force_evaluations", "wall_time_s", "energy_error_final",
                            "gate_pass_rate", "step_error_max"}
    assert any("rebound" in n for n in report["notes"])
    md = (out / "evaluation.md").read_text()
    assert "### binary-e0.5" in md and "| model/kdk |" in md and "REBOUND IAS15 column omitted" in md
    assert (out / "evaluation.png").stat().st_size > 0
    assert "gate pass rate" in capsys.readouterr().out


def test_rebound_column():
    pytest.importorskip("rebound")
    res = evaluate.run_ias15(kepler_orbit(0.5), 2 * math.pi)
    assert res["steps"] > 0 and res["force_evaluations"] > res["steps"]
    assert res["energy_error_max"] < 1e-10


def test_evaluate_cli_with_rebound(tmp_path):
    pytest.importorskip("rebound")
    out = tmp_path / "eval"
    assert evaluate.main(["--tolerance", "1e-4", "--scenarios", "figure8", "--policies", "fixed",
                          "--t-end", "0.5", "--out", str(out), "--quiet"]) == 0
    rows = json.loads((out / "evaluation.json").read_text())["scenarios"]["figure8"]["rows"]
    assert [r["policy"] for r in rows] == ["fixed/kdk", "REBOUND IAS15"]


@pytest.mark.parametrize("args, message", [
    (["--scenarios", "binary-e0.5"], "give --checkpoint"),
    (["--tolerance", "1e-4", "--scenarios", "nope"], "invalid choice: 'nope'"),
    (["--tolerance", "-1"], "setting 'tolerance' must be a number > 0"),
    (["--tolerance", "1e-4", "--policies", "rk4"], "invalid choice: 'rk4'"),
    (["--checkpoint", "/no/such.pt"], "does not exist"),
    (["--tolerance", "1e-4", "--t-end", "0"], "setting 't_end' must be a number > 0"),
    (["--tolerance", "0.2"], "--tolerance 0.2 must be below --fail-above 0.1"),
])
def test_evaluate_bad_arguments(args, message, capsys, tmp_path):
    with pytest.raises(SystemExit) as exc:
        evaluate.main([*args, "--out", str(tmp_path)])
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_evaluate_ic_files_several_integrators_and_position_target(tmp_path):
    """--ic beside --scenarios, every policy under each integrator, --target position."""
    ic = tmp_path / "binary.npy"
    np.save(ic, np.array([[0.5, -0.5, 0, 0, -0.5], [0.5, 0.5, 0, 0, 0.5]]))
    out = tmp_path / "eval"
    assert evaluate.main(["--ic", str(ic), "--tolerance", "1e-3", "--target", "position",
                          "--policies", "freefall", "--integrator", "kdk", "symmetric", "ttl",
                          "--t-end", "3", "--rtol", "0.3", "--no-rebound", "--out", str(out),
                          "--quiet"]) == 0
    report = json.loads((out / "evaluation.json").read_text())
    rows = report["scenarios"][str(ic)]["rows"]
    assert [r["policy"] for r in rows] == ["freefall/kdk", "freefall/symmetric", "freefall/ttl"]
    for r in rows:
        assert 0 < r["position_error"] <= 1e-3
    assert report["target"] == "position" and report["integrators"] == ["kdk", "symmetric", "ttl"]


def test_evaluate_units_set_G(tmp_path, capsys):
    out = tmp_path / "eval"
    assert evaluate.main(["--scenarios", "binary-e0.5", "--units", "au-yr-msun", "--tolerance",
                          "1e-3", "--policies", "freefall", "--orbits", "1", "--no-rebound",
                          "--out", str(out), "--quiet"]) == 0
    report = json.loads((out / "evaluation.json").read_text())
    sc = report["scenarios"]["binary-e0.5"]
    assert report["units"] == "au-yr-msun"
    assert sc["t_end"] == pytest.approx(2 * math.pi / math.sqrt(39.476926), rel=1e-6)
    assert capsys.readouterr() == ("", "")  # --quiet: nothing but warnings and errors


def test_suite_runs_every_system_at_every_tolerance_with_a_summary(tmp_path, monkeypatch):
    """--suite: the suite's systems, lengths, tolerances, integrators and references;
    one table per system and tolerance, the summary's model / best-classical ratio,
    the cost-accuracy figure. (A two-system stand-in for the standard suite keeps
    the test short; the real one runs the same code.)"""
    from aits.suites import SUITES, Suite, SuiteSystem

    monkeypatch.setattr(evaluate, "rebound_available", lambda: False)
    monkeypatch.setitem(SUITES, "standard", Suite(
        systems=(SuiteSystem("binary-e0.5", {"orbits": 1.0}), SuiteSystem("figure8",
                                                                          {"t_end": 1.0})),
        tolerances=(1e-2, 1e-3), integrators=("kdk", "symmetric"), references=("ttl",)))
    out = tmp_path / "suite"
    assert evaluate.main(["--suite", "standard", "--checkpoint", str(_checkpoint(tmp_path)),
                          "--policies", "fixed", "aarseth", "--rtol", "0.3",
                          "--no-position-error", "--out", str(out), "--quiet"]) == 0
    report = json.loads((out / "evaluation.json").read_text())
    assert set(report["scenarios"]) == {f"{s} @ {t:g}" for s in ("binary-e0.5", "figure8")
                                        for t in (1e-2, 1e-3)}
    table = report["scenarios"]["binary-e0.5 @ 0.001"]
    assert table["t_end"] == pytest.approx(2 * math.pi)  # one period of the binary
    labels = [r["policy"] for r in table["rows"]]
    assert labels == ["model/kdk", "fixed/kdk", "aarseth/kdk", "model/symmetric",
                      "fixed/symmetric", "aarseth/symmetric", "fixed/ttl", "aarseth/ttl"]
    assert all(r["note"].startswith("reference") for r in table["rows"] if "/ttl" in r["policy"])
    summary = report["summary"]
    assert len(summary) == 2 * 2 * 2  # systems x tolerances x integrators (ttl not compared)
    for row in summary:
        rows = {r["policy"]: r for r in
                report["scenarios"][f"{row['system']} @ {row['target']:g}"]["rows"]}
        best = rows[row["best_classical"]]
        assert best["matched"] and best["energy_error_max"] <= row["target"]
        assert not row["best_classical"].endswith("/ttl")
        if row["ratio"] is not None:
            assert row["ratio"] == pytest.approx(
                rows[f"model/{row['integrator']}"]["force_evaluations"]
                / best["force_evaluations"])
    md = (out / "evaluation.md").read_text()
    assert "### Summary" in md and "### figure8 @ 0.01" in md
    assert (out / "cost_accuracy.png").stat().st_size > 0


def test_suite_sets_the_systems_and_lengths(capsys):
    with pytest.raises(SystemExit) as exc:
        evaluate.main(["--suite", "standard", "--orbits", "2"])
    assert exc.value.code == 2
    assert "'orbits' (--orbits) does not apply with --suite" in capsys.readouterr().err


def test_tuning_runs_natively_and_the_figure_gets_recorded_runs(monkeypatch):
    """kdk rows of a few-body system tune through the native loop (the shipped generalist
    too) with the Python loop's results; every row's run in the figure has its per-step
    record and is the row's run again."""
    from aits import native_run
    from aits.gate import EnergyGate
    from aits.pretrained_model import pretrained

    s = kepler_orbit(0.7)
    calls = []
    real = native_run.run
    monkeypatch.setattr(native_run, "run", lambda *a, **k: calls.append(1) or real(*a, **k))

    def table():
        return evaluate.evaluate_scenario(
            s, {"t_end": T_END}, pretrained("generalist"), ["fixed", "aarseth"],
            integrators=["kdk", "symmetric"], tolerance=3e-4, gate=EnergyGate(), rtol=0.05,
            max_runs=20, max_steps=10**5, base=evaluate.Baseline(None, None))

    native = table()
    assert calls  # the kdk tuning runs went native
    monkeypatch.setattr(native_run, "applies", lambda *a, **k: False)
    python = table()
    labels = [r["policy"] for r in native.rows]
    assert labels == ["model/kdk", "fixed/kdk", "aarseth/kdk", "model/symmetric",
                      "fixed/symmetric", "aarseth/symmetric"]
    for a, b in zip(native.rows, python.rows):
        assert (a["policy"], a["parameter"], a["force_evaluations"]) == \
               (b["policy"], b["parameter"], b["force_evaluations"])
        assert a["energy_error_max"] == pytest.approx(b["energy_error_max"], rel=1e-6)
        run = native.runs[a["policy"]]
        assert run.systems[0].t is not None and run.force_evaluations == a["force_evaluations"]
