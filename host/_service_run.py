"""One ``serve`` call's state: decode ready shots and answer each, give up on
shots that cannot complete, feed a streaming decoder its rounds, and tally all of it.

``LiveRun`` is the read-only view of that tally for a metrics exporter on another thread.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import numpy as np

from qhil.bridge import (
    FLAG_END_OF_STREAM,
    CorrectionStatus,
    PacketSender,
    correction_size,
    write_correction,
)
from qhil.host._assembler import ShotAssembler
from qhil.host._decoders import StreamingDecoder
from qhil.host._hot_path import RingHotPath
from qhil.host._stats import LogHistogram

if TYPE_CHECKING:
    from qhil.host._service import DecoderService

__all__ = ["LiveRun", "NullSender", "ServiceRun"]


class LiveRun:
    """A read-only view of one running ``serve`` call, for a metrics exporter (a Prometheus
    scrape) on another thread: ``DecoderService.live``.

    Reads take no lock and the service thread keeps going meanwhile, so each value is
    whole but two values read one after the other may be a batch apart (e.g.
    ``shots_decoded`` ahead of ``service_ns.count``). Never mutate what it hands out:
    ``service_ns`` and ``decode_ns`` are the service's own recorders (read them with
    ``buckets``, ``percentile``, ``count``, ``sum``).
    """

    __slots__ = ("_run",)

    def __init__(self, run: ServiceRun) -> None:
        self._run = run

    def counts(self) -> dict[str, int]:
        """The assembler's counters by name, as in ``HostStats.counts``."""
        return self._run.asm.counts()

    @property
    def service_ns(self) -> LogHistogram:
        """Per decoded shot: last round received to correction sent, in ns."""
        return self._run.service_ns

    @property
    def decode_ns(self) -> LogHistogram:
        """Per decoded shot: the decoder's time over its batch's shots, in ns."""
        return self._run.decode_ns

    @property
    def shots_decoded(self) -> int:
        return self._run.decoded

    @property
    def shots_incomplete(self) -> int:
        return self._run.incomplete

    @property
    def shots_decoder_error(self) -> int:
        return self._run.errors

    @property
    def open_shots(self) -> int:
        """Shots with rounds in but no correction out yet."""
        return self._run.asm.open_shots


class NullSender:
    """Swallows packets; lets ``warm_up`` run the real send path with nowhere to send."""

    max_packet = 252

    def send(self, packet: np.ndarray, *, timeout_s: float) -> bool:
        return True


_DECODED = CorrectionStatus.DECODED


class ServiceRun:
    """The service's mutable state for one ``serve`` call."""

    def __init__(self, service: DecoderService, tx: PacketSender | NullSender) -> None:
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
        self.hot: RingHotPath | None = None  # set by the serve loop over the shm ring

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
        """Decode the ready shots (int64[n, 2] (stream, slot)), send their corrections,
        then tally them and free their slots. Nothing but the decoder runs between the
        shots being ready and their corrections leaving."""
        t0 = time.monotonic_ns()
        obs, status = self._run_decoder(ready)
        t1 = time.monotonic_ns()
        self._send_corrections(ready, obs, int(status))
        done = time.monotonic_ns()
        self._tally(ready, status, t0, t1, done)

    def _run_decoder(self, ready: np.ndarray) -> tuple[np.ndarray, CorrectionStatus]:
        """bool[n, n_obs] predictions and DECODED, or no columns and DECODER_ERROR."""
        if len(ready) == 1:  # the common, latency-critical case: a view, no copy
            dets = self.asm.dets[ready[0, 0], ready[0, 1] : ready[0, 1] + 1]
        else:
            dets = self.asm.dets[ready[:, 0], ready[:, 1]]
        try:
            if self.stream is not None:  # its rounds are in already: ask by (stream, shot)
                shots = self.asm.slot_shot[ready[:, 0], ready[:, 1]]
                return self.stream.decode_streamed(ready[:, 0], shots, dets), _DECODED
            return self.service.decoder.decode_batch(dets), _DECODED
        except Exception as ex:
            self.first_error = self.first_error or f"{type(ex).__name__}: {ex}"
            return np.zeros((len(ready), 0), dtype=np.bool_), CorrectionStatus.DECODER_ERROR

    def _send_corrections(self, ready: np.ndarray, obs: np.ndarray, status: int) -> None:
        sent = 0
        if self.hot is not None:  # packs and sends in one compiled call
            sent = self.hot.send_decoded(ready, obs, status)
        if sent == len(ready):
            return
        n_obs = obs.shape[1]  # the general way, or the ring stayed full
        packed = np.packbits(obs, axis=1, bitorder="little") if n_obs else None
        for i in range(sent, len(ready)):
            obs_i = packed[i] if packed is not None else self.empty
            self._correction(ready[i, 0], ready[i, 1], status, obs_i, n_obs, self.empty, 0)

    def _tally(self, ready: np.ndarray, status: CorrectionStatus, t0: int, t1: int,
               done: int) -> None:  # fmt: skip
        n = len(ready)
        self.calls += 1
        self.max_batch = max(self.max_batch, n)
        if status == CorrectionStatus.DECODED:
            self.decoded += n
            self.rounds_decoded += n * self.asm.rounds
            if n == 1:  # the common case again: no temporary arrays
                self.service_ns.record(done - int(self.asm.meta[ready[0, 0], ready[0, 1], 4]))
            else:
                self.service_ns.record_many(done - self.asm.meta[ready[:, 0], ready[:, 1], 4])
            self.decode_ns.record((t1 - t0) // n, count=n)
        else:
            self.errors += n
            self.rounds_error += n * self.asm.rounds
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

    def decoder_counts(self) -> dict[str, int]:
        """The streaming decoder's own account (empty for any other decoder)."""
        if self.stream is None:
            return {}
        try:
            return dict(self.stream.streaming_counts())
        except Exception as ex:  # the run's own account still goes back
            self.first_error = self.first_error or f"streaming_counts: {type(ex).__name__}: {ex}"
            return {}
