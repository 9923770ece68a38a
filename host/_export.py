"""``qhil run --save DIR``: everything needed to recheck the loop's decisions offline.

Files written (formats documented in ``docs/save-format.md`` and in the
``README.txt`` written beside them):

- ``circuit.stim``: the noisy circuit, stim's text format.
- ``detection_events.b8``: each shot's detection events (the ones the front
  end streamed), stim's ``b8`` format with ``num_detectors`` bits per shot.
- ``observable_flips.b8``: each shot's measured observables relative to their
  noiseless values (what a perfect decoder predicts), ``num_observables`` bits.
- ``predictions.b8``: the logical-frame flips the loop applied (all zero for
  shots that were not decoded; see ``shots.csv``).
- ``shots.csv``: one row per shot: its fate, latencies and timestamps.

>>> import stim
>>> stim.read_shot_data_file  # doctest: +ELLIPSIS
<built-in method read_shot_data_file ...>
"""

from __future__ import annotations

import csv
from collections.abc import Iterable
from pathlib import Path
from typing import BinaryIO

import numpy as np
import stim

from qhil.fpga import Fate, FrontEndResult
from qhil.sim import ShotBatch

__all__ = ["save_run"]

_README = """\
Files written by `qhil run --save`:
  circuit.stim          the noisy stim circuit that was sampled
  detection_events.b8   detection events the front end computed, stim b8 format,
                        {num_detectors} bits per shot, {shots} shots
  observable_flips.b8   measured observables vs. their noiseless value, b8,
                        {num_observables} bits/shot
  predictions.b8        logical-frame flips the loop applied, b8, {num_observables} bits/shot
                        (read any .b8 here with num_detectors = its bits per shot)
                        (zero for shots that were not decoded: check shots.csv)
  shots.csv             per shot: fate (decoded or lost reason), reaction latency in ns
                        and fabric cycles (-1 if none), and host monotonic ns timestamps
Recheck with, e.g.:
  dets = stim.read_shot_data_file(
      path="detection_events.b8", format="b8", num_detectors={num_detectors})
  pymatching.Matching.from_detector_error_model(
      stim.Circuit.from_file("circuit.stim").detector_error_model(decompose_errors=True)).decode_batch(dets)
"""


def _fate_of_shot(row: np.ndarray) -> str:
    if np.all(row == Fate.DECODED):
        return "decoded"
    lost = [Fate(int(f)).label for f in row if f not in (Fate.DECODED, Fate.NOT_EMITTED)]
    if not lost:
        return "not_emitted"
    # The shot's reason is its first lost round's reason (others follow from it).
    return lost[0]


def save_run(
    out_dir: Path,
    *,
    circuit: stim.Circuit,
    shots: ShotBatch | Iterable[ShotBatch],
    result: FrontEndResult,
) -> list[Path]:
    """Write the files above into ``out_dir`` (created if needed); returns their paths.

    ``shots``: the run's shots, as one batch or as consecutive chunks (e.g.
    ``LoopOutcome.shot_chunks()``, which holds one chunk at a time); they must
    number one per row of ``result``.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    p = out_dir / "circuit.stim"
    circuit.to_file(p)
    paths = [p, *_write_shot_bits(out_dir, shots, len(result.fates))]
    p = out_dir / "predictions.b8"
    with open(p, "wb") as f:
        _append_b8(f, result.predictions)
    paths.append(p)
    p = out_dir / "shots.csv"
    with open(p, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(
            ["shot", "fate", "latency_ns", "latency_cycles", "emit_ns", "host_rx_ns", "host_tx_ns"]
        )
        for i in range(result.fates.shape[0]):
            w.writerow(
                [
                    i,
                    _fate_of_shot(result.fates[i]),
                    int(result.latency_ns[i]),
                    int(result.latency_cycles[i]),
                    int(result.emit_ns[i]),
                    int(result.host_rx_ns[i]),
                    int(result.host_tx_ns[i]),
                ]
            )
    paths.append(p)
    p = out_dir / "README.txt"
    p.write_text(
        _README.format(
            num_detectors=circuit.num_detectors,
            shots=len(result.fates),
            num_observables=circuit.num_observables,
        )
    )
    paths.append(p)
    return paths


def _write_shot_bits(out_dir: Path, shots: ShotBatch | Iterable[ShotBatch], n: int) -> list[Path]:
    """detection_events.b8 and observable_flips.b8, a chunk at a time."""
    paths = [out_dir / "detection_events.b8", out_dir / "observable_flips.b8"]
    chunks = [shots] if isinstance(shots, ShotBatch) else shots
    with open(paths[0], "wb") as dets, open(paths[1], "wb") as obs:
        written = 0
        for batch in chunks:
            _append_b8(dets, batch.detectors)
            _append_b8(obs, batch.observables)
            written += batch.shots
    if written != n:
        raise ValueError(f"save_run got {written} shots for a run of {n}; pass the run's shots")
    return paths


def _append_b8(f: BinaryIO, bits: np.ndarray) -> None:
    """stim's b8 format: each shot's bits packed little-endian into whole bytes.
    A plain bit matrix: read it back with num_detectors = bits per shot."""
    f.write(np.packbits(np.asarray(bits, dtype=np.bool_), axis=1, bitorder="little").tobytes())
