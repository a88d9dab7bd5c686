"""Every bad-input probe of issue 14 through the real command lines.

Each probe runs ``python -m aits.<tool> ...`` (the module run as ``__main__``, as the
command line runs it) and must end with the promised exit status (2 bad input, 1 a
run that failed), one line on stderr (``python -m aits.<tool>: error: ...`` or
``... run failed: ...``) and no traceback. To keep the module fast, the probes of
one group run one after another in a single subprocess (:data:`DRIVER`), one
``runpy`` execution each with its own captured stderr; the probes that need
processes of their own (two at one instant) start them.

``TestLeadOwned`` holds the probes whose fix lies in the configuration, simulate
and evaluate modules and in ``aits.train.main`` (the full disk): they are the
list that change must make green.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from aits.checkpoint import load_checkpoint, save_checkpoint

#: Runs the probes given as JSON on stdin; prints ``[[status, stderr], ...]``.
DRIVER = r"""
import contextlib, errno, io, json, logging, os, runpy, sys, traceback, warnings
warnings.filterwarnings("ignore", category=RuntimeWarning, module="runpy")
results = []
for probe in json.load(sys.stdin):
    err, out = io.StringIO(), io.StringIO()
    logging.root.handlers.clear()
    real_fsync, calls = os.fsync, []
    if probe.get("enospc_at"):  # the n-th fsync (a checkpoint write) meets a full disk
        def fsync(fd, n=probe["enospc_at"]):
            calls.append(fd)
            if len(calls) >= n:
                raise OSError(errno.ENOSPC, "No space left on device")
            real_fsync(fd)
        os.fsync = fsync
    sys.argv = ["python -m aits." + probe["tool"], *probe["argv"]]
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
        try:
            runpy.run_module("aits." + probe["tool"], run_name="__main__", alter_sys=True)
            status = 0
        except SystemExit as e:
            status = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
            if isinstance(e.code, str):
                err.write(e.code + "\n")
        except BaseException:
            status = "uncaught"
            err.write(traceback.format_exc())
    os.fsync = real_fsync
    results.append([status, err.getvalue()])
print(json.dumps(results))
"""

TRAIN = ["--hidden", "8", "--steps-per-epoch", "5", "--rollout-steps", "0", "--epochs", "1",
         "--quiet", "--no-plot"]
SIM = ["--scenario", "binary-e0.9", "--policy", "model", "--steps", "5", "--quiet"]
EVAL = ["--scenarios", "binary-e0.9", "--policies", "fixed", "--steps", "5", "--no-rebound",
        "--quiet"]


def run_probes(probes: dict[str, dict], cwd: Path) -> dict[str, tuple[object, str]]:
    """Run ``probes`` (name -> {"tool", "argv"[, "enospc_at"]}) in one subprocess."""
    names = list(probes)
    proc = subprocess.run([sys.executable, "-c", DRIVER],
                          input=json.dumps([probes[n] for n in names]), capture_output=True,
                          text=True, cwd=cwd, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    return dict(zip(names, (tuple(r) for r in json.loads(proc.stdout.splitlines()[-1]))))


def assert_one_line(result: tuple[object, str], status: int, tool: str, *words: str) -> str:
    """Exit ``status``, one stderr line naming the tool (or ``run failed:``), no traceback
    (after argparse's usage block, which ``parser.error`` prints first)."""
    code, err = result
    assert "Traceback" not in err, err
    assert code == status, err
    lines = err.strip().splitlines()
    if lines and lines[0].startswith("usage: "):  # argparse's usage block may come first
        lines = lines[1:]
        while lines and lines[0].startswith(" "):
            lines = lines[1:]
    assert len(lines) == 1, err
    line = lines[0]
    prefix = f"python -m aits.{tool}: error: "
    assert line.startswith(prefix) or "run failed:" in line, line
    for w in words:
        assert w in line, line
    return line


def _ic(path: Path, rows: list[list[float]]) -> str:
    path.write_text("".join(" ".join(map(repr, r)) + "\n" for r in rows))
    return str(path)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("bad_input")


@pytest.fixture(scope="module")
def trained(workdir: Path) -> Path:
    """One tiny trained run, shared by every probe: its final checkpoint."""
    proc = subprocess.run([sys.executable, "-m", "aits.train", *TRAIN, "--run-dir",
                           str(workdir / "runs"), "--run-name", "good"],
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr
    return workdir / "runs" / "good" / "checkpoints" / "epoch_0001.pt"


def _first_weight(d: dict, fn) -> None:
    name = next(iter(d["model"]))
    d["model"][name] = fn(d["model"][name])


#: Malformed checkpoints: name -> (how to spoil a good one, words the error must hold).
SPOILED = {
    "no-model": (lambda d: d.pop("model"), "no 'model' entry"),
    "no-optimizer": (lambda d: d.pop("optimizer"), "no 'optimizer' entry"),
    "model-list": (lambda d: d.update(model=[1.0, 2.0]), "'model' entry is a list"),
    "model-int": (lambda d: d.update(model=7), "'model' entry is a int"),
    "model-empty": (lambda d: d.update(model={}), "holds no weights"),
    "nan-weights": (lambda d: _first_weight(d, lambda t: t * float("nan")), "NaN or inf"),
    "int64-weights": (lambda d: _first_weight(d, lambda t: t.to(torch.int64)), "torch.int64"),
    "negative-epoch": (lambda d: d.update(epoch=-5), "'epoch' is -5"),
    "bad-rng": (lambda d: d["rng"].update(torch=torch.zeros(9, dtype=torch.uint8)),
                "RNG state 'torch' is invalid"),
    "huge-layers": (lambda d: (d["model_config"].update(hidden=[10**9] * 3),
                               d["config"].update(hidden=[10**9] * 3)),
                    "model_config does not fit its weights"),
}

#: What a model-only reader (simulate, evaluate) reads, and so must refuse.
MODEL_KINDS = {"no-model", "model-list", "model-int", "model-empty", "nan-weights",
               "int64-weights", "huge-layers"}


class Evil:
    """Unpickled by an unrestricted loader, it would create ``target``."""

    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self):
        return (os.system, (f"touch {self.target}",))


@pytest.fixture(scope="module")
def mine(workdir: Path, trained: Path) -> dict[str, tuple[object, str]]:
    """The probes fixed on this branch, run in one subprocess."""
    w = workdir
    good = load_checkpoint(trained)
    probes: dict[str, dict] = {}
    for name, (spoil, _) in SPOILED.items():
        d = copy.deepcopy(good)
        spoil(d)
        p = str(save_checkpoint(w / f"{name}.pt", d))
        probes[f"train-{name}"] = {"tool": "train", "argv": ["--resume", p, "--quiet"]}
        if name in MODEL_KINDS:
            probes[f"simulate-{name}"] = {"tool": "simulate", "argv": [*SIM, "--checkpoint", p]}
            probes[f"evaluate-{name}"] = {
                "tool": "evaluate", "argv": [*EVAL, "--checkpoint", p, "--out", str(w / "ev")]}
    torch.save({"format": "aits-train-checkpoint", "version": 1, "model": Evil(w / "pwned")},
               w / "evil.pt")
    for tool, argv in (("train", ["--resume", str(w / "evil.pt"), "--quiet"]),
                       ("simulate", [*SIM, "--checkpoint", str(w / "evil.pt")]),
                       ("evaluate", [*EVAL, "--checkpoint", str(w / "evil.pt")])):
        probes[f"{tool}-pickle"] = {"tool": tool, "argv": argv}
    same = _ic(w / "same.txt", [[1, 0.5, 0, 0, 0.1], [1, 0.5, 0, 0, -0.1]])
    huge = _ic(w / "huge.txt", [[1, 1e300, 0, 0, 0.1], [1, -1e300, 0, 0, -0.1]])
    for label, ic in (("coincident", same), ("huge", huge)):
        probes[f"train-ic-{label}"] = {
            "tool": "train", "argv": [*TRAIN, "--ic-file", ic, "--run-dir", str(w / "runs")]}
        probes[f"simulate-ic-{label}"] = {
            "tool": "simulate", "argv": ["--ic", ic, "--policy", "fixed", "--dt", "0.01",
                                         "--steps", "5", "--quiet"]}
    (w / "a-file").write_text("not a directory")
    probes["train-run-name-file"] = {
        "tool": "train", "argv": [*TRAIN, "--run-dir", str(w), "--run-name", "a-file"]}
    probes["train-resume-busy"] = {"tool": "train", "argv": ["--resume", str(trained), "--epochs",
                                                             "2", "--quiet"]}
    from aits.runlog import RunDir

    holder = RunDir(trained.parent.parent)  # another process is resuming this run now
    try:
        return run_probes(probes, w)
    finally:
        holder.close()


@pytest.mark.parametrize("tool,kind", [(t, k) for k in sorted(SPOILED) for t in
                                       ("train", "simulate", "evaluate")
                                       if t == "train" or k in MODEL_KINDS])
def test_malformed_checkpoint(mine, workdir, tool, kind):
    assert_one_line(mine[f"{tool}-{kind}"], 2, tool, f"{kind}.pt", SPOILED[kind][1])


@pytest.mark.parametrize("tool", ["train", "simulate", "evaluate"])
def test_crafted_pickle_is_refused_without_running(mine, workdir, tool):
    assert_one_line(mine[f"{tool}-pickle"], 2, tool, "evil.pt", "pickled object")
    assert not (workdir / "pwned").exists()


@pytest.mark.parametrize("tool", ["train", "simulate"])
def test_coincident_bodies_without_softening(mine, tool):
    assert_one_line(mine[f"{tool}-ic-coincident"], 2, tool, "same.txt:2",
                    "set a softening > 0")


@pytest.mark.parametrize("tool", ["train", "simulate"])
def test_positions_whose_energies_overflow(mine, tool):
    assert_one_line(mine[f"{tool}-ic-huge"], 2, tool, "huge.txt:1", "position too large")


def test_run_name_that_is_a_file(mine, workdir):
    assert_one_line(mine["train-run-name-file"], 2, "train", "'a-file'", "is a file")
    assert (workdir / "a-file").read_text() == "not a directory"


def test_resume_of_a_run_in_use(mine, trained):
    assert_one_line(mine["train-resume-busy"], 2, "train", str(trained.parent.parent),
                    "in use by another process")
    assert load_checkpoint(trained)["epoch"] == 1


def test_a_resume_of_a_run_in_use_is_refused(workdir, trained):
    """While another process holds the run's lock, ``--resume`` exits 2 naming the run
    and leaves it untouched; once the lock is released the same command resumes it.
    (Holding the lock here, instead of racing two resumes, keeps the test independent
    of how fast each process starts.)"""
    import fcntl

    run = workdir / "runs" / "twice"
    shutil.copytree(trained.parent.parent, run)
    argv = [sys.executable, "-m", "aits.train", "--resume",
            str(run / "checkpoints" / "epoch_0001.pt"), "--epochs", "3", "--quiet"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    before = (run / "metrics.jsonl").read_text()
    fd = os.open(run / "run.lock", os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # "another process" holds the run
        busy = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=120)
        assert_one_line((busy.returncode, busy.stderr), 2, "train", str(run),
                        "in use by another process")
        assert (run / "metrics.jsonl").read_text() == before
    finally:
        os.close(fd)
    done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    lines = (run / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["epoch"] for x in lines] == [1, 2, 3]


class TestLeadOwned:
    """Probes whose fix lies in files owned elsewhere (config, simulate, evaluate,
    ``aits.train.main``); they fail until those changes land."""

    @pytest.fixture(scope="class")
    @classmethod
    def lead(cls, workdir: Path) -> dict[str, tuple[object, str]]:
        w = workdir
        (w / "trian.toml").write_text("[trian]\nepochs = 3\n")
        (w / "latin1.toml").write_bytes("epochs = 1 # caf\xe9\n".encode("latin-1"))
        (w / "blocker").write_text("a file where a directory should be")
        below = str(w / "blocker" / "out")
        probes = {
            "train-misspelled-table": {"tool": "train", "argv": [*TRAIN, "--config",
                                                                 str(w / "trian.toml")]},
            "train-non-utf8-toml": {"tool": "train", "argv": [*TRAIN, "--config",
                                                              str(w / "latin1.toml")]},
            "simulate-non-utf8-toml": {"tool": "simulate", "argv": [
                "--scenario", "figure8", "--policy", "fixed", "--dt", "0.01", "--steps", "5",
                "--config", str(w / "latin1.toml")]},
            "evaluate-non-utf8-toml": {"tool": "evaluate", "argv": [
                *EVAL, "--tolerance", "1e-3", "--config", str(w / "latin1.toml")]},
            "train-huge-seed": {"tool": "train", "argv": [*TRAIN, "--seed",
                                                          "99999999999999999999"]},
            "simulate-huge-seed": {"tool": "simulate", "argv": [
                "--scenario", "random", "--policy", "fixed", "--dt", "0.01", "--steps", "5",
                "--seed", "99999999999999999999"]},
            "simulate-scenario-softening": {"tool": "simulate", "argv": [
                "--scenario", "figure8", "--softening", "-1", "--policy", "fixed", "--dt",
                "0.01", "--steps", "5", "--quiet"]},
            "train-unwritable-run-dir": {"tool": "train", "argv": [*TRAIN, "--run-dir", below]},
            "simulate-unwritable-out": {"tool": "simulate", "argv": [
                "--scenario", "figure8", "--policy", "fixed", "--dt", "0.01", "--steps", "5",
                "--quiet", "--out", below]},
            "evaluate-unwritable-out": {"tool": "evaluate", "argv": [
                *EVAL, "--tolerance", "1e-3", "--out", below]},
            "train-full-disk": {"tool": "train", "enospc_at": 2, "argv": [
                *TRAIN, "--epochs", "2", "--checkpoint-interval", "1", "--run-dir",
                str(w / "runs"), "--run-name", "full"]},
        }
        return run_probes(probes, w)

    def test_misspelled_table_is_refused(self, lead):
        assert_one_line(lead["train-misspelled-table"], 2, "train", "trian")

    @pytest.mark.parametrize("tool", ["train", "simulate", "evaluate"])
    def test_toml_that_is_not_utf8(self, lead, tool):
        assert_one_line(lead[f"{tool}-non-utf8-toml"], 2, tool, "latin1.toml", "UTF-8")

    @pytest.mark.parametrize("tool", ["train", "simulate"])
    def test_seed_out_of_range(self, lead, tool):
        assert_one_line(lead[f"{tool}-huge-seed"], 2, tool, "seed")

    def test_softening_with_a_named_scenario(self, lead):
        assert_one_line(lead["simulate-scenario-softening"], 2, "simulate", "softening")

    @pytest.mark.parametrize("probe", ["train-unwritable-run-dir", "simulate-unwritable-out",
                                       "evaluate-unwritable-out"])
    def test_unwritable_output_location(self, lead, probe):
        tool = probe.split("-", 1)[0]
        assert_one_line(lead[probe], 2, tool, "blocker")

    def test_full_disk_during_training(self, lead, workdir):
        line = assert_one_line(lead["train-full-disk"], 1, "train", "run failed: cannot write",
                               "epoch_0002.pt", "No space left on device")
        assert "bytes free" in line
        ckpts = workdir / "runs" / "full" / "checkpoints"
        assert sorted(p.name for p in ckpts.iterdir()) == ["epoch_0001.pt"]
        assert load_checkpoint(ckpts / "epoch_0001.pt")["epoch"] == 1


def test_int64_weights_probe_is_really_int(workdir, mine):
    """Guard of the probe itself: the spoiled file holds what its name says."""
    d = torch.load(workdir / "int64-weights.pt", weights_only=True)
    assert not next(iter(d["model"].values())).is_floating_point()
    assert np.isnan(next(iter(torch.load(workdir / "nan-weights.pt", weights_only=True)["model"]
                               .values())).numpy()).all()
