from __future__ import annotations

import importlib
import multiprocessing as mp
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from qhil.bridge._transport import PacketReceiver, PacketSender, TransportClosed, packet_buffers
from qhil.bridge._zmq import ZmqLink


def child_echo(endpoint: str) -> None:
    """Spawned: connect to `endpoint` and echo packets until end-of-stream."""
    with ZmqLink.connect(endpoint) as link:
        tx, rx = link.sender(), link.receiver()
        out, lengths = packet_buffers(64, rx.max_packet)
        while True:
            try:
                k = rx.recv_into(out, lengths, timeout_s=10.0)
            except TransportClosed:
                return
            for i in range(k):
                assert tx.send(out[i, : lengths[i]], timeout_s=10.0)


@pytest.fixture(params=["tcp", "ipc"])
def pair(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[ZmqLink, ZmqLink]]:
    where = "tcp://127.0.0.1:*" if request.param == "tcp" else f"ipc://{tmp_path}/link.sock"
    with ZmqLink.bind(where) as a, ZmqLink.connect(a.endpoint) as b:
        yield a, b


def _recv_all(rx: PacketReceiver, count: int) -> list[bytes]:
    out, lengths = packet_buffers(32, rx.max_packet)
    got: list[bytes] = []
    while len(got) < count:
        k = rx.recv_into(out, lengths, timeout_s=5.0)
        assert k > 0, f"timed out after {len(got)} of {count}"
        got += [bytes(out[i, : lengths[i]]) for i in range(k)]
    return got


def test_bind_reports_the_chosen_port() -> None:
    with ZmqLink.bind("tcp://127.0.0.1:*") as link:
        assert link.endpoint.startswith("tcp://127.0.0.1:")
        assert int(link.endpoint.rsplit(":", 1)[1]) > 0
        assert isinstance(link.sender(), PacketSender)
        assert isinstance(link.receiver(), PacketReceiver)


def test_ordered_both_ways_and_batched(pair: tuple[ZmqLink, ZmqLink]) -> None:
    a, b = pair
    msgs = [i.to_bytes(4, "little") * (i % 60) for i in range(2000)]
    for m in msgs:
        assert a.sender().send(m, timeout_s=5.0)
    assert _recv_all(b.receiver(), len(msgs)) == msgs
    assert b.sender().send(b"back", timeout_s=5.0)
    assert _recv_all(a.receiver(), 1) == [b"back"]


def test_reserve_commit_and_end_of_stream(pair: tuple[ZmqLink, ZmqLink]) -> None:
    a, b = pair
    tx, rx = a.sender(), b.receiver()
    assert tx.send(b"", timeout_s=5.0)  # an empty packet is data, not end-of-stream
    view = tx.reserve()
    assert view is not None and view.shape == (252,)
    view[:2] = [1, 2]
    tx.commit(2)
    tx.close()
    assert _recv_all(rx, 2) == [b"", b"\x01\x02"]
    out, lengths = packet_buffers(4, rx.max_packet)
    with pytest.raises(TransportClosed, match="end of stream"):
        rx.recv_into(out, lengths, timeout_s=5.0)
    with pytest.raises(TransportClosed):
        tx.try_send(b"late")


def test_timeout_and_oversize() -> None:
    with ZmqLink.bind("inproc://qhil-timeout", max_packet=16) as link:
        out, lengths = packet_buffers(4, 16)
        t0 = time.perf_counter()
        assert link.receiver().recv_into(out, lengths, timeout_s=0.0) == 0
        assert link.receiver().recv_into(out, lengths, timeout_s=0.02) == 0
        assert time.perf_counter() - t0 >= 0.02
        assert not link.sender().try_send(b"x")  # no peer yet: PAIR refuses
        with pytest.raises(ValueError, match="17 bytes exceeds max_packet=16"):
            link.sender().try_send(bytes(17))
    with pytest.raises(TransportClosed, match="closed"):
        link.sender().try_send(b"x")


@pytest.mark.parametrize(
    ("endpoint", "match"),
    [("udp://127.0.0.1:5", "'tcp://', 'ipc://', 'inproc://'"), ("tcp://", "no address")],
)
def test_endpoint_validation(endpoint: str, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        ZmqLink.bind(endpoint)


def test_option_validation() -> None:
    with pytest.raises(ValueError, match="max_packet=0"):
        ZmqLink.bind("inproc://x", max_packet=0)
    with pytest.raises(ValueError, match="hwm=0"):
        ZmqLink.bind("inproc://x", hwm=0)


@pytest.mark.parametrize("scheme", ["tcp", "ipc"])
def test_cross_process_ping_pong(scheme: str, tmp_path: Path) -> None:
    where = "tcp://127.0.0.1:*" if scheme == "tcp" else f"ipc://{tmp_path}/pp.sock"
    target = importlib.import_module("qhil.bridge.zmq_test").child_echo  # spawn-picklable
    with ZmqLink.bind(where) as link:
        proc = mp.get_context("spawn").Process(target=target, args=(link.endpoint,), daemon=True)
        proc.start()
        tx, rx = link.sender(), link.receiver()
        out, lengths = packet_buffers(4, rx.max_packet)
        rtts = []
        for i in range(1000):
            msg = i.to_bytes(8, "little")
            t0 = time.perf_counter_ns()
            assert tx.send(msg, timeout_s=30.0)
            assert rx.recv_into(out, lengths, timeout_s=30.0) == 1
            rtts.append(time.perf_counter_ns() - t0)
            assert bytes(out[0, : lengths[0]]) == msg
        tx.close()
        proc.join(10)
        assert proc.exitcode == 0
    warm = np.array(rtts[200:])
    print(f"zmq {scheme} cross-process RTT ns: p50={np.median(warm):.0f}")
