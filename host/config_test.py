from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from qhil.host import ConfigError, RunConfig
from qhil.host._config import (
    BridgeSettings,
    DecoderSettings,
    ExperimentSettings,
    FrontEndSettings,
    OutputSettings,
)

TABLES = ("experiment", "frontend", "bridge", "decoder", "output")


def test_empty_text_is_the_default_config() -> None:
    cfg = RunConfig.from_toml_text("")
    assert cfg == RunConfig()
    assert (cfg.experiment.distance, cfg.experiment.rounds, cfg.experiment.p) == (5, 5, 0.003)
    assert cfg.experiment.noise == "stim-depolarizing"
    assert cfg.frontend.mode == "lockstep"
    assert cfg.bridge.transport == "shm"
    assert cfg.decoder.name == "pymatching"
    assert list(cfg.to_dict()) == list(TABLES)


def test_parses_every_table() -> None:
    cfg = RunConfig.from_toml_text(
        """
        [experiment]
        distance = 7
        rounds = 2
        basis = "x"
        noise = "si1000"
        p = 0.01
        shots = 123
        seed = 9

        [frontend]
        mode = "paced"
        fabric_clock_mhz = 300        # an int where a float is expected is fine
        round_time_us = 2.5
        budget_us = 20.0
        correction_timeout_rounds = 100000
        stall_timeout_s = 0.5
        max_in_flight = 8

        [bridge]
        transport = "zmq"
        endpoint = "tcp://127.0.0.1:5555"
        n_slots = 64
        slot_size = 128
        fault_rate = 0.5
        fault_kinds = "drop, corrupt"
        fault_seed = 3

        [decoder]
        name = "pymatching-correlated"
        window = 2
        assembly_timeout_rounds = 40000
        spawn = false

        [output]
        dir = "elsewhere"
        save = true
        """
    )
    assert cfg.experiment == ExperimentSettings(
        distance=7, rounds=2, basis="x", noise="si1000", p=0.01, shots=123, seed=9
    )
    assert cfg.frontend == FrontEndSettings(
        mode="paced",
        fabric_clock_mhz=300.0,
        round_time_us=2.5,
        budget_us=20.0,
        correction_timeout_rounds=100_000,
        stall_timeout_s=0.5,
        max_in_flight=8,
    )
    assert cfg.frontend.correction_timeout_s == pytest.approx(0.25)  # rounds of 2.5 us
    assert cfg.assembly_timeout_s == pytest.approx(0.1)
    assert isinstance(cfg.frontend.fabric_clock_mhz, float)
    assert cfg.bridge.transport == "zmq"
    assert cfg.bridge.endpoint == "tcp://127.0.0.1:5555"
    assert (cfg.bridge.n_slots, cfg.bridge.slot_size) == (64, 128)
    assert (cfg.bridge.fault_rate, cfg.bridge.fault_kinds, cfg.bridge.fault_seed) == (
        0.5,
        "drop, corrupt",
        3,
    )
    assert cfg.decoder == DecoderSettings(
        name="pymatching-correlated", window=2, assembly_timeout_rounds=40_000, spawn=False
    )
    assert cfg.output == OutputSettings(dir="elsewhere", save=True)


def test_a_partial_table_keeps_the_other_defaults() -> None:
    cfg = RunConfig.from_toml_text("[experiment]\nshots = 7\n[decoder]\nwindow = 9")
    assert cfg.experiment == dataclasses.replace(ExperimentSettings(), shots=7)
    assert cfg.decoder == dataclasses.replace(DecoderSettings(), window=9)
    assert cfg.frontend == FrontEndSettings()


def test_to_dict_round_trips() -> None:
    cfg = RunConfig().with_overrides({"experiment.distance": 3, "output.save": True})
    assert RunConfig.from_dict(cfg.to_dict()) == cfg


# -- structural errors --------------------------------------------------------------------------


def test_unknown_table_lists_the_valid_ones() -> None:
    with pytest.raises(ConfigError) as info:
        RunConfig.from_toml_text("[experimnt]\ndistance = 3")
    assert str(info.value) == (
        "unknown table [experimnt]; valid tables: experiment, frontend, bridge, decoder, output"
    )


@pytest.mark.parametrize("table", TABLES)
def test_unknown_key_lists_the_valid_ones(table: str) -> None:
    with pytest.raises(ConfigError) as info:
        RunConfig.from_toml_text(f"[{table}]\nbogus = 1")
    fields = [f.name for f in dataclasses.fields(type(getattr(RunConfig(), table)))]
    assert str(info.value) == f"[{table}] has no key 'bogus'; valid keys: {', '.join(fields)}"


def test_a_table_must_be_a_table() -> None:
    with pytest.raises(ConfigError, match=r"\[experiment\] must be a table of keys; got 3"):
        RunConfig.from_toml_text("experiment = 3")


def test_invalid_toml() -> None:
    with pytest.raises(ConfigError, match="config is not valid TOML"):
        RunConfig.from_toml_text("[experiment\ndistance = 3")
    with pytest.raises(ConfigError, match="config is not valid TOML"):
        RunConfig.from_toml_text("[experiment]\ndistance = 3\ndistance = 5")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[experiment]\ndistance = "3"', "[experiment] distance must be an integer; got '3' (str)"),
        (
            "[experiment]\ndistance = 3.0",
            "[experiment] distance must be an integer; got 3.0 (float)",
        ),
        ("[experiment]\nshots = true", "[experiment] shots must be an integer; got True (bool)"),
        ("[experiment]\np = true", "[experiment] p must be a number; got True (bool)"),
        ('[experiment]\np = "0.1"', "[experiment] p must be a number; got '0.1' (str)"),
        ("[experiment]\nbasis = 1", "[experiment] basis must be a string; got 1 (int)"),
        ("[decoder]\nspawn = 1", "[decoder] spawn must be true or false; got 1 (int)"),
        ("[output]\ndir = [1]", "[output] dir must be a string; got [1] (list)"),
    ],
)
def test_type_errors(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        RunConfig.from_toml_text(text)
    assert str(info.value) == message


# -- every validation message ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("table", "key", "value", "message"),
    [
        ("experiment", "distance", 4, "[experiment] distance must be an odd integer >= 3; got 4"),
        ("experiment", "distance", 1, "[experiment] distance must be an odd integer >= 3; got 1"),
        ("experiment", "rounds", 0, "[experiment] rounds must be >= 1; got 0"),
        ("experiment", "basis", "y",
         "[experiment] basis = 'y' is not valid; choose one of: x, z"),
        ("experiment", "noise", "sd7", "[experiment] noise = 'sd7' is not valid; choose one of: "
         "sd6, si1000, stim-depolarizing"),
        ("experiment", "p", 0.2, "[experiment] p must be in [0, 0.2); got 0.2"),
        ("experiment", "p", -0.1, "[experiment] p must be in [0, 0.2); got -0.1"),
        ("experiment", "p", float("nan"), "[experiment] p must be in [0, 0.2); got nan"),
        ("experiment", "shots", 0, "[experiment] shots must be >= 1; got 0"),
        ("experiment", "seed", -1, "[experiment] seed must be >= 0; got -1"),
        ("frontend", "mode", "fast",
         "[frontend] mode = 'fast' is not valid; choose one of: lockstep, paced"),
        ("frontend", "fabric_clock_mhz", 0.0, "[frontend] fabric_clock_mhz must be > 0; got 0.0"),
        ("frontend", "round_time_us", -1.0, "[frontend] round_time_us must be > 0; got -1.0"),
        ("frontend", "budget_us", 0.0, "[frontend] budget_us must be > 0; got 0.0"),
        ("frontend", "correction_timeout_rounds", 0,
         "[frontend] correction_timeout_rounds must be > 0; got 0"),
        ("frontend", "stall_timeout_s", -1.0,
         "[frontend] stall_timeout_s must be >= 0 (0: auto); got -1.0"),
        ("frontend", "max_in_flight", 0, "[frontend] max_in_flight must be > 0; got 0"),
        ("frontend", "stall_timeout_s", 0.04,
         "[frontend] correction_timeout_rounds = 50,000 rounds of 1 us is 0.05 s, not below "
         "stall_timeout_s = 0.04 s; lower correction_timeout_rounds or raise stall_timeout_s"),

        ("bridge", "transport", "udp",
         "[bridge] transport = 'udp' is not valid; choose one of: shm, zmq"),
        ("bridge", "n_slots", 1, "[bridge] n_slots must be a power of two >= 2; got 1"),
        ("bridge", "n_slots", 100, "[bridge] n_slots must be a power of two >= 2; got 100"),
        ("bridge", "slot_size", 32, "[bridge] slot_size must be a multiple of 64; got 32"),
        ("bridge", "slot_size", 100, "[bridge] slot_size must be a multiple of 64; got 100"),
        ("bridge", "fault_rate", 1.5,
         "[bridge] fault_rate must be a probability in [0, 1]; got 1.5"),
        ("bridge", "fault_rate", -0.1,
         "[bridge] fault_rate must be a probability in [0, 1]; got -0.1"),
        ("bridge", "fault_kinds", "drop,explode", "[bridge] fault_kinds = 'drop,explode' has "
         "unknown kinds ['explode']; give a comma-separated list of: "
         "drop, duplicate, reorder, corrupt"),
        ("bridge", "fault_kinds", " , ", "[bridge] fault_kinds = ' , ' names no kind; "
         "give a comma-separated list of: drop, duplicate, reorder, corrupt"),
        ("bridge", "transport", "zmq", "[bridge] transport = 'zmq' needs an endpoint"),
        ("decoder", "name", "mwpm",
         "[decoder] name = 'mwpm' is not valid; choose one of: pymatching, pymatching-correlated, "
         "pymatching-windowed, predecoder"),
        ("decoder", "window", 0, "[decoder] window must be > 0; got 0"),
        ("decoder", "assembly_timeout_rounds", 0,
         "[decoder] assembly_timeout_rounds must be > 0; got 0"),
        ("decoder", "backend", "cuda",
         "[decoder] backend = 'cuda' does not apply to name = 'pymatching', which runs no "
         "kernels; backends apply to: predecoder. Drop --backend, or add --decoder predecoder"),
    ],
)  # fmt: skip
def test_validation_messages(table: str, key: str, value: object, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        RunConfig.from_dict({table: {key: value}})
    assert str(info.value).startswith(message)
    # The same check guards the settings classes themselves.
    with pytest.raises(ConfigError):
        type(getattr(RunConfig(), table))(**{key: value})


def test_zmq_with_an_endpoint_is_fine() -> None:
    cfg = RunConfig.from_dict({"bridge": {"transport": "zmq", "endpoint": "ipc:///tmp/x.sock"}})
    assert cfg.bridge.transport == "zmq"


def test_boundary_values_are_accepted() -> None:
    RunConfig.from_dict(
        {
            "experiment": {"distance": 3, "rounds": 1, "p": 0.0, "shots": 1, "seed": 0},
            "frontend": {
                "correction_timeout_rounds": 1_999_999,
                "stall_timeout_s": 2.0,
                "max_in_flight": 1,
            },
            "bridge": {"n_slots": 2, "slot_size": 64, "fault_rate": 1.0, "fault_kinds": "drop"},
            "decoder": {"window": 1, "assembly_timeout_rounds": 1_999_998},
        }
    )


def test_the_stall_timeout_follows_a_slow_round_clock_unless_set() -> None:
    slow = RunConfig.from_dict({"frontend": {"round_time_us": 100.0}}).frontend
    assert slow.correction_timeout_s == pytest.approx(5.0) and slow.stall_s == pytest.approx(10.0)
    assert RunConfig().frontend.stall_s == 2.0  # at least 2 s
    assert FrontEndSettings(stall_timeout_s=3.0).stall_s == 3.0


def test_a_renamed_key_names_its_replacement() -> None:
    with pytest.raises(ConfigError, match="correction_timeout_s was replaced by correction_"):
        RunConfig.from_toml_text("[frontend]\ncorrection_timeout_s = 0.5")


def test_the_decoder_gives_a_shot_up_before_the_front_end_does() -> None:
    with pytest.raises(ConfigError, match=r"must be below \[frontend\] correction_timeout_rounds"):
        RunConfig.from_dict(
            {
                "frontend": {"correction_timeout_rounds": 100},
                "decoder": {"assembly_timeout_rounds": 100},
            }
        )


def test_config_error_is_a_value_error() -> None:
    assert issubclass(ConfigError, ValueError)


# -- overrides ----------------------------------------------------------------------------------


def test_with_overrides_applies_and_checks() -> None:
    base = RunConfig.from_toml_text("[experiment]\nshots = 50")
    cfg = base.with_overrides({"experiment.distance": 3, "frontend.mode": "paced",
                               "frontend.round_time_us": 2})  # fmt: skip
    assert (cfg.experiment.distance, cfg.experiment.shots) == (3, 50)
    assert cfg.frontend.mode == "paced"
    assert cfg.frontend.round_time_us == 2.0 and isinstance(cfg.frontend.round_time_us, float)
    assert base.experiment.distance == 5, "the original is unchanged"
    assert base.with_overrides({}) == base


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"experiment.distance": 4}, "[experiment] distance must be an odd integer"),
        ({"experiment.distance": "3"}, "[experiment] distance must be an integer"),
        ({"experiment.distnace": 3}, "[experiment] has no key 'distnace'; valid keys: distance"),
        ({"experimnt.distance": 3}, "unknown table [experimnt]; valid tables: experiment"),
        ({"experiment": 3}, "[experiment] has no key ''"),
    ],
)
def test_with_overrides_errors(overrides: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        RunConfig().with_overrides(overrides)
    assert str(info.value).startswith(message)


# -- files --------------------------------------------------------------------------------------


def test_load_a_file(tmp_path: Path) -> None:
    path = tmp_path / "run.toml"
    path.write_text("[experiment]\ndistance = 3\n[output]\nsave = true\n")
    cfg = RunConfig.load(path)
    assert (cfg.experiment.distance, cfg.output.save) == (3, True)
    assert RunConfig.load(str(path)) == cfg


def test_load_a_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    with pytest.raises(ConfigError) as info:
        RunConfig.load(missing)
    assert str(info.value) == (
        f"config file {str(missing)!r} does not exist; pass --config with a TOML file"
    )
    with pytest.raises(ConfigError, match="does not exist"):
        RunConfig.load(tmp_path)  # a directory is not a config file


def test_load_errors_name_the_file(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("[experiment]\ndistance = 4\n")
    with pytest.raises(ConfigError) as info:
        RunConfig.load(path)
    assert str(info.value) == f"{path}: [experiment] distance must be an odd integer >= 3; got 4"
    path.write_text("[experiment\n")
    with pytest.raises(ConfigError, match=f"^{path}: config is not valid TOML"):
        RunConfig.load(path)


def test_settings_are_frozen() -> None:
    cfg = RunConfig()
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.experiment.distance = 3  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.bridge = BridgeSettings()  # type: ignore[misc]
