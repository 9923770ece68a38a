"""The flags of ``qhil run`` and ``qhil serve`` that set configuration keys, and their help.

Each flag sets one key of :class:`RunConfig`. Its help text is that key's
comment in ``host/defaults.toml`` (the file that lists every key with its
default), followed by the default and, where the key has a fixed set of
values, the valid choices. So the help, the defaults file and the checks
cannot drift apart.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import re
from pathlib import Path
from typing import Any

from qhil.host._config import BACKEND_CHOICES, RunConfig

__all__ = ["CONFIG_FLAGS", "ConfigFlag", "add_config_flags", "config_overrides", "key_choices"]

_DEFAULTS_TOML = Path(__file__).with_name("defaults.toml")
_METAVARS = {int: "N", float: "X", str: "TEXT"}


@dataclasses.dataclass(frozen=True)
class ConfigFlag:
    """One flag: ``--name`` (and ``short``, if any) sets config ``key`` as ``kind``."""

    key: str
    kind: type
    short: str = ""


CONFIG_FLAGS: dict[str, ConfigFlag] = {
    "distance": ConfigFlag("experiment.distance", int, short="-d"),
    "rounds": ConfigFlag("experiment.rounds", int, short="-r"),
    "basis": ConfigFlag("experiment.basis", str),
    "noise": ConfigFlag("experiment.noise", str),
    "p": ConfigFlag("experiment.p", float, short="-p"),
    "shots": ConfigFlag("experiment.shots", int, short="-n"),
    "seed": ConfigFlag("experiment.seed", int),
    "mode": ConfigFlag("frontend.mode", str),
    "round_time_us": ConfigFlag("frontend.round_time_us", float),
    "budget_us": ConfigFlag("frontend.budget_us", float),
    "max_in_flight": ConfigFlag("frontend.max_in_flight", int),
    "correction_timeout_rounds": ConfigFlag("frontend.correction_timeout_rounds", int),
    "stall_timeout_s": ConfigFlag("frontend.stall_timeout_s", float),
    "frontend_cpu": ConfigFlag("frontend.cpu", int),
    "transport": ConfigFlag("bridge.transport", str),
    "endpoint": ConfigFlag("bridge.endpoint", str),
    "bridge_name": ConfigFlag("bridge.name", str),
    "keys": ConfigFlag("bridge.keys", str),
    "n_slots": ConfigFlag("bridge.n_slots", int),
    "fault_rate": ConfigFlag("bridge.fault_rate", float),
    "fault_seed": ConfigFlag("bridge.fault_seed", int),
    "decoder": ConfigFlag("decoder.name", str),
    "backend": ConfigFlag("decoder.backend", str),
    "assembly_timeout_rounds": ConfigFlag("decoder.assembly_timeout_rounds", int),
    "decoder_cpu": ConfigFlag("decoder.cpu", int),
    "out": ConfigFlag("output.dir", str),
}


def key_choices(key: str) -> tuple[str, ...]:
    """The valid values of config ``key``, or () where any value of its type may do."""
    from qhil.bridge import TRANSPORTS
    from qhil.fpga import MODES
    from qhil.host._decoders import DECODERS
    from qhil.sim import BASES, NOISE_MODELS

    table = {
        "experiment.basis": BASES,
        "experiment.noise": NOISE_MODELS,
        "frontend.mode": MODES,
        "bridge.transport": TRANSPORTS,
        "decoder.name": DECODERS(),
        "decoder.backend": BACKEND_CHOICES,
    }
    return tuple(table.get(key, ()))


@functools.cache
def _key_comments() -> dict[str, str]:
    """``{"table.key": comment}`` from defaults.toml; a comment-only line right
    after a key continues that key's comment."""
    comments: dict[str, str] = {}
    table, last = "", ""
    for line in _DEFAULTS_TOML.read_text().splitlines():
        stripped = line.strip()
        if m := re.fullmatch(r"\[(\w+)\]", stripped):
            table, last = m.group(1), ""
        elif m := re.match(r"(\w+)\s*=\s*[^#]*#\s*(.*)", stripped):
            last = f"{table}.{m.group(1)}"
            comments[last] = m.group(2).strip()
        elif stripped.startswith("#") and last and line.startswith(" "):
            comments[last] += " " + stripped.lstrip("# ").strip()
        else:
            last = ""
    return comments


def _help(flag: ConfigFlag, defaults: dict[str, dict[str, Any]]) -> str:
    table, key = flag.key.split(".")
    default = defaults[table][key]
    shown = f"{default!r}" if isinstance(default, str) else f"{default:,}"
    if isinstance(default, int) and default < 10_000:
        shown = str(default)  # a seed of 2026 is not "2,026"
    text = _key_comments().get(flag.key, "").replace("%", "%%")
    choices = key_choices(flag.key)
    extra = f"; choices: {', '.join(choices)}" if choices else ""
    return f"{text} [{flag.key}; default: {shown}{extra}]".strip()


def add_config_flags(parser: argparse.ArgumentParser) -> None:
    """Add ``--config`` and one flag per entry of :data:`CONFIG_FLAGS` to ``parser``."""
    parser.add_argument(
        "--config",
        type=Path,
        metavar="FILE",
        help="TOML file with any of the keys below (see host/defaults.toml); flags override it",
    )
    defaults = RunConfig().to_dict()
    group = parser.add_argument_group("configuration (each flag sets the [table.key] shown)")
    for name, flag in CONFIG_FLAGS.items():
        names = ([flag.short] if flag.short else []) + [f"--{name.replace('_', '-')}"]
        choices = key_choices(flag.key) or None
        group.add_argument(
            *names,
            dest=name,
            type=flag.kind,
            default=None,
            choices=choices,
            metavar=_METAVARS[flag.kind] if choices is None else "{" + ",".join(choices) + "}",
            help=_help(flag, defaults),
        )


def config_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """``{"table.key": value}`` for the config flags given on the command line."""
    return {
        flag.key: getattr(args, name)
        for name, flag in CONFIG_FLAGS.items()
        if getattr(args, name, None) is not None
    }
