"""Training across 2 processes (gloo, CPU), spawned by the tests themselves.

Each spawned test runs its workers under a hard wall-clock limit (``SPAWN_TIMEOUT``)
with collectives timing out sooner (``AITS_DIST_TIMEOUT``): a hang is a failure,
never a stuck CI job. The workers take the torchrun path: the environment
variables torchrun sets, then :func:`aits.train.main`.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import socket
import time
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from aits.checkpoint import load_checkpoint
from aits.config import ConfigError, from_mapping
from aits.distributed import Group, exit_now, init_from_env, shard_range, shutdown
from aits.state import rollout
from aits.train import main
from aits.training import Trainer

WORLD = 2
SPAWN_TIMEOUT = 120.0  # seconds for a whole spawned test
RTOL = 1e-10  # float64 weights, P = 2 against one process (summation order differs)

COMMON = ["--hidden", "16", "16", "--dropout", "0", "--steps-per-epoch", "8", "--replay-steps",
          "4", "--replay-batch-size", "3", "--min-replay-size", "4", "--rollout-steps", "0",
          "--no-plot", "--quiet", "--device", "cpu", "--lr", "3e-3"]
# 4 orbits (2 per rank) that need retrains; history features exercise the gathered history
ORBITS = ["--num-orbits", "4", "--e-range", "0.3", "0.9", "--dt-init", "0.5",
          "--history-type", "delta_mag", "--history-len", "2"]
# 2 orbits: with dt = 0.5 the wide one (system 0, rank 0) always passes, the tight one
# (system 1, rank 1) needs many retrains
LOPSIDED = ["--num-orbits", "2", "--e-range", "0.5", "0.5", "--a-range", "0.3", "3.0", "--seed",
            "3", "--output", "direct", "--dt-init", "0.5"]
REPLAY = dict(hidden=[16, 16], dropout=0.0, num_orbits=4, e_range=[0.3, 0.9], dt_init=0.5,
              steps_per_epoch=8, replay_steps=6, replay_batch_size=2, min_replay_size=4,
              lr=1e-2, device="cpu", rollout_steps=0, quiet=True, plot=False)


# ---------------------------------------------------------------------------- workers


def _replay_job(cfg: dict, out: str) -> dict:
    """Part 1, then a model made too bold so that Part 2 must train."""
    tr = Trainer(from_mapping(cfg))
    traj, _, _ = tr.collect()
    with torch.no_grad():
        tr.model.head.bias += 1.5
    m = tr.replay(traj)
    if tr.group.is_main:
        torch.save({"model": tr.model.state_dict()}, out)
    return m


def _worker(rank: int, port: int, jobs: list, out_dir: str) -> None:
    """One rank: join the group as under torchrun (env://), then run ``jobs`` in order
    (``main`` reuses a group it did not create)."""
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(WORLD),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), AITS_DIST_TIMEOUT="60")
    torch.set_num_threads(1)
    init_from_env(torch.device("cpu"))
    results = []
    try:
        for kind, arg in jobs:
            if kind == "main":
                try:
                    results.append(main(arg))
                except SystemExit as e:
                    results.append(e.code)
            else:
                results.append(_replay_job(*arg))
    finally:
        shutdown()
    Path(out_dir, f"rank{rank}.json").write_text(json.dumps(results))
    # skip interpreter teardown: torch 2.13's gloo sometimes aborts there ("terminate called
    # without an active exception") after all work is done; see aits.distributed.exit_now
    exit_now(0)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def spawn(jobs: list, out_dir: Path) -> list[list]:
    """Run ``jobs`` in order on ``WORLD`` processes; each rank's list of results."""
    ctx = mp.start_processes(_worker, args=(_free_port(), jobs, str(out_dir)),
                             nprocs=WORLD, join=False, start_method="spawn")
    deadline = time.monotonic() + SPAWN_TIMEOUT
    try:
        while not ctx.join(timeout=max(0.1, deadline - time.monotonic())):
            if time.monotonic() >= deadline:
                pytest.fail(f"distributed workers still running after {SPAWN_TIMEOUT} s (hang)")
    finally:
        for p in ctx.processes:
            if p.is_alive():
                p.kill()
                p.join(5)
    return [json.loads((out_dir / f"rank{r}.json").read_text()) for r in range(WORLD)]


# ------------------------------------------------------------------------ comparisons


def _ckpt(run: Path, epoch: int) -> dict:
    return load_checkpoint(run / "checkpoints" / f"epoch_{epoch:04d}.pt")


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-300))


def assert_same_run(a: dict, b: dict, rtol: float = RTOL) -> None:
    """Two checkpoints hold the same model, live batch and history (within ``rtol``)."""
    assert a["epoch"] == b["epoch"] and a["rounds"] == b["rounds"]
    for k in b["model"]:
        assert _rel(a["model"][k], b["model"][k]) <= rtol, k
    for key in ("pos", "vel", "time"):
        assert _rel(a["live"][key], b["live"][key]) <= rtol, key
    assert len(a["history"]) == len(b["history"])
    for ha, hb in zip(a["history"], b["history"]):
        assert _rel(ha["pos"], hb["pos"]) <= rtol


def _metrics(run: Path) -> list[dict]:
    return [{k: v for k, v in json.loads(x).items() if k != "epoch_time"}
            for x in (run / "metrics.jsonl").read_text().splitlines()]


def assert_close_metrics(a: list[dict], b: list[dict]) -> None:
    assert len(a) == len(b)
    for ma, mb in zip(a, b):
        assert ma.keys() == mb.keys()
        for k in ma:
            if isinstance(mb[k], float):
                assert ma[k] == pytest.approx(mb[k], rel=1e-8), k
            else:
                assert ma[k] == mb[k], k


# ------------------------------------------------------------------------------ tests


def test_shard_range_splits_evenly_or_refuses():
    assert [shard_range(6, r, 3) for r in range(3)] == [(0, 2), (2, 4), (4, 6)]
    assert shard_range(1, 0, 1) == (0, 1)
    for n in (1, 3):
        with pytest.raises(ConfigError, match=f"{n} systems .* cannot be split evenly over 2"):
            shard_range(n, 0, 2)


def test_group_without_process_group_is_a_no_op():
    g = Group.current()
    t = torch.arange(3.0)
    assert (g.rank, g.world, g.active, g.is_main) == (0, 1, False, True)
    assert g.sum(t) is t and g.max(t) is t and g.gather(t) is t
    assert g.any(True, t.device) and g.max_float(2.5, t.device) == 2.5


def test_two_processes_equal_one_and_resume_across_process_counts(tmp_path):
    def args(name, epochs, *extra):
        return [*COMMON, *ORBITS, "--run-dir", str(tmp_path), "--run-name", name, "--epochs",
                str(epochs), "--checkpoint-interval", "2", *extra]

    assert main(args("s4", 4)) == 0  # the single-process reference over the same 4 orbits
    assert main(args("s2", 2)) == 0
    resume = lambda run: ["--resume", str(tmp_path / run / "checkpoints" / "epoch_0002.pt"),
                          "--epochs", "4", "--quiet"]  # noqa: E731
    results = spawn([("main", args("d4", 4)), ("main", args("d2", 2)), ("main", resume("d2")),
                     ("main", resume("s2"))], tmp_path)
    assert results == [[0, 0, 0, 0]] * WORLD
    s4 = _ckpt(tmp_path / "s4", 4)
    # (a) P = 2 equals one process over the same orbits, at every checkpoint
    assert_same_run(_ckpt(tmp_path / "d4", 2), _ckpt(tmp_path / "s4", 2))
    assert_same_run(_ckpt(tmp_path / "d4", 4), s4)
    assert_close_metrics(_metrics(tmp_path / "d4"), _metrics(tmp_path / "s4"))
    assert sum(m["p1_retrains"] for m in _metrics(tmp_path / "d4")) > 0
    # only rank 0 wrote: one run directory per run, with every system's steps
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d2", "d4", "rank0.json", "rank1.json",
                                                          "s2", "s4"]
    steps = (tmp_path / "d4" / "steps.csv").read_text().splitlines()
    assert {line.split(",")[2] for line in steps[1:]} == {"0", "1", "2", "3"}
    # (b) resume: P = 2 from a P = 2 checkpoint is the uninterrupted P = 2 run, bit for bit;
    # P = 2 from a one-process checkpoint, and one process from a P = 2 one, equal s4
    d4 = _ckpt(tmp_path / "d4", 4)
    assert_same_run(_ckpt(tmp_path / "d2", 4), d4, rtol=0.0)
    assert _metrics(tmp_path / "d2") == _metrics(tmp_path / "d4")
    assert_same_run(_ckpt(tmp_path / "s2", 4), s4)
    shutil.copytree(tmp_path / "d2", tmp_path / "d2p1")
    assert main(resume("d2p1")) == 0
    assert_same_run(_ckpt(tmp_path / "d2p1", 4), s4)


def test_no_hang_when_one_rank_retrains_far_more_and_part2_agrees(tmp_path):
    # the premise: at dt_init system 0 (rank 0) passes and system 1 (rank 1) fails
    tr = Trainer(from_mapping({"num_orbits": 2, "e_range": [0.5, 0.5], "a_range": [0.3, 3.0],
                               "seed": 3, "output": "direct", "dt_init": 0.5, "device": "cpu"}))
    rel = tr.gate.error(tr.live, rollout(tr.live, tr.model.predict_dt(tr.live), 1))
    assert tr.gate.passes(rel).tolist() == [True, False]

    def args(name, *extra):
        return [*COMMON, *LOPSIDED, "--run-dir", str(tmp_path), "--run-name", name,
                "--epochs", "1", *extra]

    cap = ["--max-retrain-steps", "3", "--lr", "1e-12"]
    assert main(args("one")) == 0
    assert main(args("one-cap", *cap)) == 1
    results = spawn([("main", args("two")), ("main", args("two-cap", *cap)),
                     ("main", args("odd", "--num-orbits", "3")),
                     ("replay", (REPLAY, str(tmp_path / "replay.pt")))], tmp_path)
    # (c) every rank finished every job: trained; both gave up together at the retrain
    # cap (exit status 1); both refused 3 systems over 2 processes (exit status 2)
    assert [r[:3] for r in results] == [[0, 1, 2]] * WORLD
    m = _metrics(tmp_path / "two")[0]
    assert m["p1_retrains"] >= 10 and m["p1_rejected"] == m["p1_retrains"]  # 1 failing a time
    assert_same_run(_ckpt(tmp_path / "two", 1), _ckpt(tmp_path / "one", 1))
    assert_close_metrics([m], _metrics(tmp_path / "one"))
    # Part 2 with failing draws, some of which live on one rank only (batch of 2)
    m2 = results[0][3]
    assert results[1][3] == m2 and m2["p2_iterations"] > 1
    ref = Trainer(from_mapping(REPLAY))
    traj, _, _ = ref.collect()
    with torch.no_grad():
        ref.model.head.bias += 1.5
    m1 = ref.replay(traj)
    assert m2["p2_iterations"] == m1["p2_iterations"]
    for k in ("p2_pass_rate_first", "p2_pass_rate_last"):
        assert math.isclose(m2[k], m1[k], rel_tol=1e-12)
    got = torch.load(tmp_path / "replay.pt", weights_only=True)["model"]
    for k, v in ref.model.state_dict().items():
        assert _rel(got[k], v) <= RTOL, k
