"""cocotb testbench for ``rtl/qhil_detection_unit.v``; run by ``rtl_detection_test.py`` in Icarus.

Not a pytest module: this coroutine runs inside the simulator. The reference for every
detection event is ``DetectorProgram.round_events``, fed the same sampled measurement
record, so the RTL is checked against the one definition of the detector program.

Environment (set by the pytest side): ``QHIL_DET_CIRCUIT`` (a stim generated-circuit
name), ``QHIL_DET_DISTANCE``, ``QHIL_DET_ROUNDS``, ``QHIL_DET_SHOTS``, ``QHIL_DET_SEED``,
``QHIL_DET_FLIP_REF`` (1: randomize the program's ref bits, to exercise that path; the
ROM in the working directory was written from the same flipped program) and
``QHIL_DET_LATENCY`` (the documented latency in cycles).
"""

from __future__ import annotations

import dataclasses
import os
import random
from collections import deque
from typing import Any

import cocotb
import numpy as np
import stim
from cocotb.clock import Clock
from cocotb.triggers import FallingEdge, RisingEdge

from qhil.fpga._detection import DetectorProgram

NOISE = 0.01


def build_program(
    name: str, distance: int, rounds: int, flip_ref: int, seed: int
) -> tuple[stim.Circuit, DetectorProgram]:
    """The circuit and program both sides use (the pytest side writes its ROM)."""
    circuit = stim.Circuit.generated(
        name,
        distance=distance,
        rounds=rounds,
        after_clifford_depolarization=NOISE,
        before_measure_flip_probability=NOISE,
        after_reset_flip_probability=NOISE,
        before_round_data_depolarization=NOISE,
    )
    program = DetectorProgram.from_circuit(circuit)
    if flip_ref:
        flips = np.random.default_rng(seed).random(program.num_detectors) < 0.5
        program = dataclasses.replace(program, det_ref=program.det_ref ^ flips)
    return circuit, program


def _to_int(bits: np.ndarray) -> int:
    return int.from_bytes(np.packbits(bits, bitorder="little").tobytes(), "little")


@cocotb.test()
async def detection_matches_round_events(dut: Any) -> None:
    """Random noisy shots, round by round with random idle gaps; every event vs round_events."""
    name = os.environ["QHIL_DET_CIRCUIT"]
    distance = int(os.environ["QHIL_DET_DISTANCE"])
    rounds = int(os.environ["QHIL_DET_ROUNDS"])
    shots = int(os.environ["QHIL_DET_SHOTS"])
    seed = int(os.environ["QHIL_DET_SEED"])
    latency = int(os.environ.get("QHIL_DET_LATENCY", "2"))
    circuit, program = build_program(
        name, distance, rounds, int(os.environ.get("QHIL_DET_FLIP_REF", "0")), seed
    )
    label = f"{name} d={distance} rounds={rounds} seed={seed}"
    record = circuit.compile_sampler(seed=seed).sample(shots)
    rng = random.Random(seed)

    await _reset(dut)
    checked = await _stream_rounds(dut, program, record, rng, latency, label)
    await _check_round_past_rounds_max(dut, rng, latency, label)
    dut._log.info(
        "%s: %d rounds (%d shots) match round_events bit-exactly; MAX_DETS=%d",
        label,
        checked,
        shots,
        len(dut.dets),
    )
    with open("rounds_checked.txt", "w", encoding="ascii") as f:
        f.write(f"{checked}\n")


async def _reset(dut: Any) -> None:
    """Start the clock, hold reset for three edges; return on the falling edge after."""
    Clock(dut.clk, 4, unit="ns").start()
    dut.rst.value = 1
    dut.meas_valid.value = 0
    dut.meas.value = 0
    dut.round_index.value = 0
    for _ in range(3):
        await RisingEdge(dut.clk)
    dut.rst.value = 0
    await FallingEdge(dut.clk)


async def _stream_rounds(
    dut: Any,
    program: DetectorProgram,
    record: np.ndarray,
    rng: random.Random,
    latency: int,
    label: str,
) -> int:
    """Every round of every shot in, at random gaps; each output checked. Returns the count."""
    shots = record.shape[0]
    expected = [program.round_events(record, t) for t in range(program.num_rounds)]
    todo = deque((s, t) for s in range(shots) for t in range(program.num_rounds))
    pending: deque[tuple[int, int, int]] = deque()  # (shot, round, cycle presented)
    cycle = checked = 0
    while todo or pending:
        # Falling edge: outputs have settled from the last rising edge.
        if int(dut.dets_valid.value):
            assert pending, f"{label}: dets_valid with no round in flight (cycle {cycle})"
            s, t, c0 = pending.popleft()
            assert cycle - c0 == latency, (
                f"{label}: shot {s} round {t} out after {cycle - c0} cycles, want {latency}"
            )
            _check_events(dut, program, expected[t][s], label, s, t)
            checked += 1
        elif pending:
            assert cycle - pending[0][2] < latency, f"{label}: round late at cycle {cycle}"

        if todo and rng.random() < 0.85:
            s, t = todo.popleft()
            _present_round(dut, program, record[s], t, rng)
            pending.append((s, t, cycle))
        else:
            # Idle: junk on the data lines must not disturb the held previous round.
            dut.meas.value = rng.getrandbits(len(dut.meas))
            dut.round_index.value = rng.getrandbits(16)
            dut.meas_valid.value = 0
        await FallingEdge(dut.clk)
        cycle += 1
    return checked


def _present_round(
    dut: Any, program: DetectorProgram, shot: np.ndarray, t: int, rng: random.Random
) -> None:
    """Drive round ``t`` of one shot's record onto the inputs, with junk above its count."""
    lo, hi = int(program.meas_offsets[t]), int(program.meas_offsets[t + 1])
    # Junk above the round's count checks that the RTL ignores those bits.
    junk = rng.getrandbits(len(dut.meas)) >> (hi - lo) << (hi - lo)
    dut.meas.value = _to_int(shot[lo:hi]) | junk
    dut.round_index.value = t
    dut.meas_valid.value = 1


def _check_events(
    dut: Any, program: DetectorProgram, want: np.ndarray, label: str, s: int, t: int
) -> None:
    """The outputs equal ``want``, shot ``s`` round ``t``'s events; else the first difference."""
    n_want = len(want)
    n_got = int(dut.n_dets.value)
    got = int(dut.dets.value)
    want_int = _to_int(want)
    if got == want_int and n_got == n_want and not int(dut.round_error.value):
        return
    diff = got ^ want_int
    i = (diff & -diff).bit_length() - 1 if diff else -1
    where = (
        f"detector {i}: expected {int(want[i]) if i < n_want else 0}, got {(got >> i) & 1}"
        if i >= 0
        else "events equal"
    )
    raise AssertionError(
        f"{label}: first mismatch at shot {s} round {t} (record rounds "
        f"{program.meas_offsets[t]}:{program.meas_offsets[t + 1]}): {where}; "
        f"n_dets got {n_got} want {n_want}, round_error {int(dut.round_error.value)}"
    )


async def _check_round_past_rounds_max(
    dut: Any, rng: random.Random, latency: int, label: str
) -> None:
    """A round index past ROUNDS_MAX: round_error, no events."""
    dut.meas_valid.value = 1
    dut.round_index.value = 0xFFFF
    dut.meas.value = rng.getrandbits(len(dut.meas))
    await FallingEdge(dut.clk)
    dut.meas_valid.value = 0
    for _ in range(latency - 1):
        await FallingEdge(dut.clk)
    assert int(dut.dets_valid.value) == 1 and int(dut.round_error.value) == 1, label
    assert int(dut.n_dets.value) == 0 and int(dut.dets.value) == 0, label
