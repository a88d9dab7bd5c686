"""End-to-end runs of ``python -m aits.train`` (via main) in a temporary directory."""

from __future__ import annotations

import importlib.util
import json
import re

import pytest
import torch

from aits.checkpoint import load_checkpoint
from aits.config import resolve
from aits.train import main

TINY = ["--hidden", "8", "8", "--steps-per-epoch", "10", "--replay-steps", "3",
        "--replay-batch-size", "8", "--min-replay-size", "4", "--rollout-steps", "20",
        "--dropout", "0.1", "--quiet"]


def _train(tmp_path, name, *extra):
    code = main([*TINY, "--run-dir", str(tmp_path), "--run-name", name, *extra])
    assert code == 0
    return tmp_path / name


def test_end_to_end_run_directory(tmp_path):
    run = _train(tmp_path, "r", "--epochs", "3", "--checkpoint-interval", "2")
    assert {p.name for p in run.iterdir()} >= {"config.toml", "metrics.jsonl", "steps.csv",
                                               "checkpoints", "summary.json", "summary.txt",
                                               "plot.png"}
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [m["epoch"] for m in lines] == [1, 2, 3]
    for key in ("p1_accepted", "p1_retrains", "p1_rel_dE_mean", "p1_rel_dE_max", "p1_dt_mean",
                "p2_converged", "p2_iterations", "p2_pass_rate_last", "epoch_time"):
        assert key in lines[0]
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["epoch_0002.pt",
                                                                       "epoch_0003.pt"]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["epochs_completed"] == 3 and summary["final_checkpoint"].endswith("0003.pt")
    assert set(summary["rollout_check"]) == {"train (binary-e0.9)", "binary e=0.5",
                                             "binary e=0.95"}
    for c in summary["rollout_check"].values():
        assert 0 <= c["pass_fraction"] <= 1 and c["mean_dt"] > 0
    assert (run / "plot.png").read_bytes()[:4] == b"\x89PNG"
    ckpt = load_checkpoint(run / "checkpoints" / "epoch_0003.pt")
    assert ckpt["epoch"] == 3 and ckpt["config"]["hidden"] == [8, 8]
    cfg = resolve(str(run / "config.toml"), {})  # the resolved config is a valid --config file
    assert cfg.epochs == 3 and cfg.run_name == "r"


def _metrics(run):
    return [{k: v for k, v in json.loads(x).items() if k != "epoch_time"}
            for x in (run / "metrics.jsonl").read_text().splitlines()]


def test_resume_cli_is_bit_exact(tmp_path):
    full = _train(tmp_path, "full", "--epochs", "4", "--checkpoint-interval", "2")
    half = _train(tmp_path, "half", "--epochs", "2", "--checkpoint-interval", "2")
    code = main(["--resume", str(half / "checkpoints" / "epoch_0002.pt"), "--epochs", "4",
                 "--quiet"])
    assert code == 0
    assert _metrics(half) == _metrics(full)  # appended to the same run directory
    a = load_checkpoint(full / "checkpoints" / "epoch_0004.pt")
    b = load_checkpoint(half / "checkpoints" / "epoch_0004.pt")
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert torch.equal(a["live"]["pos"], b["live"]["pos"])
    assert (half / "steps.csv").read_text() == (full / "steps.csv").read_text()


def test_resume_refuses_changes_that_do_not_fit(tmp_path, capsys):
    run = _train(tmp_path, "r", "--epochs", "1")
    with pytest.raises(SystemExit) as e:
        main(["--resume", str(run / "checkpoints" / "epoch_0001.pt"), "--hidden", "4"])
    assert e.value.code == 2 and "cannot change hidden when resuming" in capsys.readouterr().err
    (tmp_path / "junk.pt").write_text("junk")
    with pytest.raises(SystemExit) as e:
        main(["--resume", str(tmp_path / "junk.pt")])
    assert e.value.code == 2 and "is not an aits checkpoint" in capsys.readouterr().err


def test_duration_stops_cleanly_with_a_final_checkpoint(tmp_path):
    run = _train(tmp_path, "d", "--epochs", "50", "--duration", "0.01",
                 "--checkpoint-interval", "10")
    summary = json.loads((run / "summary.json").read_text())
    done = summary["epochs_completed"]  # 1, or 2 where an epoch takes under 10 ms
    assert summary["stopped_by_duration"] and 1 <= done < 10
    assert [p.name for p in (run / "checkpoints").iterdir()] == [f"epoch_{done:04d}.pt"]


def test_multi_orbit_run(tmp_path):
    run = _train(tmp_path, "k", "--epochs", "1", "--num-orbits", "3", "--e-range", "0.2", "0.8",
                 "--rollout-steps", "0", "--no-plot")
    m = _metrics(run)[0]
    assert m["p1_accepted"] == 30
    assert not (run / "plot.png").exists()


@pytest.mark.parametrize("flag, module", [("--wandb", "wandb"), ("--tensorboard", "tensorboard")])
def test_missing_logger_is_a_clear_error(tmp_path, capsys, flag, module):
    if importlib.util.find_spec(module) is not None:
        pytest.skip(f"{module} is installed")
    with pytest.raises(SystemExit) as e:
        main([flag, "--run-dir", str(tmp_path)])
    assert e.value.code == 2
    assert f"pip install 'aits[{module}]'" in capsys.readouterr().err


def test_cuda_without_cuda_is_a_clear_error(tmp_path, capsys):
    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    with pytest.raises(SystemExit) as e:
        main(["--device", "cuda", "--run-dir", str(tmp_path)])
    assert e.value.code == 2 and "CUDA is not available" in capsys.readouterr().err


def test_retrain_cap_exit_status(tmp_path, capsys):
    code = main([*TINY, "--run-dir", str(tmp_path), "--dt-init", "1.0", "--lr", "1e-12",
                 "--max-retrain-steps", "2"])
    assert code == 1 and "gave up at epoch 1, step 0 (counted from 0" in capsys.readouterr().err


def test_ic_file_run(tmp_path):
    ics = tmp_path / "binary.csv"  # columns m x y vx vy: a bound binary
    v = (0.5 * (1 - 0.5) / (1 + 0.5)) ** 0.5
    ics.write_text(f"0.5 -0.75 0 0 {-v}\n0.5 0.75 0 0 {v}\n")
    run = _train(tmp_path, "f", "--epochs", "1", "--ic-file", str(ics), "--rollout-steps", "5")
    summary = json.loads((run / "summary.json").read_text())
    assert summary["system"] == "binary" and "train (binary)" in summary["rollout_check"]
    assert summary["last_epoch"]["p1_accepted"] == 10


def test_bad_input_files_and_paths_end_in_one_line_and_status_2(tmp_path, capsys):
    ics = tmp_path / "cols.txt"
    ics.write_text("1 1 0 0\n1 -1 0 0 -0.1\n")
    assert_exit(2, main, [*TINY, "--run-dir", str(tmp_path), "--ic-file", str(ics)])
    assert "cols.txt:1: expected 5 or 7 columns" in capsys.readouterr().err
    afile = tmp_path / "afile"
    afile.write_text("")
    assert_exit(2, main, [*TINY, "--run-dir", str(afile)])
    assert "setting 'run_dir'" in capsys.readouterr().err


def assert_exit(code, fn, argv):
    with pytest.raises(SystemExit) as err:
        fn(argv)
    assert err.value.code == code


def test_rollout_check_stops_when_the_model_loses_the_system():
    from aits.gate import EnergyGate
    from aits.ics import kepler_orbit
    from aits.training import rollout_check

    from aits.features import FeatureSpec
    from aits.model import TimeStepNet

    class Runaway(TimeStepNet):
        """dt 0.01 for three steps, then inf (as after an ejection)."""

        calls = 0

        def predict_dt(self, state, history=None):
            self.calls += 1
            value = 0.01 if self.calls <= 3 else float("inf")
            return torch.full(state.batch_shape, value, dtype=state.dtype)

    net = Runaway(FeatureSpec(kind="basic")).double()
    net.train()
    out = rollout_check(net, kepler_orbit(0.5), EnergyGate(), steps=10)
    assert net.training  # the check restores the training mode
    assert out["steps"] == 3 and out["pass_fraction"] == pytest.approx(0.3)
    assert out["mean_dt"] == pytest.approx(0.01)


def test_a_diverging_rollout_is_marked_and_its_table_stays_readable():
    from aits.features import FeatureSpec
    from aits.gate import EnergyGate
    from aits.ics import kepler_orbit
    from aits.model import TimeStepNet
    from aits.train import format_summary
    from aits.training import rollout_check

    class Blowup(TimeStepNet):
        """dt 0.01 for five steps, then a runaway 6.7e117."""

        calls = 0

        def predict_dt(self, state, history=None):
            self.calls += 1
            value = 0.01 if self.calls <= 5 else 6.7e117
            return torch.full(state.batch_shape, value, dtype=state.dtype)

    net = Blowup(FeatureSpec(kind="basic")).double()
    out = rollout_check(net, kepler_orbit(0.5), EnergyGate(), steps=50)
    assert out["status"] == "diverged" and out["diverged"] == 1 and out["steps"] == 6
    assert out["note"].startswith("diverged at t=6.7e+117, step 6: whole-run |dE/E|")
    table = format_summary({
        "run_dir": "r", "system": "s", "epochs_completed": 1, "epochs_requested": 1,
        "stopped_by_duration": False, "train_time_s": 1.0, "accepted_steps": 1, "retrains": 0,
        "replay_iterations": 0, "last_epoch": {}, "final_checkpoint": None,
        "rollout_check": {"binary": out}})
    row = table.splitlines()[-1]
    assert "6.700e+117" in row and "diverged at t=" in row and len(row) < 200
    ok = rollout_check(TimeStepNet("basic", hidden=[4], dt_init=1e-3).double(),
                       kepler_orbit(0.5), EnergyGate(), steps=5)
    assert ok["status"] == "ok" and ok["note"] == ""


# ------------------------------------------------------------- run directory ownership

FAST = ["--hidden", "8", "--steps-per-epoch", "5", "--rollout-steps", "0", "--epochs", "1",
        "--quiet", "--no-plot"]


def test_two_runs_started_at_one_instant_get_their_own_directories(tmp_path):
    import subprocess
    import sys

    # both processes wait at a barrier (a file) after importing, then start together
    go = tmp_path / "go"
    code = ("import sys, time, pathlib; from aits.train import main\n"
            f"while not pathlib.Path({str(go)!r}).exists(): time.sleep(0.01)\n"
            "sys.exit(main(sys.argv[1:]))")
    argv = [sys.executable, "-c", code, *FAST, "--run-dir", str(tmp_path), "--run-name", "same"]
    procs = [subprocess.Popen(argv, stderr=subprocess.PIPE, text=True,
                              env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})
             for _ in range(2)]
    import time

    time.sleep(3)  # both imported and waiting
    go.touch()
    for p in procs:
        err = p.communicate(timeout=120)[1]
        assert p.returncode == 0, err
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_dir()) == ["same", "same-1"]
    for run in ("same", "same-1"):
        lines = (tmp_path / run / "metrics.jsonl").read_text().splitlines()
        assert [json.loads(x)["epoch"] for x in lines] == [1]  # not interleaved


def test_run_dir_new_is_atomic_under_a_barrier(tmp_path):
    import threading

    from aits.config import from_mapping
    from aits.runlog import RunDir

    cfg = from_mapping({"run_dir": str(tmp_path), "run_name": "x"})
    barrier, made, lock = threading.Barrier(6), [], threading.Lock()

    def start():
        barrier.wait()
        run = RunDir.new(cfg)
        with lock:
            made.append(run)

    threads = [threading.Thread(target=start) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(r.path.name for r in made) == ["x", "x-1", "x-2", "x-3", "x-4", "x-5"]


def test_a_run_directory_in_use_is_refused(tmp_path, capsys):
    from aits.runlog import RunDir, RunDirBusyError

    run = _train(tmp_path, "r", *FAST[:-1])
    holder = RunDir(run)  # as if another process were resuming it now
    with pytest.raises(RunDirBusyError, match=f"run directory '{run}' is in use"):
        RunDir(run)
    with pytest.raises(SystemExit) as info:
        main(["--resume", str(run / "checkpoints" / "epoch_0001.pt"), "--epochs", "2", "--quiet"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "is in use by another process" in err and str(run) in err
    holder.close()
    assert main(["--resume", str(run / "checkpoints" / "epoch_0001.pt"), "--epochs", "2",
                 "--quiet"]) == 0


def test_run_name_that_is_a_file_is_refused(tmp_path, capsys):
    (tmp_path / "taken").write_text("not a run")
    with pytest.raises(SystemExit) as info:
        main([*FAST, "--run-dir", str(tmp_path), "--run-name", "taken"])
    assert info.value.code == 2
    assert "is a file; choose another --run-name" in capsys.readouterr().err
    assert (tmp_path / "taken").read_text() == "not a run"


def test_stale_tmp_files_are_removed_when_a_run_is_opened(tmp_path):
    run = _train(tmp_path, "r", *FAST)
    stale = [run / "checkpoints" / ".epoch_0002.pt.abc123.tmp", run / ".metrics.jsonl.tmp"]
    for p in stale:
        p.write_bytes(b"half a file")
    assert main(["--resume", str(run / "checkpoints" / "epoch_0001.pt"), "--epochs", "2",
                 "--quiet"]) == 0
    assert not any(p.exists() for p in stale)
    assert not list(run.rglob("*.tmp"))


def test_a_full_disk_names_the_file_and_keeps_earlier_checkpoints(tmp_path, monkeypatch, capsys):
    import errno

    from aits import checkpoint

    real_fsync, calls = checkpoint.os.fsync, []

    def fsync(fd):  # the second checkpoint meets a full disk
        calls.append(fd)
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        real_fsync(fd)

    monkeypatch.setattr(checkpoint.os, "fsync", fsync)
    code = main([*FAST, "--epochs", "2", "--checkpoint-interval", "1", "--run-dir", str(tmp_path),
                 "--run-name", "r"])
    err = capsys.readouterr().err
    assert code == 1 and re.search(r"run failed: cannot write '.*epoch_0002.pt': No space left "
                                   r"on device; [\d,]+ bytes free on its disk", err)
    ckpts = tmp_path / "r" / "checkpoints"
    assert sorted(p.name for p in ckpts.iterdir()) == ["epoch_0001.pt"]  # no .tmp left
    assert load_checkpoint(ckpts / "epoch_0001.pt")["epoch"] == 1


def test_a_failed_append_leaves_whole_lines(tmp_path, monkeypatch):
    import errno
    import pathlib

    from aits.checkpoint import RunWriteError
    from aits.runlog import RunDir

    run = RunDir(tmp_path / "r", create=True)
    run.append_metrics({"epoch": 1})
    real_open = pathlib.Path.open

    class FullDisk:  # half of each write reaches the disk, then it is full
        def __init__(self, f):
            self.f = f

        def write(self, text):
            self.f.write(text[: len(text) // 2])
            self.f.flush()
            raise OSError(errno.ENOSPC, "No space left on device")

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

    monkeypatch.setattr(pathlib.Path, "open",
                        lambda self, *a, **k: FullDisk(real_open(self, *a, **k)))
    with pytest.raises(RunWriteError, match="metrics.jsonl': No space left on device"):
        run.append_metrics({"epoch": 2, "x": "y" * 100})
    monkeypatch.undo()
    assert run.read_metrics() == [{"epoch": 1}]


def test_resume_and_load_model_take_a_run_directory(tmp_path, capsys):
    """--resume RUN_DIR and load_model(RUN_DIR) use the newest checkpoint; fewer total
    epochs than the checkpoint has done are refused."""
    from aits.checkpoint import load_model

    args = [*FAST, "--run-dir", str(tmp_path), "--run-name", "r", "--checkpoint-interval", "1"]
    assert main([*args, "--epochs", "2"]) == 0
    run = tmp_path / "r"
    assert load_model(run).training is False
    with pytest.raises(SystemExit) as err:
        main(["--resume", str(run), "--epochs", "1", "--quiet"])
    assert err.value.code == 2
    assert "has done 2 epochs, more than epochs = 1" in capsys.readouterr().err
    assert main(["--resume", str(run), "--epochs", "3", "--quiet"]) == 0
    assert (run / "checkpoints" / "epoch_0003.pt").is_file()
    lines = (run / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["epoch"] for x in lines] == [1, 2, 3]
