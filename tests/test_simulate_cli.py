"""``python -m aits.simulate``: result.json, Kepler convergence, output files, errors."""

from __future__ import annotations

import importlib.util
import json
import math

import numpy as np
import pytest
import torch

from aits import plots
from aits.checkpoint import save_checkpoint
from aits.features import FeatureSpec
from aits.ics import kepler_orbit, plummer
from aits.model import TimeStepNet
from aits.policies import FixedPolicy
from aits.simulate import main, orbit_period
from aits.simulation import RESULT_KEYS, simulate

PERIOD = 2 * math.pi  # binary-e* scenarios: a = 1, M = 1


def _run(tmp_path, *args: str, quiet: bool = True) -> dict:
    assert main([*args, "--out", str(tmp_path), *(["--quiet"] if quiet else [])]) == 0
    return json.loads((tmp_path / "result.json").read_text())


def test_result_json_schema(tmp_path, capsys):
    res = _run(tmp_path, "--scenario", "binary-e0.5", "--policy", "freefall", "--eta", "0.05",
               "--orbits", "1", quiet=False)
    for key in RESULT_KEYS:
        assert key in res, key
    for key in ("energy_error_final", "energy_error_max", "momentum_error",
                "angular_momentum_error", "wall_time_s", "gate_pass_rate", "t_end"):
        assert isinstance(res[key], float) and res[key] >= 0, key
    assert isinstance(res["steps"], int) and res["force_evaluations"] == res["steps"] + 1
    assert res["t_end"] == pytest.approx(PERIOD)
    assert 0 <= res["gate_pass_rate"] <= 1
    assert res["policy"] == "freefall" and res["eta"] == 0.05 and res["scenario"] == "binary-e0.5"
    assert res["energy_error_final"] <= res["energy_error_max"]
    assert res["status"] == "ok" and res["totals"]["status"] == "ok"
    assert res["diverged_step"] is None and res["diverged_time"] is None
    out = capsys.readouterr().out
    assert "force evaluations" in out and "result.json" in out and "status" in out


def test_quiet_prints_nothing_on_success(tmp_path, capsys):
    assert main(["--scenario", "figure8", "--policy", "fixed", "--dt", "0.01", "--t-end", "1",
                 "--out", str(tmp_path), "--trajectory", "--quiet"]) == 0
    assert capsys.readouterr() == ("", "")
    assert (tmp_path / "result.json").is_file() and (tmp_path / "trajectory.npz").is_file()


def test_kepler_fixed_dt_converges_at_second_order(tmp_path):
    errs = []
    for n in (500, 1000):
        res = _run(tmp_path / str(n), "--scenario", "binary-e0.5", "--policy", "fixed",
                   "--dt", repr(PERIOD / n), "--orbits", "1")
        assert res["steps"] == n and res["t_end"] == pytest.approx(PERIOD)
        assert res["momentum_error"] < 1e-12 and res["angular_momentum_error"] < 1e-12
        errs.append(res["energy_error_max"])
    assert 3.6 < errs[0] / errs[1] < 4.4


def test_ic_file_and_steps(tmp_path):
    s = plummer(8, seed=0)
    table = np.column_stack([s.mass.numpy(), s.pos.numpy(), s.vel.numpy()])
    ic = tmp_path / "ic.npy"
    np.save(ic, table)
    res = _run(tmp_path / "out", "--ic", str(ic), "--softening", "0.05", "--policy", "aarseth",
               "--eta", "0.01", "--steps", "7", "--dt-max", "0.01")
    assert res["steps"] == 7 and res["n_bodies"] == 8 and res["dim"] == 3
    assert res["dt_max"] <= 0.01 and res["guards"]["dt_max"] == 0.01
    assert res["guards"]["max_growth"] is None  # inf -> null: strict JSON


def test_model_policy_run_with_history(tmp_path):
    spec = FeatureSpec(kind="basic", history="delta_mag", history_len=2, normalize="state")
    net = TimeStepNet(spec, hidden=[8], dropout=0.0, output="dynamical", dt_init=0.02).double()
    ckpt = tmp_path / "run" / "checkpoints" / "epoch_0003.pt"
    save_checkpoint(ckpt, {"model_config": net.config(), "model": net.state_dict()})
    res = _run(tmp_path / "out", "--scenario", "binary-e0.9", "--checkpoint", str(tmp_path / "run"),
               "--steps", "20")
    assert res["policy"] == "model" and res["steps"] == 20


def test_output_files_are_written(tmp_path, monkeypatch):
    monkeypatch.setattr(plots.shutil, "which", lambda name: None)  # no ffmpeg: GIF
    assert main(["--scenario", "figure8", "--policy", "fixed", "--dt", "0.05", "--steps", "40",
                 "--out", str(tmp_path), "--plots", "--trajectory", "--animate", "--frames", "8",
                 "--quiet"]) == 0
    for name in ("result.json", "orbits.png", "energy_dt.png", "trajectory.npz", "animation.gif"):
        assert (tmp_path / name).stat().st_size > 0, name
    traj = np.load(tmp_path / "trajectory.npz")
    assert traj["pos"].shape == (8, 3, 2) and len(traj["frame_t"]) == 8  # exactly --frames
    assert len(traj["dt"]) == 40 and traj["frame_t"][-1] == traj["t"][-1]


def test_animation_uses_ffmpeg_when_present(tmp_path, monkeypatch):
    calls = []

    class FakeWriter:
        def __init__(self, fps):
            calls.append(fps)

    class FakeAnimation:
        def __init__(self, fig, draw, frames, blit):
            self.draw, self.frames = draw, frames

        def save(self, out, writer, dpi, progress_callback):
            for k in range(self.frames):
                self.draw(k)
                progress_callback(k, self.frames)
            out.write_bytes(b"mp4")

    monkeypatch.setattr(plots.shutil, "which", lambda name: "/usr/bin/ffmpeg")
    monkeypatch.setattr(plots, "FFMpegWriter", FakeWriter)
    monkeypatch.setattr(plots, "FuncAnimation", FakeAnimation)
    r = simulate(kepler_orbit(0.5), FixedPolicy(0.1), steps=5)
    out = plots.animate(r, tmp_path / "anim")
    assert out.suffix == ".mp4" and out.stat().st_size > 0 and calls


def test_a_3d_run_is_animated_as_a_projection_in_large_frames(tmp_path, monkeypatch):
    from PIL import Image

    monkeypatch.setattr(plots.shutil, "which", lambda name: None)  # no ffmpeg: GIF
    r = simulate(plummer(4, seed=0), FixedPolicy(0.01), steps=6)
    out = plots.animate(r, tmp_path / "xz", projection="xz")
    with Image.open(out) as gif:
        assert gif.size == (600, 600) and gif.n_frames == 7
    assert plots.animate(r, tmp_path / "xy").is_file()  # x-y, the default
    with pytest.raises(ValueError, match="'xz' needs a 3-D run"):
        plots.animate(simulate(kepler_orbit(0.5), FixedPolicy(0.1), steps=2), tmp_path / "a",
                      projection="xz")


def test_projection_on_the_command_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(plots.shutil, "which", lambda name: None)
    assert main(["--ic", _plummer_file(tmp_path), "--softening", "0.05", "--policy", "fixed",
                 "--dt", "0.01", "--steps", "6", "--out", str(tmp_path / "xz"), "--animate",
                 "--plots", "--projection", "xz", "--quiet"]) == 0
    assert (tmp_path / "xz" / "animation.gif").is_file()
    assert (tmp_path / "xz" / "orbits.png").is_file()
    with pytest.raises(SystemExit) as err:
        main(["--scenario", "figure8", "--policy", "fixed", "--dt", "0.01", "--steps", "2",
              "--out", str(tmp_path / "2d"), "--animate", "--projection", "xz"])
    assert err.value.code == 2 and "needs a 3-D run" in capsys.readouterr().err


def _plummer_file(tmp_path) -> str:
    s = plummer(4, seed=0)
    path = tmp_path / "plummer.npy"
    np.save(path, np.column_stack([s.mass.numpy(), s.pos.numpy(), s.vel.numpy()]))
    return str(path)


def test_orbit_period():
    assert orbit_period(kepler_orbit(0.3, a=2.0)) == pytest.approx(2 * math.pi * 8**0.5)
    with pytest.raises(ValueError, match="two-body"):
        orbit_period(plummer(4, seed=0))


@pytest.mark.parametrize("args, message", [
    (["--scenario", "nope", "--policy", "fixed", "--dt", "0.1", "--steps", "1"],
     "argument --scenario: invalid choice: 'nope'"),
    (["--scenario", "figure8", "--policy", "rk4", "--steps", "1"],
     "argument --policy: invalid choice: 'rk4'"),
    (["--scenario", "figure8", "--policy", "model", "--checkpoint", "/no/such.pt", "--steps", "1"],
     "checkpoint '/no/such.pt' does not exist"),
    (["--scenario", "figure8", "--policy", "freefall", "--eta", "0", "--steps", "1"],
     "setting 'eta' must be a number > 0, got 0.0"),
    (["--scenario", "figure8", "--policy", "freefall", "--steps", "1"], "needs eta (--eta)"),
    (["--scenario", "figure8", "--policy", "fixed", "--dt", "0.1", "--t-end", "-2"],
     "setting 't_end' must be a number > 0, got -2.0"),
    (["--scenario", "figure8", "--policy", "fixed", "--dt", "0.1", "--steps", "0"],
     "setting 'steps' must be an integer >= 1"),
    (["--scenario", "plummer64", "--policy", "fixed", "--dt", "0.1", "--orbits", "1"],
     "--orbits needs a two-body"),
    (["--scenario", "figure8", "--policy", "fixed", "--dt", "0.1"],
     "give one of --t-end, --orbits, --steps"),
    (["--scenario", "figure8", "--policy", "fixed", "--dt", "0.1", "--steps", "1",
      "--max-growth", "0.5"], "setting 'max_growth' must be a number > 1"),
    (["--scenario", "figure8", "--policy", "fixed", "--dt", "0.1", "--steps", "1", "--plots"],
     "need --out DIR"),
    (["--ic", "/no/such/file.csv", "--policy", "fixed", "--dt", "0.1", "--steps", "1"],
     "does not exist"),
])
def test_bad_arguments_give_clear_errors(args, message, capsys):
    with pytest.raises(SystemExit) as exc:
        main(args)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_config_file_sets_options_and_the_command_line_overrides_it(tmp_path):
    cfg = tmp_path / "run.toml"
    cfg.write_text(
        'scenario = "binary-e0.5"\nepochs = 3  # training only: skipped here\n'
        '[train]\nlr = 0.1\n'
        '[simulate]\npolicy = "fixed"\ndt = 0.01\nt_end = 2.0\nquiet = true\n'
    )
    assert main(["--config", str(cfg), "--out", str(tmp_path / "a")]) == 0
    a = json.loads((tmp_path / "a" / "result.json").read_text())
    assert a["t_end"] == pytest.approx(2.0) and a["steps"] == 200
    # the command line wins, also over an option of the same exclusive group
    assert main(["--config", str(cfg), "--dt", "0.02", "--steps", "10",
                 "--out", str(tmp_path / "b")]) == 0
    b = json.loads((tmp_path / "b" / "result.json").read_text())
    assert b["steps"] == 10 and b["t_end"] == pytest.approx(0.2)


def test_config_file_errors_name_the_file_and_the_key(tmp_path, capsys):
    cfg = tmp_path / "bad.toml"
    cfg.write_text("[simulate]\nbogus = 1\n")
    with pytest.raises(SystemExit) as err:
        main(["--config", str(cfg)])
    assert err.value.code == 2
    assert "unknown setting 'bogus' in [simulate]" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--config", str(tmp_path / "missing.toml")])
    assert "cannot read config file" in capsys.readouterr().err


def test_out_must_not_be_a_file_and_batched_ic_is_refused(tmp_path, capsys):
    afile = tmp_path / "afile"
    afile.write_text("")
    with pytest.raises(SystemExit) as err:
        main(["--scenario", "figure8", "--policy", "fixed", "--dt", "0.01", "--steps", "2",
              "--out", str(afile)])
    assert err.value.code == 2 and "is a file; give a directory" in capsys.readouterr().err
    batch = tmp_path / "batch.npy"
    one = [[1.0, -1, 0, 0, -0.5], [1.0, 1, 0, 0, 0.5]]
    np.save(batch, np.array([one, one]))
    with pytest.raises(SystemExit) as err:
        main(["--ic", str(batch), "--policy", "fixed", "--dt", "0.01", "--steps", "2", "--plots",
              "--out", str(tmp_path / "o")])
    assert err.value.code == 2 and "need one system" in capsys.readouterr().err


def test_a_batch_of_ic_files_runs_as_one_batch(tmp_path):
    """A (B, N, 2D+1) .npy and several files run together; result.json lists each system."""
    one = [[1.0, -1, 0, 0, -0.5], [1.0, 1, 0, 0, 0.5]]
    wide = [[1.0, -2, 0, 0, -0.35], [1.0, 2, 0, 0, 0.35]]
    np.save(tmp_path / "batch.npy", np.array([one, wide]))
    np.save(tmp_path / "single.npy", np.array(one))
    res = _run(tmp_path, "--ic", str(tmp_path / "batch.npy"), str(tmp_path / "single.npy"),
               "--policy", "aarseth", "--eta", "0.01", "--t-end", "3")
    assert len(res["systems"]) == 3 and res["totals"]["systems"] == 3
    for key in RESULT_KEYS:
        assert all(key in s for s in res["systems"]), key
    assert all(s["t_end"] == pytest.approx(3.0) for s in res["systems"])
    # system 0 and the single file are the same start: the same run
    assert res["systems"][0]["steps"] == res["systems"][2]["steps"]
    assert res["systems"][1]["steps"] != res["systems"][0]["steps"]
    assert res["totals"]["steps"] == sum(s["steps"] for s in res["systems"])


def test_a_policy_that_fails_mid_run_ends_with_status_1(monkeypatch, capsys):
    import aits.simulate as simulate_cli

    class Runaway:
        name, history_len = "runaway", 0

        def __call__(self, state, history=None):
            return torch.full(state.batch_shape, float("inf"), dtype=state.dtype)

    monkeypatch.setattr(simulate_cli, "make_policy", lambda name, **kwargs: Runaway())
    code = main(["--scenario", "figure8", "--policy", "fixed", "--dt", "0.01", "--steps", "5",
                 "--quiet"])
    assert code == 1 and "run failed: policy" in capsys.readouterr().err


def test_config_values_of_the_wrong_type_name_the_key(tmp_path, capsys):
    cfg = tmp_path / "c.toml"
    cfg.write_text('[simulate]\ngated = "yes"\n')
    with pytest.raises(SystemExit):
        main(["--config", str(cfg)])
    assert "setting 'gated' must be true or false, got 'yes'" in capsys.readouterr().err


def test_units_rebound_archive_and_hdf5(tmp_path):
    """--units sets G (and labels result.json); --rebound-bin reads an archive; --hdf5 writes."""
    pytest.importorskip("rebound")
    import rebound

    res = _run(tmp_path / "u", "--scenario", "binary-e0.5", "--units", "au-yr-msun",
               "--policy", "fixed", "--dt", "0.001", "--orbits", "1")
    assert res["G"] == pytest.approx(39.4769, rel=1e-4) and res["units"]["name"] == "au-yr-msun"
    assert res["t_end"] == pytest.approx(PERIOD / math.sqrt(res["G"]))
    sim = rebound.Simulation()
    sim.add(m=1.0)
    sim.add(m=1e-3, a=1.0, e=0.1)
    sim.save_to_file(str(tmp_path / "sim.bin"))
    out = tmp_path / "r"
    args = ["--rebound-bin", str(tmp_path / "sim.bin"), "--policy", "aarseth", "--eta", "0.01",
            "--t-end", "1", "--out", str(out), "--quiet"]
    h5 = importlib.util.find_spec("h5py") is not None
    assert main(args + (["--hdf5"] if h5 else [])) == 0
    res = json.loads((out / "result.json").read_text())
    assert res["n_bodies"] == 2 and res["dim"] == 3 and res["energy_error_max"] < 1e-3
    if h5:
        import h5py

        with h5py.File(out / "trajectory.h5") as f:
            assert f.attrs["integrator"] == "kdk" and "pos" in f


@pytest.mark.parametrize("args, message", [
    (["--policy", "aarseth", "--eta", "0.01", "--dt", "0.1"], "(--dt) does not apply to --policy aarseth"),
    (["--policy", "fixed", "--dt", "0.1", "--eta", "0.1"], "(--eta) does not apply to --policy fixed"),
    (["--policy", "fixed", "--dt", "0.1", "--dt-scale", "2"], "(--dt-scale) does not apply"),
    (["--policy", "fixed", "--dt", "0.1", "--softening", "-1"], "setting 'softening' must be a number >= 0"),
    (["--policy", "fixed", "--dt", "0.1", "--integrator", "kdk", "--symmetric-iterations", "2"],
     "(--symmetric-iterations) does not apply without --integrator symmetric"),
])
def test_settings_that_do_not_apply_are_refused(args, message, capsys):
    with pytest.raises(SystemExit) as err:
        main(["--scenario", "figure8", "--steps", "2", *args])
    assert err.value.code == 2 and message in capsys.readouterr().err


@pytest.mark.parametrize("name", ["final.npy", "final.csv"])
def test_save_final_writes_an_ic_file_that_reads_back(tmp_path, name):
    path = tmp_path / name
    assert main(["--scenario", "figure8", "--policy", "fixed", "--dt", "0.01", "--steps", "50",
                 "--save-final", str(path), "--quiet"]) == 0
    from aits.ics import load_state
    from aits.policies import FixedPolicy
    from aits.scenarios import make_scenario

    expected = simulate(make_scenario("figure8"), FixedPolicy(0.01), steps=50).state
    back = load_state(path)
    torch.testing.assert_close(back.pos, expected.pos, rtol=0, atol=1e-15)
    torch.testing.assert_close(back.vel, expected.vel, rtol=0, atol=1e-15)
    torch.testing.assert_close(back.mass, expected.mass)


# ------------------------------------------------------------ loud failures, outputs

DIVERGING = ["--scenario", "binary-e0.99", "--policy", "fixed", "--dt", "0.05", "--orbits", "1",
             "--gated", "--max-retries", "1"]


def test_a_run_whose_gated_retries_run_out_fails_loudly(tmp_path, capsys):
    assert main([*DIVERGING, "--out", str(tmp_path / "a")]) == 3
    err = capsys.readouterr().err
    assert "warning: diverged at t=" in err and "after 1 retry" in err and "exit status 3" in err
    res = json.loads((tmp_path / "a" / "result.json").read_text())
    assert res["status"] == "diverged" and res["stop_reason"] == "diverged"
    assert res["systems"][0]["status"] == "diverged" and res["totals"]["diverged"] == 1
    assert res["diverged_step"] == res["steps"] and res["diverged_time"] == res["t_end"]
    assert res["t_end"] < 2 * math.pi and res["energy_error_max"] < 0.1  # stopped in time
    # allowed: the run goes on to its end, still marked, and exits 0
    assert main([*DIVERGING, "--out", str(tmp_path / "b"), "--allow-divergence"]) == 0
    assert "warning: diverged at t=" in capsys.readouterr().err
    res_b = json.loads((tmp_path / "b" / "result.json").read_text())
    assert res_b["status"] == "diverged" and res_b["stop_reason"] == "t_end"
    assert res_b["diverged_step"] == res["diverged_step"] and res_b["steps"] > res["steps"]


def test_fail_above_marks_a_batch_system_by_system(tmp_path, capsys):
    one = [[0.5, -0.5, 0, 0, -0.5], [0.5, 0.5, 0, 0, 0.5]]  # circular, a = 1
    ecc = [[0.5, -0.05, 0, 0, -2.179], [0.5, 0.05, 0, 0, 2.179]]  # e = 0.9 at pericentre
    np.save(tmp_path / "b.npy", np.array([one, ecc]))
    args = ["--ic", str(tmp_path / "b.npy"), "--policy", "fixed", "--dt", "0.02", "--t-end", "6",
            "--out", str(tmp_path)]
    assert main([*args, "--fail-above", "1e-3", "--quiet"]) == 3
    res = json.loads((tmp_path / "result.json").read_text())
    ok, bad = res["systems"]
    assert res["status"] == "diverged" and ok["status"] == "ok" and ok["stop_reason"] == "t_end"
    assert bad["status"] == "diverged" and "> fail_above 0.001" in bad["divergence"]
    assert "system 1 diverged" in capsys.readouterr().err
    assert main([*args, "--fail-above", "inf", "--quiet"]) == 0
    assert json.loads((tmp_path / "result.json").read_text())["status"] == "ok"


def test_dt_statistics_leave_out_the_step_that_lands_on_t_end(tmp_path, capsys):
    res = _run(tmp_path, "--scenario", "binary-e0.5", "--policy", "fixed", "--dt", "1e-3",
               "--t-end", "0.0105", quiet=False)
    assert res["steps"] == 11 and res["landing_steps"] == 1
    assert res["dt_min"] == res["dt_max"] == 1e-3 and res["dt_mean"] == pytest.approx(1e-3)
    assert res["dt_last"] == pytest.approx(5e-4, rel=1e-9)
    assert "[1.000e-03, 1.000e-03]; last 5.000e-04" in capsys.readouterr().out


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_output_times_are_hit_exactly(tmp_path, dtype):
    times = [0.0, 0.1, 0.333, 1.0, 2.5]
    res = _run(tmp_path, "--scenario", "figure8", "--policy", "aarseth", "--eta", "0.02",
               "--t-end", "2", "--output-times", *map(str, times), "--trajectory",
               "--dtype", dtype)
    out = res["outputs"]
    np.testing.assert_allclose(out["t"], times[:4], rtol=1e-12, atol=0)  # 2.5 is past the end
    assert np.array(out["pos"]).shape == (4, 3, 2) and out["energy_error"][0] == 0
    traj = np.load(tmp_path / "trajectory.npz")
    np.testing.assert_allclose(traj["output_t"], times[:4], rtol=1e-12, atol=0)
    assert traj["output_pos"].shape == (4, 3, 2)
    assert traj["dt"][traj["landing_steps"]].max() <= res["dt_max"]
    # the recorded state is the run's own: a run to 1.0 ends in the state recorded at 1.0
    end = _run(tmp_path / "to1", "--scenario", "figure8", "--policy", "aarseth", "--eta", "0.02",
               "--t-end", "1", "--output-times", "0.1", "0.333", "--save-final",
               str(tmp_path / "end.npy"), "--dtype", dtype)
    final = np.load(tmp_path / "end.npy")
    np.testing.assert_allclose(final[:, 1:3], out["pos"][3], rtol=0, atol=1e-5 if dtype ==
                               "float32" else 1e-12)
    assert end["outputs"]["t"] == pytest.approx([0.1, 0.333], rel=1e-12)


def test_output_every_and_its_rules(tmp_path, capsys):
    res = _run(tmp_path, "--scenario", "binary-e0.5", "--policy", "fixed", "--dt", "0.03",
               "--orbits", "1", "--output-every", "0.5")
    expected = [0.5 * k for k in range(13)]  # 0 .. 6.0 within one period 2 pi
    np.testing.assert_allclose(res["outputs"]["t"], expected, rtol=1e-12, atol=1e-15)
    assert res["output_times"] == pytest.approx(expected)
    for args, message in ((["--steps", "5", "--output-every", "0.1", "--out", str(tmp_path)],
                           "--output-every needs --t-end or --orbits"),
                          (["--t-end", "1", "--output-times", "0.5"], "need --out DIR"),
                          (["--t-end", "1", "--output-times", "-1", "--out", str(tmp_path)],
                           "must be a number >= 0")):
        with pytest.raises(SystemExit) as err:
            main(["--scenario", "figure8", "--policy", "fixed", "--dt", "0.01", *args])
        assert err.value.code == 2 and message in capsys.readouterr().err
