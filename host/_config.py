"""Run configuration: one TOML file with one table per part of the loop, overridable from the CLI.

Every key has a default, so an empty file (or none) runs the embedded default:
d=5, rounds=5, p=0.003 circuit-level depolarizing noise, 10,000 shots, the
cycle model in lockstep and the shared-memory bridge.

>>> cfg = RunConfig.from_toml_text('''
... [experiment]
... distance = 3
... shots = 100
... ''')
>>> cfg.experiment.distance, cfg.experiment.shots, cfg.bridge.transport
(3, 100, 'shm')
>>> RunConfig.from_toml_text("[experiment]\\ndistnace = 3")
Traceback (most recent call last):
...
qhil.host._config.ConfigError: [experiment] has no key 'distnace'; valid keys: distance, ...
"""

from __future__ import annotations

import dataclasses
import os
import sys
import typing
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - 3.10
    import tomli as tomllib

from qhil.bridge import TRANSPORTS
from qhil.fpga import MODES
from qhil.sim import BASES, NOISE_MODELS

__all__ = [
    "BridgeSettings",
    "ConfigError",
    "DecoderSettings",
    "ExperimentSettings",
    "FrontEndSettings",
    "OutputSettings",
    "RunConfig",
    "check_cpu",
]


class ConfigError(ValueError):
    """A configuration value or file is wrong; the message names it and the fix."""


def _choice(table: str, key: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(
            f"[{table}] {key} = {value!r} is not valid; choose one of: {', '.join(choices)}"
        )


BACKEND_CHOICES = ("auto", "numpy", "numba", "cuda", "cuda-persistent")  # [decoder] backend
_MIN_STALL_S = 2.0  # a decoder silent this long is unresponsive, whatever the round clock


def check_cpu(table: str, cpu: int) -> None:
    """``cpu`` must be -1 (no pin) or a CPU this process may run on (``pinned``)."""
    if cpu == -1:
        return
    if not hasattr(os, "sched_getaffinity"):
        raise ConfigError(f"[{table}] cpu = {cpu}: this OS has no CPU affinity; use -1")
    cpus = sorted(os.sched_getaffinity(0))
    if cpu not in cpus:
        raise ConfigError(
            f"[{table}] cpu = {cpu} is not a CPU this process may run on; "
            f"choose one of {', '.join(map(str, cpus))}, or -1 (no pin)"
        )


def _positive(table: str, **values: float) -> None:
    for key, value in values.items():
        if not value > 0:
            raise ConfigError(f"[{table}] {key} must be > 0; got {value!r}")


@dataclasses.dataclass(frozen=True, kw_only=True)
class ExperimentSettings:
    """The memory experiment the front end streams."""

    distance: int = 5
    rounds: int = 5
    basis: str = "z"
    noise: str = "stim-depolarizing"
    p: float = 0.003
    shots: int = 10_000
    seed: int = 2026

    def __post_init__(self) -> None:
        if self.distance < 3 or self.distance % 2 == 0:
            raise ConfigError(
                f"[experiment] distance must be an odd integer >= 3; got {self.distance}"
            )
        if self.rounds < 1:
            raise ConfigError(f"[experiment] rounds must be >= 1; got {self.rounds}")
        _choice("experiment", "basis", self.basis, BASES)
        _choice("experiment", "noise", self.noise, NOISE_MODELS)
        if not 0 <= self.p < 0.2:
            raise ConfigError(f"[experiment] p must be in [0, 0.2); got {self.p}")
        if self.shots < 1:
            raise ConfigError(f"[experiment] shots must be >= 1; got {self.shots}")
        if self.seed < 0:
            raise ConfigError(f"[experiment] seed must be >= 0; got {self.seed}")


@dataclasses.dataclass(frozen=True, kw_only=True)
class FrontEndSettings:
    """The FPGA front end (cycle model or board); see ``qhil.fpga.FrontEndConfig``."""

    mode: str = "lockstep"
    fabric_clock_mhz: float = 250.0
    round_time_us: float = 1.0
    budget_us: float = 10.0
    correction_timeout_rounds: int = 50_000
    stall_timeout_s: float = 0.0
    max_in_flight: int = 1
    cpu: int = -1

    @property
    def correction_timeout_s(self) -> float:
        """The correction timeout in seconds: that many periods of the round clock."""
        return self.correction_timeout_rounds * self.round_time_us * 1e-6

    @property
    def stall_s(self) -> float:
        """The stall timeout in seconds; for 0 ("auto"), twice the correction timeout
        and at least 2 s, so a slow round clock never makes the two collide."""
        return self.stall_timeout_s or max(_MIN_STALL_S, 2 * self.correction_timeout_s)

    def __post_init__(self) -> None:
        _choice("frontend", "mode", self.mode, MODES)
        _positive(
            "frontend",
            fabric_clock_mhz=self.fabric_clock_mhz,
            round_time_us=self.round_time_us,
            budget_us=self.budget_us,
            correction_timeout_rounds=self.correction_timeout_rounds,
            max_in_flight=self.max_in_flight,
        )
        if self.stall_timeout_s < 0:
            raise ConfigError(
                f"[frontend] stall_timeout_s must be >= 0 (0: auto); got {self.stall_timeout_s}"
            )
        check_cpu("frontend", self.cpu)
        if self.correction_timeout_s >= self.stall_s:
            raise ConfigError(
                f"[frontend] correction_timeout_rounds = {self.correction_timeout_rounds:,} "
                f"rounds of {self.round_time_us:g} us is {self.correction_timeout_s:g} s, "
                f"not below stall_timeout_s = {self.stall_timeout_s:g} s; lower "
                "correction_timeout_rounds or raise stall_timeout_s"
            )


@dataclasses.dataclass(frozen=True, kw_only=True)
class BridgeSettings:
    """The transport between front end and decoder.

    ``name`` (shm) prefixes the ring names; empty picks a unique one. Set it when
    the decoder is a separate ``qhil serve --bridge-name NAME``.
    ``keys`` (zmq) is a folder of CURVE keys (``qhil keys generate``); a tcp://
    endpoint beyond loopback needs it.
    ``fault_rate`` > 0 puts a fault injector on both directions: each packet is,
    with that probability, dropped, duplicated, reordered or corrupted (one of
    ``fault_kinds``, comma-separated), reproducibly from ``fault_seed``.
    """

    transport: str = "shm"
    n_slots: int = 4096
    slot_size: int = 256
    endpoint: str = ""
    name: str = ""
    keys: str = ""
    fault_rate: float = 0.0
    fault_kinds: str = "drop,duplicate,reorder,corrupt"
    fault_seed: int = 0

    def __post_init__(self) -> None:
        _choice("bridge", "transport", self.transport, TRANSPORTS)
        if self.n_slots < 2 or self.n_slots & (self.n_slots - 1):
            raise ConfigError(f"[bridge] n_slots must be a power of two >= 2; got {self.n_slots}")
        if self.slot_size < 64 or self.slot_size % 64:
            raise ConfigError(f"[bridge] slot_size must be a multiple of 64; got {self.slot_size}")
        if not 0 <= self.fault_rate <= 1:
            raise ConfigError(
                f"[bridge] fault_rate must be a probability in [0, 1]; got {self.fault_rate}"
            )
        from qhil.bridge import FAULT_KINDS as KINDS

        kinds = [k.strip() for k in self.fault_kinds.split(",") if k.strip()]
        bad = [k for k in kinds if k not in KINDS]
        if bad or not kinds:
            problem = f"has unknown kinds {bad}" if bad else "names no kind"
            raise ConfigError(
                f"[bridge] fault_kinds = {self.fault_kinds!r} {problem}; "
                f"give a comma-separated list of: {', '.join(KINDS)}"
            )
        if self.transport == "zmq" and not self.endpoint:
            raise ConfigError(
                "[bridge] transport = 'zmq' needs an endpoint, "
                "e.g. endpoint = 'tcp://127.0.0.1:5555' "
                "or 'ipc:///tmp/qhil.sock'"
            )
        if self.keys and self.transport != "zmq":
            raise ConfigError(
                "[bridge] keys only applies to transport = 'zmq' (CURVE over tcp://); "
                "shared-memory rings are owner-only files instead"
            )


@dataclasses.dataclass(frozen=True, kw_only=True)
class DecoderSettings:
    """The decoder service. ``backend`` picks the pre-decoder's kernels ("auto" = fastest
    available). ``spawn = false`` expects a ``qhil serve`` already listening."""

    name: str = "pymatching"
    backend: str = "auto"
    window: int = 4
    assembly_timeout_rounds: int = 10_000
    spawn: bool = True
    cpu: int = -1

    def __post_init__(self) -> None:
        from qhil.host._decoders import DECODERS, DECODERS_WITH_KERNELS

        _choice("decoder", "name", self.name, DECODERS())
        _choice(
            "decoder",
            "backend",
            self.backend,
            BACKEND_CHOICES,
        )
        _positive(
            "decoder", window=self.window, assembly_timeout_rounds=self.assembly_timeout_rounds
        )
        check_cpu("decoder", self.cpu)
        if self.backend != "auto" and self.name not in DECODERS_WITH_KERNELS:
            raise ConfigError(
                f"[decoder] backend = {self.backend!r} does not apply to name = {self.name!r}, "
                f"which runs no kernels; backends apply to: {', '.join(DECODERS_WITH_KERNELS)}. "
                "Drop --backend, or add --decoder predecoder"
            )


@dataclasses.dataclass(frozen=True, kw_only=True)
class OutputSettings:
    """Where results go. ``save`` also exports the shots for offline checking."""

    dir: str = "qhil-out"
    save: bool = False


_TABLES = {
    "experiment": ExperimentSettings,
    "frontend": FrontEndSettings,
    "bridge": BridgeSettings,
    "decoder": DecoderSettings,
    "output": OutputSettings,
}


# Keys an older qhil read: the fix, rather than a bare "no such key".
_RENAMED = {
    ("frontend", "correction_timeout_s"): (
        "was replaced by correction_timeout_rounds (periods of the round clock, "
        "default 50000: 50 ms at 1 us); timeouts now scale with round_time_us"
    ),
    ("decoder", "assembly_timeout_s"): (
        "was replaced by assembly_timeout_rounds (periods of the round clock, "
        "default 10000: 10 ms at 1 us); timeouts now scale with round_time_us"
    ),
}

_KIND_NAMES = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}


def _coerce(table: str, key: str, value: Any, kind: type) -> Any:
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ConfigError(
            f"[{table}] {key} must be {_KIND_NAMES[kind]}; got {value!r} ({type(value).__name__})"
        )
    return value


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """Everything ``qhil run`` needs, one frozen table per part of the loop."""

    experiment: ExperimentSettings = ExperimentSettings()
    frontend: FrontEndSettings = FrontEndSettings()
    bridge: BridgeSettings = BridgeSettings()
    decoder: DecoderSettings = DecoderSettings()
    output: OutputSettings = OutputSettings()

    def __post_init__(self) -> None:
        if self.assembly_timeout_s >= self.frontend.correction_timeout_s:
            raise ConfigError(
                f"[decoder] assembly_timeout_rounds = {self.decoder.assembly_timeout_rounds:,} "
                "must be below [frontend] correction_timeout_rounds = "
                f"{self.frontend.correction_timeout_rounds:,}: the decoder must give a shot up "
                "(and say so) before the front end stops waiting for it; lower "
                "assembly_timeout_rounds or raise correction_timeout_rounds"
            )
        f, d = self.frontend.cpu, self.decoder.cpu
        if f == d != -1 and self.decoder.spawn:
            raise ConfigError(
                f"[frontend] cpu and [decoder] cpu are both {f}: the two busy-polling "
                "processes would share one CPU and wait on each other; pin them to "
                "different CPUs, or leave one at -1"
            )

    @property
    def assembly_timeout_s(self) -> float:
        """The decoder's assembly timeout in seconds: periods of the front end's round clock."""
        return self.decoder.assembly_timeout_rounds * self.frontend.round_time_us * 1e-6

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunConfig:
        tables: dict[str, Any] = {}
        for name, table in data.items():
            settings_cls = _TABLES.get(name)
            if settings_cls is None:
                raise ConfigError(f"unknown table [{name}]; valid tables: {', '.join(_TABLES)}")
            if not isinstance(table, dict):
                raise ConfigError(f"[{name}] must be a table of keys; got {table!r}")
            fields = {f.name: f for f in dataclasses.fields(settings_cls)}
            hints = typing.get_type_hints(settings_cls)
            kwargs = {}
            for key, value in table.items():
                if (name, key) in _RENAMED:
                    raise ConfigError(f"[{name}] {key} {_RENAMED[name, key]}")
                if key not in fields:
                    raise ConfigError(
                        f"[{name}] has no key {key!r}; valid keys: {', '.join(fields)}"
                    )
                kwargs[key] = _coerce(name, key, value, hints[key])
            tables[name] = settings_cls(**kwargs)
        return cls(**tables)

    @classmethod
    def from_toml_text(cls, text: str) -> RunConfig:
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as ex:
            raise ConfigError(f"config is not valid TOML: {ex}") from None
        return cls.from_dict(data)

    @classmethod
    def load(cls, path: str | Path) -> RunConfig:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(
                f"config file {str(p)!r} does not exist; pass --config with a TOML file"
            )
        try:
            return cls.from_toml_text(p.read_text())
        except ConfigError as ex:
            raise ConfigError(f"{p}: {ex}") from None

    def with_overrides(self, overrides: dict[str, Any]) -> RunConfig:
        """A copy with ``{"table.key": value}`` overrides applied (CLI flags), checked like TOML."""
        data = self.to_dict()
        for dotted, value in overrides.items():
            table, _, key = dotted.partition(".")
            data.setdefault(table, {})[key] = value
        return RunConfig.from_dict(data)

    def to_dict(self) -> dict[str, dict[str, Any]]:
        return {name: dataclasses.asdict(getattr(self, name)) for name in _TABLES}
