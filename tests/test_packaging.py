"""The installed package: metadata, the ``aits`` console command, the public API."""

from __future__ import annotations

import ast
import importlib
import importlib.metadata
import importlib.resources
import pkgutil
import re
import subprocess
import sys
from pathlib import Path

import pytest

import aits

ROOT = Path(__file__).resolve().parent.parent
#: modules that do not declare __all__ yet (owned elsewhere); the list may only shrink
WITHOUT_ALL = {"checkpoint", "ics", "ops", "runlog"}
#: built or generated at install time (the compiled extension, the build's torch version)
GENERATED = {"_C", "_build_config"}


def console_script() -> Path:
    script = Path(sys.executable).parent / "aits"
    assert script.is_file(), (
        f"no aits console script next to {sys.executable}: install the package "
        "(pip install --no-build-isolation .)"
    )
    return script


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(console_script()), *args], capture_output=True, text=True,
                          timeout=120)


def test_aits_help_lists_the_subcommands():
    done = run("--help")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: aits")
    for name in ("train", "simulate", "evaluate"):
        assert f"    {name}  " in done.stdout


@pytest.mark.parametrize("command, option", [
    ("train", "--steps-per-epoch"), ("simulate", "--policy"), ("evaluate", "--scenarios"),
])
def test_each_subcommand_has_the_python_m_parser(command, option):
    done = run(command, "--help")
    assert done.returncode == 0, done.stderr
    assert option in done.stdout
    same = subprocess.run([sys.executable, "-m", f"aits.{command}", "--help"],
                          capture_output=True, text=True, timeout=120)
    assert same.returncode == 0
    flags = re.compile(r"(?<![\w-])--[a-z0-9][a-z0-9-]*")
    assert set(flags.findall(same.stdout)) == set(flags.findall(done.stdout))


def test_version_and_bad_commands():
    done = run("--version")
    assert done.returncode == 0 and done.stdout.strip() == f"aits {aits.__version__}"
    done = run("frobnicate")
    assert done.returncode == 2 and "invalid choice: 'frobnicate'" in done.stderr
    done = run()
    assert done.returncode == 2 and "required: COMMAND" in done.stderr


def test_import_registers_the_ops_and_loads_nothing_else():
    """``import aits`` registers torch.ops.aits (as a torch extension must); the tool
    modules and the optional or plotting packages wait until they are used, also
    for ``aits --help``."""
    code = ("import sys, torch, aits, aits.cli\n"
            "try:\n    aits.cli.main(['--help'])\nexcept SystemExit:\n    pass\n"
            "torch.ops.aits.accelerations\n"
            "print(sorted(m for m in ('matplotlib', 'rebound', 'h5py', 'aits.training',\n"
            "      'aits.train', 'aits.simulate', 'aits.simulation') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().endswith("[]"), done.stdout


def test_metadata_matches_the_package():
    meta = importlib.metadata.metadata("aits")
    assert meta["Version"] == aits.__version__
    assert meta["License"] == "MIT"
    assert "License :: OSI Approved :: MIT License" in meta.get_all("Classifier")
    assert any(u.startswith("Homepage, https://") for u in meta.get_all("Project-URL"))
    assert {"rebound", "hdf5", "all"} <= set(meta.get_all("Provides-Extra"))
    (script,) = [e for e in importlib.metadata.entry_points(group="console_scripts")
                 if e.name == "aits"]
    assert script.value == "aits.cli:main"
    assert (importlib.resources.files("aits") / "py.typed").is_file()
    license_text = (ROOT / "LICENSE").read_text()
    assert license_text.startswith("MIT License")
    assert "Copyright (c) 2026 the aits developers" in license_text


def test_every_public_name_imports():
    for name in aits.__all__:
        assert getattr(aits, name) is not None, name
    namespace: dict = {}
    exec("from aits import *", namespace)
    assert set(aits.__all__) <= set(namespace)
    assert len(set(aits.__all__)) == len(aits.__all__)
    assert set(aits.__all__) <= set(dir(aits))
    with pytest.raises(AttributeError, match="module 'aits' has no attribute 'nonesuch'"):
        aits.nonesuch  # noqa: B018


def test_static_imports_match_the_lazy_exports():
    """The TYPE_CHECKING block (what type checkers see) names exactly ``aits.__all__``."""
    tree = ast.parse((Path(aits.__file__)).read_text())
    (block,) = [n for n in tree.body if isinstance(n, ast.If)
                and getattr(n.test, "id", None) == "TYPE_CHECKING"]
    seen = {}
    for node in block.body:
        for alias in node.names:
            seen[alias.name] = "aits" if node.module == "aits" else node.module
    assert set(seen) == set(aits.__all__)
    for name, module in aits._EXPORTS.items():
        assert seen[name] == module, name


def test_submodules_declare_existing_names():
    missing = set()
    for info in pkgutil.iter_modules(aits.__path__):
        if info.name in GENERATED:
            continue
        module = importlib.import_module(f"aits.{info.name}")
        names = getattr(module, "__all__", None)
        if names is None:
            missing.add(info.name)
            continue
        assert len(set(names)) == len(names), f"aits.{info.name}.__all__ has duplicates"
        for name in names:
            assert hasattr(module, name), f"aits.{info.name}.__all__ names {name!r}, not defined"
    assert missing <= WITHOUT_ALL, f"new modules without __all__: {sorted(missing - WITHOUT_ALL)}"


def test_simulate_stays_the_function_after_the_cli_module_loads():
    import aits.simulate as simulate_cli

    assert callable(aits.simulate) and simulate_cli.main is not None
    result = aits.simulate(aits.figure_eight(), aits.FixedPolicy(0.01), steps=3)
    assert isinstance(result, aits.SimulationResult) and result.steps == 3
    from aits import simulate

    assert simulate(aits.figure_eight(), aits.FixedPolicy(0.01), steps=2).steps == 2
