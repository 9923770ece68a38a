"""Which circuit a bitstream was built for: its detector-program manifest, and the build inputs.

A bitstream's detection-event unit holds one circuit's detector program in a
ROM (``fpga/rtl_model/_detprog_rom.py``). Sending it another circuit's measurements
gives wrong detection events and no error, so the build writes a manifest
next to the ``.bit`` (``<name>.qhil.json``), and ``FrontEnd.open`` checks the
circuit it is given against it.

``python -m qhil.fpga.driver._driver_program CIRCUIT.stim --out DIR`` writes the
inputs of a Vivado build (``fpga/vivado/``): the ROM (``qhil_detprog.hex``),
the RTL parameters as TCL (``qhil_params.tcl``) and the manifest
(``qhil_program.json``, which the build copies next to the bitstream).

>>> import stim
>>> c = stim.Circuit.generated("surface_code:rotated_memory_z", distance=3, rounds=2)
>>> m = ProgramManifest.from_circuit(c)
>>> m.parameters, m.num_rounds
({'MAX_MEAS': 9, 'MAX_DETS': 8, 'MAX_TERMS': 5, 'ROUNDS_MAX': 3}, 3)
>>> m.check(stim.Circuit.generated("surface_code:rotated_memory_x", distance=3, rounds=2))
Traceback (most recent call last):
...
ValueError: the bitstream's detector program was built for another circuit ...
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import stim

from qhil.fpga._detection import DetectorProgram
from qhil.fpga.rtl_model import encode_rom, write_rom

__all__ = ["MANIFEST_SUFFIX", "ProgramManifest", "main", "manifest_path", "prepare_build"]

MANIFEST_SUFFIX = ".qhil.json"
_PARAMS = ("MAX_MEAS", "MAX_DETS", "MAX_TERMS", "ROUNDS_MAX")


def manifest_path(bitstream: str | os.PathLike[str]) -> Path:
    """Where a bitstream's manifest lives: ``x.bit`` -> ``x.qhil.json``."""
    return Path(bitstream).with_suffix(MANIFEST_SUFFIX)


def _rom_digest(words: list[int]) -> str:
    return hashlib.sha256("".join(f"{w:x}\n" for w in words).encode()).hexdigest()


@dataclasses.dataclass(frozen=True)
class ProgramManifest:
    """A bitstream's detector program: RTL sizes, ROM digest and circuit shape.

    Attributes:
        parameters: the RTL parameters the ROM was written for (MAX_MEAS,
            MAX_DETS, MAX_TERMS, ROUNDS_MAX).
        rom_sha256: SHA-256 of the ROM words (lowercase hex, one word a line).
        num_rounds, num_measurements, num_detectors, num_observables: the circuit's shape.
    """

    parameters: dict[str, int]
    rom_sha256: str
    num_rounds: int
    num_measurements: int
    num_detectors: int
    num_observables: int

    def __post_init__(self) -> None:
        if sorted(self.parameters) != sorted(_PARAMS):
            raise ValueError(
                f"manifest parameters must be exactly {', '.join(_PARAMS)}; "
                f"got {', '.join(self.parameters) or 'none'}"
            )
        if len(self.rom_sha256) != 64:
            raise ValueError(f"rom_sha256 must be 64 hex digits; got {self.rom_sha256!r}")

    @classmethod
    def from_circuit(
        cls, circuit: stim.Circuit, *, parameters: dict[str, int] | None = None
    ) -> ProgramManifest:
        """The manifest of ``circuit``'s ROM, sized by ``parameters`` (default: the
        smallest that fit, as ``encode_rom`` chooses)."""
        program = DetectorProgram.from_circuit(circuit)
        unknown = sorted(set(parameters or {}) - set(_PARAMS))
        if unknown:
            raise ValueError(f"unknown RTL parameters {unknown}; valid: {', '.join(_PARAMS)}")
        sizes = {k.lower(): v for k, v in (parameters or {}).items()}
        words, layout = encode_rom(program, **sizes)
        return cls(
            parameters=layout.parameters,
            rom_sha256=_rom_digest(words),
            num_rounds=program.num_rounds,
            num_measurements=circuit.num_measurements,
            num_detectors=circuit.num_detectors,
            num_observables=circuit.num_observables,
        )

    def check(self, circuit: stim.Circuit) -> None:
        """Raise ValueError, naming what differs and the fix, unless ``circuit`` is
        the circuit this bitstream's ROM holds."""
        try:
            other = ProgramManifest.from_circuit(circuit, parameters=self.parameters)
        except ValueError as ex:
            raise ValueError(
                f"the circuit does not fit this bitstream's detector-program ROM ({ex}); "
                "rebuild the bitstream for this circuit (fpga/vivado/README.md)"
            ) from None
        if other != self:
            diffs = [
                f"{f.name} {getattr(self, f.name)} vs {getattr(other, f.name)}"
                for f in dataclasses.fields(self)
                if getattr(self, f.name) != getattr(other, f.name)
            ]
            raise ValueError(
                "the bitstream's detector program was built for another circuit "
                f"(bitstream vs given: {'; '.join(diffs)}); open the FrontEnd with the circuit "
                "the bitstream was built from, or rebuild it (fpga/vivado/README.md)"
            )

    def save(self, path: str | os.PathLike[str]) -> None:
        Path(path).write_text(json.dumps(dataclasses.asdict(self), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> ProgramManifest:
        try:
            data = json.loads(Path(path).read_text())
            return cls(**data)
        except (OSError, json.JSONDecodeError, TypeError, ValueError) as ex:
            raise ValueError(
                f"cannot read the program manifest {path} ({ex}); it is written by "
                "`python -m qhil.fpga.driver._driver_program` and copied next to the bitstream "
                "by fpga/vivado/build.tcl"
            ) from None


def prepare_build(
    circuit: stim.Circuit, out_dir: str | os.PathLike[str], *, parameters: dict[str, int] | None
) -> list[Path]:
    """Write a Vivado build's inputs for ``circuit`` into ``out_dir``; return their paths.

    ``qhil_detprog.hex`` (the ROM), ``qhil_params.tcl`` (``qhil_params``, a TCL
    dict of ``qhil_frontend``'s parameters: the ROM sizes and NUM_OBS; and
    ``qhil_rom_file``, the ROM's absolute path)
    and ``qhil_program.json`` (the manifest).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    manifest = ProgramManifest.from_circuit(circuit, parameters=parameters)
    rom = out / "qhil_detprog.hex"
    sizes = {k.lower(): v for k, v in manifest.parameters.items()}
    write_rom(DetectorProgram.from_circuit(circuit), rom, **sizes)
    params = out / "qhil_params.tcl"
    rtl = {**manifest.parameters, "NUM_OBS": manifest.num_observables}
    pairs = " ".join(f"{k} {v}" for k, v in rtl.items())
    params.write_text(
        "# Written by `python -m qhil.fpga.driver._driver_program`;"
        " sourced by fpga/vivado/build.tcl.\n"
        f"set qhil_params [dict create {pairs}]\n"
        f"set qhil_rom_file {{{rom.resolve().as_posix()}}}\n"
    )
    man = out / "qhil_program.json"
    manifest.save(man)
    return [rom, params, man]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m qhil.fpga.driver._driver_program",
        description="Write a Vivado build's detector-program ROM, RTL parameters and manifest.",
    )
    parser.add_argument(
        "circuit", type=Path, help="stim circuit file (e.g. from `qhil run --save`)"
    )
    parser.add_argument("--out", type=Path, required=True, help="directory for the outputs")
    for name in _PARAMS:
        parser.add_argument(
            f"--{name.lower().replace('_', '-')}",
            type=int,
            help=f"RTL parameter {name} (default: the circuit's need)",
        )
    args = parser.parse_args(argv)
    sizes = {n: getattr(args, n.lower()) for n in _PARAMS if getattr(args, n.lower()) is not None}
    try:
        circuit = stim.Circuit.from_file(str(args.circuit))
        paths = prepare_build(circuit, args.out, parameters=sizes)
    except (OSError, ValueError) as ex:
        print(f"error: {ex}", file=sys.stderr)
        return 2
    for p in paths:
        print(p)
    return 0


if __name__ == "__main__":
    sys.exit(main())
