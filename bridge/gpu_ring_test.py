"""Tests of the mapped-memory slot ring between the host and a persistent GPU kernel.

The ring needs ``numba.cuda.mapped_array``: on a machine without a GPU the
scenarios run in Numba's CUDA simulator, in a subprocess (``python -m
qhil.bridge.gpu_ring_test <scenario>``, the ``__main__`` block below), because
``NUMBA_ENABLE_CUDASIM`` must be set before ``numba.cuda`` is first imported and
would change it for the whole pytest process. Results come back as JSON.
"""

from __future__ import annotations

import functools
import json
import os
import sys
from typing import Any

import pytest

from qhil.bridge import run_scenario

_MODULE = "qhil.bridge.gpu_ring_test"


_scenario = functools.partial(run_scenario, _MODULE, timeout_s=60.0)


@pytest.fixture(scope="module")
def sim_run() -> dict[str, Any]:
    return _scenario("all")


def test_spec_is_validated() -> None:
    from qhil.bridge._gpu_ring import MappedRingSpec

    with pytest.raises(ValueError, match="power of two"):
        MappedRingSpec(n_slots=6, in_width=8, out_width=8, n_obs=1)
    with pytest.raises(ValueError, match="in_width must be >= 1"):
        MappedRingSpec(n_slots=4, in_width=0, out_width=8, n_obs=1)
    assert MappedRingSpec(n_slots=2, in_width=1, out_width=1, n_obs=1).n_slots == 2


def test_host_side_protocol(sim_run: dict[str, Any]) -> None:
    p = sim_run["protocol"]
    assert p["pushed_until_full"] == [True] * 4 + [False]  # n_slots = 4
    assert p["in_seq"] == [1, 2, 3, 4] and p["hdr_seq"] == [0, 1, 2, 3]
    assert p["push_after_kernel_freed_slot0"] and p["in_seq0_after"] == 5
    assert p["popped_unpublished"] == 0
    assert p["popped"] == 1 and p["pop_payload_ok"] and p["out_done"] == 1
    assert p["stale_flag_popped"] == 0  # a flag from another lap is not this window's
    assert p["counter_words"] == [5, 6, 7, 0]
    assert p["too_long_payload"] == "ValueError"


# --------------------------------------------------------------------------- scenarios


def _protocol() -> dict[str, Any]:
    import numpy as np

    from qhil.bridge import _gpu_ring as g
    from qhil.bridge._gpu_ring import W_IN_DONE, MappedRingSpec, MappedSlotRing

    ring = MappedSlotRing(MappedRingSpec(n_slots=4, in_width=8, out_width=8, n_obs=1))
    h = ring._host
    pushed = [ring.try_push(7, 100 + i, np.full(8, i, np.uint8)) for i in range(5)]
    out: dict[str, Any] = {
        "pushed_until_full": pushed,
        "in_seq": h["in_seq"].tolist(),
        "hdr_seq": h["in_hdr"][:, 2].tolist(),
    }
    h["ctrl"][W_IN_DONE] = 1  # acting as the kernel: window 0 copied out
    out["push_after_kernel_freed_slot0"] = ring.try_push(7, 104, np.full(8, 4, np.uint8))
    out["in_seq0_after"] = int(h["in_seq"][0])
    out["popped_unpublished"] = len(ring.pop()[0])
    # acting as the kernel: result 0 into slot 0, then its flag
    h["out_hdr"][0] = (7, 100, 0, 3, 1, 55, 2, 0)
    h["out_data"][0] = np.arange(8)
    h["out_obs"][0] = 1
    h["out_seq"][0] = 1
    hdr, data, obs = ring.pop()
    out["popped"] = len(hdr)
    out["pop_payload_ok"] = bool(
        hdr.tolist() == [[7, 100, 0, 3, 1, 55, 2, 0]]
        and (data[0] == np.arange(8)).all()
        and obs[0, 0] == 1
    )
    h["ctrl"][g.W_COUNTERS : g.W_COUNTERS + 3] = (5, 6, 7)  # acting as the kernel
    out["counter_words"] = ring.counter_words()[:4].tolist()
    out["out_done"] = ring.word(24)
    h["out_seq"][1] = 1 + 4  # window 4's flag in slot 1 (wrong lap: window 1 is expected)
    out["stale_flag_popped"] = len(ring.pop()[0])
    try:
        ring.try_push(0, 0, np.zeros(9, np.uint8))
        out["too_long_payload"] = None
    except ValueError:
        out["too_long_payload"] = "ValueError"
    return out


if __name__ == "__main__":
    if os.environ.get("NUMBA_ENABLE_CUDASIM") == "1":
        sys.setswitchinterval(5e-4)  # simulator: the busy-polling kernel shares the GIL
    print(json.dumps({"protocol": _protocol()}))
