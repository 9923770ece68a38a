"""FrontEnd on its off-board twin (everywhere), and on a real board (``board`` marker)."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator

import numpy as np
import pytest

from qhil.bridge import CorrectionStatus, packet_buffers
from qhil.fpga import (
    REGISTERS,
    BoardUnavailable,
    FrontEnd,
    FrontEndConfig,
    FrontEndTimeout,
    which_frontend,
)
from qhil.fpga._testing import correction_for, drain_syndromes, exchange_and_check, surface_circuit
from qhil.fpga.driver._board import BoardProbe
from qhil.fpga.driver._driver_model import FrontEndTwin


@pytest.fixture
def fe() -> Iterator[FrontEnd]:
    with FrontEnd.open(surface_circuit(), target="model") as f:
        yield f


# -- registers by name ------------------------------------------------------------------------


def test_every_rw_register_round_trips_by_name(fe: FrontEnd) -> None:
    rng = np.random.default_rng(1)
    for reg in REGISTERS:
        if reg.access == "rw" and reg.name != "CTRL":
            for value in (0, 2**32 - 1, int(rng.integers(2**32))):
                fe.regs[reg.name] = value
                assert fe.regs[reg.name] == value, reg.name
    fe.regs["CTRL"] = 0b011
    assert fe.regs["CTRL"] == 0b011


def test_register_errors_name_the_problem_and_the_choices(fe: FrontEnd) -> None:
    with pytest.raises(
        PermissionError, match="CORR_ACCEPTED is read-only; writable registers: CTRL"
    ):
        fe.regs["CORR_ACCEPTED"] = 1
    with pytest.raises(KeyError, match="no register 'BUDGETT'; registers: ID, VERSION"):
        fe.regs["BUDGETT"]
    with pytest.raises(ValueError, match="32 bits wide; got 4294967296"):
        fe.regs["BUDGET"] = 2**32
    with pytest.raises(ValueError, match="32 bits wide; got -1"):
        fe.regs["BUDGET"] = -1


def test_reset_values_and_snapshot_in_address_order(fe: FrontEnd) -> None:
    snap = fe.regs.snapshot()
    assert list(snap) == [r.name for r in sorted(REGISTERS, key=lambda r: r.offset)]
    for r in REGISTERS:
        if r.name not in ("CYCLE_LO", "CYCLE_HI"):
            assert snap[r.name] == r.reset, r.name


def test_pairs_read_lo_first_and_hi_is_latched_at_the_lo_read(fe: FrontEnd) -> None:
    assert fe.regs["CYCLE_HI"] == 0  # as in the RTL: HI reads 0 until LO was read once
    a = fe.regs.read64("CYCLE")
    time.sleep(0.002)
    b = fe.regs.read64("CYCLE")
    assert b > a > 0
    twin = fe._backend
    assert isinstance(twin, FrontEndTwin)
    twin._t0 -= 20 * 10**9  # 20 s ago: 5e9 cycles, so HI is 1
    lo = fe.regs["CYCLE_LO"]
    twin._t0 -= 20 * 10**9  # HI moves on, but the latch keeps the value seen at the LO read
    assert fe.regs["CYCLE_HI"] == 1
    assert (1 << 32 | lo) < fe.regs.read64("CYCLE")


def test_clear_counters_starts_a_new_run(fe: FrontEnd) -> None:
    fe.start()
    fe.send_measurements(np.zeros((1, fe.program.meas_offsets[-1]), dtype=bool))
    last = drain_syndromes(fe)[-1]
    fe.send_correction(correction_for(last, [1]))
    fe.send_correction(b"QC")
    assert fe.regs.read64("ROUNDS_EMITTED") == 3 and fe.regs["CORR_TRUNCATED"] == 1
    fe.clear_counters()
    assert fe.regs["CTRL"] & 0b100 == 0, "CLEAR_COUNTERS reads back 0"
    assert fe.status()["RUNNING"]
    prefixes = ("CORR_", "SHOTS_", "ROUNDS_", "LAT_", "BUDGET_")
    counters = [r.name for r in REGISTERS if r.access == "ro" and r.name.startswith(prefixes)]
    assert {name: fe.regs[name] for name in counters} == dict.fromkeys(counters, 0)
    assert fe.logical_frame == 0 and fe.regs.read64("SHOTS_DECODED") == 0
    fe.send_measurements(np.zeros((1, fe.program.meas_offsets[-1]), dtype=bool))
    assert [(p.shot, p.round, p.seq) for p in drain_syndromes(fe)] == [
        (0, 0, 0),
        (0, 1, 1),
        (0, 2, 2),
    ]


def test_configure_writes_the_config_and_checks_the_clock(fe: FrontEnd) -> None:
    fe.configure(FrontEndConfig(mode="paced", budget_s=4e-6, stream_id=7, round_time_s=2e-6))
    assert (fe.regs["BUDGET"], fe.regs["STREAM_ID"], fe.regs["ROUND_PERIOD"]) == (1000, 7, 500)
    assert fe.regs["CORR_TIMEOUT"] == 125_000_000 and fe.regs["CTRL"] & 0b10 == 0
    fe.configure(FrontEndConfig(mode="lockstep"))
    assert fe.regs["CTRL"] & 0b10
    with pytest.raises(ValueError, match=r"fabric clock is 250 MHz.*fabric_clock_hz=250e6"):
        fe.configure(FrontEndConfig(fabric_clock_hz=300e6))


# -- opening -------------------------------------------------------------------------------------


def test_targets_are_checked_and_auto_falls_back_saying_why(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    import qhil.fpga.driver._driver as driver

    no_board = BoardProbe(False, "no PYNQ device found (test); the cycle model is used")
    monkeypatch.setattr(driver, "find_board", lambda: no_board)
    with pytest.raises(ValueError, match="target='fpga' is not valid; choose one of auto, board"):
        FrontEnd.open(surface_circuit(), target="fpga")
    with pytest.raises(BoardUnavailable, match=r"no PYNQ device found \(test\).*'board' extra"):
        FrontEnd.open(surface_circuit(), target="board")
    with caplog.at_level(logging.WARNING, logger="qhil.fpga"):
        fe = FrontEnd.open(surface_circuit(), target="auto")
    assert fe.target == "model" and "no PYNQ device found (test)" in fe.description
    assert "using the cycle model: no PYNQ device found (test)" in caplog.text
    assert which_frontend() == ("model", f"cycle model ({no_board.reason})")


def test_a_board_without_a_bitstream(monkeypatch: pytest.MonkeyPatch, tmp_path: object) -> None:
    import qhil.fpga.driver._driver as driver

    monkeypatch.setattr(driver, "find_board", lambda: BoardProbe(True, "found", name="RFSoC4x2"))
    monkeypatch.delenv("QHIL_BITSTREAM", raising=False)
    with pytest.raises(BoardUnavailable, match=r"RFSoC4x2.*no bitstream.*\$QHIL_BITSTREAM"):
        FrontEnd.open(surface_circuit(), target="board")
    assert FrontEnd.open(surface_circuit(), target="auto").target == "model"
    kind, text = which_frontend(bitstream="/nonexistent/qhil.bit")
    assert kind == "model" and "/nonexistent/qhil.bit does not exist" in text


# -- the measurement replay buffer ------------------------------------------------------------


@pytest.mark.parametrize("d", [3, 7])
def test_replay_buffer_layout(d: int) -> None:
    circuit = surface_circuit(d=d, rounds=3)
    fe = FrontEnd.open(circuit, target="model")
    meas = circuit.compile_sampler(seed=5).sample(4)
    replay = fe.replay_buffer(meas)
    prog = fe.program
    sizes = np.diff(prog.meas_offsets)
    assert replay.beats.dtype == np.uint64 and replay.beats.flags.c_contiguous
    assert replay.beats.shape == (4 * prog.num_rounds, 1 + -(-sizes.max() // 64))
    assert replay.round_nbytes == tuple(8 * (1 + -(-int(n) // 64)) for n in sizes)
    headers = replay.beats[:, 0].reshape(4, prog.num_rounds)
    assert (headers[:, :-1] == 0).all() and (headers[:, -1] == 1).all(), "LAST_ROUND"
    bits = np.unpackbits(replay.beats[:, 1:].view(np.uint8), axis=1, bitorder="little")
    bits = bits.reshape(4, prog.num_rounds, -1)
    for t in range(prog.num_rounds):
        lo, hi = prog.meas_offsets[t], prog.meas_offsets[t + 1]
        np.testing.assert_array_equal(bits[:, t, : hi - lo], meas[:, lo:hi])
        assert not bits[:, t, hi - lo :].any(), "unused bits are 0"


def test_replay_buffer_rejects_the_wrong_record(fe: FrontEnd) -> None:
    n = fe.program.meas_offsets[-1]
    with pytest.raises(ValueError, match=rf"bool/uint8\[shots, {n}\].*got bool \(2, {n + 1}\)"):
        fe.replay_buffer(np.zeros((2, n + 1), dtype=bool))
    with pytest.raises(ValueError, match="got float64"):
        fe.replay_buffer(np.zeros((2, n)))
    other = FrontEnd.open(surface_circuit(rounds=3), target="model")
    replay = other.replay_buffer(np.zeros((1, other.program.meas_offsets[-1]), dtype=bool))
    fe.start()
    with pytest.raises(ValueError, match="4 rounds per shot but the circuit has 3"):
        fe.send_measurements(replay)


# -- the streams -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("target", "basis", "d", "rounds"),
    [
        ("model", "z", 3, 2),
        ("model", "x", 5, 4),
        pytest.param("board", "z", 3, 2, marks=pytest.mark.board),
    ],
)
def test_exchange_matches_stim(target: str, basis: str, d: int, rounds: int) -> None:
    circuit = surface_circuit(basis, d, rounds, p=0.05)
    with FrontEnd.open(circuit, target=target) as fe:
        exchange_and_check(fe, circuit, shots=12)


def test_corrupt_and_unexpected_corrections_are_counted_by_reason(fe: FrontEnd) -> None:
    fe.start()
    zeros = np.zeros((3, fe.program.meas_offsets[-1]), dtype=bool)
    replay = fe.replay_buffer(zeros)
    fe.send_measurements(replay, stop_round=replay.shot_rounds(0)[1])
    last = drain_syndromes(fe)[-1]
    good = bytearray(correction_for(last, [1]))
    bad_crc = bytearray(good)
    bad_crc[-1] ^= 0xFF
    cases = {
        "CORR_BAD_CRC": bytes(bad_crc),
        "CORR_BAD_MAGIC": b"XCOR" + bytes(good[4:]),
        "CORR_TRUNCATED": bytes(good[:30]),
        "CORR_BAD_VERSION": bytes(good[:4]) + b"\x09" + bytes(good[5:]),
        "CORR_UNKNOWN_STREAM": correction_for(last, [1], stream_id=9),
        "CORR_UNKNOWN_SHOT": correction_for(last, [1], shot=5),
        "CORR_BAD_FIELD": correction_for(last, [1], seq=last.seq - 1),
        "CORR_BAD_LENGTH": correction_for(last, [1, 0]),
    }
    for name, packet in cases.items():
        fe.send_correction(packet)
        assert fe.regs[name] == 1, name
    assert fe.regs["CORR_ACCEPTED"] == 0 and fe.logical_frame == 0
    fe.send_correction(bytes(good))
    fe.send_correction(bytes(good))
    assert fe.regs["CORR_DUPLICATE"] == 1 and fe.regs["CORR_ACCEPTED"] == 1
    assert fe.logical_frame == 1
    # INCOMPLETE and DECODER_ERROR settle a shot without touching the frame.
    for s, status, name in ((1, 1, "SHOTS_INCOMPLETE"), (2, 2, "SHOTS_DECODER_ERROR")):
        start, stop = replay.shot_rounds(s)
        fe.send_measurements(replay, start_round=start, stop_round=stop)
        last = drain_syndromes(fe)[-1]
        frame_bits = [1] * fe.program.num_rounds if status == 1 else []
        fe.send_correction(
            correction_for(last, [], status=CorrectionStatus(status), frame=frame_bits)
        )
        assert fe.regs[name] == 1
    assert fe.regs["CORR_ACCEPTED"] == 3 and fe.regs.read64("SHOTS_DECODED") == 1
    assert fe.logical_frame == 1
    with pytest.raises(ValueError, match="at least one byte"):
        fe.send_correction(b"")


def test_lockstep_holds_input_while_output_is_full_and_resumes() -> None:
    circuit = surface_circuit()
    fe = FrontEnd.open(circuit, target="model", fifo_packets=2, config=FrontEndConfig())
    fe.start()
    replay = fe.replay_buffer(np.zeros((2, circuit.num_measurements), dtype=bool))
    with pytest.raises(FrontEndTimeout, match=r"round 2 of shot 0.*recv_syndromes") as info:
        fe.send_measurements(replay)
    assert info.value.rounds_sent == 2
    got = drain_syndromes(fe)
    while True:
        try:
            fe.send_measurements(replay, start_round=info.value.rounds_sent)
            break
        except FrontEndTimeout as ex:
            info.value.rounds_sent = ex.rounds_sent
            got += drain_syndromes(fe)
    got += drain_syndromes(fe)
    assert [(p.shot, p.round) for p in got] == [(s, t) for s in range(2) for t in range(3)]
    assert fe.regs["ROUNDS_BACKPRESSURE"] == 0 and not fe.status()["BACKPRESSURE"]


def test_paced_mode_drops_rounds_when_output_is_full() -> None:
    circuit = surface_circuit()
    config = FrontEndConfig(mode="paced")
    fe = FrontEnd.open(circuit, target="model", fifo_packets=2, config=config)
    fe.start()
    assert fe.send_measurements(np.zeros((2, circuit.num_measurements), dtype=bool)) == 6
    assert fe.regs["ROUNDS_BACKPRESSURE"] == 4 and fe.status()["BACKPRESSURE"]
    assert fe.regs.read64("ROUNDS_EMITTED") == 2
    assert [(p.shot, p.round) for p in drain_syndromes(fe)] == [(0, 0), (0, 1)]


def test_a_stopped_front_end_takes_no_rounds(fe: FrontEnd) -> None:
    with pytest.raises(RuntimeError, match=r"stopped \(CTRL.ENABLE = 0\); call start\(\)"):
        fe.send_measurements(np.zeros((1, fe.program.meas_offsets[-1]), dtype=bool))
    fe.start()
    fe.stop()
    assert not fe.status()["RUNNING"]


def test_a_shot_with_no_correction_times_out(fe: FrontEnd) -> None:
    fe.configure(FrontEndConfig(correction_timeout_s=1e-3))
    fe.start()
    fe.send_measurements(np.zeros((1, fe.program.meas_offsets[-1]), dtype=bool))
    last = drain_syndromes(fe)[-1]
    deadline = time.monotonic() + 5
    while fe.regs["SHOTS_TIMED_OUT"] == 0 and time.monotonic() < deadline:
        time.sleep(1e-3)
    assert fe.regs["SHOTS_TIMED_OUT"] == 1 and fe.status()["DECODER_UNRESPONSIVE"]
    fe.send_correction(correction_for(last, [1]))
    assert fe.regs["CORR_DUPLICATE"] == 1 and fe.logical_frame == 0


def test_recv_buffers_are_checked(fe: FrontEnd) -> None:
    out, lengths = packet_buffers(4, fe.max_packet - 1)
    with pytest.raises(ValueError, match=r"packet_buffers\(n_max, fe.max_packet\)"):
        fe.recv_syndromes(out, lengths)
    out, lengths = packet_buffers(4, fe.max_packet)
    assert fe.recv_syndromes(out, lengths, timeout_s=0.0) == 0
    assert fe.dma_status()["syndromes"]["IDLE"]
