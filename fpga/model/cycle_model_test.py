"""``CycleModel`` on its own and against scripted peers: config, registers, fates, ledger.

Its runs with the real decoder service are loop-level tests, in
``hil_tests/cycle_model_with_service_test.py``.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable

import numpy as np
import pytest
import stim

from qhil.bridge import (
    FLAG_END_OF_STREAM,
    CorrectionPacket,
    CorrectionStatus,
    ShmRing,
    SyndromePacket,
    correction_size,
    packet_buffers,
    write_correction,
)
from qhil.fpga import CycleModel, Fate, FrontEndConfig, FrontEndResult, PacingStats
from qhil.fpga._testing import (
    FAST_TIMEOUTS,
    STATUS_DONE,
    STATUS_UNRESPONSIVE,
    PeerThread,
    check_ledger,
    model_for,
    rings,
    surface_circuit,
    warm_up_codecs,
)


@pytest.fixture(scope="module")
def circuit() -> stim.Circuit:
    return surface_circuit("z", d=3, rounds=3, p=0.01)


@pytest.fixture(scope="module")
def measurements(circuit: stim.Circuit) -> np.ndarray:
    return circuit.compile_sampler(seed=11).sample(300)


@pytest.fixture(scope="module", autouse=True)
def _compiled_codecs() -> None:
    """Compile (or load) numba code now, not while a timeout runs; the scripted peer's
    raw corrections too."""
    warm_up_codecs()
    raw_correction(SyndromePacket(stream_id=0, shot=1, round=0, seq=1, t_fpga=1, bits=[]), status=0)


# -- peers ------------------------------------------------------------------------------------


Respond = Callable[[SyndromePacket], list[bytes]]


class ScriptedPeer:
    """A fake decoder: calls ``respond`` on each shot's last round and sends what it returns.

    It acknowledges end-of-stream unless ``ack_eos`` is False. Every syndrome packet it
    takes is kept in ``received``.
    """

    def __init__(self, up: ShmRing, down: ShmRing, respond: Respond, *, ack_eos: bool = True):
        self.rx, self.tx = up.receiver(), down.sender()
        self.respond = respond
        self.ack_eos = ack_eos
        self.received: list[SyndromePacket] = []
        self.stop = threading.Event()
        self.thread = PeerThread(self._serve)

    def __enter__(self) -> ScriptedPeer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.finish()

    def _serve(self) -> None:
        buf, lengths = packet_buffers(64, self.rx.max_packet)
        while not self.stop.is_set():
            n = self.rx.recv_into(buf, lengths, timeout_s=5e-3)
            for i in range(n):
                p = SyndromePacket.decode(buf[i, : lengths[i]])
                self.received.append(p)
                if p.end_of_stream:
                    if self.ack_eos:
                        ack = CorrectionPacket(
                            stream_id=0, shot=0, seq=0, t_fpga=0, obs=[], flags=FLAG_END_OF_STREAM
                        )
                        assert self.tx.send(ack.encode(), timeout_s=1.0)
                    return
                if p.last_round:
                    for out in self.respond(p):
                        assert self.tx.send(out, timeout_s=1.0)


def decoded(p: SyndromePacket, obs: list[bool] | None = None, **kw: object) -> bytes:
    fields: dict[str, object] = {
        "stream_id": p.stream_id,
        "shot": p.shot,
        "seq": p.seq,
        "t_fpga": p.t_fpga,
        "obs": [p.shot % 3 == 0] if obs is None else obs,
    }
    fields.update(kw)
    return CorrectionPacket(**fields).encode()  # type: ignore[arg-type]


def incomplete(p: SyndromePacket, mask: list[bool]) -> bytes:
    return CorrectionPacket(
        stream_id=p.stream_id,
        shot=p.shot,
        seq=p.seq,
        t_fpga=p.t_fpga,
        obs=[],
        status=CorrectionStatus.INCOMPLETE,
        frame=mask,
    ).encode()


def raw_correction(p: SyndromePacket, *, status: int) -> bytes:
    """A correction with a status byte the format does not define (CRC still valid)."""
    out = np.zeros(correction_size(1, 0), dtype=np.uint8)
    one = np.ones(1, np.uint8)
    n = write_correction(out, p.stream_id, p.shot, p.seq, p.t_fpga, status, 0, one, 1,
                         one, 0, 0, 0)  # fmt: skip
    return out[:n].tobytes()


# -- config -----------------------------------------------------------------------------------


def test_config_defaults_and_derived_cycles() -> None:
    cfg = FrontEndConfig()
    assert (cfg.mode, cfg.max_in_flight, cfg.stream_id) == ("lockstep", 1, 0)
    assert cfg.round_period_cycles == 250
    assert cfg.budget_cycles == 2500
    cfg = FrontEndConfig(fabric_clock_hz=100e6, round_time_s=1e-9, budget_s=3e-6)
    assert cfg.round_period_cycles == 1, "the round clock is at least one cycle"
    assert cfg.budget_cycles == 300


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"mode": "fast"}, "mode must be one of 'lockstep', 'paced'; got 'fast'"),
        ({"fabric_clock_hz": 0.0}, "fabric_clock_hz must be positive; got 0.0"),
        ({"round_time_s": -1e-6}, "round_time_s must be positive"),
        ({"budget_s": math.nan}, "budget_s must be positive; got nan"),
        ({"correction_timeout_s": 0}, "correction_timeout_s must be positive"),
        ({"stall_timeout_s": 0.0}, "stall_timeout_s must be positive"),
        (
            {"correction_timeout_s": 3.0, "stall_timeout_s": 2.0},
            "correction_timeout_s (3.0) must not exceed stall_timeout_s (2.0)",
        ),
        ({"max_in_flight": 0}, "max_in_flight must be >= 1; got 0"),
        ({"stream_id": -1}, "stream_id must fit in 32 bits; got -1"),
        ({"stream_id": 2**32}, "stream_id must fit in 32 bits"),
    ],
)
def test_config_validation(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError) as info:
        FrontEndConfig(**kwargs)  # type: ignore[arg-type]
    assert message in str(info.value)


def test_model_programs_its_registers_from_the_config(circuit: stim.Circuit) -> None:
    cfg = FrontEndConfig(mode="paced", stream_id=7, round_time_s=2e-6, budget_s=4e-6,
                         correction_timeout_s=0.1, stall_timeout_s=0.2)  # fmt: skip
    regs = CycleModel.from_circuit(circuit, config=cfg).regs
    assert regs.read("STREAM_ID") == 7
    assert regs.read("ROUND_PERIOD") == 500
    assert regs.read("BUDGET") == 1000
    assert regs.read("CORR_TIMEOUT") == 25_000_000
    assert regs.read("CTRL") == 0, "paced: LOCKSTEP clear, not yet enabled"
    assert model_for(circuit).regs.read("CTRL") == 0b10
    long = model_for(circuit, correction_timeout_s=100.0, stall_timeout_s=100.0)
    assert long.regs.read("CORR_TIMEOUT") == 2**32 - 1, "saturates instead of wrapping"


def test_run_rejects_measurements_of_the_wrong_shape(circuit: stim.Circuit) -> None:
    model = model_for(circuit)
    with rings() as (up, down), pytest.raises(ValueError, match="measurements must have shape"):
        model.run(np.zeros((4, 5), np.bool_), tx=up.sender(), rx=down.receiver())


# -- scripted peers: exact fates ----------------------------------------------------------------


def test_incomplete_corrections_settle_rounds_per_the_mask(
    circuit: stim.Circuit, measurements: np.ndarray
) -> None:
    def mask(shot: int) -> list[bool]:
        return [bool(shot >> r & 1) for r in range(4)]

    def respond(p: SyndromePacket) -> list[bytes]:
        return [incomplete(p, mask(p.shot))] if p.shot % 2 else [decoded(p)]

    shots = 32
    model = model_for(circuit, **FAST_TIMEOUTS)
    with rings() as (up, down), ScriptedPeer(up, down, respond):
        res = model.run(measurements[:shots], tx=up.sender(), rx=down.receiver())
    assert res.aborted == ""
    for shot in range(shots):
        row = res.fates[shot].tolist()
        if shot % 2 == 0:
            assert row == [Fate.DECODED] * 4
            assert res.predictions[shot].tolist() == [shot % 3 == 0]
        else:
            want = [Fate.LOST_SHOT_INCOMPLETE if m else Fate.LOST_IN_TRANSIT for m in mask(shot)]
            assert row == want, shot
    check_ledger(res)
    lost = res.rounds_lost()
    odd_masks = [mask(s) for s in range(1, shots, 2)]
    assert lost["shot_incomplete"] == sum(sum(m) for m in odd_masks)
    assert lost["in_transit"] == sum(4 - sum(m) for m in odd_masks)
    assert lost["shot_incomplete"] + lost["in_transit"] == 4 * shots // 2
    regs = res.registers
    assert regs["SHOTS_INCOMPLETE"] == shots // 2
    assert regs["CORR_ACCEPTED"] == shots
    assert regs["SHOTS_DECODED_LO"] == shots // 2
    flips = sum(s % 3 == 0 for s in range(0, shots, 2))
    assert regs["LOGICAL_FRAME"] == flips % 2


def test_decoder_error_corrections(circuit: stim.Circuit, measurements: np.ndarray) -> None:
    def respond(p: SyndromePacket) -> list[bytes]:
        if p.shot in (1, 4):
            return [CorrectionPacket(stream_id=0, shot=p.shot, seq=p.seq, t_fpga=p.t_fpga, obs=[],
                                     status=CorrectionStatus.DECODER_ERROR).encode()]  # fmt: skip
        return [decoded(p)]

    model = model_for(circuit, **FAST_TIMEOUTS)
    with rings() as (up, down), ScriptedPeer(up, down, respond):
        res = model.run(measurements[:6], tx=up.sender(), rx=down.receiver())
    assert res.fates[:, 0].tolist() == [1, 5, 1, 1, 5, 1]
    assert res.rounds_lost()["decoder_error"] == 8
    assert res.registers["SHOTS_DECODER_ERROR"] == 2
    check_ledger(res)


def test_a_silent_decoder_times_out_then_aborts_quickly(
    circuit: stim.Circuit, measurements: np.ndarray
) -> None:
    model = model_for(circuit, **FAST_TIMEOUTS)
    with rings() as (up, down):  # nobody reads `up` or writes `down`
        t0 = time.monotonic()
        res = model.run(measurements, tx=up.sender(), rx=down.receiver())
        wall = time.monotonic() - t0
    assert wall < 30.0  # a hang guard; the timeouts themselves are 0.5 s
    assert res.aborted.startswith("decoder unresponsive: no correction for 0.5 s")
    timed_out = res.fates[:, -1] == Fate.LOST_TIMEOUT
    assert timed_out.sum() >= 1
    emitted = res.fates[:, 0] != Fate.NOT_EMITTED
    np.testing.assert_array_equal(emitted, timed_out)
    assert np.all(res.fates[timed_out] == Fate.LOST_TIMEOUT)
    assert np.all(res.fates[~emitted] == Fate.NOT_EMITTED)
    assert not emitted[-1], "the run stopped long before the last shot"
    check_ledger(res)
    assert res.registers["SHOTS_TIMED_OUT"] == timed_out.sum()
    assert res.registers["STATUS"] == STATUS_DONE | STATUS_UNRESPONSIVE
    assert res.registers["CORR_ACCEPTED"] == 0
    assert np.all(res.latency_ns == -1)


def test_a_full_bridge_in_lockstep_aborts_and_settles_the_cut_shot(
    circuit: stim.Circuit, measurements: np.ndarray
) -> None:
    model = model_for(circuit, **FAST_TIMEOUTS)
    with rings(up_slots=2) as (up, down):
        t0 = time.monotonic()
        res = model.run(measurements[:5], tx=up.sender(), rx=down.receiver())
        wall = time.monotonic() - t0
        assert up.occupancy() == 2
    assert wall < 30.0  # a hang guard; the timeouts themselves are 0.5 s
    assert res.aborted == "decoder unresponsive: the bridge stayed full for 0.5 s"
    assert res.fates[0].tolist() == [Fate.LOST_ABORTED] * 2 + [Fate.NOT_EMITTED] * 2
    assert np.all(res.fates[1:] == Fate.NOT_EMITTED)
    check_ledger(res)
    assert res.registers["STATUS"] == STATUS_DONE | STATUS_UNRESPONSIVE
    assert res.registers["ROUNDS_BACKPRESSURE"] == 0, "lockstep waits; it never drops"


def test_rejected_corrections_are_counted_and_never_crash(
    circuit: stim.Circuit, measurements: np.ndarray
) -> None:
    shots = 6
    wrong_frame = CorrectionStatus.INCOMPLETE

    def respond(p: SyndromePacket) -> list[bytes]:
        good = decoded(p)
        if p.shot == 0:
            bad = bytearray(good)
            bad[CORRECTION_OBS] ^= 1
            return [
                b"XCOR" + good[4:],  # bad magic
                good[:4] + b"\x07" + good[5:],  # bad version
                good[:-1],  # truncated
                good[:10],  # truncated header
                bytes(bad),  # bad crc
                good + b"\x00",  # bad length: trailing byte
                decoded(p, obs=[True, False]),  # bad length: wrong n_obs
                raw_correction(p, status=9),  # bad field: undefined status
                decoded(p, seq=p.seq - 1),  # bad field: not the shot's last round
                decoded(p, stream_id=3),  # unknown stream
                decoded(p, shot=10**9),  # unknown shot: never planned
                decoded(p, shot=shots - 1),  # unknown shot: not emitted yet
                good,
                good,  # duplicate
                incomplete(p, [True] * 4),  # duplicate, another status
            ]
        if p.shot == 1:
            return [
                CorrectionPacket(stream_id=0, shot=1, seq=p.seq, t_fpga=p.t_fpga, obs=[],
                                 status=wrong_frame, frame=[True] * 3).encode(),  # bad length
                good,
            ]  # fmt: skip
        return [good]

    model = model_for(circuit, **FAST_TIMEOUTS)
    with rings() as (up, down), ScriptedPeer(up, down, respond):
        res = model.run(measurements[:shots], tx=up.sender(), rx=down.receiver())
    assert res.aborted == ""
    assert res.decoded.all(), "every shot still decoded from its good correction"
    assert {k: v for k, v in res.rejections.items() if v} == {
        "bad_magic": 1,
        "bad_version": 1,
        "truncated": 2,
        "bad_crc": 1,
        "bad_length": 3,
        "bad_field": 2,
        "unknown_stream": 1,
        "unknown_shot": 2,
        "duplicate": 2,
    }
    regs = res.registers
    assert regs["CORR_ACCEPTED"] == shots
    assert regs["CORR_BAD_MAGIC"] == 1
    assert regs["CORR_UNKNOWN_SHOT"] == 2
    assert regs["CORR_DUPLICATE"] == 2
    assert regs["SHOTS_INCOMPLETE"] == 0
    check_ledger(res)
    assert res.predictions[:, 0].tolist() == [s % 3 == 0 for s in range(shots)]


CORRECTION_OBS = 56  # first byte of the obs flips


def test_late_correction_after_timeout_is_a_duplicate(
    circuit: stim.Circuit, measurements: np.ndarray
) -> None:
    def respond(p: SyndromePacket) -> list[bytes]:
        if p.shot == 1:
            time.sleep(0.3)  # past the 0.2 s correction timeout
        return [decoded(p)]

    model = model_for(circuit, correction_timeout_s=0.2, stall_timeout_s=1.0)
    with rings() as (up, down), ScriptedPeer(up, down, respond):
        res = model.run(measurements[:3], tx=up.sender(), rx=down.receiver())
    assert res.fates[:, 0].tolist() == [Fate.DECODED, Fate.LOST_TIMEOUT, Fate.DECODED]
    assert res.rejections["duplicate"] == 1
    assert res.registers["SHOTS_TIMED_OUT"] == 1
    check_ledger(res)


def test_should_stop_interrupts_and_pending_shots_are_aborted(
    circuit: stim.Circuit, measurements: np.ndarray
) -> None:
    calls = []

    def should_stop() -> bool:
        calls.append(1)
        return True

    model = model_for(circuit, max_in_flight=4, correction_timeout_s=1.0, stall_timeout_s=2.0)
    with rings() as (up, down):  # no decoder: shot 0 stays pending
        t0 = time.monotonic()
        res = model.run(measurements, tx=up.sender(), rx=down.receiver(), should_stop=should_stop)
        wall = time.monotonic() - t0
    # An interrupted run waits only briefly (0.2 s) for corrections in flight, not for the
    # 1 s correction timeout; the bound is loose so a loaded machine cannot fail it.
    assert wall < 30.0
    assert calls == [1]
    assert res.aborted == "interrupted"
    assert res.fates[0].tolist() == [Fate.LOST_ABORTED] * 4
    assert np.all(res.fates[1:] == Fate.NOT_EMITTED)
    assert res.rounds_lost()["aborted"] == 4
    check_ledger(res)
    assert res.registers["STATUS"] == STATUS_DONE, "an interrupt is not a decoder fault"


# -- paced mode ---------------------------------------------------------------------------------


def test_paced_mode_without_a_decoder_times_shots_out(
    circuit: stim.Circuit, measurements: np.ndarray
) -> None:
    model = model_for(circuit, mode="paced", round_time_s=50e-6, **FAST_TIMEOUTS)
    with rings(up_slots=64) as (up, down):
        res = model.run(measurements[:10], tx=up.sender(), rx=down.receiver())
    assert res.aborted == ""
    assert np.all(res.fates == Fate.LOST_TIMEOUT)
    assert res.registers["SHOTS_TIMED_OUT"] == 10
    assert res.pacing is not None and res.pacing.interval_s > 0
    check_ledger(res)


# -- the ledger -----------------------------------------------------------------------------------


def _result(fates: list[list[int]], **kw: object) -> FrontEndResult:
    f = np.asarray(fates, dtype=np.uint8)
    n = len(f)
    fields: dict[str, object] = dict(
        mode="lockstep", fates=f, predictions=np.zeros((n, 1), np.bool_),
        raw_observables=np.zeros((n, 1), np.bool_), latency_ns=np.full(n, -1),
        latency_cycles=np.full(n, -1), emit_ns=np.zeros(n), host_rx_ns=np.zeros(n),
        host_tx_ns=np.zeros(n), budget_cycles=1, fabric_clock_hz=1.0, wall_s=0.0, pacing=None,
        rejections={}, registers={},
    )  # fmt: skip
    fields.update(kw)
    return FrontEndResult(**fields)  # type: ignore[arg-type]


def test_fate_labels() -> None:
    assert Fate.LOST_BACKPRESSURE.label == "backpressure"
    assert Fate.DECODED.label == "decoded"
    assert list(_result([[1]]).rounds_lost()) == [
        "backpressure", "in_transit", "shot_incomplete", "decoder_error", "timeout", "aborted",
    ]  # fmt: skip


def test_ledger_counts_and_properties() -> None:
    res = _result(
        [[1, 1], [2, 6], [0, 0], [7, 0]],
        predictions=np.array([[1], [0], [0], [0]], np.bool_),
        raw_observables=np.array([[0], [1], [0], [0]], np.bool_),
    )
    assert res.rounds_emitted == 5
    assert res.rounds_decoded == 2
    assert res.decoded.tolist() == [True, False, False, False]
    assert res.rounds_lost() == {"backpressure": 1, "in_transit": 0, "shot_incomplete": 0,
                                 "decoder_error": 0, "timeout": 1, "aborted": 1}  # fmt: skip
    assert res.logical_errors.tolist() == [True, False, False, False]
    res.check_nothing_lost_silently()


def test_ledger_refuses_partly_decoded_shots() -> None:
    with pytest.raises(AssertionError, match="only partly decoded"):
        _result([[1, 1], [1, 3]]).check_nothing_lost_silently()


def test_ledger_refuses_pending_rounds_and_mismatched_rows() -> None:
    with pytest.raises(ValueError, match="PENDING"):
        _result([[1, Fate.PENDING]])
    with pytest.raises(ValueError, match="latency_ns has 3 rows; expected 2"):
        _result([[1], [1]], latency_ns=np.zeros(3))


def test_pacing_stats_validation() -> None:
    PacingStats(1e-6, 0.0, 0.0, 0.0, 0.0)
    with pytest.raises(ValueError):
        PacingStats(0.0, 1e-6, 0.0, 0.0, 0.0)
    with pytest.raises(ValueError):
        PacingStats(1e-6, -1.0, 0.0, 0.0, 0.0)


# -- measurements in chunks ----------------------------------------------------------------------


def test_chunks_must_hold_the_promised_shots(
    circuit: stim.Circuit, measurements: np.ndarray
) -> None:
    model = model_for(circuit, **FAST_TIMEOUTS)
    chunks = [measurements[:5], measurements[5:10]]
    with rings() as (up, down):
        with pytest.raises(ValueError, match="measurement chunks need shots="):
            model.run(iter(chunks), tx=up.sender(), rx=down.receiver())
        with pytest.raises(ValueError, match="shots=3 but measurements has 5 rows"):
            model.run(chunks[0], shots=3, tx=up.sender(), rx=down.receiver())
    for shots, match in ((7, "hold more than shots=7"), (12, "held 10 shots; shots=12")):
        with rings() as (up, down), ScriptedPeer(up, down, lambda p: [decoded(p)]):
            with pytest.raises(ValueError, match=match):
                model.run(iter(chunks), shots=shots, tx=up.sender(), rx=down.receiver())


def test_lag_histogram_is_bounded_and_close() -> None:
    from qhil.fpga.model._cycle_run import LagHistogram

    lags = np.random.default_rng(3).lognormal(mean=9.0, sigma=1.5, size=200_000).astype(np.int64)
    hist = LagHistogram()
    for part in np.array_split(lags, 7):
        hist.add(part)
    size = hist.counts.nbytes
    hist.add(np.zeros(0, np.int64))
    assert hist.count == lags.size and hist.counts.nbytes == size < 16_384
    assert hist.max_ns == lags.max()
    for q in (50, 99):
        exact = np.percentile(lags, q) * 1e-9
        assert exact * 0.99 <= hist.percentile_s(q) <= exact * 1.03, q
    assert hist.percentile_s(100) == lags.max() * 1e-9
