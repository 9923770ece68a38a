"""``PersistentPreDecoder``: the CNN pre-decoder as a persistent GPU kernel fed by packets.

The kernel (``qhil.kernels.persistent._kernel``) is launched ONCE and loops
until told to stop. It takes wire-v1 syndrome packets, one per QEC round,
straight from the slots of a ring in mapped pinned memory, computes on each
round as it lands (bounded work per round), and emits each shot's residual and
``pre_L`` to an output ring::

    pd = PersistentPreDecoder.start(geometry, model, n_slots=64)
    pd.submit(first_shot_id, dets)      # bool[shots, num_detectors]: T packets per shot
    # ... or, as a front end does, raw packets through the PacketSender:
    pd.sender.try_send(packet)          # bytes of one syndrome packet
    for r in pd.poll():                 # r.shot_id, r.residual, r.obs_flip, r.status, ...
        ...
    pd.counters()                       # every packet, counted by fate
    report = pd.stop(timeout_s=5.0)

A DECODED result equals ``PreDecoder.predecode`` of the shot bit for bit. A
shot the kernel could not finish (rounds lost, out of order, end of stream,
shutdown) comes back INCOMPLETE with the rounds it received; the kernel's
counters say why, per ``Reason``.

The launch, the heartbeat watchdog (a stall raises :class:`KernelStalled` from every
later ``submit``/``poll`` and from a sender waiting for room) and the stop are
``KernelRun``'s, shared with the echo kernel. On a GPU the kernel runs concurrently with
the host: while it runs, do no work on the legacy default stream (it would wait behind
the kernel) and free no device memory (``cudaFree`` synchronizes the device). In the
simulator one block runs (blocks run one after another there, so there is no
inter-block handshake) and the fences are no-ops: it checks the protocol's logic and
the arithmetic, not the hardware memory ordering.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

import numpy as np
from numba import cuda

from qhil.bridge import (
    H_CORRECTIONS,
    H_ROUNDS,
    H_SEQ,
    H_SHOT,
    H_STATUS,
    H_STREAM,
    H_T_FPGA,
    W_COUNTERS,
    W_STALL,
    CorrectionStatus,
    GpuPacketSender,
    MappedRingSpec,
    MappedSlotRing,
    SyndromeRounds,
    simulator_enabled,
)
from qhil.kernels._geometry import PreDecoderGeometry
from qhil.kernels._model import QuantizedModel
from qhil.kernels.persistent._judge import C_PACKETS, COUNTER_NAMES
from qhil.kernels.persistent._kernel import streaming_kernel
from qhil.kernels.persistent._launch import KernelRun, PersistentKernelError
from qhil.kernels.persistent._tables import D_STREAM, StreamTables, build_tables

__all__ = [
    "PersistentPreDecoder",
    "PersistentResult",
    "StopReport",
]


@dataclasses.dataclass(frozen=True, eq=False)
class PersistentResult:
    """One shot's result; unpacks as ``(shot_id, residual, obs_flip)``.

    Attributes:
        shot_id: the shot id its packets carried.
        residual: bool[num_detectors], the detection events the corrections leave
            (meaningless unless ``decoded``).
        obs_flip: bool[num_observables], the logical flip of the corrections (``pre_L``).
        status: DECODED, or INCOMPLETE (the kernel could not finish the shot).
        rounds: rounds (packets) of the shot the kernel took.
        stream: the stream id its packets carried.
        seq: seq of the shot's last packet taken.
        t_fpga: ``t_fpga`` of that packet.
        corrections: how many corrections the network applied.
    """

    shot_id: int
    residual: np.ndarray
    obs_flip: np.ndarray
    status: CorrectionStatus = CorrectionStatus.DECODED
    rounds: int = 0
    stream: int = 0
    seq: int = 0
    t_fpga: int = 0
    corrections: int = 0

    @property
    def decoded(self) -> bool:
        return self.status == CorrectionStatus.DECODED

    def __iter__(self) -> Iterator[Any]:
        return iter((self.shot_id, self.residual, self.obs_flip))


@dataclasses.dataclass(frozen=True)
class StopReport:
    """How a :class:`PersistentPreDecoder` ended.

    Attributes:
        exited: the kernel reported its exit (``STATE_EXITED``) within the timeout.
        submitted: packets published to the input ring.
        taken: packets the kernel copied out of the input ring.
        returned: results the host polled.
        heartbeat: the last heartbeat value.
        error: the recorded failure (a stall, a kernel exception, a timeout), or None.
        counters: the kernel's counters by name (see :meth:`PersistentPreDecoder.counters`).
    """

    exited: bool
    submitted: int
    taken: int
    returned: int
    heartbeat: int
    error: str | None
    counters: dict[str, int] = dataclasses.field(default_factory=dict)


class PersistentPreDecoder:
    """The pre-decoder as one persistent kernel; build with :meth:`start`."""

    def __init__(self, geometry: PreDecoderGeometry, tables: StreamTables,
                 ring: MappedSlotRing, run: KernelRun) -> None:  # fmt: skip
        self.geometry = geometry
        self.tables = tables
        self.ring = ring
        self.run = run
        """The launch: its watchdog, recorded error and stop."""
        self.sender = GpuPacketSender(ring, on_wait=run.check)
        """The input ring's producer end (a ``PacketSender``); the only one."""
        self._next_seq = 0
        self._shots = 0  # shots handed out by rounds_of

    @classmethod
    def start(
        cls,
        geometry: PreDecoderGeometry,
        model: QuantizedModel,
        *,
        n_slots: int = 64,
        threads: int | None = None,
        watchdog_s: float = 2.0,
        threshold: float = 0.0,
        stream_id: int = 0,
    ) -> PersistentPreDecoder:
        """Build the tables, allocate the rings and launch the kernel once.

        Args:
            geometry, model: the circuit's layout and the integer CNN.
            n_slots: slots per ring direction (a power of two >= 2); input slots
                hold one packet, output slots one shot.
            threads: threads in the kernel's single block (default 128 on a GPU,
                4 in the simulator, where each is a Python thread).
            watchdog_s: heartbeat silence that counts as a stall. The kernel beats
                while polling and after each step of each round, so this must
                exceed one step's time (milliseconds in the simulator at d=3).
            threshold: as ``PreDecoder``'s (0 = binarize the logits at 0).
            stream_id: the stream whose packets the kernel takes.
        """
        if watchdog_s <= 0:
            raise ValueError(f"watchdog_s must be > 0; got {watchdog_s}")
        if not 0 <= stream_id < 2**32:
            raise ValueError(f"stream_id={stream_id} must lie in 0..2**32-1")
        tables = build_tables(geometry, model, threshold=threshold, stream_id=stream_id)
        ring = MappedSlotRing(
            MappedRingSpec(
                n_slots=n_slots,
                in_width=tables.max_packet,
                out_width=tables.num_detectors,
                n_obs=tables.num_observables,
            )
        )
        nthreads = threads if threads is not None else (4 if simulator_enabled() else 128)

        def kernel_args(stream: Any) -> tuple[Any, ...]:
            dev = tuple(cuda.to_device(a, stream=stream) for a in tables.device_args())
            scratch = (
                cuda.device_array(tables.num_detectors, dtype=np.uint8, stream=stream),
                cuda.device_array(tables.act_len, dtype=np.int64, stream=stream),
                cuda.device_array(tables.out_valid.shape[0], dtype=np.uint8, stream=stream),
            )
            return (*ring.device_args(), *dev, *scratch)

        run = KernelRun(streaming_kernel, ring, kernel_args, threads=nthreads,
                        what="persistent pre-decoder", watchdog_s=watchdog_s)  # fmt: skip
        return cls(geometry, tables, ring, run)

    @property
    def threads(self) -> int:
        return self.run.threads

    @property
    def simulated(self) -> bool:
        """Whether the kernel runs in Numba's CUDA simulator."""
        return self.run.simulated

    @property
    def watchdog_s(self) -> float:
        assert self.run.watchdog_s is not None
        return self.run.watchdog_s

    @property
    def error(self) -> PersistentKernelError | None:
        """The recorded failure (stall, kernel exception), or None."""
        return self.run.error

    # ------------------------------------------------------------------ producing

    def rounds_of(self, first_shot_id: int, dets: np.ndarray) -> SyndromeRounds:
        """Cut shots into this kernel's per-round packets, with the next seq numbers.

        Args:
            first_shot_id: the first shot's id; the others follow consecutively.
            dets: bool/uint8[shots, num_detectors] (or [num_detectors] for one shot).

        The seq numbers are taken now: send the batch whole, in order, before the
        next one (a batch left unsent shows up as a seq gap in the counters).
        """
        d = np.asarray(dets)
        if d.ndim == 1:
            d = d[None]
        n_det = self.tables.num_detectors
        if d.ndim != 2 or d.shape[1] != n_det:
            raise ValueError(f"dets must have shape (shots, {n_det}) or ({n_det},); got {d.shape}")
        batch = SyndromeRounds.from_detectors(
            d, self.tables.round_off,
            shot_ids=np.arange(first_shot_id, first_shot_id + d.shape[0], dtype=np.int64),
            stream_id=int(self.tables.dims[D_STREAM]), first_seq=self._next_seq,
        )  # fmt: skip
        self._next_seq += batch.num_packets
        self._shots += d.shape[0]
        return batch

    def push(self, batch: SyndromeRounds, start: int = 0, stop: int | None = None) -> int:
        """Publish ``batch``'s packets ``start..stop-1`` while there is room; never blocks.

        Returns the next packet index (``stop``, default ``batch.num_packets``, when
        all were sent). One packet per call (``stop = start + 1``) is how a paced
        front end emulator sends one round at a time.
        """
        self.run.check()
        return self.sender.try_send_rounds(batch, start, stop)

    def submit(self, first_shot_id: int, dets: np.ndarray, *, timeout_s: float = 10.0) -> None:
        """Send shots as per-round packets, waiting for room in the input ring.

        The kernel takes a new shot only once an output slot is free, so poll()
        (from another thread, or between calls) while submitting more than
        ``n_slots`` shots. Raises the recorded error (e.g. :class:`KernelStalled`)
        once the kernel failed, and TimeoutError after ``timeout_s`` without room.
        """
        self.run.check()
        batch = self.rounds_of(first_shot_id, dets)
        k = self.sender.send_rounds(batch, timeout_s=timeout_s)
        if k < batch.num_packets:
            self.run.check()
            raise TimeoutError(
                f"the input ring stayed full for {timeout_s} s ({k} of {batch.num_packets} "
                f"packets sent); poll() the results: the kernel opens a new shot only when "
                f"one of the {self.ring.spec.n_slots} output slots is free"
            )

    # ------------------------------------------------------------------ consuming

    def poll(self) -> list[PersistentResult]:
        """The results published since the last call, in the order the shots completed.

        Results already published are returned even after a failure; once none
        are left, the recorded error is raised.
        """
        hdr, data, obs = self.ring.pop()
        if not len(hdr):
            self.run.check()
        return [
            PersistentResult(
                shot_id=int(h[H_SHOT]),
                residual=data[i].astype(bool),
                obs_flip=obs[i].astype(bool),
                status=CorrectionStatus(int(h[H_STATUS])),
                rounds=int(h[H_ROUNDS]),
                stream=int(h[H_STREAM]),
                seq=int(h[H_SEQ]),
                t_fpga=int(h[H_T_FPGA]),
                corrections=int(h[H_CORRECTIONS]),
            )
            for i, h in enumerate(hdr)
        ]

    def counters(self) -> dict[str, int]:
        """The kernel's counters by name: every packet it took, by fate.

        ``packets`` = ``rounds_accepted`` + the rejections (each ``Reason`` label
        except ``seq_gap``, which counts gap events) + ``end_of_stream`` +
        ``dropped_at_shutdown``; ``shots_decoded`` + ``shots_incomplete`` = records
        emitted. Exact once the kernel is idle or exited; ``packets`` is stored
        last, so the others are at least as new as it.
        """
        words = self.ring.counter_words()
        return {name: int(words[i]) for i, name in COUNTER_NAMES.items()}

    @property
    def packets_processed(self) -> int:
        """Packets the kernel has finished with (its ``packets`` counter, acquire-loaded).

        Every result the kernel emitted while processing them is published before
        this count moves past them: read this, then :meth:`poll` until a call returns
        fewer than ``n_slots`` results, and every such result has been seen.
        """
        return self.ring.word(W_COUNTERS + C_PACKETS)

    @property
    def in_flight(self) -> int:
        """Shots handed out by :meth:`rounds_of` / :meth:`submit` whose results are not polled."""
        return self._shots - self.ring.popped

    # ------------------------------------------------------------------ lifetime

    def _debug_stall(self, on: bool = True) -> None:
        """Test hook: make the kernel spin without heart-beating (it still honours shutdown)."""
        self.ring.set_word(W_STALL, 1 if on else 0)

    def stop(self, timeout_s: float = 5.0) -> StopReport:
        """Set the shutdown flag and wait up to ``timeout_s`` for the kernel to exit.

        Never blocks longer than about ``timeout_s``; a kernel that does not exit is
        reported in ``StopReport.error`` (on a GPU only process exit can reclaim it).
        A shot open at shutdown is emitted INCOMPLETE (poll() still returns it).
        """
        if not self.run.stopped:
            self.sender.close()
        exited = self.run.stop(timeout_s)
        err = self.run.error
        return StopReport(
            exited=exited,
            submitted=self.ring.pushed,
            taken=self.ring.in_done,
            returned=self.ring.popped,
            heartbeat=self.ring.heartbeat,
            error=None if err is None else str(err),
            counters=self.counters(),
        )

    def __enter__(self) -> PersistentPreDecoder:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()
