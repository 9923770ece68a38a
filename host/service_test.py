from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator

import numpy as np
import pytest
import stim

from qhil.bridge import (
    FLAG_END_OF_STREAM,
    FLAG_FIRST_ROUND,
    FLAG_LAST_ROUND,
    CorrectionPacket,
    CorrectionStatus,
    ShmRing,
    SyndromePacket,
    packet_buffers,
)
from qhil.bridge import warm_up as warm_up_bridge
from qhil.fpga import CycleModel, DetectorProgram, Fate, FrontEndConfig
from qhil.host import DecoderService, HostStats, Percentiles, ServiceConfig, make_decoder
from qhil.host._hot_path import RingHotPath
from qhil.host._stats import LogHistogram

ROUNDS = 3  # d=3, rounds=2: three streamed rounds per shot


@pytest.fixture(scope="module")
def circuit() -> stim.Circuit:
    return stim.Circuit.generated(
        "surface_code:rotated_memory_z",
        distance=3,
        rounds=2,
        after_clifford_depolarization=0.02,
        before_measure_flip_probability=0.02,
    )


@pytest.fixture(scope="module")
def dets(circuit: stim.Circuit) -> np.ndarray:
    meas = circuit.compile_sampler(seed=5).sample(40)
    d, _ = circuit.compile_m2d_converter().convert(measurements=meas, separate_observables=True)
    return d


@pytest.fixture(scope="module")
def program(circuit: stim.Circuit) -> DetectorProgram:
    return DetectorProgram.from_circuit(circuit)


@pytest.fixture(scope="module")
def service(circuit: stim.Circuit) -> DecoderService:
    warm_up_bridge()
    svc = DecoderService.from_circuit(circuit, config=ServiceConfig())
    svc.warm_up()
    return svc


class FailingDecoder:
    name = "failing"
    num_observables = 1

    def __init__(self, num_detectors: int) -> None:
        self.num_detectors = num_detectors
        self.calls = 0

    def decode_batch(self, dets: np.ndarray) -> np.ndarray:
        self.calls += 1
        raise RuntimeError("boom")


class Link:
    """Both rings, with the test acting as the front end."""

    def __init__(self, up: ShmRing, down: ShmRing) -> None:
        self.up, self.down = up, down
        self.tx, self.rx = up.sender(), down.receiver()
        self.seq = 0

    def send(self, data: bytes) -> None:
        assert self.tx.send(data, timeout_s=1.0)

    def round(self, dets: np.ndarray, program: DetectorProgram, shot: int, rnd: int,
              *, stream: int = 0) -> SyndromePacket:  # fmt: skip
        lo, hi = program.det_offsets[rnd], program.det_offsets[rnd + 1]
        flags = (FLAG_FIRST_ROUND if rnd == 0 else 0) | (
            FLAG_LAST_ROUND if rnd == ROUNDS - 1 else 0
        )
        p = SyndromePacket(stream_id=stream, shot=shot, round=rnd, seq=self.seq,
                           t_fpga=10_000 + self.seq, bits=dets[shot % len(dets), lo:hi],
                           flags=flags)  # fmt: skip
        self.seq += 1
        self.send(p.encode())
        return p

    def shot(
        self,
        dets: np.ndarray,
        program: DetectorProgram,
        shot: int,
        rounds: tuple[int, ...] = (0, 1, 2),
        *,
        stream: int = 0,
    ) -> list[SyndromePacket]:
        return [self.round(dets, program, shot, r, stream=stream) for r in rounds]

    def eos(self) -> None:
        p = SyndromePacket(stream_id=0, shot=0, round=0, seq=self.seq, t_fpga=0, bits=[],
                           flags=FLAG_END_OF_STREAM)  # fmt: skip
        self.seq += 1
        self.send(p.encode())

    def corrections(self) -> list[CorrectionPacket]:
        out, lengths = packet_buffers(512, self.rx.max_packet)
        n = self.rx.recv_into(out, lengths, timeout_s=0.0)
        return [CorrectionPacket.decode(out[i, : lengths[i]]) for i in range(n)]


@contextlib.contextmanager
def link(up_slots: int = 512, down_slots: int = 512) -> Iterator[Link]:
    with ShmRing.create(n_slots=up_slots) as up, ShmRing.create(n_slots=down_slots) as down:
        yield Link(up, down)


def serve(svc: DecoderService, ln: Link, **kw: object) -> HostStats:
    return svc.serve(ln.up.receiver(), ln.down.sender(), **kw)  # type: ignore[arg-type]


# -- configuration and construction -------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"num_streams": 0}, "num_streams and window must be >= 1"),
        ({"window": 0}, "num_streams and window must be >= 1"),
        ({"assembly_timeout_s": 0.0}, "assembly_timeout_s must be positive; got 0.0"),
        ({"eos_grace_s": -1.0}, "eos_grace_s must be positive"),
        ({"send_timeout_s": 0}, "send_timeout_s must be positive"),
    ],
)
def test_service_config_validation(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        ServiceConfig(**kwargs)  # type: ignore[arg-type]


def test_decoder_must_match_the_stream(circuit: stim.Circuit, program: DetectorProgram) -> None:
    with pytest.raises(ValueError, match="decoder expects 7 detectors; the stream carries 16"):
        DecoderService(FailingDecoder(7), program, config=ServiceConfig())


def test_unknown_decoder_name(circuit: stim.Circuit) -> None:
    with pytest.raises(ValueError, match="unknown decoder 'nope'"):
        DecoderService.from_circuit(circuit, config=ServiceConfig(decoder="nope"))


def test_warm_up_sends_nothing_and_survives_a_failing_decoder(program: DetectorProgram) -> None:
    decoder = FailingDecoder(program.num_detectors)
    svc = DecoderService(decoder, program, config=ServiceConfig())
    svc.warm_up()
    assert decoder.calls == 1, "warm_up runs one decode"
    with link() as ln:
        stats = serve(svc, ln, should_stop=lambda: True)
        assert ln.corrections() == []
    assert stats.stopped_by == "shutdown"
    assert stats.counts["packets"] == 0, "warm-up state does not leak into a run"


# -- HostStats ------------------------------------------------------------------------------------


def _stats(**kw: object) -> HostStats:
    empty = Percentiles.of(np.zeros(0))
    fields: dict[str, object] = dict(
        decoder="x", stopped_by="end_of_stream", counts={"rounds_accepted": 10},
        shots_decoded=2, shots_incomplete=1, shots_decoder_error=0, rounds_in_decoded=6,
        rounds_in_incomplete=2, rounds_in_decoder_error=0, rounds_open_at_exit=2,
        corrections_unsent=0, decode_calls=1, max_batch=2, service_ns=empty,
        decode_ns_per_shot=empty,
    )  # fmt: skip
    fields.update(kw)
    return HostStats(**fields)  # type: ignore[arg-type]


def test_host_stats_check_balanced() -> None:
    _stats().check_balanced()
    _stats(rounds_in_decoded=3, rounds_in_decoder_error=3).check_balanced()
    with pytest.raises(AssertionError, match="accepted 10 rounds, accounted for 9"):
        _stats(rounds_open_at_exit=1).check_balanced()
    with pytest.raises(AssertionError, match="accepted 10 rounds, accounted for 11"):
        _stats(rounds_in_incomplete=3).check_balanced()


def test_host_stats_stopped_by_is_checked() -> None:
    for reason in ("end_of_stream", "shutdown", "transport_closed"):
        _stats(stopped_by=reason)
    with pytest.raises(ValueError, match="stopped_by must be one of"):
        _stats(stopped_by="crashed")


# -- statistics in fixed memory; the live view -------------------------------------------------


class ZeroDecoder:
    """Decodes every shot to no flip, at once: the loop's own per-shot cost is what is left."""

    name = "zero"
    num_observables = 1

    def __init__(self, num_detectors: int) -> None:
        self.num_detectors = num_detectors

    def decode_batch(self, dets: np.ndarray) -> np.ndarray:
        return np.zeros((len(dets), 1), dtype=np.bool_)


def test_a_long_run_keeps_its_statistics_in_fixed_memory(program: DetectorProgram) -> None:
    from qhil.host import _service, _service_run

    svc = DecoderService(ZeroDecoder(program.num_detectors), program, config=ServiceConfig())
    loop = _service_run.ServiceRun(svc, _service_run.NullSender())
    hists = (loop.service_ns, loop.decode_ns)
    nbytes = [h.nbytes for h in hists]
    batch = loop.asm.slots  # a full batch of ready shots, one per slot
    ready = np.stack([np.zeros(batch, np.int64), np.arange(batch)], axis=1)
    shots = 0
    while shots < 200_000:
        loop.asm.slot_shot[0] = np.arange(shots, shots + batch)
        loop.asm.meta[0, :, 4] = time.monotonic_ns()  # each shot's last round just arrived
        loop.decode(ready)
        shots += batch
    assert loop.service_ns is hists[0] and loop.decode_ns is hists[1], "no new recorders"
    assert [h.nbytes for h in hists] == nbytes == [LogHistogram.NUM_BUCKETS * 8] * 2
    assert [h.buckets()[0].size <= LogHistogram.NUM_BUCKETS for h in hists] == [True, True]
    stats = _service._host_stats(loop, "end_of_stream")
    assert stats.shots_decoded == stats.service_ns.n == stats.decode_ns_per_shot.n == shots
    assert 0 < stats.service_ns.p50 <= stats.service_ns.p99 <= stats.service_ns.max
    assert loop.service_ns.overflow == 0


def _eventually(check: Callable[[], bool], timeout_s: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while not check() and time.monotonic() < deadline:
        time.sleep(1e-3)
    return check()


def test_live_shows_the_running_serve_call(
    service: DecoderService, dets: np.ndarray, program: DetectorProgram
) -> None:
    svc = DecoderService(service.decoder, program, config=ServiceConfig(assembly_timeout_s=60.0))
    assert svc.live is None
    stop = threading.Event()
    got: list[HostStats] = []
    with link() as ln:
        for s in range(5):
            ln.shot(dets, program, s)
        ln.shot(dets, program, 5, rounds=(0,))  # stays open
        host = threading.Thread(target=lambda: got.append(serve(svc, ln, should_stop=stop.is_set)))
        host.start()
        assert _eventually(lambda: svc.live is not None and svc.live.shots_decoded == 5)
        live = svc.live
        assert live is not None
        assert _eventually(lambda: live.service_ns.count == live.decode_ns.count == 5)
        assert live.counts()["packets"] == live.counts()["rounds_accepted"] == 16
        assert (live.shots_incomplete, live.shots_decoder_error, live.open_shots) == (0, 0, 1)
        edges, counts = live.service_ns.buckets()
        assert counts.sum() == 5 and edges[-1] >= live.service_ns.max > 0
        stop.set()
        host.join(5.0)
    assert not host.is_alive()
    assert svc.live is None, "no live view once serve returned"
    (stats,) = got
    assert stats.shots_decoded == 5 and stats.shots_incomplete == 1
    assert stats.service_ns.n == 5 and stats.service_ns.max == live.service_ns.max


# -- serving a scripted front end -------------------------------------------------------------


@pytest.mark.parametrize("hot", [True, False], ids=["compiled_hot_path", "general_loop"])
def test_decodes_every_shot_and_echoes_its_last_round(
    service: DecoderService,
    circuit: stim.Circuit,
    dets: np.ndarray,
    program: DetectorProgram,
    hot: bool,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if not hot:  # the loop any other transport takes, over the same rings
        monkeypatch.setattr(RingHotPath, "for_link", classmethod(lambda cls, *a, **k: None))
    ready: list[int] = []
    with link() as ln:
        sent = [ln.shot(dets, program, s) for s in range(len(dets))]
        ln.eos()
        stats = serve(service, ln, on_ready=lambda: ready.append(1))
        corr = ln.corrections()
    assert ready == [1]
    expected = make_decoder("pymatching", circuit).decode_batch(dets.astype(np.uint8))
    assert expected.any()
    *shots, ack = corr
    assert ack.flags == FLAG_END_OF_STREAM
    assert [c.shot for c in shots] == list(range(len(dets)))
    for c, pkts in zip(shots, sent, strict=True):
        last = pkts[-1]
        assert c.status == CorrectionStatus.DECODED
        assert c.stream_id == 0
        assert (c.seq, c.t_fpga) == (last.seq, last.t_fpga)
        assert c.obs.tolist() == expected[c.shot].tolist()
        assert c.frame.size == 0
        assert 0 < c.t_host_rx <= c.t_host_tx
    assert stats.stopped_by == "end_of_stream"
    assert stats.decoder == "pymatching"
    assert stats.shots_decoded == len(dets)
    assert stats.rounds_in_decoded == ROUNDS * len(dets)
    assert stats.shots_incomplete == stats.shots_decoder_error == 0
    assert stats.rounds_open_at_exit == 0
    assert stats.corrections_unsent == 0
    assert 1 <= stats.decode_calls <= len(dets)
    assert 1 <= stats.max_batch <= len(dets)
    assert stats.service_ns.n == stats.decode_ns_per_shot.n == len(dets)
    assert stats.counts["packets"] == ROUNDS * len(dets) + 1
    assert stats.counts["end_of_stream"] == 1
    assert stats.first_decoder_error == ""
    assert stats.hot_path == hot
    stats.check_balanced()


def test_rounds_out_of_order_still_decode(
    service: DecoderService, circuit: stim.Circuit, dets: np.ndarray, program: DetectorProgram
) -> None:
    with link() as ln:
        ln.shot(dets, program, 0, rounds=(2, 0, 1))
        ln.eos()
        stats = serve(service, ln)
        corr = ln.corrections()
    expected = make_decoder("pymatching", circuit).decode_batch(dets[:1].astype(np.uint8))
    assert corr[0].status == CorrectionStatus.DECODED
    assert corr[0].obs.tolist() == expected[0].tolist()
    assert corr[0].seq == 0, "the echoed seq is the last round's, whatever the arrival order"
    assert stats.counts["reordered"] == stats.counts["seq_gap"] == 0, "seq order was kept"
    stats.check_balanced()


def test_incomplete_shots_report_which_rounds_arrived(
    service: DecoderService, dets: np.ndarray, program: DetectorProgram
) -> None:
    with link() as ln:
        ln.shot(dets, program, 0, rounds=(0, 2))  # round 1 never sent
        ln.shot(dets, program, 1, rounds=(1,))
        ln.eos()
        stats = serve(service, ln)
        corr = ln.corrections()
    by_shot = {c.shot: c for c in corr if not c.flags}
    assert set(by_shot) == {0, 1}
    assert all(c.status == CorrectionStatus.INCOMPLETE for c in by_shot.values())
    assert by_shot[0].frame.tolist() == [True, False, True]
    assert by_shot[1].frame.tolist() == [False, True, False]
    assert by_shot[0].obs.size == 0
    assert by_shot[0].seq == 1, "shot 0's last round arrived as seq 1"
    assert corr[-1].flags == FLAG_END_OF_STREAM
    assert stats.shots_incomplete == 2
    assert stats.rounds_in_incomplete == 3
    assert stats.shots_decoded == 0
    stats.check_balanced()


def test_a_shot_is_given_up_once_the_window_passes_it(
    circuit: stim.Circuit, dets: np.ndarray, program: DetectorProgram
) -> None:
    # No assembly timeout to speak of: only the window (4 shots) can give shot 0 up while
    # the service runs; the test stops it only after the INCOMPLETE correction arrived.
    cfg = ServiceConfig(window=4, assembly_timeout_s=60.0)
    svc = DecoderService.from_circuit(circuit, config=cfg)
    stop = threading.Event()
    got: list[HostStats] = []
    with link() as ln:
        ln.shot(dets, program, 0, rounds=(0,))
        for s in range(1, 4):
            ln.shot(dets, program, s)
        host = threading.Thread(target=lambda: got.append(serve(svc, ln, should_stop=stop.is_set)))
        host.start()
        early = _wait_for(ln, 3)
        ln.shot(dets, program, 4)
        late = _wait_for(ln, 2)
        stop.set()
        host.join(5.0)
    assert not host.is_alive()
    assert [(c.shot, c.status) for c in early] == [(s, CorrectionStatus.DECODED) for s in (1, 2, 3)]
    late.sort(key=lambda c: c.shot)  # shot 0 may be given up before shot 4 is complete
    assert [(c.shot, c.status) for c in late] == [
        (0, CorrectionStatus.INCOMPLETE),
        (4, CorrectionStatus.DECODED),
    ]
    assert late[0].frame.tolist() == [True, False, False]
    (stats,) = got
    assert stats.stopped_by == "shutdown"
    stats.check_balanced()


def _wait_for(ln: Link, n: int, timeout_s: float = 2.0) -> list[CorrectionPacket]:
    out: list[CorrectionPacket] = []
    deadline = time.monotonic() + timeout_s
    while len(out) < n and time.monotonic() < deadline:
        out += ln.corrections()
        time.sleep(1e-3)
    return out


def test_shutdown_gives_up_open_shots(
    service: DecoderService, dets: np.ndarray, program: DetectorProgram
) -> None:
    with link() as ln:
        ln.shot(dets, program, 0)
        ln.shot(dets, program, 1, rounds=(0, 1))
        stats = serve(service, ln, should_stop=lambda: True)
        corr = ln.corrections()
    assert [(c.shot, c.status) for c in corr] == [
        (0, CorrectionStatus.DECODED),
        (1, CorrectionStatus.INCOMPLETE),
    ], "no end-of-stream ack without an end of stream"
    assert stats.stopped_by == "shutdown"
    assert stats.rounds_open_at_exit == 0
    assert (stats.shots_decoded, stats.shots_incomplete) == (1, 1)
    stats.check_balanced()


def test_a_closed_transport_stops_the_service_with_open_rounds_accounted(
    service: DecoderService, dets: np.ndarray, program: DetectorProgram
) -> None:
    with link() as ln:
        ln.shot(dets, program, 0)
        ln.shot(dets, program, 1, rounds=(0, 1))
        ln.tx.close()
        stats = serve(service, ln)
        corr = ln.corrections()
    assert stats.stopped_by == "transport_closed"
    assert [c.shot for c in corr] == [0]
    assert stats.rounds_open_at_exit == 2
    stats.check_balanced()


def test_malformed_and_unknown_packets_are_counted_not_fatal(
    service: DecoderService, dets: np.ndarray, program: DetectorProgram
) -> None:
    with link() as ln:
        ln.send(b"garbage")
        ln.send(b"QSYN\x09" + bytes(60))
        ln.shot(dets, program, 0, stream=1)  # not served: num_streams=1
        ln.shot(dets, program, 1)
        ln.eos()
        stats = serve(service, ln)
        corr = ln.corrections()
    assert [(c.shot, c.status) for c in corr[:-1]] == [(1, CorrectionStatus.DECODED)]
    c = stats.counts
    assert (c["bad_magic"], c["bad_version"], c["unknown_stream"]) == (1, 1, 3)
    assert c["packets"] == 2 + 3 + 3 + 1
    stats.check_balanced()


def test_serves_several_streams(
    circuit: stim.Circuit, dets: np.ndarray, program: DetectorProgram
) -> None:
    svc = DecoderService.from_circuit(circuit, config=ServiceConfig(num_streams=2))
    with link() as ln:
        ln.shot(dets, program, 0, stream=1)
        ln.shot(dets, program, 0, stream=0)
        ln.eos()
        stats = serve(svc, ln)
        corr = ln.corrections()
    assert sorted((c.stream_id, c.shot, c.status) for c in corr[:-1]) == [(0, 0, 0), (1, 0, 0)]
    assert stats.shots_decoded == 2
    stats.check_balanced()


def test_unsent_corrections_are_counted(
    dets: np.ndarray, program: DetectorProgram, circuit: stim.Circuit
) -> None:
    svc = DecoderService.from_circuit(circuit, config=ServiceConfig(send_timeout_s=0.01))
    with link(down_slots=2) as ln:  # nobody drains the corrections
        for s in range(4):
            ln.shot(dets, program, s)
        ln.eos()
        stats = serve(svc, ln)
        assert len(ln.corrections()) == 2
    assert stats.shots_decoded == 4
    assert stats.corrections_unsent == 3, "two shots and the end-of-stream ack found no room"
    stats.check_balanced()


# -- the decoder error path -----------------------------------------------------------------------


def test_a_raising_decoder_yields_decoder_error_corrections(
    dets: np.ndarray, program: DetectorProgram
) -> None:
    decoder = FailingDecoder(program.num_detectors)
    svc = DecoderService(decoder, program, config=ServiceConfig())
    with link() as ln:
        for s in range(5):
            ln.shot(dets, program, s)
        ln.eos()
        stats = serve(svc, ln)
        corr = ln.corrections()
    *shots, ack = corr
    assert ack.flags == FLAG_END_OF_STREAM
    assert [c.shot for c in shots] == list(range(5))
    assert all(c.status == CorrectionStatus.DECODER_ERROR for c in shots)
    assert all(c.obs.size == 0 and c.frame.size == 0 for c in shots)
    assert stats.shots_decoder_error == 5
    assert stats.rounds_in_decoder_error == 5 * ROUNDS
    assert stats.shots_decoded == 0
    assert stats.first_decoder_error == "RuntimeError: boom"
    assert stats.service_ns.n == 0
    assert stats.decode_calls == decoder.calls >= 1
    stats.check_balanced()


def test_a_raising_decoder_loses_rounds_at_the_front_end(
    circuit: stim.Circuit, program: DetectorProgram
) -> None:
    meas = circuit.compile_sampler(seed=2).sample(10)
    svc = DecoderService(FailingDecoder(program.num_detectors), program, config=ServiceConfig())
    model = CycleModel(program, 1, FrontEndConfig(correction_timeout_s=0.5, stall_timeout_s=1.0))
    out: dict[str, HostStats] = {}
    with link() as ln:
        host = threading.Thread(target=lambda: out.setdefault("s", serve(svc, ln)), daemon=True)
        host.start()
        res = model.run(meas, tx=ln.up.sender(), rx=ln.down.receiver())
        host.join(5.0)
    assert not host.is_alive()
    assert res.aborted == ""
    assert np.all(res.fates == Fate.LOST_DECODER_ERROR)
    assert res.registers["SHOTS_DECODER_ERROR"] == 10
    res.check_nothing_lost_silently()
    out["s"].check_balanced()
    assert out["s"].shots_decoder_error == 10


# -- streaming decoders -----------------------------------------------------------------------


class SpyStreamer:
    """A StreamingDecoder that assembles its own shots from the packets it is handed and
    decodes them with PyMatching; it never looks at the host's ``dets``."""

    name = "spy"
    num_observables = 1

    def __init__(self, circuit: stim.Circuit, program: DetectorProgram, fail_on: int = -1) -> None:
        self.inner = make_decoder("pymatching", circuit)
        self.num_detectors = circuit.num_detectors
        self.program = program
        self.fail_on = fail_on  # on_round raises for this round number
        self.packets: list[bytes] = []
        self.shots: dict[tuple[int, int], np.ndarray] = {}
        self.rounds: dict[tuple[int, int], int] = {}
        self.asked: list[tuple[int, int]] = []
        self.abandoned: list[tuple[int, int]] = []
        self.batch_calls = 0

    def decode_batch(self, dets: np.ndarray) -> np.ndarray:
        self.batch_calls += 1
        return self.inner.decode_batch(dets)

    def on_round(self, packet: np.ndarray) -> None:
        p = SyndromePacket.decode(bytes(packet))
        if p.round == self.fail_on:
            raise RuntimeError("spy refuses this round")
        self.packets.append(bytes(packet))
        lo, hi = self.program.det_offsets[p.round], self.program.det_offsets[p.round + 1]
        shot = self.shots.setdefault((p.stream_id, p.shot), np.zeros(self.num_detectors, np.uint8))
        shot[lo:hi] = p.bits
        self.rounds[p.stream_id, p.shot] = self.rounds.get((p.stream_id, p.shot), 0) + 1

    def decode_streamed(
        self, streams: np.ndarray, shots: np.ndarray, dets: np.ndarray
    ) -> np.ndarray:
        keys = [(int(a), int(b)) for a, b in zip(streams, shots, strict=True)]
        self.asked += keys
        if any(self.rounds[k] != len(self.program.bits_per_round) for k in keys):
            raise RuntimeError("a round is missing")
        return self.inner.decode_batch(np.stack([self.shots.pop(k) for k in keys]))

    def abandon(self, stream: int, shot: int) -> None:
        self.abandoned.append((stream, shot))
        self.shots.pop((stream, shot), None)

    def streaming_counts(self) -> dict[str, int]:
        return {"packets": len(self.packets), "batch_calls": self.batch_calls}


def test_a_streaming_decoder_gets_each_accepted_round_as_it_arrived(
    circuit: stim.Circuit, dets: np.ndarray, program: DetectorProgram
) -> None:
    from qhil.host import StreamingDecoder

    spy = SpyStreamer(circuit, program)
    assert isinstance(spy, StreamingDecoder)
    assert not isinstance(make_decoder("pymatching", circuit), StreamingDecoder)
    svc = DecoderService(spy, program, config=ServiceConfig(assembly_timeout_s=60.0))
    svc.warm_up()
    assert spy.packets == spy.asked == spy.abandoned == [] and spy.batch_calls == 0
    with link() as ln:
        want: list[bytes] = []
        for s in range(6):
            want += [p.encode() for p in ln.shot(dets, program, s, rounds=(1, 0, 2))]
        want += [p.encode() for p in ln.shot(dets, program, 6, rounds=(0, 1))]  # never completes
        dup = ln.round(dets, program, 0, 1)  # shot 0's round again: stale or duplicate
        ln.send(b"QSYN garbage")
        ln.send(dup.encode())  # a repeated seq: duplicate
        ln.eos()
        stats = serve(svc, ln)
        corr = ln.corrections()
    assert spy.packets == want  # the accepted rounds, in arrival order, byte for byte
    assert spy.batch_calls == 0
    assert spy.asked == [(0, s) for s in range(6)]
    assert spy.abandoned == [(0, 6)]
    by_shot = {c.shot: c for c in corr if not c.flags}
    expected = make_decoder("pymatching", circuit).decode_batch(dets[:6].astype(np.uint8))
    for s in range(6):
        assert by_shot[s].status == CorrectionStatus.DECODED
        assert by_shot[s].obs.tolist() == expected[s].tolist()
    assert by_shot[6].status == CorrectionStatus.INCOMPLETE
    assert stats.streaming and stats.rounds_streamed == stats.counts["rounds_accepted"] == 20
    assert stats.rounds_stream_failed == 0
    assert stats.decoder_counts == {"packets": 20, "batch_calls": 0}
    # (stale if shot 0 was closed by then, else a duplicate round) + the repeated seq
    assert stats.counts["stale"] + stats.counts["duplicate"] == 2
    stats.check_balanced()


def test_a_failing_on_round_is_counted_and_its_shot_still_answered(
    circuit: stim.Circuit, dets: np.ndarray, program: DetectorProgram
) -> None:
    spy = SpyStreamer(circuit, program, fail_on=2)  # the last round never reaches it
    svc = DecoderService(spy, program, config=ServiceConfig())
    with link() as ln:
        ln.shot(dets, program, 0)
        ln.eos()
        stats = serve(svc, ln)
        corr = ln.corrections()
    assert corr[0].status == CorrectionStatus.DECODER_ERROR  # the spy never got round 2
    assert stats.rounds_streamed == 2 and stats.rounds_stream_failed == 1
    assert stats.first_decoder_error == "on_round: RuntimeError: spy refuses this round"
    stats.check_balanced()


def test_a_batch_decoder_never_takes_the_per_packet_path(
    service: DecoderService,
    dets: np.ndarray,
    program: DetectorProgram,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from qhil.host import _service_run

    def forbidden(*args: object) -> None:
        raise AssertionError("forward() called for a decoder that does not stream")

    monkeypatch.setattr(_service_run.ServiceRun, "forward", forbidden)
    with link() as ln:
        for s in range(3):
            ln.shot(dets, program, s)
        ln.eos()
        stats = serve(service, ln)
    assert stats.shots_decoded == 3
    assert not stats.streaming and stats.rounds_streamed == 0 and stats.decoder_counts == {}


def test_host_stats_streaming_ledger() -> None:
    _stats(streaming=True, rounds_streamed=9, rounds_stream_failed=1).check_balanced()
    with pytest.raises(AssertionError, match="handed 9 to the decoder's on_round"):
        _stats(streaming=True, rounds_streamed=9).check_balanced()
    with pytest.raises(ValueError, match="need streaming=True"):
        _stats(rounds_streamed=1)
