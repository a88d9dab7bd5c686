"""The notebook session of docs/notebook.md (the README's) runs as written."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import torch

from aits.config import TrainConfig, validate
from aits.train import run

DOC = Path(__file__).resolve().parent.parent / "docs" / "notebook.md"


def snippet() -> str:
    """The first ```python block of docs/notebook.md."""
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)
    assert blocks, f"{DOC} has no ```python block"
    return blocks[0]


def test_the_snippet_is_a_short_session():
    lines = [line for line in snippet().splitlines() if line.strip()]
    assert len(lines) <= 10
    assert "aits.simulate(" in snippet() and "energy_error" in snippet()


def test_the_notebook_snippet_runs(tmp_path):
    torch.set_num_threads(1)
    cfg = validate(TrainConfig(
        epochs=1, steps_per_epoch=10, replay_steps=3, replay_batch_size=8, min_replay_size=4,
        hidden=[8, 8], rollout_steps=0, quiet=True, plot=False, device="cpu",
        run_dir=str(tmp_path / "runs"), run_name="binary-e0.9",
    ))
    run(cfg)
    assert list((tmp_path / "runs" / "binary-e0.9" / "checkpoints").glob("epoch_*.pt"))
    env = {**os.environ, "MPLBACKEND": "Agg", "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", snippet()], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert re.search(r"^\d+ steps; final \|dE/E\| = ", done.stdout, flags=re.M), done.stdout
    png = tmp_path / "energy_error.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
