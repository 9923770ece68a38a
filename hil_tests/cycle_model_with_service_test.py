"""``CycleModel`` closes the loop with the real ``DecoderService`` over shared-memory rings.

Lockstep and paced runs, a second stream, an interrupt, measurements in chunks: every
round decoded as pymatching decodes it, or lost and accounted for. ``CycleModel`` on
its own and against scripted peers is tested in ``fpga/model/cycle_model_test.py``.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import stim

from qhil.fpga import Fate, PacingStats
from qhil.fpga._testing import (
    FAST_TIMEOUTS,
    STATUS_BACKPRESSURE,
    STATUS_DONE,
    PeerThread,
    check_ledger,
    model_for,
    rings,
    surface_circuit,
    warm_up_codecs,
)
from qhil.host import DecoderService, ServiceConfig, make_decoder


@pytest.fixture(scope="module")
def circuit() -> stim.Circuit:
    return surface_circuit("z", d=3, rounds=3, p=0.01)


@pytest.fixture(scope="module")
def measurements(circuit: stim.Circuit) -> np.ndarray:
    return circuit.compile_sampler(seed=11).sample(300)


@pytest.fixture(scope="module", autouse=True)
def _compiled_codecs() -> None:
    """Compile (or load) numba code now, not while a timeout runs."""
    warm_up_codecs()


@pytest.fixture(scope="module")
def service(circuit: stim.Circuit) -> DecoderService:
    svc = DecoderService.from_circuit(circuit, config=ServiceConfig())
    svc.warm_up()
    return svc


@pytest.mark.parametrize("max_in_flight", [1, 8])
def test_lockstep_with_the_decoder_service_decodes_every_round(
    circuit: stim.Circuit, measurements: np.ndarray, service: DecoderService, max_in_flight: int
) -> None:
    model = model_for(circuit, max_in_flight=max_in_flight)
    progress: list[tuple[int, int]] = []
    with rings() as (up, down):
        host = PeerThread(lambda: service.serve(up.receiver(), down.sender()))
        host.start()
        res = model.run(measurements, tx=up.sender(), rx=down.receiver(),
                        on_progress=lambda a, b: progress.append((a, b)))  # fmt: skip
        stats = host.finish()
    shots = len(measurements)
    assert res.aborted == ""
    assert res.mode == "lockstep"
    assert res.fates.shape == (shots, 4)
    assert np.all(res.fates == Fate.DECODED)
    assert res.decoded.all()
    check_ledger(res)
    assert res.rounds_emitted == res.rounds_decoded == 4 * shots
    assert sum(res.rounds_lost().values()) == 0
    assert not any(res.rejections.values())

    dets, obs = circuit.compile_m2d_converter().convert(
        measurements=measurements, separate_observables=True
    )
    expected = make_decoder("pymatching", circuit).decode_batch(dets.astype(np.uint8))
    assert expected.any() and obs.any(), "noise strong enough for the comparison to matter"
    np.testing.assert_array_equal(res.predictions, expected)
    np.testing.assert_array_equal(res.raw_observables, obs)
    np.testing.assert_array_equal(res.logical_errors, np.any(obs ^ expected, axis=1))

    regs = res.registers
    # ROUNDS_EMITTED counts rounds; the end-of-stream marker is not a round.
    assert regs["ROUNDS_EMITTED_LO"] == 4 * shots
    assert regs["ROUNDS_EMITTED_HI"] == 0
    assert regs["SHOTS_DECODED_LO"] == shots
    assert regs["CORR_ACCEPTED"] == shots
    assert regs["SHOTS_TIMED_OUT"] == regs["SHOTS_INCOMPLETE"] == 0
    assert regs["STATUS"] == STATUS_DONE
    assert regs["CTRL"] == 0b11
    assert regs["LOGICAL_FRAME"] == int(np.count_nonzero(expected[:, 0])) % 2
    assert regs["LAT_MAX"] == res.latency_cycles.max()
    assert regs["LAT_LAST"] in set(res.latency_cycles.tolist())
    assert regs["BUDGET_MISSES"] == int(np.count_nonzero(res.latency_cycles > res.budget_cycles))
    assert regs["CYCLE_LO"] | regs["CYCLE_HI"] << 32 > 0
    assert np.all(res.emit_ns > 0)
    assert np.all(res.host_rx_ns >= res.emit_ns)
    assert np.all(res.host_tx_ns >= res.host_rx_ns)
    assert res.pacing is None
    assert progress[-1] == (shots, shots)

    assert stats.stopped_by == "end_of_stream"
    assert stats.shots_decoded == shots
    assert stats.counts["rounds_accepted"] == 4 * shots
    assert stats.counts["end_of_stream"] == 1
    stats.check_balanced()


def test_a_second_stream_id_is_echoed(circuit: stim.Circuit, measurements: np.ndarray) -> None:
    svc = DecoderService.from_circuit(circuit, config=ServiceConfig(num_streams=3))
    model = model_for(circuit, stream_id=2)
    with rings() as (up, down):
        host = PeerThread(lambda: svc.serve(up.receiver(), down.sender()))
        host.start()
        res = model.run(measurements[:20], tx=up.sender(), rx=down.receiver())
        host.finish()
    assert res.decoded.all()
    assert not any(res.rejections.values())


def test_should_stop_with_a_live_decoder_keeps_what_was_decoded(
    circuit: stim.Circuit, measurements: np.ndarray, service: DecoderService
) -> None:
    model = model_for(circuit)
    with rings() as (up, down):
        host = PeerThread(lambda: service.serve(up.receiver(), down.sender()))
        host.start()
        res = model.run(measurements, tx=up.sender(), rx=down.receiver(), should_stop=lambda: True)
        host.finish()
    assert res.aborted == "interrupted"
    assert res.decoded[0] and not res.decoded[1:].any()
    assert np.all(res.fates[1:] == Fate.NOT_EMITTED)
    check_ledger(res)


def test_paced_mode_keeps_to_the_round_clock(
    circuit: stim.Circuit, measurements: np.ndarray, service: DecoderService
) -> None:
    period = 200e-6
    model = model_for(circuit, mode="paced", round_time_s=period, **FAST_TIMEOUTS)
    with rings(up_slots=1024) as (up, down):
        host = PeerThread(lambda: service.serve(up.receiver(), down.sender()))
        host.start()
        res = model.run(measurements[:100], tx=up.sender(), rx=down.receiver())
        host.finish()
    assert res.mode == "paced"
    assert res.aborted == ""
    assert res.decoded.all()
    check_ledger(res)
    pacing = res.pacing
    assert isinstance(pacing, PacingStats)
    assert pacing.target_interval_s == period
    # Functional, not a timing goal: the round clock is never outrun.
    assert pacing.interval_s >= 0.99 * period
    assert 0 <= pacing.lag_p50_s <= pacing.lag_p99_s <= pacing.lag_max_s
    assert res.registers["ROUND_PERIOD"] == 50_000
    assert res.registers["CTRL"] == 0b01


def test_paced_mode_drops_rounds_when_the_bridge_is_full(
    circuit: stim.Circuit, measurements: np.ndarray, service: DecoderService
) -> None:
    def late_service() -> object:
        time.sleep(0.03)  # no consumer for the first ~300 rounds
        return service.serve(up.receiver(), down.sender())

    model = model_for(circuit, mode="paced", round_time_s=100e-6, **FAST_TIMEOUTS)
    with rings(up_slots=2) as (up, down):
        host = PeerThread(late_service)
        host.start()
        res = model.run(measurements, tx=up.sender(), rx=down.receiver())
        stats = host.finish()
    lost = res.rounds_lost()
    assert lost["backpressure"] > 0
    assert res.registers["ROUNDS_BACKPRESSURE"] == lost["backpressure"]
    assert res.registers["STATUS"] & STATUS_BACKPRESSURE
    assert res.rounds_emitted == 4 * len(measurements), "paced mode drops; it never stops"
    check_ledger(res)
    # Shots hit by backpressure can never decode; the rest did, correctly.
    hit = np.any(res.fates == Fate.LOST_BACKPRESSURE, axis=1)
    assert not res.decoded[hit].any()
    dets, _ = circuit.compile_m2d_converter().convert(
        measurements=measurements, separate_observables=True
    )
    expected = make_decoder("pymatching", circuit).decode_batch(dets.astype(np.uint8))
    np.testing.assert_array_equal(res.predictions[res.decoded], expected[res.decoded])
    stats.check_balanced()


class _CountingSender:
    """A PacketSender that counts the rounds committed through it."""

    def __init__(self, inner: Any) -> None:
        self.inner, self.commits = inner, 0

    def commit(self, length: int) -> None:
        self.inner.commit(length)
        self.commits += 1

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def test_chunks_stream_like_one_array_and_are_taken_one_at_a_time(
    circuit: stim.Circuit, measurements: np.ndarray, service: DecoderService
) -> None:
    model = model_for(circuit, max_in_flight=8)
    whole = len(measurements)
    with rings() as (up, down):
        tx = _CountingSender(up.sender())
        committed_when_taken: list[int] = []

        def chunks() -> Iterator[np.ndarray]:
            for start in range(0, whole, 128):
                committed_when_taken.append(tx.commits)
                yield measurements[start : start + 128]

        host = PeerThread(lambda: service.serve(up.receiver(), down.sender()))
        host.start()
        res = model.run(chunks(), shots=whole, tx=tx, rx=down.receiver())
        host.finish()
    # Each chunk is asked for once the previous one is streamed, not before.
    assert committed_when_taken == [0, 4 * 128, 4 * 256]
    assert res.aborted == "" and res.decoded.all()
    check_ledger(res)
    dets, obs = circuit.compile_m2d_converter().convert(
        measurements=measurements, separate_observables=True
    )
    expected = make_decoder("pymatching", circuit).decode_batch(dets.astype(np.uint8))
    np.testing.assert_array_equal(res.predictions, expected)
    np.testing.assert_array_equal(res.raw_observables, obs)


def test_paced_chunks_hold_the_clock_while_the_next_one_is_made(
    circuit: stim.Circuit, measurements: np.ndarray, service: DecoderService
) -> None:
    period, pause = 200e-6, 0.3

    def slow_chunks() -> Iterator[np.ndarray]:
        yield measurements[:40]
        time.sleep(pause)  # sampling the next chunk takes a while
        yield measurements[40:80]

    model = model_for(circuit, mode="paced", round_time_s=period, **FAST_TIMEOUTS)
    with rings(up_slots=1024) as (up, down):
        host = PeerThread(lambda: service.serve(up.receiver(), down.sender()))
        host.start()
        res = model.run(slow_chunks(), shots=80, tx=up.sender(), rx=down.receiver())
        host.finish()
    # No correction was timed across the pause (it outlasts the correction timeout),
    # and no round was due during it: neither latency nor pacing shows it.
    assert res.aborted == "" and res.decoded.all()
    check_ledger(res)
    assert res.latency_ns.max() < pause * 1e9 / 2
    assert res.pacing is not None
    assert res.pacing.lag_max_s < pause / 2
    assert period * 0.99 <= res.pacing.interval_s < period + pause / 80 / 4
