"""The front end's detection-event unit: measurements in, detection events out, one round at a time.

Each QEC round the front end receives that round's measurement results and
XORs them, following the circuit's DETECTOR definitions, with the results it
kept from the previous round. This is what the RTL does, so the unit holds
exactly one previous round and refuses circuits whose detectors reach further
back.

A measurement belongs to the round of the first DETECTOR declared after it
(stim declares each round's detectors right after that round's measurements).
Round ``t`` carries the detectors whose time coordinate is ``t``; the last
round (``t == rounds``) is the final data-qubit measurement.

>>> import stim
>>> circuit = stim.Circuit.generated("surface_code:rotated_memory_z", distance=3, rounds=2)
>>> program = DetectorProgram.from_circuit(circuit)
>>> program.num_rounds, program.bits_per_round
(3, (4, 8, 4))
"""

from __future__ import annotations

import dataclasses

import numpy as np
import stim

__all__ = ["DetectorProgram"]


def _readonly(a: np.ndarray) -> np.ndarray:
    a = np.ascontiguousarray(a)
    a.flags.writeable = False
    return a


@dataclasses.dataclass(frozen=True)
class _Parsed:
    meas_round: np.ndarray  # int64[num_measurements]
    det_terms: list[list[int]]  # absolute measurement indices per detector
    det_time: np.ndarray  # int64[num_detectors]
    obs_terms: list[list[int]]


def _parse(circuit: stim.Circuit) -> _Parsed:
    n_meas = 0
    pending_start = 0
    meas_round = np.full(circuit.num_measurements, -1, dtype=np.int64)
    det_terms: list[list[int]] = []
    det_time: list[int] = []
    obs_terms: list[list[int]] = [[] for _ in range(circuit.num_observables)]
    for inst in circuit.flattened():
        name = inst.name
        if name == "DETECTOR":
            args = inst.gate_args_copy()
            if not args:
                raise ValueError(
                    f"detector {len(det_terms)} has no coordinates; the front end needs a time "
                    "coordinate (its last coordinate) to know which round it belongs to"
                )
            t = round(args[-1])
            meas_round[pending_start:n_meas] = t
            pending_start = n_meas
            det_terms.append([n_meas + tg.value for tg in inst.targets_copy()])
            det_time.append(t)
        elif name == "OBSERVABLE_INCLUDE":
            k = int(inst.gate_args_copy()[0])
            obs_terms[k].extend(n_meas + tg.value for tg in inst.targets_copy())
        elif stim.gate_data(name).produces_measurements:
            n_meas += len(inst.target_groups())
    if pending_start < n_meas:
        # Measurements after the last detector (none in memory circuits) join the last round.
        meas_round[pending_start:n_meas] = det_time[-1] if det_time else 0
    return _Parsed(meas_round, det_terms, np.array(det_time, dtype=np.int64), obs_terms)


def _local_terms(
    terms: list[list[int]], rounds: np.ndarray, meas_offsets: np.ndarray, what: str
) -> np.ndarray:
    """Terms as indices into concat(previous round's results, this round's results)."""
    width = max((len(t) for t in terms), default=0)
    out = np.full((len(terms), max(width, 1)), -1, dtype=np.int64)
    for i, (t, mm) in enumerate(zip(rounds, terms, strict=True)):
        prev_start = meas_offsets[t - 1] if t > 0 else meas_offsets[0]
        for j, m in enumerate(mm):
            if not prev_start <= m < meas_offsets[t + 1]:
                raise ValueError(
                    f"{what} {i} of round {t} uses measurement {m}, which is older than the "
                    "previous round; the front end keeps only one previous round"
                )
            out[i, j] = m - prev_start
    return out


@dataclasses.dataclass(frozen=True)
class DetectorProgram:
    """Per-round XOR programs that turn measurement results into detection events.

    Attributes:
        meas_offsets: int64[num_rounds + 1]; round t's measurement results are
            record entries ``meas_offsets[t]:meas_offsets[t+1]``.
        det_offsets: int64[num_rounds + 1]; round t's detectors are
            ``det_offsets[t]:det_offsets[t+1]`` in stim's detector order.
        det_terms: int64[num_detectors, K]; indices into the concatenation of
            the previous round's and this round's results, -1 for padding.
        det_ref: bool[num_detectors], the detector's parity with no noise
            (XORed in so that no noise means no events).
        obs_terms: int64[num_observables, K2], like det_terms but for the last round.
        obs_ref: bool[num_observables], the observables' noiseless values.
    """

    meas_offsets: np.ndarray
    det_offsets: np.ndarray
    det_terms: np.ndarray
    det_ref: np.ndarray
    obs_terms: np.ndarray
    obs_ref: np.ndarray

    @classmethod
    def from_circuit(cls, circuit: stim.Circuit) -> DetectorProgram:
        if circuit.num_detectors == 0:
            raise ValueError("the circuit declares no detectors; nothing for the front end to emit")
        parsed = _parse(circuit)
        t = parsed.det_time
        if np.any(np.diff(t) < 0) or t[0] != 0:
            raise ValueError(
                "detectors must be declared in time order starting at time 0, one round after "
                f"another; got times {sorted(set(t.tolist()))[:8]}..."
            )
        num_rounds = int(t[-1]) + 1
        det_offsets = np.searchsorted(t, np.arange(num_rounds + 1), side="left").astype(np.int64)
        meas_round = parsed.meas_round
        if np.any(np.diff(meas_round) < 0):
            raise ValueError("measurements are not grouped by round; cannot stream this circuit")
        meas_offsets = np.searchsorted(meas_round, np.arange(num_rounds + 1), side="left")
        meas_offsets = meas_offsets.astype(np.int64)
        det_terms = _local_terms(parsed.det_terms, t, meas_offsets, "detector")
        last = num_rounds - 1
        obs_terms = _local_terms(
            parsed.obs_terms, np.full(len(parsed.obs_terms), last), meas_offsets, "observable"
        )
        ref = np.asarray(circuit.reference_sample(), dtype=np.bool_)
        det_ref = np.array(
            [np.bitwise_xor.reduce(ref[m]) if m else False for m in parsed.det_terms]
        )
        obs_ref = np.array(
            [np.bitwise_xor.reduce(ref[m]) if m else False for m in parsed.obs_terms]
        )
        return cls(
            meas_offsets=_readonly(meas_offsets),
            det_offsets=_readonly(det_offsets),
            det_terms=_readonly(det_terms),
            det_ref=_readonly(det_ref.astype(np.bool_)),
            obs_terms=_readonly(obs_terms),
            obs_ref=_readonly(obs_ref.astype(np.bool_).reshape(-1)),
        )

    @property
    def num_rounds(self) -> int:
        """Rounds a shot streams as, the final data-measurement round included."""
        return len(self.det_offsets) - 1

    @property
    def bits_per_round(self) -> tuple[int, ...]:
        return tuple(int(n) for n in np.diff(self.det_offsets))

    @property
    def num_detectors(self) -> int:
        return int(self.det_offsets[-1])

    def _window(self, measurements: np.ndarray, t: int) -> np.ndarray:
        lo = self.meas_offsets[t - 1] if t > 0 else self.meas_offsets[0]
        return measurements[:, lo : self.meas_offsets[t + 1]]

    def round_events(self, measurements: np.ndarray, t: int) -> np.ndarray:
        """Detection events of round ``t``, from that round's and the previous round's results.

        Args:
            measurements: bool[shots, num_measurements], the measurement record
                (only rounds t-1 and t are read).

        Returns:
            bool[shots, bits_per_round[t]].
        """
        window = self._window(measurements, t)
        terms = self.det_terms[self.det_offsets[t] : self.det_offsets[t + 1]]
        return (
            _xor_terms(window, terms) ^ self.det_ref[self.det_offsets[t] : self.det_offsets[t + 1]]
        )

    def observables(self, measurements: np.ndarray) -> np.ndarray:
        """Raw logical observables of each shot, relative to their noiseless values.

        Returns:
            bool[shots, num_observables]: True where the measured observable
            differs from its noiseless value (before any correction).
        """
        window = self._window(measurements, self.num_rounds - 1)
        return _xor_terms(window, self.obs_terms) ^ self.obs_ref

    def packed_payloads(self, measurements: np.ndarray) -> list[np.ndarray]:
        """Every round's detection events, packed LSB-first for the wire.

        Returns:
            One uint8[shots, ceil(bits_per_round[t] / 8)] array per round t, C-contiguous.
        """
        if measurements.ndim != 2 or measurements.shape[1] != self.meas_offsets[-1]:
            raise ValueError(
                f"measurements must have shape (shots, {self.meas_offsets[-1]}); "
                f"got {measurements.shape}"
            )
        meas = measurements.astype(np.bool_, copy=False)
        return [
            np.ascontiguousarray(np.packbits(self.round_events(meas, t), axis=1, bitorder="little"))
            for t in range(self.num_rounds)
        ]


def _xor_terms(window: np.ndarray, terms: np.ndarray) -> np.ndarray:
    out = np.zeros((window.shape[0], terms.shape[0]), dtype=np.bool_)
    for j in range(terms.shape[1]):
        col = terms[:, j]
        used = col >= 0
        out[:, used] ^= window[:, col[used]]
    return out
