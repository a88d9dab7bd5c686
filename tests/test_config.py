"""TrainConfig: validation messages, TOML files, command-line overrides, --help."""

from __future__ import annotations

import pytest
import torch

from aits.config import (
    FIELDS,
    ConfigError,
    TrainConfig,
    dump_toml,
    from_mapping,
    load_toml,
    resolve,
    validate,
)
from aits.train import build_parser, main


def test_defaults_are_valid():
    cfg = validate(TrainConfig())
    assert cfg.scenario == "binary-e0.9" and cfg.energy_threshold == 2e-4


@pytest.mark.parametrize(
    "changes, setting, allowed",
    [
        ({"epochs": 0}, "epochs", ">= 1"),
        ({"steps_per_epoch": 0}, "steps_per_epoch", ">= 1"),
        ({"n_steps": 0}, "n_steps", ">= 1"),
        ({"energy_threshold": 0.0}, "energy_threshold", "> 0"),
        ({"energy_threshold": -1e-3}, "energy_threshold", "> 0"),
        ({"E_lower": 1e-3, "E_upper": 1e-4}, "E_lower", "< 'E_upper'"),
        ({"E_lower": 0.0}, "E_lower", "> 0"),
        ({"max_retrain_steps": -1}, "max_retrain_steps", ">= 0"),
        ({"feature_type": "fancy"}, "feature_type", "basic, rich"),
        ({"history_type": "delta"}, "history_type", "delta_mag"),
        ({"history_type": "delta_mag", "history_len": 0}, "history_len", ">= 1"),
        ({"scenario": "binary-e0.7"}, "scenario", "binary-e0.9"),
        ({"dropout": 1.0}, "dropout", "[0, 1)"),
        ({"hidden": []}, "hidden", "non-empty"),
        ({"e_range": [0.9, 0.5]}, "e_range", "low <= high"),
        ({"e_range": [0.5, 1.0]}, "e_range", "1.0)"),
        ({"a_range": [0.0, 1.0]}, "a_range", "0 < low"),
        ({"device": "tpu"}, "device", "auto, cpu, cuda"),
        ({"dtype": "float16"}, "dtype", "float32, float64"),
        ({"lr": float("nan")}, "lr", "finite"),
        ({"epochs": 2.5}, "epochs", "int"),
        ({"quiet": "yes"}, "quiet", "true or false"),
        ({"run_name": "a/b"}, "run_name", "plain directory name"),
        ({"ic_file": "/nonexistent/ics.csv"}, "ic_file", "existing file"),
    ],
)
def test_invalid_values_name_the_setting_and_range(changes, setting, allowed):
    with pytest.raises(ConfigError) as err:
        from_mapping(changes)
    assert repr(setting) in str(err.value) and allowed in str(err.value)


def test_unknown_setting_is_refused():
    with pytest.raises(ConfigError, match="unknown settings: epoch"):
        from_mapping({"epoch": 3})


def _write(tmp_path, text):
    p = tmp_path / "cfg.toml"
    p.write_text(text)
    return p


def test_toml_shared_keys_train_table_and_cli_override(tmp_path):
    p = _write(tmp_path, """
energy_threshold = 1e-3        # shared by every tool
epochs = 7
hidden = [8, 4]
[train]
epochs = 9                     # [train] wins over the shared key
steps_per_epoch = 11
[simulate]
whatever = "ignored here"
""")
    cfg = resolve(str(p), {})
    assert (cfg.energy_threshold, cfg.epochs, cfg.steps_per_epoch, cfg.hidden) == (1e-3, 9, 11, [8, 4])
    cfg = resolve(str(p), {"epochs": 3, "hidden": [5]})  # the command line wins over the file
    assert (cfg.epochs, cfg.hidden, cfg.steps_per_epoch) == (3, [5], 11)


def test_cli_parser_overrides_file(tmp_path):
    p = _write(tmp_path, "[train]\nsteps_per_epoch = 11\nlr = 0.5\n")
    args = vars(build_parser().parse_args(["--config", str(p), "--steps-per-epoch", "4",
                                           "--e-range", "0.1", "0.2", "--no-plot"]))
    cfg = resolve(args.pop("config"), {k: v for k, v in args.items() if k != "resume"})
    assert (cfg.steps_per_epoch, cfg.lr, cfg.e_range, cfg.plot) == (4, 0.5, [0.1, 0.2], False)


@pytest.mark.parametrize("text, match", [
    ("[train]\nepochz = 3\n", "unknown setting 'epochz' in \\[train\\]"),
    ("epochz = 3\n", "unknown setting 'epochz' at top level"),
    ("[train\n", "not valid TOML"),
    ("train = 3\n", "'train' must be a table"),
])
def test_bad_toml_files(tmp_path, text, match):
    with pytest.raises(ConfigError, match=match):
        load_toml(_write(tmp_path, text))


def test_invalid_value_in_file_names_the_setting(tmp_path):
    with pytest.raises(ConfigError, match="'epochs'"):
        resolve(str(_write(tmp_path, "[train]\nepochs = 0\n")), {})


def test_missing_file():
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_toml("/nonexistent/cfg.toml")


def test_dumped_config_reads_back(tmp_path):
    cfg = from_mapping({"epochs": 3, "hidden": [3, 2], "e_range": [0.1, 0.3], "quiet": True})
    assert resolve(str(_write(tmp_path, dump_toml(cfg))), {}) == cfg


def test_help_documents_every_setting(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for name in FIELDS:
        assert "--" + name.replace("_", "-") in out, name
    assert "--config" in out and "--resume" in out


def test_cli_refuses_invalid_value_before_any_work(capsys, tmp_path):
    assert_exit = pytest.raises(SystemExit)
    with assert_exit as e:
        main(["--epochs", "0", "--run-dir", str(tmp_path)])
    assert e.value.code == 2
    assert "'epochs' must be an integer >= 1" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())  # nothing was written


def test_units_set_G_and_refuse_a_second_G():
    from aits.config import ConfigError, TrainConfig, validate
    from aits.training import build_system

    cfg = validate(TrainConfig(units="au-yr-msun"))
    assert cfg.physics.G == pytest.approx(39.4769, rel=1e-4)
    state = build_system(cfg, torch.float64, torch.device("cpu"))
    assert state.G == cfg.physics.G
    with pytest.raises(ConfigError, match="both set G"):
        validate(TrainConfig(units="si", G=2.0))
    with pytest.raises(ConfigError, match="setting 'units' must be one of"):
        validate(TrainConfig(units="furlongs"))


def test_unknown_toml_tables_and_non_utf8_files_are_refused(tmp_path):
    from aits.config import ConfigError, load_toml

    bad = tmp_path / "a.toml"
    bad.write_text("[trian]\nepochs = 3\n")
    with pytest.raises(ConfigError, match=r"unknown table \[trian\]; valid tables: \[train\]"):
        load_toml(bad)
    latin = tmp_path / "b.toml"
    latin.write_bytes("epochs = 3 # caf\xe9\n".encode("latin-1"))
    with pytest.raises(ConfigError, match="is not UTF-8 text"):
        load_toml(latin)


# ------------------------------------------------------- one bridge for every tool


def test_shared_settings_are_declared_once_and_every_tool_has_them():
    from aits.config import EvaluateConfig, SharedSettings, SimulateConfig

    shared = SharedSettings.field_map()
    assert {"device", "dtype", "seed", "softening", "G", "units", "energy_threshold"} == set(shared)
    for tool in (TrainConfig, SimulateConfig, EvaluateConfig):
        fields = tool.field_map()
        assert all(fields[name] is shared[name] for name in shared), tool  # the same Field


def test_one_toml_file_serves_every_tool(tmp_path):
    """Top-level keys go to every tool that has them (a key only training has is no error
    for simulate); each table to its tool; the command line wins, and a command-line
    member of an exclusive group replaces the file's."""
    from aits.config import EvaluateConfig, SimulateConfig

    p = _write(tmp_path, """
energy_threshold = 1e-3
softening = 0.05
epochs = 3
[simulate]
scenario = "figure8"
policy = "aarseth"
eta = 0.02
t_end = 2.0
[evaluate]
tolerance = 1e-4
integrator = ["kdk", "symmetric"]
""")
    sim = SimulateConfig.resolve(p, {})
    assert (sim.energy_threshold, sim.softening, sim.eta, sim.t_end) == (1e-3, 0.05, 0.02, 2.0)
    sim = SimulateConfig.resolve(p, {"orbits": 3.0})
    assert (sim.orbits, sim.t_end) == (3.0, None)
    ev = EvaluateConfig.resolve(p, {})
    assert (ev.tolerance, ev.integrator, ev.softening) == ([1e-4], ["kdk", "symmetric"], 0.05)
    train = resolve(p, {})
    assert (train.epochs, train.energy_threshold, train.softening) == (3, 1e-3, 0.05)


def test_simulate_settings_round_trip_and_refuse_what_does_not_apply(tmp_path):
    from aits.config import SimulateConfig

    cfg = SimulateConfig.from_mapping({"scenario": "figure8", "steps": 5, "policy": "fixed",
                                       "dt": 0.01, "integrator": "symmetric",
                                       "symmetric_iterations": 2, "gated": True})
    assert SimulateConfig.resolve(_write(tmp_path, cfg.dump_toml()), {}) == cfg
    with pytest.raises(ConfigError, match=r"setting 'eta' \(--eta\) does not apply to --policy"):
        cfg.replace(eta=0.1)
    with pytest.raises(ConfigError, match="'t_end' and 'steps' exclude each other"):
        cfg.replace(t_end=1.0)
    with pytest.raises(ConfigError, match="give one of --scenario, --ic, --rebound-bin"):
        cfg.replace(scenario=None)
    with pytest.raises(ConfigError, match="both set G"):
        cfg.replace(units="au-yr-msun", G=2.0)


def test_gate_defaults_to_the_stored_training_gate():
    from aits.config import SimulateConfig

    stored = TrainConfig(energy_threshold=1e-3, E_lower=1e-7).validate().to_dict()
    cfg = SimulateConfig.from_mapping({"scenario": "figure8", "steps": 1})
    assert cfg.gate_over(stored).energy_threshold == 1e-3
    assert cfg.gate_over(stored).E_lower == 1e-7
    assert cfg.replace(energy_threshold=5e-4).gate_over(stored).energy_threshold == 5e-4
    assert cfg.gate_over(None).energy_threshold == 2e-4


@pytest.mark.parametrize("tool", ["simulate", "evaluate"])
def test_every_tool_help_documents_every_setting(tool, capsys):
    import importlib

    from aits.settings import Settings

    module = importlib.import_module(f"aits.{tool}")
    with pytest.raises(SystemExit) as e:
        module.main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for name in Settings.TOOLS[tool].field_map():
        assert "--" + name.replace("_", "-") in out, name
