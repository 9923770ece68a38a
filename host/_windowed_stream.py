"""``pymatching-windowed``: sliding-window matching fed by the decoder service, round by
round, so the work left when a shot's last round arrives is one window's.

The service hands each accepted round's packet to :meth:`StreamedWindows.on_round`; the
shot's syndrome fills in, and each window is matched and committed the moment its last
round is in. :meth:`StreamedWindows.decode_streamed` then commits what is left, the last
window (``WindowedMatching``). A shot whose rounds did not come in order (the assembler
takes reordered rounds; windows cannot) is decoded whole from the host's assembled copy
instead, by the same windows, and counted (``shots_fallback``), so the answer is the same
either way. Open shots are bounded (``max_open``): the oldest is dropped past it and
falls back the same way.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import stim

from qhil.bridge import SYN_N_BITS_AT, SYN_PAYLOAD_AT, SYN_ROUND_AT, SYN_SHOT_AT, SYN_STREAM_AT
from qhil.fpga import DetectorProgram
from qhil.host._windowed import WindowedMatching

__all__ = ["StreamedWindows"]


@dataclasses.dataclass
class _OpenShot:
    syndrome: np.ndarray  # uint8[num_detectors]; committed windows' carries written in
    next_round: int = 0
    next_window: int = 0
    flips: int = 0
    in_order: bool = True


class StreamedWindows:
    """A ``StreamingDecoder``: ``WindowedMatching`` committed as the rounds arrive."""

    name = "pymatching-windowed"

    def __init__(self, windowed: WindowedMatching, *, max_open: int = 4096) -> None:
        self.windowed = windowed
        self.num_detectors = windowed.num_detectors
        self.num_observables = windowed.num_observables
        self.max_open = max_open
        self._open: dict[tuple[int, int], _OpenShot] = {}
        self._counts = dict.fromkeys(
            ("rounds_streamed", "windows_early", "shots_streamed", "shots_fallback",
             "shots_abandoned", "shots_evicted", "packets_unreadable"), 0,
        )  # fmt: skip

    @classmethod
    def from_circuit(cls, circuit: stim.Circuit, **windows: int) -> StreamedWindows:
        """Windows cut on the rounds the front end sends (``DetectorProgram``)."""
        offsets = np.asarray(DetectorProgram.from_circuit(circuit).det_offsets)
        return cls(WindowedMatching.from_circuit(circuit, det_offsets=offsets, **windows))

    def decode_batch(self, dets: np.ndarray) -> np.ndarray:
        return self.windowed.decode_batch(dets)

    def on_round(self, packet: np.ndarray) -> None:
        # The assembler accepted this packet: its frame and CRC are checked already.
        if packet.shape[0] < SYN_PAYLOAD_AT:
            self._counts["packets_unreadable"] += 1
            return
        n_bits = int.from_bytes(packet[SYN_N_BITS_AT : SYN_N_BITS_AT + 2], "little")
        stream = int.from_bytes(packet[SYN_STREAM_AT : SYN_STREAM_AT + 4], "little")
        rnd = int.from_bytes(packet[SYN_ROUND_AT : SYN_ROUND_AT + 4], "little")
        shot = int.from_bytes(packet[SYN_SHOT_AT : SYN_SHOT_AT + 8], "little")
        st = self._shot(stream, shot)
        if rnd != st.next_round:
            st.in_order = False  # decoded whole from the host's copy
            return
        w = self.windowed
        lo = int(w.det_offsets[rnd])
        payload = packet[SYN_PAYLOAD_AT : SYN_PAYLOAD_AT + (n_bits + 7) // 8]
        st.syndrome[lo : lo + n_bits] ^= np.unpackbits(payload, count=n_bits, bitorder="little")
        st.next_round += 1
        self._counts["rounds_streamed"] += 1
        last = len(w.windows) - 1  # decode_streamed commits the last window
        while st.next_window < last and w.windows[st.next_window].end <= st.next_round:
            st.flips ^= w.commit_window(w.windows[st.next_window], st.syndrome)
            st.next_window += 1
            self._counts["windows_early"] += 1

    def _shot(self, stream: int, shot: int) -> _OpenShot:
        key = (stream, shot)
        st = self._open.get(key)
        if st is None:
            if len(self._open) >= self.max_open:  # the oldest (dicts keep insertion order)
                del self._open[next(iter(self._open))]
                self._counts["shots_evicted"] += 1
            st = self._open[key] = _OpenShot(np.zeros(self.num_detectors, dtype=np.uint8))
        return st

    def decode_streamed(self, streams: np.ndarray, shots: np.ndarray, dets: np.ndarray
                        ) -> np.ndarray:  # fmt: skip
        w = self.windowed
        rounds = len(w.det_offsets) - 1
        out = np.zeros((len(shots), self.num_observables), dtype=np.bool_)
        for i in range(len(shots)):
            st = self._open.pop((int(streams[i]), int(shots[i])), None)
            if st is not None and st.in_order and st.next_round == rounds:
                flips = st.flips ^ w.commit_from(st.next_window, st.syndrome)
                self._counts["shots_streamed"] += 1
            else:
                flips = w.commit_from(0, dets[i].astype(np.uint8))
                self._counts["shots_fallback"] += 1
            out[i] = w.obs_bits(flips)
        return out

    def abandon(self, stream: int, shot: int) -> None:
        if self._open.pop((stream, shot), None) is not None:
            self._counts["shots_abandoned"] += 1

    def streaming_counts(self) -> dict[str, int]:
        return dict(self._counts)
