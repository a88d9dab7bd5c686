"""Checkpoints: atomic writes, safe loading, refusal of foreign files, exact resume."""

from __future__ import annotations

import json
import pickle

import pytest
import torch

from aits.checkpoint import (
    CheckpointError,
    load_checkpoint,
    load_model,
    restore_model,
    save_checkpoint,
)
from aits.config import from_mapping
from aits.model import TimeStepNet
from aits.training import Trainer

TINY = dict(hidden=[16, 16], steps_per_epoch=12, rollout_steps=0, replay_steps=4,
            replay_batch_size=8, min_replay_size=4, lr=3e-3, dt_init=0.5, dropout=0.1)


def test_round_trip_plain_values(tmp_path):
    p = save_checkpoint(tmp_path / "c.pt", {"x": torch.arange(3), "n": [1, 2.5, None, "s"]})
    d = load_checkpoint(p, training=False)
    assert torch.equal(d["x"], torch.arange(3)) and d["n"] == [1, 2.5, None, "s"]
    assert list(tmp_path.iterdir()) == [p]


def test_write_is_atomic(tmp_path, monkeypatch):
    p = save_checkpoint(tmp_path / "c.pt", {"v": torch.ones(2)})
    good = p.read_bytes()
    real_save = torch.save

    def crash(obj, f, *a, **k):  # write part of the file, then die
        real_save(obj, f, *a, **k)
        f.truncate(10)
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(p, {"v": torch.zeros(2)})
    assert p.read_bytes() == good  # the old checkpoint is intact ...
    assert list(tmp_path.iterdir()) == [p]  # ... and no temporary file is left behind


class NotPlain:
    pass


@pytest.mark.parametrize("make", [
    lambda p: p.write_text("hello, not a checkpoint"),
    lambda p: torch.save({"model": {}}, p),  # a torch file without the aits marker
    lambda p: torch.save(torch.ones(3), p),
    lambda p: p.write_bytes(pickle.dumps(NotPlain(), protocol=2)),
    lambda p: torch.save({"format": "aits-train-checkpoint", "obj": NotPlain()}, p),
])
def test_foreign_files_are_refused(tmp_path, make):
    p = tmp_path / "foreign.pt"
    make(p)
    with pytest.raises(CheckpointError, match="is not an aits checkpoint"):
        load_checkpoint(p)


def test_missing_file_and_wrong_version(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "nope.pt")
    torch.save({"format": "aits-train-checkpoint", "version": 99}, tmp_path / "v.pt")
    with pytest.raises(CheckpointError, match="version 99"):
        load_checkpoint(tmp_path / "v.pt")


def test_model_shape_mismatch_is_refused():
    a = TimeStepNet("basic", hidden=[8, 8])
    with pytest.raises(CheckpointError, match=r"body.3.weight has shape \(8, 8\) in the "
                                              r"checkpoint, \(4, 8\) here"):
        restore_model(TimeStepNet("basic", hidden=[8, 4]), a.state_dict())
    with pytest.raises(CheckpointError, match="missing body.3.bias, body.3.weight"):
        restore_model(TimeStepNet("basic", hidden=[8, 4]), TimeStepNet("basic", hidden=[8]).state_dict())


def _run(tr: Trainer, epochs: int) -> list[dict]:
    return [tr.run_epoch()[0] for _ in range(epochs)]


def test_resume_is_bit_exact(tmp_path):
    """4 epochs in one go == 2 epochs, checkpoint, a fresh trainer from it, 2 more."""
    cfg = from_mapping({**TINY, "history_type": "delta_mag", "history_len": 2, "num_orbits": 2})
    full = Trainer(cfg)
    m_full = _run(full, 4)

    first = Trainer(cfg)
    m_first = _run(first, 2)
    save_checkpoint(tmp_path / "c.pt", first.state_dict())
    torch.manual_seed(999)  # whatever happened to the global RNG in between
    second = Trainer(cfg)
    second.load_state_dict(load_checkpoint(tmp_path / "c.pt"))
    m_second = _run(second, 2)

    assert m_first + m_second == m_full
    for a, b in zip(full.model.state_dict().values(), second.model.state_dict().values()):
        assert torch.equal(a, b)
    for t in ("pos", "vel", "acc", "time"):
        assert torch.equal(getattr(full.live, t), getattr(second.live, t))
    assert second.epoch == 4 and second.rounds == full.rounds


def test_load_model_predicts_like_the_trained_model(tmp_path):
    tr = Trainer(from_mapping({**TINY, "dropout": 0.0}))
    tr.run_epoch()
    save_checkpoint(tmp_path / "c.pt", tr.state_dict())
    model = load_model(tmp_path / "c.pt")
    assert not model.training
    tr.model.eval()
    assert torch.equal(model.predict_dt(tr.live), tr.model.predict_dt(tr.live))


def test_resume_on_another_device_type_warns(caplog):
    tr = Trainer(from_mapping(TINY))
    d = tr.state_dict()
    d["rng"]["device"] = "cuda"  # as if written on a GPU
    other = Trainer(from_mapping(TINY))
    with caplog.at_level("WARNING", logger="aits.training"):
        other.load_state_dict(d)
    assert "not bit-identical" in caplog.text
    assert torch.equal(other.live.pos, tr.live.pos)


def test_resume_from_an_earlier_checkpoint_drops_the_abandoned_branch(tmp_path):
    from aits.policies import resolve_checkpoint
    from aits.runlog import RunDir

    run = RunDir(tmp_path / "run", create=True)
    for epoch in (1, 2, 3, 10000):
        run.checkpoint_path(epoch).write_bytes(b"x")
        run.append_metrics({"epoch": epoch})
    assert resolve_checkpoint(run.path).name == "epoch_10000.pt"  # by number, not by name
    run.truncate(2)
    assert sorted(p.name for p in (run.path / "checkpoints").iterdir()) == [
        "epoch_0001.pt", "epoch_0002.pt"]
    assert resolve_checkpoint(run.path).name == "epoch_0002.pt"
    lines = (run.path / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2]
    assert not list(run.path.glob(".*.tmp"))


# ------------------------------------------------------------------ malformed checkpoints


@pytest.fixture(scope="module")
def good_state():
    """A real training checkpoint payload (one epoch of a tiny run)."""
    tr = Trainer(from_mapping(TINY))
    tr.run_epoch()
    return tr.state_dict()


def _set(d, key, value):
    d[key] = value


def _weight(d, fn):
    name = next(iter(d["model"]))
    d["model"][name] = fn(d["model"][name])


MALFORMED = {
    "no model": (lambda d: d.pop("model"), "no 'model' entry"),
    "no optimizer": (lambda d: d.pop("optimizer"), "no 'optimizer' entry"),
    "model is a list": (lambda d: _set(d, "model", [1, 2]), "'model' entry is a list"),
    "model is an int": (lambda d: _set(d, "model", 3), "'model' entry is a int"),
    "model is empty": (lambda d: _set(d, "model", {}), "holds no weights"),
    "NaN weights": (lambda d: _weight(d, lambda t: torch.full_like(t, float("nan"))),
                    "contains NaN or inf"),
    "int64 weights": (lambda d: _weight(d, lambda t: t.to(torch.int64)), "has dtype torch.int64"),
    "negative epoch": (lambda d: _set(d, "epoch", -5), "'epoch' is -5; it must be >= 0"),
    "bad RNG state": (lambda d: _set(d, "rng", {**d["rng"],
                                                "torch": torch.zeros(7, dtype=torch.uint8)}),
                      "RNG state 'torch' is invalid"),
    "RNG state not bytes": (lambda d: _set(d, "rng", {**d["rng"], "torch": torch.zeros(3)}),
                            "not a uint8 tensor"),
    "huge layers": (lambda d: (d["model_config"].update(hidden=[10**9, 10**9]),
                               d["config"].update(hidden=[10**9, 10**9])),
                    "model_config does not fit its weights"),
    "config disagrees with model config": (lambda d: d["config"].update(hidden=[10**9]),
                                           "setting 'hidden' is"),
    "optimizer without state": (lambda d: _set(d, "optimizer", {"x": 1}),
                                "lacks the 'state' and 'param_groups'"),
}


#: The kinds a model-only reader (load_model) must refuse too.
MODEL_KINDS = {"no model", "model is a list", "model is an int", "model is empty", "NaN weights",
               "int64 weights", "huge layers", "config disagrees with model config"}


@pytest.mark.parametrize("kind", sorted(MALFORMED))
def test_malformed_checkpoints_are_refused_naming_the_file(tmp_path, good_state, kind):
    import copy

    spoil, match = MALFORMED[kind]
    d = copy.deepcopy(good_state)
    spoil(d)
    p = save_checkpoint(tmp_path / "bad.pt", d)
    readers = (load_checkpoint, load_model) if kind in MODEL_KINDS else (load_checkpoint,)
    for reader in readers:
        with pytest.raises(CheckpointError, match="bad.pt") as info:
            reader(p)
        assert match in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(CheckpointError, match="checkpoint state is malformed"):
        Trainer(from_mapping(TINY)).load_state_dict(d)  # resume checks the same


def test_model_only_checkpoint_loads_and_is_checked(tmp_path):
    net = TimeStepNet("basic", hidden=[8]).double()
    p = save_checkpoint(tmp_path / "m.pt", {"model_config": net.config(),
                                            "model": net.state_dict()})
    assert isinstance(load_model(p), TimeStepNet)
    with pytest.raises(CheckpointError, match="no 'config' entry"):
        load_checkpoint(p)  # not a training checkpoint: cannot be resumed
    save_checkpoint(p, {"model_config": {**net.config(), "hidden": [10**9]},
                        "model": net.state_dict()})
    with pytest.raises(CheckpointError, match="m.pt' is malformed: its model_config does not fit"):
        load_model(p)


def test_a_model_of_another_feature_set_is_refused_with_the_fix(tmp_path):
    # a network written when the 'encounter' kind had 16 features (it has 14)
    net = TimeStepNet("encounter", hidden=[8], output="aarseth").double()
    weights = net.state_dict()
    first = next(k for k, v in weights.items() if v.shape[-1] == net.in_features)
    weights[first] = torch.zeros(weights[first].shape[:-1] + (16,), dtype=torch.float64)
    p = save_checkpoint(tmp_path / "old.pt", {"model_config": net.config(), "model": weights})
    with pytest.raises(CheckpointError, match="takes 16 input features, but its feature spec "
                       r"\('encounter'\) gives 14 .* retrain it"):
        load_model(p)


def test_good_checkpoint_passes_validation(tmp_path, good_state):
    p = save_checkpoint(tmp_path / "good.pt", good_state)
    assert load_checkpoint(p)["epoch"] == 1
    assert isinstance(load_model(p), TimeStepNet)


class RunsACommand:
    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.target}",))


@pytest.mark.parametrize("wrap", [lambda obj: obj, lambda obj: {"format": "aits-train-checkpoint",
                                                                "version": 1, "model": obj}])
def test_crafted_pickle_is_refused_without_running(tmp_path, wrap):
    target = tmp_path / "ran"
    p = tmp_path / "evil.pt"
    torch.save(wrap(RunsACommand(target)), p)
    with pytest.raises(CheckpointError, match="pickled object") as info:
        load_model(p)
    assert "evil.pt" in str(info.value) and "\n" not in str(info.value)
    assert not target.exists()
    torch.load(p, weights_only=False)  # positive control: an unrestricted unpickler runs it
    assert target.exists()
