"""FrontEnd on its off-board twin (everywhere), and on a real board (``board`` marker)."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import stim

from qhil.bridge import CorrectionPacket, CorrectionStatus, SyndromePacket, packet_buffers
from qhil.fpga import (
    REGISTERS,
    BoardUnavailable,
    FrontEnd,
    FrontEndConfig,
    FrontEndTimeout,
    which_frontend,
)
from qhil.fpga._board import BoardProbe
from qhil.fpga._driver_model import FrontEndTwin


def _circuit(basis: str = "z", d: int = 3, rounds: int = 2, p: float = 0.02) -> stim.Circuit:
    return stim.Circuit.generated(
        f"surface_code:rotated_memory_{basis}",
        distance=d,
        rounds=rounds,
        after_clifford_depolarization=p,
        before_measure_flip_probability=p,
    )


@pytest.fixture
def fe() -> Iterator[FrontEnd]:
    with FrontEnd.open(_circuit(), target="model") as f:
        yield f


def _drain(fe: FrontEnd, n_max: int = 64) -> list[SyndromePacket]:
    out, lengths = packet_buffers(n_max, fe.max_packet)
    n = fe.recv_syndromes(out, lengths, timeout_s=0.0)
    return [SyndromePacket.decode(out[i, : lengths[i]]) for i in range(n)]


def _correction(p: SyndromePacket, obs: list[int], **kw: Any) -> bytes:
    fields: dict[str, Any] = {
        "stream_id": p.stream_id,
        "shot": p.shot,
        "seq": p.seq,
        "t_fpga": p.t_fpga,
    }
    fields.update(kw)
    return CorrectionPacket(obs=obs, **fields).encode()


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
    last = _drain(fe)[-1]
    fe.send_correction(_correction(last, [1]))
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
    assert [(p.shot, p.round, p.seq) for p in _drain(fe)] == [(0, 0, 0), (0, 1, 1), (0, 2, 2)]


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
    import qhil.fpga._driver as driver

    no_board = BoardProbe(False, "no PYNQ device found (test); the cycle model is used")
    monkeypatch.setattr(driver, "find_board", lambda: no_board)
    with pytest.raises(ValueError, match="target='fpga' is not valid; choose one of auto, board"):
        FrontEnd.open(_circuit(), target="fpga")
    with pytest.raises(BoardUnavailable, match=r"no PYNQ device found \(test\).*'board' extra"):
        FrontEnd.open(_circuit(), target="board")
    with caplog.at_level(logging.WARNING, logger="qhil.fpga"):
        fe = FrontEnd.open(_circuit(), target="auto")
    assert fe.target == "model" and "no PYNQ device found (test)" in fe.description
    assert "using the cycle model: no PYNQ device found (test)" in caplog.text
    assert which_frontend() == ("model", f"cycle model ({no_board.reason})")


def test_a_board_without_a_bitstream(monkeypatch: pytest.MonkeyPatch, tmp_path: object) -> None:
    import qhil.fpga._driver as driver

    monkeypatch.setattr(driver, "find_board", lambda: BoardProbe(True, "found", name="RFSoC4x2"))
    monkeypatch.delenv("QHIL_BITSTREAM", raising=False)
    with pytest.raises(BoardUnavailable, match=r"RFSoC4x2.*no bitstream.*\$QHIL_BITSTREAM"):
        FrontEnd.open(_circuit(), target="board")
    assert FrontEnd.open(_circuit(), target="auto").target == "model"
    kind, text = which_frontend(bitstream="/nonexistent/qhil.bit")
    assert kind == "model" and "/nonexistent/qhil.bit does not exist" in text


# -- the measurement replay buffer ------------------------------------------------------------


@pytest.mark.parametrize("d", [3, 7])
def test_replay_buffer_layout(d: int) -> None:
    circuit = _circuit(d=d, rounds=3)
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
    other = FrontEnd.open(_circuit(rounds=3), target="model")
    replay = other.replay_buffer(np.zeros((1, other.program.meas_offsets[-1]), dtype=bool))
    fe.start()
    with pytest.raises(ValueError, match="4 rounds per shot but the circuit has 3"):
        fe.send_measurements(replay)


# -- the streams -----------------------------------------------------------------------------


def _exchange(fe: FrontEnd, circuit: stim.Circuit, shots: int) -> None:
    """Send shots one at a time, check every syndrome packet against stim's detection
    events, and answer each with a correction carrying the true observable flips."""
    meas = circuit.compile_sampler(seed=11).sample(shots)
    dets, obs = circuit.compile_m2d_converter().convert(
        measurements=meas, separate_observables=True
    )
    fe.configure(FrontEndConfig(stream_id=3))
    fe.clear_counters()
    seq0 = None
    fe.start()
    replay = fe.replay_buffer(meas)
    n_rounds, frame = fe.program.num_rounds, fe.logical_frame
    for s in range(shots):
        start, stop = replay.shot_rounds(s)
        assert fe.send_measurements(replay, start_round=start, stop_round=stop) == n_rounds
        packets = _drain(fe)
        assert len(packets) == n_rounds
        seq0 = packets[0].seq if seq0 is None else seq0
        assert [p.round for p in packets] == list(range(n_rounds))
        assert [p.seq - seq0 for p in packets] == list(range(s * n_rounds, (s + 1) * n_rounds))
        assert len({p.shot for p in packets}) == 1 and all(p.stream_id == 3 for p in packets)
        assert packets[0].first_round and packets[-1].last_round
        assert not any(p.first_round for p in packets[1:])
        assert [p.t_fpga for p in packets] == sorted(p.t_fpga for p in packets)
        np.testing.assert_array_equal(np.concatenate([p.bits for p in packets]), dets[s])
        fe.send_correction(_correction(packets[-1], obs[s].astype(int).tolist()))
        frame ^= int(obs[s][0])
    assert fe.regs.read64("ROUNDS_EMITTED") == shots * n_rounds
    assert fe.regs.read64("SHOTS_DECODED") == fe.regs["CORR_ACCEPTED"] == shots
    assert fe.logical_frame == frame and obs.any(), "the sample flips the observable"
    assert 0 < fe.regs["LAT_LAST"] <= fe.regs["LAT_MAX"]
    counted = [r.name for r in REGISTERS if r.access == "ro" and r.name.startswith("CORR_")]
    rejected = [name for name in counted if fe.regs[name]]
    assert rejected == ["CORR_ACCEPTED"]


@pytest.mark.parametrize(
    ("target", "basis", "d", "rounds"),
    [
        ("model", "z", 3, 2),
        ("model", "x", 5, 4),
        pytest.param("board", "z", 3, 2, marks=pytest.mark.board),
    ],
)
def test_exchange_matches_stim(target: str, basis: str, d: int, rounds: int) -> None:
    circuit = _circuit(basis, d, rounds, p=0.05)
    with FrontEnd.open(circuit, target=target) as fe:
        _exchange(fe, circuit, shots=12)


def test_corrupt_and_unexpected_corrections_are_counted_by_reason(fe: FrontEnd) -> None:
    fe.start()
    zeros = np.zeros((3, fe.program.meas_offsets[-1]), dtype=bool)
    replay = fe.replay_buffer(zeros)
    fe.send_measurements(replay, stop_round=replay.shot_rounds(0)[1])
    last = _drain(fe)[-1]
    good = bytearray(_correction(last, [1]))
    bad_crc = bytearray(good)
    bad_crc[-1] ^= 0xFF
    cases = {
        "CORR_BAD_CRC": bytes(bad_crc),
        "CORR_BAD_MAGIC": b"XCOR" + bytes(good[4:]),
        "CORR_TRUNCATED": bytes(good[:30]),
        "CORR_BAD_VERSION": bytes(good[:4]) + b"\x09" + bytes(good[5:]),
        "CORR_UNKNOWN_STREAM": _correction(last, [1], stream_id=9),
        "CORR_UNKNOWN_SHOT": _correction(last, [1], shot=5),
        "CORR_BAD_FIELD": _correction(last, [1], seq=last.seq - 1),
        "CORR_BAD_LENGTH": _correction(last, [1, 0]),
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
        last = _drain(fe)[-1]
        frame_bits = [1] * fe.program.num_rounds if status == 1 else []
        fe.send_correction(_correction(last, [], status=CorrectionStatus(status), frame=frame_bits))
        assert fe.regs[name] == 1
    assert fe.regs["CORR_ACCEPTED"] == 3 and fe.regs.read64("SHOTS_DECODED") == 1
    assert fe.logical_frame == 1
    with pytest.raises(ValueError, match="at least one byte"):
        fe.send_correction(b"")


def test_lockstep_holds_input_while_output_is_full_and_resumes() -> None:
    circuit = _circuit()
    fe = FrontEnd.open(circuit, target="model", fifo_packets=2, config=FrontEndConfig())
    fe.start()
    replay = fe.replay_buffer(np.zeros((2, circuit.num_measurements), dtype=bool))
    with pytest.raises(FrontEndTimeout, match=r"round 2 of shot 0.*recv_syndromes") as info:
        fe.send_measurements(replay)
    assert info.value.rounds_sent == 2
    got = _drain(fe)
    while True:
        try:
            fe.send_measurements(replay, start_round=info.value.rounds_sent)
            break
        except FrontEndTimeout as ex:
            info.value.rounds_sent = ex.rounds_sent
            got += _drain(fe)
    got += _drain(fe)
    assert [(p.shot, p.round) for p in got] == [(s, t) for s in range(2) for t in range(3)]
    assert fe.regs["ROUNDS_BACKPRESSURE"] == 0 and not fe.status()["BACKPRESSURE"]


def test_paced_mode_drops_rounds_when_output_is_full() -> None:
    circuit = _circuit()
    config = FrontEndConfig(mode="paced")
    fe = FrontEnd.open(circuit, target="model", fifo_packets=2, config=config)
    fe.start()
    assert fe.send_measurements(np.zeros((2, circuit.num_measurements), dtype=bool)) == 6
    assert fe.regs["ROUNDS_BACKPRESSURE"] == 4 and fe.status()["BACKPRESSURE"]
    assert fe.regs.read64("ROUNDS_EMITTED") == 2
    assert [(p.shot, p.round) for p in _drain(fe)] == [(0, 0), (0, 1)]


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
    last = _drain(fe)[-1]
    deadline = time.monotonic() + 5
    while fe.regs["SHOTS_TIMED_OUT"] == 0 and time.monotonic() < deadline:
        time.sleep(1e-3)
    assert fe.regs["SHOTS_TIMED_OUT"] == 1 and fe.status()["DECODER_UNRESPONSIVE"]
    fe.send_correction(_correction(last, [1]))
    assert fe.regs["CORR_DUPLICATE"] == 1 and fe.logical_frame == 0


def test_recv_buffers_are_checked(fe: FrontEnd) -> None:
    out, lengths = packet_buffers(4, fe.max_packet - 1)
    with pytest.raises(ValueError, match=r"packet_buffers\(n_max, fe.max_packet\)"):
        fe.recv_syndromes(out, lengths)
    out, lengths = packet_buffers(4, fe.max_packet)
    assert fe.recv_syndromes(out, lengths, timeout_s=0.0) == 0
    assert fe.dma_status()["syndromes"]["IDLE"]
