"""Sliding-window matching: the same answers as block matching on the same shots, fed
round by round or whole, and through the loop."""

from __future__ import annotations

import itertools

import numpy as np
import pymatching
import pytest
import stim

from qhil.bridge import FLAG_FIRST_ROUND, FLAG_LAST_ROUND, SyndromePacket
from qhil.fpga import DetectorProgram
from qhil.host import RunConfig, make_decoder, run_loop, wilson_interval
from qhil.host._windowed import WindowedMatching
from qhil.host._windowed_stream import StreamedWindows


def _circuit(d: int, rounds: int, p: float) -> stim.Circuit:
    return stim.Circuit.generated(
        "surface_code:rotated_memory_z", distance=d, rounds=rounds,
        after_clifford_depolarization=p, before_measure_flip_probability=p,
        after_reset_flip_probability=p, before_round_data_depolarization=p,
    )  # fmt: skip


@pytest.mark.parametrize(("d", "rounds", "p"), [(3, 12, 0.01), (5, 20, 0.006)])
def test_windows_agree_with_block_matching(d: int, rounds: int, p: float) -> None:
    c = _circuit(d, rounds, p)
    dets, obs = c.compile_detector_sampler(seed=7).sample(4000, separate_observables=True)
    block = pymatching.Matching.from_detector_error_model(
        c.detector_error_model(decompose_errors=True)
    )
    windowed = WindowedMatching.from_circuit(c)
    assert len(windowed.windows) >= 3  # really windowed, not one block
    pb, pw = block.decode_batch(dets).astype(bool), windowed.decode_batch(dets)
    assert (pb != pw).any(axis=1).mean() < 0.005  # a window's cut rarely changes a match
    errors_block, errors_windowed = (pb != obs).any(axis=1).sum(), (pw != obs).any(axis=1).sum()
    lo, hi = wilson_interval(int(errors_block), len(dets))
    assert lo * len(dets) <= errors_windowed <= hi * len(dets)


def test_windows_tile_the_rounds_and_bad_sizes_are_refused() -> None:
    c = _circuit(3, 9, 0.01)
    w = WindowedMatching.from_circuit(c, commit=2, buffer=3)
    spans = [(x.first_round, x.commit_end) for x in w.windows]
    assert spans[0][0] == 0 and all(a[1] == b[0] for a, b in itertools.pairwise(spans))
    assert w.windows[-1].end == w.windows[-1].commit_end == len(w.det_offsets) - 1
    with pytest.raises(ValueError, match="commit and buffer must be >= 1"):
        WindowedMatching.from_circuit(c, commit=2, buffer=0)


def _packets(program: DetectorProgram, dets: np.ndarray, shot: int) -> list[np.ndarray]:
    off, last = program.det_offsets, len(program.bits_per_round) - 1
    out = []
    for r in range(last + 1):
        flags = (FLAG_FIRST_ROUND if r == 0 else 0) | (FLAG_LAST_ROUND if r == last else 0)
        p = SyndromePacket(stream_id=0, shot=shot, round=r, seq=shot * (last + 1) + r,
                           t_fpga=0, bits=dets[shot, off[r] : off[r + 1]], flags=flags)  # fmt: skip
        out.append(np.frombuffer(p.encode(), dtype=np.uint8))
    return out


def test_streamed_rounds_give_the_same_answers_in_order_or_not() -> None:
    c = _circuit(3, 9, 0.02)
    program = DetectorProgram.from_circuit(c)
    dets = c.compile_detector_sampler(seed=3).sample(60).astype(np.uint8)
    dec = StreamedWindows.from_circuit(c, commit=2, buffer=2)
    expected = dec.decode_batch(dets)
    for shot in range(len(dets)):
        pkts = _packets(program, dets, shot)
        if shot % 10 == 9:  # two rounds swapped: the assembler takes them, windows cannot
            pkts[2], pkts[3] = pkts[3], pkts[2]
        for pkt in pkts:
            dec.on_round(pkt)
    got = dec.decode_streamed(np.zeros(len(dets), np.int64), np.arange(len(dets)), dets)
    assert np.array_equal(got, expected)
    counts = dec.streaming_counts()
    assert counts["shots_streamed"] == 54 and counts["shots_fallback"] == 6
    assert counts["windows_early"] == 54 * (len(dec.windowed.windows) - 1)
    dec.on_round(_packets(program, dets, 0)[0])
    dec.abandon(0, 0)
    assert dec.streaming_counts()["shots_abandoned"] == 1


def test_the_loop_with_windows_equals_offline_decoding() -> None:
    cfg = RunConfig().with_overrides(
        {
            "experiment.distance": 3,
            "experiment.rounds": 12,
            "experiment.shots": 400,
            "decoder.name": "pymatching-windowed",
        }
    )
    out = run_loop(cfg, progress=False)
    assert out.report.shots_decoded == 400 and out.host is not None
    offline = make_decoder("pymatching-windowed", out.circuit).decode_batch(out.shots.detectors)
    assert np.array_equal(out.result.predictions, offline)
    counts = out.host.decoder_counts
    assert (
        counts["windows_early"] > 0 and counts["shots_streamed"] + counts["shots_fallback"] == 400
    )
