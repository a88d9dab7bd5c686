"""Shared helpers for the tests: sample systems and tolerant comparisons."""

from __future__ import annotations

import torch

DTYPES = [torch.float32, torch.float64]
# Relative tolerance of a native result against the pure-torch reference.
RTOL = {torch.float64: 1e-12, torch.float32: 2e-5}


def make_system(
    n: int = 7,
    dim: int = 3,
    batch: int | None = 2,
    dtype: torch.dtype = torch.float64,
    device: str = "cpu",
    seed: int = 0,
    requires_grad: bool = False,
) -> dict[str, torch.Tensor]:
    """Random well-separated bodies: pos/vel (B, N, D) or (N, D), mass (B, N) or (N,), dt."""
    gen = torch.Generator().manual_seed(seed)
    lead = () if batch is None else (batch,)
    pos = torch.randn(lead + (n, dim), generator=gen, dtype=torch.float64) * 2.0
    vel = torch.randn(lead + (n, dim), generator=gen, dtype=torch.float64) * 0.3
    mass = torch.rand(lead + (n,), generator=gen, dtype=torch.float64) + 0.1
    dt = (
        torch.tensor(0.01, dtype=torch.float64)
        if batch is None
        else torch.rand(batch, generator=gen, dtype=torch.float64) * 0.01 + 0.005
    )
    out = {"pos": pos, "vel": vel, "mass": mass, "dt": dt}
    return {
        k: v.to(device=device, dtype=dtype).requires_grad_(requires_grad) for k, v in out.items()
    }


def rel_err(actual: torch.Tensor, expected: torch.Tensor) -> float:
    """max |actual - expected| / max |expected| (norm-wise, robust to cancelling components)."""
    scale = expected.abs().max().item() if expected.numel() else 0.0
    diff = (actual - expected).abs().max().item() if expected.numel() else 0.0
    return diff / scale if scale > 0 else diff


def assert_close_rel(actual: torch.Tensor, expected: torch.Tensor, tol: float) -> None:
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    assert actual.dtype == expected.dtype
    err = rel_err(actual.detach(), expected.detach())
    assert err <= tol, f"relative error {err:.3e} > {tol:.1e}"


def whole_run_resume_matches(tmp_path, common: list[str], epochs: int) -> tuple[dict, dict]:
    """Train ``epochs`` epochs in one go (run "full") and one epoch then resumed to
    ``epochs`` (run "half") with the ``aits.train`` arguments ``common``; assert their
    last checkpoints hold the same model and live state, and return them."""
    from aits.checkpoint import load_checkpoint
    from aits.train import main

    assert main([*common, "--run-dir", str(tmp_path), "--checkpoint-interval", "1",
                 "--run-name", "full", "--epochs", str(epochs)]) == 0
    assert main([*common, "--run-dir", str(tmp_path), "--checkpoint-interval", "1",
                 "--run-name", "half", "--epochs", "1"]) == 0
    assert main(["--resume", str(tmp_path / "half" / "checkpoints" / "epoch_0001.pt"),
                 "--epochs", str(epochs), "--quiet"]) == 0
    last = f"epoch_{epochs:04d}.pt"
    a = load_checkpoint(tmp_path / "full" / "checkpoints" / last)
    b = load_checkpoint(tmp_path / "half" / "checkpoints" / last)
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert torch.equal(a["whole_run"][0]["state"]["pos"], b["whole_run"][0]["state"]["pos"])
    return a, b
