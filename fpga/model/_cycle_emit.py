"""How the software front end puts one round on the wire: stamp, encode, publish.

Over the shm ring this is one compiled call (``clock_ns`` stamps the round in the same
call that encodes it into the ring's next slot and publishes it), so the time a round
takes to leave is not a chain of Python-to-numba dispatches; over any other
``PacketSender`` it is ``reserve``, ``write_syndrome``, ``commit``. Either way the run's
ledger records the round the same way.
"""

from __future__ import annotations

import time

import numpy as np

from qhil.bridge import (
    PacketSender,
    RingSender,
    TransportClosed,
    clock_ns,
    closed_ring_args,
    njit_cached,
    ring_publish,
    ring_room,
    write_syndrome,
)
from qhil.fpga.model._cycle_run import RunState
from qhil.fpga.model._ledger import Fate

__all__ = ["RoundEmitter"]

_NS = 1_000_000_000


@njit_cached(nogil=True)
def _emit(ctrl, slots, local, stream_id, shot, rnd, seq, flags, payload, n_bits, t0_ns, hz, out):  # type: ignore[no-untyped-def]
    """Stamp, encode and publish one round if the ring has room. Returns its size, 0 if
    the ring is full, -1 if it is closed; ``out``: int64[2] = (t_ns, cycle count)."""
    n_slots = slots.shape[0]
    room = ring_room(ctrl, n_slots, local, 1)
    if room != 1:
        return room
    t = clock_ns()
    dt = t - t0_ns
    cyc = (dt // _NS) * hz + (dt % _NS) * hz // _NS  # no int64 overflow in long runs
    n = write_syndrome(slots[local[0] & (n_slots - 1), 4:], stream_id, shot, rnd, seq, cyc,
                       flags, payload, n_bits)  # fmt: skip
    ring_publish(ctrl, slots, local, n)
    out[0], out[1] = t, cyc
    return n


class RoundEmitter:
    """Puts rounds on ``tx`` for one run, recording each in the run's ledger."""

    def __init__(self, tx: PacketSender, stream_id: int) -> None:
        self._tx, self._stream_id = tx, stream_id
        self._ring = tx if isinstance(tx, RingSender) else None
        self._out = np.zeros(2, dtype=np.int64)

    @staticmethod
    def warm_up() -> None:
        """Compile (or load) the compiled emitter with a run's argument types, on a closed
        stand-in ring, so the first round does not wait for it."""
        payload, out = np.zeros(1, dtype=np.uint8), np.zeros(2, dtype=np.int64)
        _emit(*closed_ring_args(), 0, 0, 0, 0, 0, payload, 0, 0, 0, out)

    def emit(self, run: RunState, shot: int, rnd: int, flags: int, payload: np.ndarray,
             n_bits: int) -> int | None:  # fmt: skip
        """Send round ``rnd`` of ``shot`` (payload: uint8[ceil(n_bits / 8)], LSB-first);
        returns when it left (monotonic ns), or None if the bridge had no room."""
        if self._ring is not None:
            n = _emit(*self._ring.kernel_args(), self._stream_id, shot, rnd, run.seq, flags,
                      payload, n_bits, run.t0_ns, run.fabric_hz, self._out)  # fmt: skip
            if n < 0:
                raise TransportClosed(
                    f"ring {self._ring.name!r} was marked closed (peer shut down)"
                )
            if n == 0:
                return None
            t, cyc = int(self._out[0]), int(self._out[1])
        else:
            slot = self._tx.reserve()
            if slot is None:
                return None
            t = time.monotonic_ns()
            cyc = run.cycles(t)
            self._tx.commit(write_syndrome(slot, self._stream_id, shot, rnd, run.seq, cyc, flags,
                                           payload, n_bits))  # fmt: skip
        run.fates[shot, rnd] = Fate.PENDING
        run.emit_ns[shot], run.emit_cyc[shot], run.last_seq[shot] = t, cyc, run.seq
        run.seq += 1
        run.first_emit = run.first_emit or t
        run.last_emit = t
        run.n_emit += 1
        return t
