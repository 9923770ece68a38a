"""Tests of ``GpuPacketSender`` (the PacketSender into a GPU ring) and ``SyndromeRounds``.

The ring needs ``numba.cuda.mapped_array``, so the sender scenarios run in Numba's
CUDA simulator in a subprocess (``python -m qhil.bridge.gpu_sender_test``), with
this test acting as the kernel on the ring's host view; no kernel runs. The
kernel's side of the same packets is tested in ``kernels/persistent_test.py``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from qhil.bridge._gpu_sender import SyndromeRounds

_MODULE = "qhil.bridge.gpu_sender_test"


@pytest.fixture(scope="module")
def sim_run() -> dict[str, Any]:
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1")
    proc = subprocess.run(
        [sys.executable, "-m", _MODULE],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_rounds_pack_each_round_lsb_first() -> None:
    rng = np.random.default_rng(1)
    off = np.array([0, 4, 13, 22, 26])
    dets = rng.random((5, 26)) < 0.5
    b = SyndromeRounds.from_detectors(dets, off, shot_ids=range(10, 15), stream_id=3, first_seq=7)
    assert b.payloads.shape == (5, 4, 2) and b.rounds == 4 and b.num_packets == 20
    assert b.n_bits.tolist() == [4, 9, 9, 4] and b.shot_ids.tolist() == list(range(10, 15))
    for r in range(4):
        got = np.unpackbits(b.payloads[:, r], axis=1, bitorder="little")[:, : b.n_bits[r]]
        assert (got == dets[:, off[r] : off[r + 1]]).all()
        assert not np.unpackbits(b.payloads[:, r], axis=1, bitorder="little")[
            :, b.n_bits[r] :
        ].any()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"round_offsets": [1, 4]}, "ascending from 0"),
        ({"round_offsets": [0, 3]}, r"shape \(shots, 3\)"),
        ({"shot_ids": [-1, 0]}, "shot_ids must be >= 0"),
        ({"shot_ids": [0]}, r"shot_ids must be int64\[shots=2\]"),
        ({"stream_id": 2**32}, "stream_id"),
        ({"first_seq": 2**63 - 1}, "the last seq < 2"),
    ],
)
def test_rounds_reject_bad_input_with_the_fix(kwargs: dict[str, Any], match: str) -> None:
    args: dict[str, Any] = {"round_offsets": [0, 2, 4], "shot_ids": [0, 1], **kwargs}
    with pytest.raises(ValueError, match=match):
        SyndromeRounds.from_detectors(np.zeros((2, 4), np.uint8), **args)


def test_sender_speaks_the_ring_protocol(sim_run: dict[str, Any]) -> None:
    s = sim_run
    assert s["is_packet_sender"] and s["max_packet"] == 64
    assert s["sent_until_full"] == [True] * 4 + [False]  # n_slots = 4
    assert s["slot_bytes_ok"] and s["lengths"] == [3, 4, 5, 6] and s["flags"] == [1, 2, 3, 4]
    assert s["reserve_when_full"] is None and s["reserve_after_free"] == 64
    assert s["committed_flag"] == 5 and s["committed_length"] == 2  # window 4 in slot 0
    assert s["commit_without_reserve"] == "RuntimeError"
    assert s["too_long"] == "ValueError"
    assert s["timed_out"] is False and s["on_wait_calls"] > 0
    assert s["on_wait_raised"] == "KeyboardInterrupt"  # what the owner raises reaches the caller


def test_rounds_are_published_as_parseable_packets(sim_run: dict[str, Any]) -> None:
    r = sim_run["rounds"]
    assert r["first_call"] == 4 and r["after_free"] == 6  # stops when full, resumes at k
    assert r["reasons"] == [0] * 6
    assert r["fields"] == [
        # (flags, n_bits, stream, round, shot, seq)
        [1, 2, 3, 0, 20, 100], [0, 5, 3, 1, 20, 101], [2, 1, 3, 2, 20, 102],
        [1, 2, 3, 0, 21, 103], [0, 5, 3, 1, 21, 104], [2, 1, 3, 2, 21, 105],
    ]  # fmt: skip
    assert r["payloads_ok"]
    assert r["too_big"] == "ValueError" and r["closed"] == "TransportClosed"


# --------------------------------------------------------------------------- scenario


def _raised(fn: Callable[[], object]) -> str | None:
    """The name of the exception ``fn()`` raises, or None."""
    try:
        fn()
    except Exception as ex:
        return type(ex).__name__
    return None


def _scenario() -> dict[str, Any]:
    from qhil.bridge import Reason, parse_syndrome
    from qhil.bridge._gpu_ring import H_LENGTH, W_IN_DONE, MappedRingSpec, MappedSlotRing
    from qhil.bridge._gpu_sender import GpuPacketSender
    from qhil.bridge._transport import PacketSender

    ring = MappedSlotRing(MappedRingSpec(n_slots=4, in_width=64, out_width=8, n_obs=1))
    h = ring._host
    calls = [0]

    def on_wait() -> None:
        calls[0] += 1

    tx = GpuPacketSender(ring, on_wait=on_wait)
    out: dict[str, Any] = {"is_packet_sender": isinstance(tx, PacketSender)}
    out["max_packet"] = tx.max_packet
    packets = [bytes([i + 1] * (i + 3)) for i in range(5)]
    out["sent_until_full"] = [tx.try_send(p) for p in packets]
    out["slot_bytes_ok"] = all(
        bytes(h["in_data"][i, : len(packets[i])]) == packets[i] for i in range(4)
    )
    out["lengths"] = h["in_hdr"][:, H_LENGTH].tolist()
    out["flags"] = h["in_seq"].tolist()
    out["reserve_when_full"] = tx.reserve()
    h["ctrl"][W_IN_DONE] = 1  # acting as the kernel: packet 0 taken, slot 0 free
    view = tx.reserve()
    out["reserve_after_free"] = None if view is None else int(view.shape[0])
    assert view is not None
    view[:2] = (9, 9)
    tx.commit(2)
    out["committed_flag"], out["committed_length"] = int(h["in_seq"][0]), int(h["in_hdr"][0, 3])
    out["commit_without_reserve"] = _raised(lambda: tx.commit(1))
    out["too_long"] = _raised(lambda: tx.try_send(bytes(65)))
    out["timed_out"] = tx.send(b"x", timeout_s=0.01)
    out["on_wait_calls"] = calls[0]

    def interrupt() -> None:
        raise KeyboardInterrupt

    try:
        GpuPacketSender(ring, on_wait=interrupt).send(b"x", timeout_s=5.0)
        out["on_wait_raised"] = None
    except KeyboardInterrupt:
        out["on_wait_raised"] = "KeyboardInterrupt"

    # try_send_rounds on a fresh ring: T = 3 rounds of 2, 5 and 1 bits, two shots
    ring = MappedSlotRing(MappedRingSpec(n_slots=4, in_width=48, out_width=8, n_obs=1))
    h = ring._host
    tx = GpuPacketSender(ring)
    dets = np.array([[1, 0, 1, 1, 0, 0, 1, 1], [0, 1, 0, 0, 1, 1, 0, 0]], dtype=np.uint8)
    batch = SyndromeRounds.from_detectors(
        dets, [0, 2, 7, 8], shot_ids=[20, 21], stream_id=3, first_seq=100
    )
    r: dict[str, Any] = {"first_call": tx.try_send_rounds(batch)}
    seen = [h["in_data"][i].copy() for i in range(4)]
    h["ctrl"][W_IN_DONE] = 4  # acting as the kernel: all four taken
    r["after_free"] = tx.try_send_rounds(batch, r["first_call"])
    seen += [h["in_data"][i].copy() for i in range(2)]
    fields = np.zeros(7, dtype=np.uint64)
    r["reasons"], r["fields"], ok = [], [], True
    for k, p in enumerate(seen):
        n = 40 + (int(p[6]) + 7) // 8 + 4  # the packet's own length (n_bits < 256 here)
        code = int(parse_syndrome(p, n, fields))
        r["reasons"].append(code)
        r["fields"].append([int(x) for x in fields[:6]])
        lo, hi = (0, 2, 7, 8)[k % 3], (0, 2, 7, 8)[k % 3 + 1]
        bits = np.unpackbits(p[40 : 40 + (hi - lo + 7) // 8], bitorder="little")[: hi - lo]
        ok = ok and code == Reason.OK and (bits == dets[k // 3, lo:hi]).all()
    r["payloads_ok"] = bool(ok)
    small = GpuPacketSender(MappedSlotRing(MappedRingSpec(n_slots=2, in_width=44,
                                                          out_width=8, n_obs=1)))  # fmt: skip
    r["too_big"] = _raised(lambda: small.try_send_rounds(batch))
    tx.close()
    r["closed"] = _raised(lambda: tx.try_send(b"x"))
    out["rounds"] = r
    return out


if __name__ == "__main__":
    print(json.dumps(_scenario()))
