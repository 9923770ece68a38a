"""The decoder service: rounds in from the bridge, whole shots decoded, corrections out.

One loop, one thread: take every packet that is ready, assemble, decode all
shots that became ready in one ``decode_batch`` call (batching is free when
the loop falls behind and costs nothing when it keeps up), and send one
correction per shot. A shot that cannot complete gets an INCOMPLETE correction
naming the rounds that arrived, so the front end knows at once why it is lost.

A ``StreamingDecoder`` (checked once, when the loop starts) is handed each
round the assembler accepted, as its raw packet, right after the batch that
carried it was assembled, so it works on a shot while the shot is still
arriving; ready shots are then asked for by (stream, shot) with
``decode_streamed`` instead of ``decode_batch``, and shots given up are
``abandon``-ed. Every other decoder takes exactly the batch path above: no
per-packet call is made for it.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable

import numpy as np
import stim

from qhil.bridge import (
    FLAG_END_OF_STREAM,
    CorrectionStatus,
    PacketReceiver,
    PacketSender,
    SessionEnded,
    TransportClosed,
    correction_size,
    write_correction,
)
from qhil.fpga import DetectorProgram
from qhil.host._assembler import ShotAssembler
from qhil.host._decoders import Decoder, StreamingDecoder, make_decoder
from qhil.host._stats import LogHistogram, Percentiles

__all__ = ["DecoderService", "HostStats", "LiveRun", "ServiceConfig"]

_STOP_REASONS = ("end_of_stream", "shutdown", "transport_closed", "session_ended")


@dataclasses.dataclass(frozen=True)
class ServiceConfig:
    """How the service assembles shots.

    Attributes:
        decoder: registered decoder name (see ``qhil info``).
        backend: kernel backend of decoders that have kernels (the pre-decoder):
            "auto", "numpy", "numba", "cuda" or "cuda-persistent".
        num_streams: streams 0..num_streams-1 are served.
        window: a shot is given up once a shot this many newer has arrived.
        assembly_timeout_s: a shot is given up after being open this long.
        eos_grace_s: after end-of-stream, how long late packets may still complete shots.
        send_timeout_s: how long to wait for room to send a correction before
            counting it ``corrections_unsent`` (the front end then times it out).
    """

    decoder: str = "pymatching"
    backend: str = "auto"
    num_streams: int = 1
    window: int = 4
    assembly_timeout_s: float = 0.05
    eos_grace_s: float = 0.02
    send_timeout_s: float = 1.0

    def __post_init__(self) -> None:
        if self.num_streams < 1 or self.window < 1:
            raise ValueError("num_streams and window must be >= 1")
        for name in ("assembly_timeout_s", "eos_grace_s", "send_timeout_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive; got {getattr(self, name)!r}")


@dataclasses.dataclass(frozen=True)
class HostStats:
    """The service's own account of a run.

    ``counts`` holds the assembler's counters: every packet taken in appears
    once, as ``rounds_accepted``, ``end_of_stream`` or a rejection reason.
    ``service_ns`` is, per decoded shot, the time from its last round's
    receipt to its correction being sent; ``decode_ns_per_shot`` is the
    decoder's time divided evenly over each batch's shots. Both come from
    fixed-memory histograms (``Percentiles.of_histogram``): n, mean and max
    exact, each percentile at most ``LogHistogram.RELATIVE_ERROR`` (1/64) above
    the true one.

    With a ``StreamingDecoder`` (``streaming``), ``rounds_streamed`` counts the
    rounds handed to its ``on_round`` and ``rounds_stream_failed`` those whose
    call raised (the error is in ``first_decoder_error``); together they equal
    ``rounds_accepted``. ``decoder_counts`` is the decoder's own account
    (``streaming_counts()``); empty otherwise.
    """

    decoder: str
    stopped_by: str
    counts: dict[str, int]
    shots_decoded: int
    shots_incomplete: int
    shots_decoder_error: int
    rounds_in_decoded: int
    rounds_in_incomplete: int
    rounds_in_decoder_error: int
    rounds_open_at_exit: int
    corrections_unsent: int
    decode_calls: int
    max_batch: int
    service_ns: Percentiles
    decode_ns_per_shot: Percentiles
    first_decoder_error: str = ""
    streaming: bool = False
    rounds_streamed: int = 0
    rounds_stream_failed: int = 0
    decoder_counts: dict[str, int] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.stopped_by not in _STOP_REASONS:
            raise ValueError(f"stopped_by must be one of {_STOP_REASONS}; got {self.stopped_by!r}")
        if not self.streaming and (self.rounds_streamed or self.rounds_stream_failed):
            raise ValueError("rounds_streamed/rounds_stream_failed need streaming=True")

    def check_balanced(self) -> None:
        """Raise unless every accepted round is in a decoded, incomplete or still-open shot."""
        accounted = (
            self.rounds_in_decoded
            + self.rounds_in_incomplete
            + self.rounds_in_decoder_error
            + self.rounds_open_at_exit
        )
        if accounted != self.counts["rounds_accepted"]:
            raise AssertionError(
                f"host ledger does not balance: accepted {self.counts['rounds_accepted']} rounds, "
                f"accounted for {accounted}"
            )
        streamed = self.rounds_streamed + self.rounds_stream_failed
        if self.streaming and streamed != self.counts["rounds_accepted"]:
            raise AssertionError(
                f"streaming ledger does not balance: accepted {self.counts['rounds_accepted']} "
                f"rounds, handed {streamed} to the decoder's on_round"
            )


class LiveRun:
    """A read-only view of one running ``serve`` call, for a metrics exporter (a Prometheus
    scrape) on another thread: ``DecoderService.live``.

    Reads take no lock and the service thread keeps going meanwhile, so each value is
    whole but two values read one after the other may be a batch apart (e.g.
    ``shots_decoded`` ahead of ``service_ns.count``). Never mutate what it hands out:
    ``service_ns`` and ``decode_ns`` are the service's own recorders (read them with
    ``buckets``, ``percentile``, ``count``, ``sum``).
    """

    __slots__ = ("_loop",)

    def __init__(self, loop: _Loop) -> None:
        self._loop = loop

    def counts(self) -> dict[str, int]:
        """The assembler's counters by name, as in ``HostStats.counts``."""
        return self._loop.asm.counts()

    @property
    def service_ns(self) -> LogHistogram:
        """Per decoded shot: last round received to correction sent, in ns."""
        return self._loop.service_ns

    @property
    def decode_ns(self) -> LogHistogram:
        """Per decoded shot: the decoder's time over its batch's shots, in ns."""
        return self._loop.decode_ns

    @property
    def shots_decoded(self) -> int:
        return self._loop.decoded

    @property
    def shots_incomplete(self) -> int:
        return self._loop.incomplete

    @property
    def shots_decoder_error(self) -> int:
        return self._loop.errors

    @property
    def open_shots(self) -> int:
        """Shots with rounds in but no correction out yet."""
        return self._loop.asm.open_shots


class DecoderService:
    """Serves one front end: assembles its rounds, decodes, answers every shot."""

    def __init__(
        self, decoder: Decoder, program: DetectorProgram, *, config: ServiceConfig
    ) -> None:
        if decoder.num_detectors != program.num_detectors:
            raise ValueError(
                f"decoder expects {decoder.num_detectors} detectors; the stream carries "
                f"{program.num_detectors}"
            )
        self.decoder = decoder
        self.config = config
        self.program = program
        self._live: LiveRun | None = None

    @classmethod
    def from_circuit(cls, circuit: stim.Circuit, *, config: ServiceConfig) -> DecoderService:
        return cls(
            make_decoder(config.decoder, circuit, backend=config.backend),
            DetectorProgram.from_circuit(circuit),
            config=config,
        )

    def warm_up(self) -> None:
        """Compile every numba path and run one decode, so the first real shot is not slow.

        A ``StreamingDecoder`` is not called: a made-up shot would enter its stream.
        """
        from qhil.bridge import packet_buffers

        loop = _Loop(self, _NullSender())
        buf, lengths = packet_buffers(1, 256)
        loop.asm.add(buf, lengths, 1, 0)
        loop.asm.expired(0)
        ready = np.zeros((1, 2), dtype=np.int64)
        if loop.stream is None:
            loop.decode(ready)
        else:  # no made-up shot for a streaming decoder (it warms itself up when built)
            loop.stream = None
        loop.give_up(ready)
        loop.send_end_of_stream()

    def serve(
        self,
        rx: PacketReceiver,
        tx: PacketSender,
        *,
        should_stop: Callable[[], bool] = lambda: False,
        on_ready: Callable[[], None] | None = None,
    ) -> HostStats:
        """Run until end-of-stream (and its grace), a stop request, or a closed transport."""
        loop = _Loop(self, tx)
        self._live = LiveRun(loop)
        try:
            return loop.stats(self._run(loop, rx, should_stop, on_ready))
        finally:
            self._live = None

    @property
    def live(self) -> LiveRun | None:
        """The running ``serve`` call's live counters and histograms; None outside one.

        For a metrics exporter on another thread: see ``LiveRun`` for what such reads see.
        """
        return self._live

    def _run(
        self,
        loop: _Loop,
        rx: PacketReceiver,
        should_stop: Callable[[], bool],
        on_ready: Callable[[], None] | None,
    ) -> str:
        """The receive-assemble-decode loop; returns why it stopped."""
        cfg = self.config
        batch = 256
        buf = np.zeros((batch, rx.max_packet), dtype=np.uint8)
        lengths = np.zeros(batch, dtype=np.uint32)
        asm = loop.asm
        eos_at = 0
        next_expiry = 0
        stopped_by = "end_of_stream"
        if on_ready is not None:
            on_ready()
        while True:
            try:
                n = rx.recv_into(buf, lengths, timeout_s=2e-3)
            except SessionEnded:  # its front end left or restarted: this state is void
                stopped_by = "session_ended"
                break
            except TransportClosed:
                stopped_by = "transport_closed"
                break
            now = time.monotonic_ns()
            if n:
                ready = asm.add(buf, lengths, n, now)
                if loop.stream is not None:
                    loop.forward(buf, lengths, n)
                if len(ready):
                    loop.decode(ready)
            if eos_at == 0 and asm.end_of_stream_seen:
                eos_at = now
            flush = eos_at and now - eos_at > cfg.eos_grace_s * 1e9
            # Expiry is a scan over every open slot; timeouts are in ms, so every
            # 200 us is plenty and keeps the scan off the per-shot path.
            if flush or now >= next_expiry:
                next_expiry = now + 200_000
                expired = asm.expired(now, flush=bool(flush))
                if len(expired):
                    loop.give_up(expired)
            if flush and asm.open_shots == 0:
                loop.send_end_of_stream()
                break
            if n == 0 and should_stop():
                stopped_by = "shutdown"
                loop.give_up(asm.expired(now, flush=True))
                break
        return stopped_by


class _NullSender:
    """Swallows packets; lets ``warm_up`` run the real send path with nowhere to send."""

    max_packet = 252

    def send(self, packet: np.ndarray, *, timeout_s: float) -> bool:
        return True


class _Loop:
    """The service's mutable state for one ``serve`` call."""

    def __init__(self, service: DecoderService, tx: PacketSender | _NullSender) -> None:
        self.service = service
        self.tx = tx
        self.asm = ShotAssembler(
            bits_per_round=service.program.bits_per_round,
            num_streams=service.config.num_streams,
            window=service.config.window,
            timeout_s=service.config.assembly_timeout_s,
        )
        n_obs = service.decoder.num_observables
        self.n_obs = n_obs
        self.packet = np.zeros(correction_size(n_obs, self.asm.rounds) + 8, dtype=np.uint8)
        self.empty = np.zeros(1, dtype=np.uint8)
        self.decoded = self.incomplete = self.errors = 0
        self.rounds_decoded = self.rounds_incomplete = self.rounds_error = 0
        self.unsent = 0
        self.calls = 0
        self.max_batch = 0
        # Fixed-size recorders: a long run must not grow with its shot count.
        self.service_ns = LogHistogram()
        self.decode_ns = LogHistogram()
        self.first_error = ""
        dec = service.decoder
        self.stream: StreamingDecoder | None = dec if isinstance(dec, StreamingDecoder) else None
        self.streamed = self.stream_failed = 0

    def forward(self, buf: np.ndarray, lengths: np.ndarray, count: int) -> None:
        """Hand the streaming decoder each packet of the last ``add`` that was accepted."""
        assert self.stream is not None
        on_round = self.stream.on_round
        for i in np.flatnonzero(self.asm.accepted[:count]):
            try:
                on_round(buf[i, : lengths[i]])
                self.streamed += 1
            except Exception as ex:  # its shots then fall to decode_streamed's handling
                self.stream_failed += 1
                self.first_error = self.first_error or f"on_round: {type(ex).__name__}: {ex}"

    def _send(self, length: int) -> None:
        if not self.tx.send(self.packet[:length], timeout_s=self.service.config.send_timeout_s):
            self.unsent += 1

    def _correction(
        self,
        st: int,
        slot: int,
        status: int,
        obs: np.ndarray,
        n_obs: int,
        frame: np.ndarray,
        n_frame: int,
        flags: int = 0,
    ) -> None:
        meta = self.asm.meta[st, slot]
        n = write_correction(
            self.packet,
            st,
            self.asm.shot(st, slot),
            meta[2],
            meta[3],
            status,
            flags,
            obs,
            n_obs,
            frame,
            n_frame,
            meta[4] or meta[1],
            time.monotonic_ns(),
        )
        self._send(n)

    def decode(self, ready: np.ndarray) -> None:
        streams, slots = ready[:, 0], ready[:, 1]
        if len(ready) == 1:  # the common, latency-critical case: a view, no copy
            dets = self.asm.dets[ready[0, 0], ready[0, 1] : ready[0, 1] + 1]
        else:
            dets = self.asm.dets[streams, slots]
        t0 = time.monotonic_ns()
        try:
            if self.stream is not None:  # its rounds are in already: ask by (stream, shot)
                shots = self.asm.slot_shot[streams, slots]
                obs = self.stream.decode_streamed(streams, shots, dets)
            else:
                obs = self.service.decoder.decode_batch(dets)
            status = CorrectionStatus.DECODED
        except Exception as ex:
            self.first_error = self.first_error or f"{type(ex).__name__}: {ex}"
            obs = np.zeros((len(ready), 0), dtype=np.bool_)
            status = CorrectionStatus.DECODER_ERROR
        t1 = time.monotonic_ns()
        self.calls += 1
        self.max_batch = max(self.max_batch, len(ready))
        if obs.shape[1] == 1:  # one observable: the bool byte already is its packed form
            packed: np.ndarray | None = np.ascontiguousarray(obs).view(np.uint8)
        elif obs.shape[1]:
            packed = np.packbits(obs, axis=1, bitorder="little")
        else:
            packed = None
        n_obs = obs.shape[1]
        for i, (st, slot) in enumerate(ready):
            self._correction(
                st,
                slot,
                int(status),
                packed[i] if packed is not None else self.empty,
                n_obs,
                self.empty,
                0,
            )
        done = time.monotonic_ns()
        if status == CorrectionStatus.DECODED:
            self.decoded += len(ready)
            self.rounds_decoded += len(ready) * self.asm.rounds
            if len(ready) == 1:  # the common case again: no temporary arrays
                self.service_ns.record(done - int(self.asm.meta[ready[0, 0], ready[0, 1], 4]))
            else:
                self.service_ns.record_many(done - self.asm.meta[streams, slots, 4])
            self.decode_ns.record((t1 - t0) // len(ready), count=len(ready))
        else:
            self.errors += len(ready)
            self.rounds_error += len(ready) * self.asm.rounds
        for st, slot in ready:
            self.asm.close(st, slot)

    def give_up(self, expired: np.ndarray) -> None:
        for st, slot in expired:
            got = self.asm.received[st, slot]
            frame = np.packbits(got, bitorder="little")
            self._correction(
                st, slot, int(CorrectionStatus.INCOMPLETE), self.empty, 0, frame, got.size
            )
            self.incomplete += 1
            self.rounds_incomplete += int(np.count_nonzero(got))
            if self.stream is not None:
                try:
                    self.stream.abandon(int(st), self.asm.shot(st, slot))
                except Exception as ex:  # the INCOMPLETE correction went out regardless
                    self.first_error = self.first_error or f"abandon: {type(ex).__name__}: {ex}"
            self.asm.close(st, slot)

    def send_end_of_stream(self) -> None:
        n = write_correction(
            self.packet,
            0,
            0,
            0,
            0,
            int(CorrectionStatus.DECODED),
            FLAG_END_OF_STREAM,
            self.empty,
            0,
            self.empty,
            0,
            0,
            time.monotonic_ns(),
        )
        self._send(n)

    def stats(self, stopped_by: str) -> HostStats:
        decoder_counts = self._decoder_counts()  # first: it may record an error
        asm = self.asm
        open_rounds = int(np.count_nonzero(asm.received[asm.slot_shot >= 0]))
        return HostStats(
            decoder=self.service.decoder.name,
            stopped_by=stopped_by,
            counts=asm.counts(),
            shots_decoded=self.decoded,
            shots_incomplete=self.incomplete,
            shots_decoder_error=self.errors,
            rounds_in_decoded=self.rounds_decoded,
            rounds_in_incomplete=self.rounds_incomplete,
            rounds_in_decoder_error=self.rounds_error,
            rounds_open_at_exit=open_rounds,
            corrections_unsent=self.unsent,
            decode_calls=self.calls,
            max_batch=self.max_batch,
            service_ns=Percentiles.of_histogram(self.service_ns),
            decode_ns_per_shot=Percentiles.of_histogram(self.decode_ns),
            first_decoder_error=self.first_error,
            streaming=self.stream is not None,
            rounds_streamed=self.streamed,
            rounds_stream_failed=self.stream_failed,
            decoder_counts=decoder_counts,
        )

    def _decoder_counts(self) -> dict[str, int]:
        if self.stream is None:
            return {}
        try:
            return dict(self.stream.streaming_counts())
        except Exception as ex:  # the run's own account still goes back
            self.first_error = self.first_error or f"streaming_counts: {type(ex).__name__}: {ex}"
            return {}
