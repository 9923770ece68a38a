"""The pre-decoder's tensor layout and the exact effect of each of its outputs.

Layout (Ising-compatible), for a rotated memory circuit of distance d with
``rounds`` stabilizer rounds, T = rounds + 1 time slices (the last one holds
the final detectors built from the data-qubit measurements):

- Input ``uint8[B, 4, T, d, d]``: channel 0 the X-stabilizer detection events,
  1 the Z-stabilizer events, 2 and 3 the masks of where an X / Z detector
  exists. Each stabilizer sits on a cell of the D×D data grid
  (``qhil.sim.DetectorLayout``).
- Output ``bool[B, 4, T, d, d]``: 0 a Z flip of the data qubit on that cell,
  1 an X flip, 2 a flip of the X-stabilizer measurement on that cell, 3 of the
  Z-stabilizer measurement.

What each output does (its *footprint*), exactly, in terms of detectors:

- A data flip at slice t happens after round t-1's measurements and before
  round t's. It flips the detectors at slice t of the stabilizers of the other
  type that act on the qubit. That is the docs/design.md rule ``H c_t``, and it holds
  for the final slice too.
- A measurement flip at round t (t < rounds) flips that stabilizer's detectors
  at slices t and t+1, wherever those exist (``m_t + m_(t-1)``).
- The observable flips by the parity of the data flips of the type that
  anticommutes with it (X flips for a Z memory) on its support (``pre_L``).

So for any output E, ``residual = dets ^ footprint(E)`` and
``obs_flip = L(E)``. Then ``obs_flip ^ MWPM(residual)`` corrects the shot
whenever MWPM corrects the errors E leaves, whatever E is. This is the
docs/design.md residual with one departure: the final-slice detectors get the same
rule instead of passing through unchanged, so that the residual and ``obs_flip``
always agree.

>>> import stim
>>> c = stim.Circuit.generated("surface_code:rotated_memory_z", distance=3, rounds=2)
>>> g = PreDecoderGeometry.from_circuit(c)
>>> g.shape
(3, 3, 3)
>>> e = np.zeros((1, 4, 3, 3, 3), dtype=bool)
>>> e[0, 1, 1, 1, 1] = True  # an X flip of the centre data qubit before round 1
>>> dets, obs = g.footprint(e)
>>> int(dets.sum()), obs.tolist()  # it flips two Z detectors of round 1; not the logical
(2, [[False]])
"""

from __future__ import annotations

import dataclasses

import numpy as np
import stim

from qhil.sim import DetectorLayout

__all__ = ["CHANNELS", "PreDecoderGeometry"]

CHANNELS = ("data_z", "data_x", "meas_x", "meas_z")
X, Z = 0, 1


def _ro(a: np.ndarray) -> np.ndarray:
    a = np.ascontiguousarray(a)
    a.flags.writeable = False
    return a


@dataclasses.dataclass(frozen=True, eq=False)
class PreDecoderGeometry:
    """Tensor layout of one circuit, and the footprints of the pre-decoder's outputs.

    Attributes:
        layout: the circuit's detector layout.
        det_index: int64[2, T, d, d], the detector index of (kind, slice, cell), -1 if none.
        input_mask: uint8[2, T, d, d], 1 where an X / Z detector exists.
        output_mask: bool[4, T, d, d], outputs that name a real error: every
            data flip, and measurement flips of existing stabilizers before the
            final slice.
        obs_channel: the data channel whose flips the observable sees (1 for a
            Z memory, 0 for an X memory).
    """

    layout: DetectorLayout
    det_index: np.ndarray
    input_mask: np.ndarray
    output_mask: np.ndarray
    obs_channel: int

    @classmethod
    def from_circuit(cls, circuit: stim.Circuit) -> PreDecoderGeometry:
        """Lay out a rotated surface-code memory circuit (stim's or ``qhil.sim``'s, any noise).

        Raises ValueError naming the problem for a circuit it cannot lay out.
        """
        return cls._from_layout(DetectorLayout.from_circuit(circuit))

    @classmethod
    def from_dem(cls, dem: stim.DetectorErrorModel) -> PreDecoderGeometry:
        """Lay out the circuit ``dem`` came from, by its detector coordinates.

        See ``qhil.sim.DetectorLayout.from_dem``: stim's rotated memory circuits and
        ``qhil.sim``'s, any noise. Raises ValueError naming the problem otherwise.
        """
        return cls._from_layout(DetectorLayout.from_dem(dem))

    @classmethod
    def _from_layout(cls, layout: DetectorLayout) -> PreDecoderGeometry:
        """The tensor layout of a detector layout with one observable."""
        if layout.num_observables != 1:
            raise ValueError(
                f"the pre-decoder needs a memory circuit with one observable; got "
                f"{layout.num_observables}"
            )
        d, t = layout.distance, layout.rounds + 1
        det_index = np.full((2, t, d, d), -1, dtype=np.int64)
        det_index[layout.kind, layout.time, layout.row, layout.col] = np.arange(
            layout.num_detectors
        )
        present = np.stack([layout.x_present, layout.z_present])
        out_mask = np.ones((4, t, d, d), dtype=bool)
        out_mask[2:, -1] = False  # the final slice is a data measurement: no stabilizer
        out_mask[2:] &= present[:, None]
        return cls(
            layout=layout,
            det_index=_ro(det_index),
            input_mask=_ro((det_index >= 0).astype(np.uint8)),
            output_mask=_ro(out_mask),
            obs_channel=X if layout.basis == "x" else Z,
        )

    @property
    def distance(self) -> int:
        return self.layout.distance

    @property
    def shape(self) -> tuple[int, int, int]:
        """(T, d, d): the time and space extent of one shot's tensor."""
        return self.det_index.shape[1], self.distance, self.distance

    @property
    def num_detectors(self) -> int:
        return self.layout.num_detectors

    def inputs(self, dets: np.ndarray) -> np.ndarray:
        """The network input for a batch of shots.

        Args:
            dets: bool or uint8[shots, num_detectors], stim detector order.

        Returns:
            uint8[shots, 4, T, d, d], C-contiguous, 0/1.
        """
        dets = np.asarray(dets)
        if dets.ndim != 2 or dets.shape[1] != self.num_detectors:
            raise ValueError(
                f"dets must have shape (shots, {self.num_detectors}); got {dets.shape}"
            )
        out = np.zeros((dets.shape[0], 4, *self.shape), dtype=np.uint8)
        k, t, r, c = np.nonzero(self.det_index >= 0)
        out[:, k, t, r, c] = dets[:, self.det_index[k, t, r, c]]
        out[:, 2:] = self.input_mask
        return out

    def footprint(self, e: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The detectors and observable that the outputs ``e`` flip.

        Args:
            e: bool or uint8[shots, 4, T, d, d], the binarized outputs. Entries
                outside ``output_mask`` are ignored.

        Returns:
            (bool[shots, num_detectors], bool[shots, 1]).
        """
        e = np.asarray(e).astype(np.uint8) & self.output_mask
        shots = e.shape[0]
        t_n, d, _ = self.shape
        h = self.layout.parity_check  # uint8[2, d*d stabilizer cells, d*d data cells]
        flips = np.zeros((shots, 2, t_n, d * d), dtype=np.uint8)
        # Data flips: a Z flip (channel 0) is seen by X stabilizers, an X flip by Z ones.
        for kind, channel in ((X, 0), (Z, 1)):
            data = e[:, channel].reshape(shots, t_n, d * d)
            flips[:, kind] ^= (data @ h[kind].T.astype(np.uint8)) & 1
        # Measurement flips: this slice's detector and the next one's.
        meas = e[:, 2:].reshape(shots, 2, t_n, d * d)
        flips ^= meas
        flips[:, :, 1:] ^= meas[:, :, :-1]
        grid = flips.reshape(shots, 2, t_n, d, d)
        det_flips = np.zeros((shots, self.num_detectors), dtype=bool)
        k, t, r, c = np.nonzero(self.det_index >= 0)
        det_flips[:, self.det_index[k, t, r, c]] = grid[:, k, t, r, c].astype(bool)
        support = self.layout.logical_support.reshape(-1).astype(np.uint8)
        obs_data = e[:, self.obs_channel].reshape(shots, t_n, d * d)
        obs = (obs_data @ support).sum(axis=1) & 1
        return det_flips, obs.astype(bool).reshape(shots, 1)
