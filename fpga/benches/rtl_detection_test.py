"""The RTL detection-event unit (fpga/rtl/qhil_detection_unit.v) in Icarus and through yosys.

One simulator is compiled with MAX_* large enough for d = 13 surface-code memory
circuits; the circuit lives only in the ROM that ``write_rom`` writes into each run's
directory, which ``$readmemh`` loads when the simulation starts. The testbench
(``rtl_detection_cocotb.py``) compares every round's events with
``DetectorProgram.round_events`` on noisy sampled measurement records: about 11,000
rounds across 12 circuits plus a run with randomized ref bits. Every test skips,
saying why, where Icarus Verilog, cocotb or yosys is not installed.
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path
from typing import Any

import pytest

from qhil.fpga.benches._rtl_testing import RTL, simulate, simulator, synthesize
from qhil.fpga.rtl_model import write_rom

SOURCE = RTL / "qhil_detection_unit.v"
TEST_MODULE = "qhil.fpga.benches.rtl_detection_cocotb"
TOP = "qhil_detection_unit"
SEED = int(os.environ.get("QHIL_RTL_SEED", "20240611"))
# Big enough for rotated surface-code memory circuits up to d = 13 with <= 6 rounds:
# 169 data measurements in the last round, 168 detectors a round, 5 terms a detector.
PARAMS = {"MAX_MEAS": 169, "MAX_DETS": 168, "MAX_TERMS": 5, "ROUNDS_MAX": 8}
LATENCY = 2  # cycles, as documented in the RTL's header
ROUNDS_PER_CIRCUIT = 900
CASES = [
    (f"surface_code:rotated_memory_{basis}", d, r)
    for basis in ("z", "x")
    for d, r in ((3, 4), (5, 3), (7, 2), (9, 4), (11, 3), (13, 2))
]


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Path]:
    """One compiled simulator for every circuit (the ROM file is read at start-up)."""
    build = tmp_path_factory.mktemp("detection_build")
    return simulator([SOURCE], TOP, build, parameters=PARAMS), build


def _simulate(
    built: tuple[Any, Path], run_dir: Path, name: str, d: int, rounds: int, shots: int, **kw: int
) -> int:
    from qhil.fpga.benches.rtl_detection_cocotb import build_program

    runner, build = built
    seed = SEED + 1000 * d + rounds + (7 if name.endswith("_x") else 0) + kw.get("flip", 0)
    _, program = build_program(name, d, rounds, kw.get("flip", 0), seed)
    run_dir.mkdir(parents=True, exist_ok=True)
    layout = write_rom(
        program,
        run_dir / "qhil_detprog.hex",
        max_meas=PARAMS["MAX_MEAS"],
        max_dets=PARAMS["MAX_DETS"],
        max_terms=PARAMS["MAX_TERMS"],
        rounds_max=PARAMS["ROUNDS_MAX"],
    )
    assert layout.parameters == PARAMS
    done = run_dir / "rounds_checked.txt"
    simulate(
        runner,
        TEST_MODULE,
        TOP,
        build,
        test_dir=run_dir,
        env={
            "QHIL_DET_CIRCUIT": name,
            "QHIL_DET_DISTANCE": str(d),
            "QHIL_DET_ROUNDS": str(rounds),
            "QHIL_DET_SHOTS": str(shots),
            "QHIL_DET_SEED": str(seed),
            "QHIL_DET_FLIP_REF": str(kw.get("flip", 0)),
            "QHIL_DET_LATENCY": str(LATENCY),
        },
    )
    assert done.exists(), "the testbench did not finish"
    checked = int(done.read_text())
    assert checked == shots * program.num_rounds
    return checked


@pytest.mark.parametrize(("name", "d", "rounds"), CASES, ids=[f"{n[-1]}-d{d}" for n, d, _ in CASES])
def test_detection_unit_matches_round_events(
    built: tuple[Any, Path], tmp_path: Path, name: str, d: int, rounds: int
) -> None:
    shots = math.ceil(ROUNDS_PER_CIRCUIT / (rounds + 1))
    _simulate(built, tmp_path, name, d, rounds, shots)


def test_detection_unit_ref_bits(built: tuple[Any, Path], tmp_path: Path) -> None:
    """Randomized ref bits (memory circuits' are all 0) exercise the RTL's ref XOR."""
    _simulate(built, tmp_path, "surface_code:rotated_memory_x", 5, 3, 100, flip=1)


def test_yosys_synthesizes_without_latches(tmp_path: Path) -> None:
    # Built here, not via the cocotb testbench module: synthesis needs no cocotb.
    import stim

    from qhil.fpga._detection import DetectorProgram

    circuit = stim.Circuit.generated(
        "surface_code:rotated_memory_z", distance=3, rounds=2, after_clifford_depolarization=0.01
    )
    program = DetectorProgram.from_circuit(circuit)
    rom = tmp_path / "rom.hex"
    layout = write_rom(program, rom, rounds_max=4)
    chparams = " ".join(f"-set {k} {v}" for k, v in layout.parameters.items())
    stats = synthesize(
        f"read_verilog -defer {SOURCE}\n"
        f'chparam {chparams} -set ROM_FILE "{rom}" {TOP}\n'
        f"synth_xilinx -family xcup -top {TOP}\n"
        "stat\n",
        tmp_path / "yosys.log",
    )
    assert re.search(r"\bFDRE\b", stats), "expected flip-flops in the netlist"
