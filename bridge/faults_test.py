from __future__ import annotations

import numpy as np
import pytest

from qhil.bridge._faults import KINDS, FaultInjector, InjectedFault
from qhil.bridge._transport import PacketSender


class ListSender:
    """In-memory PacketSender with a capacity, to watch exactly what goes out."""

    def __init__(self, capacity: int = 1 << 30, max_packet: int = 64):
        self.sent: list[bytes] = []
        self.capacity, self.max_packet, self.closed = capacity, max_packet, False
        self._buf = np.zeros(max_packet, np.uint8)

    def reserve(self) -> np.ndarray | None:
        return self._buf if len(self.sent) < self.capacity else None

    def commit(self, length: int) -> None:
        self.sent.append(self._buf[:length].tobytes())

    def try_send(self, packet: bytes | np.ndarray) -> bool:
        if len(self.sent) >= self.capacity:
            return False
        self.sent.append(bytes(packet))
        return True

    def send(self, packet: bytes | np.ndarray, *, timeout_s: float) -> bool:
        return self.try_send(packet)

    def close(self) -> None:
        self.closed = True


PACKETS = [bytes([i]) * 4 for i in range(50)]


def _run(kinds: tuple[str, ...], rate: float = 1.0, seed: int = 0) -> tuple[FaultInjector, list]:
    inner = ListSender()
    tx = FaultInjector(inner, rate=rate, kinds=kinds, seed=seed)
    assert isinstance(tx, PacketSender)
    for p in PACKETS:
        assert tx.try_send(p)
    tx.close()
    assert inner.closed
    return tx, inner.sent


def test_rate_zero_is_a_pass_through() -> None:
    tx, sent = _run(KINDS, rate=0.0)
    assert sent == PACKETS and tx.log == [] and tx.counts() == dict.fromkeys(KINDS, 0)


def test_same_seed_same_faults() -> None:
    a, sent_a = _run(KINDS, rate=0.3, seed=7)
    b, sent_b = _run(KINDS, rate=0.3, seed=7)
    c, _ = _run(KINDS, rate=0.3, seed=8)
    assert a.log == b.log and sent_a == sent_b and a.log != c.log


def test_drop_everything() -> None:
    tx, sent = _run(("drop",))
    assert sent == [] and [f.index for f in tx.log] == list(range(50))


def test_duplicate_everything() -> None:
    _, sent = _run(("duplicate",))
    assert sent == [p for p in PACKETS for _ in range(2)]


def test_reorder_holds_each_packet_past_the_next() -> None:
    inner = ListSender()
    tx = FaultInjector(inner, rate=1.0, kinds=("reorder",), seed=0)
    for p in PACKETS[:3]:
        tx.try_send(p)
    assert inner.sent == PACKETS[:2]  # every packet is held; the previous one goes out
    tx.flush()
    assert inner.sent == PACKETS[:3]


def test_reorder_swaps_neighbours() -> None:
    inner = ListSender()
    tx = FaultInjector(inner, rate=0.5, kinds=("reorder",), seed=3)
    for p in PACKETS:
        tx.try_send(p)
    tx.flush()
    assert sorted(inner.sent) == sorted(PACKETS) and inner.sent != PACKETS
    first = tx.log[0].index
    if first + 1 not in {f.index for f in tx.log}:
        assert inner.sent[first : first + 2] == [PACKETS[first + 1], PACKETS[first]]


def test_corrupt_flips_exactly_the_logged_bit() -> None:
    tx, sent = _run(("corrupt",))
    assert len(sent) == 50
    for fault, got, want in zip(tx.log, sent, PACKETS, strict=True):
        diff = np.frombuffer(got, np.uint8) ^ np.frombuffer(want, np.uint8)
        assert np.flatnonzero(diff).tolist() == [fault.byte]
        assert int(diff[fault.byte]) == 1 << fault.bit  # type: ignore[operator]


def test_full_link_keeps_the_draw_and_order() -> None:
    inner = ListSender(capacity=3)
    tx = FaultInjector(inner, rate=1.0, kinds=("duplicate",), seed=0)
    assert tx.try_send(b"a")
    assert tx.try_send(b"b")  # accepted: one copy out, the duplicate waits in the backlog
    assert not tx.try_send(b"c")
    inner.capacity = 100
    assert tx.send(b"c", timeout_s=1.0)
    assert inner.sent == [b"a", b"a", b"b", b"b", b"c", b"c"]
    assert [f.index for f in tx.log] == [0, 1, 2]


def test_reserve_commit_go_through_faults() -> None:
    inner = ListSender()
    tx = FaultInjector(inner, rate=1.0, kinds=("duplicate",), seed=0)
    view = tx.reserve()
    assert view is not None and view.shape == (64,)
    view[:2] = [5, 6]
    tx.commit(2)
    assert inner.sent == [b"\x05\x06"] * 2


def test_overall_rate_is_about_one_percent() -> None:
    inner = ListSender()
    tx = FaultInjector(inner, rate=0.01, seed=42)
    pkt = bytes(16)
    for _ in range(100_000):
        tx.try_send(pkt)
    tx.flush()
    counts = tx.counts()
    assert 850 <= sum(counts.values()) <= 1150  # ±4.8 sigma
    assert all(150 <= c <= 350 for c in counts.values()), counts
    extra = counts["duplicate"] - counts["drop"]
    assert len(inner.sent) == 100_000 + extra


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"rate": 1.5}, r"rate=1.5 must be a probability in \[0, 1\]"),
        ({"rate": float("nan")}, "probability"),
        ({"kinds": ("drop", "explode")}, "unknown: \\['explode'\\]"),
        ({"kinds": ()}, "non-empty"),
        ({"kinds": ("drop", "drop")}, "distinct"),
    ],
)
def test_validation(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        FaultInjector(ListSender(), seed=0, **kwargs)  # type: ignore[arg-type]


def test_injected_fault_record_validates() -> None:
    with pytest.raises(ValueError, match="not a fault kind"):
        InjectedFault(index=0, kind="melt")
    with pytest.raises(ValueError, match=r"bit in 0\.\.7"):
        InjectedFault(index=0, kind="corrupt", byte=1, bit=8)
    with pytest.raises(ValueError, match="only apply to 'corrupt'"):
        InjectedFault(index=0, kind="drop", byte=1, bit=1)
    with pytest.raises(ValueError, match="index=-1"):
        InjectedFault(index=-1, kind="drop")
