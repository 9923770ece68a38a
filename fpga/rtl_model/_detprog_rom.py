"""Serialize a :class:`DetectorProgram` into the ROM that ``rtl/qhil_detection_unit.v`` reads.

The file is for Verilog ``$readmemh``: one line per round ``t = 0 .. rounds_max - 1``,
each one ``word_width``-bit word in hex, most significant digit first. Fields of a
word, from bit 0 (the layout the RTL's header comment documents too):

* detector ``i = 0 .. max_dets - 1`` of the round, at ``[i * entry_width +: entry_width]``
  with ``entry_width = 1 + max_terms * idx_width``:

  - bit 0: ``ref``, the detector's noiseless parity (``DetectorProgram.det_ref``);
  - ``[1 + k * idx_width +: idx_width]``: term ``k``, an index into the RTL's window
    ``{0, cur, prev}``: ``0 .. max_meas - 1`` is the previous round's result
    ``prev[idx]``, ``max_meas .. 2 * max_meas - 1`` is this round's
    ``cur[idx - max_meas]``, and ``2 * max_meas`` (``null_index``) reads a constant 0
    (an unused term);

* ``n_meas`` (16 bits) at ``[max_dets * entry_width]``: measurements in the round;
* ``n_dets`` (16 bits) right after it: detectors in the round.

``idx_width = ceil(log2(2 * max_meas + 1))``. Rounds past the program's last round
are written with ``n_dets = 0`` and every term ``null_index``.

The program's own ``det_terms`` index ``concat(previous round, this round)``, whose
split point moves with the previous round's size (and round 0 has no previous round);
the ROM instead uses the fixed ``max_meas`` split so the RTL's window needs no shifter.

>>> import stim, tempfile, pathlib
>>> from qhil.fpga._detection import DetectorProgram
>>> c = stim.Circuit.generated("surface_code:rotated_memory_z", distance=3, rounds=2)
>>> with tempfile.TemporaryDirectory() as d:
...     layout = write_rom(DetectorProgram.from_circuit(c), pathlib.Path(d) / "rom.hex")
>>> layout.max_meas, layout.max_dets, layout.max_terms, layout.idx_width, layout.n_dets
(9, 8, 5, 5, (4, 8, 4))
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np

from qhil.fpga._detection import DetectorProgram

__all__ = ["CNT_WIDTH", "RomLayout", "encode_rom", "write_rom"]

CNT_WIDTH = 16


def _clog2(n: int) -> int:
    return max(0, (n - 1).bit_length())


@dataclasses.dataclass(frozen=True)
class RomLayout:
    """Where everything sits in the ROM; the RTL's parameters are the ``max_*`` fields.

    Attributes:
        max_meas, max_dets, max_terms, rounds_max: the RTL parameters MAX_MEAS,
            MAX_DETS, MAX_TERMS, ROUNDS_MAX this ROM was written for.
        idx_width: bits per term index, ``ceil(log2(2 * max_meas + 1))``.
        entry_width: bits per detector entry, ``1 + max_terms * idx_width``.
        word_width: bits per round word, ``max_dets * entry_width + 2 * CNT_WIDTH``.
        null_index: the term index that reads constant 0, ``2 * max_meas``.
        meas_offsets: the program's record offsets (round t is
            ``meas_offsets[t]:meas_offsets[t+1]``), for the driver's convenience.
        n_meas, n_dets: per program round, as written into the ROM.
    """

    max_meas: int
    max_dets: int
    max_terms: int
    rounds_max: int
    idx_width: int
    entry_width: int
    word_width: int
    null_index: int
    meas_offsets: tuple[int, ...]
    n_meas: tuple[int, ...]
    n_dets: tuple[int, ...]

    @property
    def parameters(self) -> dict[str, int]:
        """The RTL's parameters, as keyword arguments for a simulator build."""
        return {
            "MAX_MEAS": self.max_meas,
            "MAX_DETS": self.max_dets,
            "MAX_TERMS": self.max_terms,
            "ROUNDS_MAX": self.rounds_max,
        }


def _layout(
    program: DetectorProgram,
    max_meas: int | None,
    max_dets: int | None,
    max_terms: int | None,
    rounds_max: int | None,
) -> RomLayout:
    n_meas = tuple(int(n) for n in np.diff(program.meas_offsets))
    n_dets = program.bits_per_round
    terms_used = int(np.max(np.sum(program.det_terms >= 0, axis=1), initial=0))
    need = {
        "max_meas": (max_meas, max(n_meas)),
        "max_dets": (max_dets, max(n_dets)),
        "max_terms": (max_terms, max(terms_used, 1)),
        "rounds_max": (rounds_max, program.num_rounds),
    }
    got: dict[str, int] = {}
    for name, (given, needed) in need.items():
        value = needed if given is None else int(given)
        if value < needed:
            raise ValueError(f"{name}={value} is too small for this program (it needs {needed})")
        got[name] = value
    if max(n_meas) >= 1 << CNT_WIDTH or max(n_dets) >= 1 << CNT_WIDTH:
        raise ValueError(f"round sizes must fit the RTL's {CNT_WIDTH}-bit counts")
    idx_width = _clog2(2 * got["max_meas"] + 1)
    entry_width = 1 + got["max_terms"] * idx_width
    return RomLayout(
        **got,
        idx_width=idx_width,
        entry_width=entry_width,
        word_width=got["max_dets"] * entry_width + 2 * CNT_WIDTH,
        null_index=2 * got["max_meas"],
        meas_offsets=tuple(int(x) for x in program.meas_offsets),
        n_meas=n_meas,
        n_dets=n_dets,
    )


def _rom_index(j: int, t: int, n_prev: int, max_meas: int) -> int:
    """A program window index (concat(prev, cur)) as a ROM window index ({0, cur, prev})."""
    if t == 0:  # round 0's window is that round alone
        return max_meas + j
    return j if j < n_prev else max_meas + (j - n_prev)


def encode_rom(
    program: DetectorProgram,
    *,
    max_meas: int | None = None,
    max_dets: int | None = None,
    max_terms: int | None = None,
    rounds_max: int | None = None,
) -> tuple[list[int], RomLayout]:
    """The ROM's words (one int per round, ``rounds_max`` of them) and their layout.

    Each ``max_*`` defaults to what the program needs; larger values fit a ROM to an
    RTL built for bigger circuits. Raises ValueError if a given value is too small.
    """
    lay = _layout(program, max_meas, max_dets, max_terms, rounds_max)
    words: list[int] = []
    for t in range(lay.rounds_max):
        word = 0
        if t < program.num_rounds:
            lo, hi = int(program.det_offsets[t]), int(program.det_offsets[t + 1])
            n_prev = lay.n_meas[t - 1] if t > 0 else 0
            dets = range(lo, hi)
            n_meas_t, n_dets_t = lay.n_meas[t], hi - lo
        else:
            dets = range(0)
            n_prev = n_meas_t = n_dets_t = 0
        for i in range(lay.max_dets):
            d = dets[i] if i < len(dets) else None
            entry = int(bool(program.det_ref[d])) if d is not None else 0
            terms = [int(x) for x in program.det_terms[d] if x >= 0] if d is not None else []
            for k in range(lay.max_terms):
                idx = (
                    _rom_index(terms[k], t, n_prev, lay.max_meas)
                    if k < len(terms)
                    else lay.null_index
                )
                entry |= idx << (1 + k * lay.idx_width)
            word |= entry << (i * lay.entry_width)
        base = lay.max_dets * lay.entry_width
        word |= n_meas_t << base | n_dets_t << (base + CNT_WIDTH)
        words.append(word)
    return words, lay


def write_rom(
    program: DetectorProgram,
    path: str | os.PathLike[str],
    *,
    max_meas: int | None = None,
    max_dets: int | None = None,
    max_terms: int | None = None,
    rounds_max: int | None = None,
) -> RomLayout:
    """Write ``program`` as a ``$readmemh`` file for ``qhil_detection_unit`` (see the module doc).

    Returns:
        The layout; ``layout.parameters`` are the RTL parameters the file is for.
    """
    words, lay = encode_rom(
        program,
        max_meas=max_meas,
        max_dets=max_dets,
        max_terms=max_terms,
        rounds_max=rounds_max,
    )
    digits = (lay.word_width + 3) // 4
    with open(path, "w", encoding="ascii") as f:
        f.write(
            f"// qhil_detection_unit ROM: MAX_MEAS={lay.max_meas} MAX_DETS={lay.max_dets} "
            f"MAX_TERMS={lay.max_terms} ROUNDS_MAX={lay.rounds_max} "
            f"word {lay.word_width} bits\n"
        )
        for w in words:
            f.write(f"{w:0{digits}x}\n")
    return lay
