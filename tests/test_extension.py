"""The compiled extension refuses to load under a torch it was not built for."""

from __future__ import annotations

import importlib

import pytest
import torch

from aits import _extension


def test_build_records_the_running_torch():
    build = importlib.import_module("aits._build_config")
    assert build.TORCH_VERSION == torch.__version__


def test_mismatched_torch_is_refused_with_rebuild_instructions(monkeypatch):
    build = importlib.import_module("aits._build_config")
    monkeypatch.setattr(build, "TORCH_VERSION", "1.0.0+old")
    with pytest.raises(ImportError, match=r"(?s)built against torch 1\.0\.0\+old .* pip install --no-build-isolation"):
        _extension.load()


def test_missing_build_is_explained(monkeypatch):
    real_import = importlib.import_module

    def fake_import(name, *args):
        if name == "aits._build_config":
            raise ModuleNotFoundError(name)
        return real_import(name, *args)

    monkeypatch.setattr(importlib, "import_module", fake_import)
    with pytest.raises(ImportError, match=r"(?s)compiled extension is missing: Python imported the aits source tree.*editable.*`pytest`, not `python -m pytest`"):
        _extension.load()


def test_ops_are_registered_for_cpu():
    for name in ("accelerations", "potential_energy", "leapfrog_step"):
        assert torch._C._dispatch_has_kernel_for_dispatch_key(f"aits::{name}", "CPU")
