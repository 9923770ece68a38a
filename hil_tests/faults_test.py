"""End-to-end under faults: 1% of packets in both directions dropped, duplicated, reordered
or corrupted. Every round ends decoded or lost with the reason its fault implies, and the
decoded shots are decided exactly as offline PyMatching decides them."""

from __future__ import annotations

import collections

import numpy as np

from qhil.bridge import CorrectionPacket, CorrectionStatus, SyndromePacket
from qhil.fpga import Fate
from qhil.host import RunConfig, make_decoder, run_loop

SHOTS = 1500
ROUNDS = 3
CORRUPTING = ("bad_magic", "bad_version", "truncated", "bad_length", "bad_crc")


def test_every_round_is_decoded_or_lost_for_the_reason_its_fault_implies() -> None:
    cfg = RunConfig().with_overrides(
        {
            "experiment.distance": 3,
            "experiment.rounds": ROUNDS,
            "experiment.shots": SHOTS,
            "experiment.seed": 5,
            "bridge.fault_rate": 0.01,
            "bridge.fault_seed": 3,
            "frontend.max_in_flight": 4,
            "frontend.correction_timeout_rounds": 300_000,
            "frontend.stall_timeout_s": 3.0,
        }
    )
    out = run_loop(cfg, progress=False)
    res, host = out.result, out.host
    assert host is not None and not out.report.aborted
    kinds_up = collections.Counter(f.kind for f in out.faults_up)
    kinds_down = collections.Counter(f.kind for f in out.faults_down)
    assert sum(kinds_up.values()) > 20 and sum(kinds_down.values()) > 3  # faults really happened

    # What each fault implies. Upstream packets are emitted in shot-major order.
    r1 = ROUNDS + 1
    missing = np.zeros((SHOTS, r1), dtype=bool)  # rounds that never reach the decoder intact
    held = np.zeros((SHOTS, r1), dtype=bool)  # rounds sent late (reordered)
    for f in out.faults_up:
        p = SyndromePacket.decode(f.packet)
        if p.end_of_stream:
            continue
        assert (p.shot, p.round) == divmod(f.index, r1)
        if f.kind in ("drop", "corrupt"):
            missing[p.shot, p.round] = True
        elif f.kind == "reorder":
            held[p.shot, p.round] = True
    # A reordered round waits for the front end's next packet. When every in-flight slot
    # is waiting on a lost correction, that can outlast the assembly timeout: the round
    # then arrives after its shot was given up (counted `stale`) and is lost in transit.
    late = held & np.any(res.fates == Fate.LOST_IN_TRANSIT, axis=1)[:, None]
    late &= res.fates == Fate.LOST_IN_TRANSIT
    missing |= late
    unanswered = np.zeros(SHOTS, dtype=bool)  # corrections that never reach the front end
    for f in out.faults_down:
        c = CorrectionPacket.decode(f.packet)
        if f.kind in ("drop", "corrupt") and not c.flags:
            unanswered[c.shot] = True

    expected = np.full((SHOTS, r1), Fate.DECODED, dtype=np.uint8)
    incomplete = missing.any(axis=1)
    expected[incomplete] = np.where(
        missing[incomplete], Fate.LOST_IN_TRANSIT, Fate.LOST_SHOT_INCOMPLETE
    )
    expected[unanswered] = Fate.LOST_TIMEOUT
    np.testing.assert_array_equal(res.fates, expected)
    res.check_nothing_lost_silently()
    host.check_balanced()

    # Nothing else differs: decoded shots get exactly the offline decision.
    offline = make_decoder("pymatching", out.circuit).decode_batch(out.shots.detectors)
    np.testing.assert_array_equal(res.predictions[res.decoded], offline[res.decoded])

    # Every injected fault is accounted for by a counter on the receiving side.
    counts = host.counts
    assert sum(counts[k] for k in CORRUPTING) == kinds_up["corrupt"]
    assert counts["duplicate"] == kinds_up["duplicate"]
    assert counts["stale"] == int(late.sum())
    assert counts["seq_gap"] > 0 and counts["packets_missing"] >= kinds_up["drop"]
    assert sum(res.rejections[k] for k in CORRUPTING) == kinds_down["corrupt"]
    assert res.rejections["duplicate"] == kinds_down["duplicate"]
    assert host.shots_incomplete == int(incomplete.sum())
    assert out.report.rounds_lost["in_transit"] == int((expected == Fate.LOST_IN_TRANSIT).sum())
    statuses = {CorrectionStatus.DECODED, CorrectionStatus.INCOMPLETE}
    assert all(CorrectionPacket.decode(f.packet).status in statuses for f in out.faults_down)
