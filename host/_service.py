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

This module holds the loop itself, its configuration and its account of a run
(``HostStats``); what it does with each batch is in ``_service_run``.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable

import numpy as np
import stim

from qhil.bridge import GcPause, PacketReceiver, PacketSender, SessionEnded, TransportClosed
from qhil.fpga import DetectorProgram
from qhil.host._decoders import Decoder, make_decoder
from qhil.host._hot_path import RingHotPath
from qhil.host._service_run import LiveRun, NullSender, ServiceRun
from qhil.host._stats import Percentiles

__all__ = ["DecoderService", "HostStats", "ServiceConfig"]

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
    (``streaming_counts()``); empty otherwise. ``hot_path``: the run took and sent
    packets through the compiled shm-ring path (``RingHotPath``).
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
    hot_path: bool = False

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

        loop = ServiceRun(self, NullSender())
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
        RingHotPath.warm_up(loop.asm)

    def serve(
        self,
        rx: PacketReceiver,
        tx: PacketSender,
        *,
        should_stop: Callable[[], bool] = lambda: False,
        on_ready: Callable[[], None] | None = None,
    ) -> HostStats:
        """Run until end-of-stream (and its grace), a stop request, or a closed transport."""
        loop = ServiceRun(self, tx)
        self._live = LiveRun(loop)
        try:
            return _host_stats(loop, self._run(loop, rx, should_stop, on_ready))
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
        loop: ServiceRun,
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
        hot = None
        if loop.stream is None:  # a streaming decoder is handed each packet in Python
            hot = loop.hot = RingHotPath.for_link(rx, loop.tx, asm, max_batch=batch)
        no_shots = asm.ready_buffer[:0]
        with GcPause() as pause:  # collected at the expiry points below, not mid-shot
            while True:
                try:
                    if hot is not None:  # the shm ring: compiled until a shot is ready
                        n, ready, now = hot.take(until_ns=next_expiry)
                    else:
                        n = rx.recv_into(buf, lengths, timeout_s=2e-3)
                        now = time.monotonic_ns()
                        ready = asm.add(buf, lengths, n, now) if n else no_shots
                        if n and loop.stream is not None:
                            loop.forward(buf, lengths, n)
                except SessionEnded:  # its front end left or restarted: this state is void
                    stopped_by = "session_ended"
                    break
                except TransportClosed:
                    stopped_by = "transport_closed"
                    break
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
                    pause.collect(now)
                if flush and asm.open_shots == 0:
                    loop.send_end_of_stream()
                    break
                if n == 0 and should_stop():
                    stopped_by = "shutdown"
                    loop.give_up(asm.expired(now, flush=True))
                    break
        return stopped_by


def _host_stats(run: ServiceRun, stopped_by: str) -> HostStats:
    """The run's tally as the service's account of it."""
    decoder_counts = run.decoder_counts()  # first: it may record an error
    asm = run.asm
    open_rounds = int(np.count_nonzero(asm.received[asm.slot_shot >= 0]))
    return HostStats(
        decoder=run.service.decoder.name,
        stopped_by=stopped_by,
        counts=asm.counts(),
        shots_decoded=run.decoded,
        shots_incomplete=run.incomplete,
        shots_decoder_error=run.errors,
        rounds_in_decoded=run.rounds_decoded,
        rounds_in_incomplete=run.rounds_incomplete,
        rounds_in_decoder_error=run.rounds_error,
        rounds_open_at_exit=open_rounds,
        corrections_unsent=run.unsent,
        decode_calls=run.calls,
        max_batch=run.max_batch,
        service_ns=Percentiles.of_histogram(run.service_ns),
        decode_ns_per_shot=Percentiles.of_histogram(run.decode_ns),
        first_decoder_error=run.first_error,
        streaming=run.stream is not None,
        rounds_streamed=run.streamed,
        rounds_stream_failed=run.stream_failed,
        decoder_counts=decoder_counts,
        hot_path=run.hot is not None,
    )
