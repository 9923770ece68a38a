from __future__ import annotations

import dataclasses
import importlib
import multiprocessing as mp
import os

import pytest

from qhil.bridge._open import Bridge, BridgeSpec, open_bridge
from qhil.bridge._ring import ShmRing
from qhil.bridge._transport import TransportClosed, packet_buffers


def child_host_echo(spec: BridgeSpec) -> None:
    """Spawned: open the host side and echo each syndrome back as a correction."""
    with open_bridge(spec, side="host") as host:
        out, lengths = packet_buffers(64, host.rx.max_packet)
        while True:
            try:
                k = host.rx.recv_into(out, lengths, timeout_s=10.0)
            except TransportClosed:
                return
            for i in range(k):
                assert host.tx.send(b"ack:" + bytes(out[i, : lengths[i]]), timeout_s=10.0)


def _round_trip(fpga: Bridge, count: int) -> None:
    out, lengths = packet_buffers(8, fpga.rx.max_packet)
    for i in range(count):
        msg = i.to_bytes(4, "little")
        assert fpga.tx.send(msg, timeout_s=10.0)
        assert fpga.rx.recv_into(out, lengths, timeout_s=10.0) == 1
        assert bytes(out[0, : lengths[0]]) == b"ack:" + msg


def test_shm_cross_process_round_trip() -> None:
    target = importlib.import_module("qhil.bridge.open_test").child_host_echo  # spawn-picklable
    with open_bridge(BridgeSpec(transport="shm", n_slots=64), side="fpga") as fpga:
        assert fpga.spec.name and fpga.side == "fpga"
        proc = mp.get_context("spawn").Process(target=target, args=(fpga.spec,), daemon=True)
        proc.start()
        _round_trip(fpga, 500)
        fpga.tx.close()  # end of stream: the host drains, sees TransportClosed, exits
        proc.join(10)
        assert proc.exitcode == 0
        out, lengths = packet_buffers(1, fpga.rx.max_packet)
        with pytest.raises(TransportClosed):  # the host closed its tx on the way out
            fpga.rx.recv_into(out, lengths, timeout_s=5.0)
    with pytest.raises(FileNotFoundError, match="no ring named"):
        ShmRing.attach(f"{fpga.spec.name}-up")  # the fpga side unlinked both rings


def test_shm_named_rings_and_geometry_check() -> None:
    spec = BridgeSpec(transport="shm", n_slots=8, slot_size=128, name="qhil-t-open")
    with open_bridge(spec, side="fpga") as fpga:
        assert fpga.spec == spec and fpga.tx.max_packet == 124
        with ShmRing.attach("qhil-t-open-down") as down:
            assert down.n_slots == 8
        with pytest.raises(ValueError, match="8 x 128 but the spec says 16 x 128"):
            open_bridge(dataclasses.replace(spec, n_slots=16), side="host")


def test_zmq_host_binds_fpga_connects_and_opens_a_session() -> None:
    target = importlib.import_module("qhil.bridge.open_test").child_host_echo  # spawn-picklable
    spec = BridgeSpec(transport="zmq", endpoint=f"ipc://@qhil-open-test-{os.getpid()}")
    proc = mp.get_context("spawn").Process(target=target, args=(spec,), daemon=True)
    proc.start()  # the front end retries its HELLO until the decoder side is up
    with open_bridge(spec, side="fpga") as fpga:
        assert fpga.tx.max_packet == spec.max_packet
        _round_trip(fpga, 200)
    proc.join(10)  # BYE ends the session: the host side's receiver says so, the child exits
    assert proc.exitcode == 0


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"transport": "udp"}, "choose one of \\('shm', 'zmq'\\)"),
        ({"transport": "zmq"}, "needs an endpoint"),
        ({"transport": "zmq", "endpoint": "http://x"}, "unsupported scheme"),
        ({"transport": "shm", "endpoint": "tcp://127.0.0.1:1"}, "only apply to transport='zmq'"),
        ({"transport": "shm", "n_slots": 100}, "power of two"),
        ({"transport": "shm", "name": "a/b"}, "no '/'"),
    ],
)
def test_spec_validation(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        BridgeSpec(**kwargs)  # type: ignore[arg-type]


def test_side_validation() -> None:
    with pytest.raises(ValueError, match="side='gpu' must be one of \\('fpga', 'host'\\)"):
        open_bridge(BridgeSpec(transport="shm"), side="gpu")
    with pytest.raises(ValueError, match="spec returned by open_bridge"):
        open_bridge(BridgeSpec(transport="shm"), side="host")
