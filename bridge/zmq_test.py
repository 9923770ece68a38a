from __future__ import annotations

import importlib
import multiprocessing as mp
import os
import stat
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import zmq

from qhil.bridge._control import Kind, encode_control
from qhil.bridge._curve import CurveKeys, generate_keys
from qhil.bridge._transport import PacketReceiver, PacketSender, TransportClosed, packet_buffers
from qhil.bridge._zmq import SessionEnded, ZmqClient
from qhil.bridge._zmq_server import ZmqServer


def child_echo(endpoint: str) -> None:
    """Spawned: connect to `endpoint` and echo packets until an empty one."""
    with ZmqClient.connect(endpoint) as link:
        tx, rx = link.sender(), link.receiver()
        out, lengths = packet_buffers(64, rx.max_packet)
        while True:
            k = rx.recv_into(out, lengths, timeout_s=10.0)
            for i in range(k):
                if lengths[i] == 0:
                    return
                assert tx.send(out[i, : lengths[i]], timeout_s=10.0)


class Pump:
    """Runs the server's receiver in a thread (so blocking handshakes complete) and keeps
    what it receives, with SessionEnded marked as None."""

    def __init__(self, server: ZmqServer) -> None:
        self.server, self._stop = server, False
        self.got: list[bytes | None] = []
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        out, lengths = packet_buffers(64, self.server.max_packet)
        while not self._stop:
            try:
                k = self.server.receiver().recv_into(out, lengths, timeout_s=0.01)
            except SessionEnded:
                self.got.append(None)
                continue
            self.got += [bytes(out[i, : lengths[i]]) for i in range(k)]

    def wait_for(self, count: int, *, timeout_s: float = 5.0) -> list[bytes | None]:
        deadline = time.monotonic() + timeout_s
        while len(self.got) < count and time.monotonic() < deadline:
            time.sleep(0.005)
        return self.got

    def stop(self) -> None:
        self._stop = True
        self._thread.join(5)


@pytest.fixture(params=["tcp", "ipc"])
def server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ZmqServer]:
    where = "tcp://127.0.0.1:*" if request.param == "tcp" else f"ipc://{tmp_path}/link.sock"
    with ZmqServer.bind(where, idle_s=0.3) as srv:
        yield srv


def _recv_all(rx: PacketReceiver, count: int) -> list[bytes]:
    out, lengths = packet_buffers(32, rx.max_packet)
    got: list[bytes] = []
    while len(got) < count:
        k = rx.recv_into(out, lengths, timeout_s=5.0)
        assert k > 0, f"timed out after {len(got)} of {count}"
        got += [bytes(out[i, : lengths[i]]) for i in range(k)]
    return got


def test_bind_reports_the_port_and_serves_both_ways(server: ZmqServer) -> None:
    assert isinstance(server.sender(), PacketSender)
    assert isinstance(server.receiver(), PacketReceiver)
    with ZmqClient.connect(server.endpoint, hello_timeout_s=0) as client:
        msgs = [i.to_bytes(4, "little") * (i % 60) for i in range(2000)]
        for m in msgs:
            assert client.sender().send(m, timeout_s=5.0)
        assert _recv_all(server.receiver(), len(msgs)) == msgs
        assert server.sender().send(b"back", timeout_s=5.0)
        assert _recv_all(client.receiver(), 1) == [b"back"]
        assert server.session is not None and server.session.session == client.session


def test_ipc_socket_is_owner_only(tmp_path: Path) -> None:
    with ZmqServer.bind(f"ipc://{tmp_path}/s.sock"):
        assert stat.S_IMODE(os.stat(tmp_path / "s.sock").st_mode) == 0o600


def _subset(counts: dict[str, int], like: dict[str, int]) -> dict[str, int]:
    return {k: counts[k] for k in like}


def test_hostile_messages_are_counted_and_the_session_still_decodes(server: ZmqServer) -> None:
    ctx = zmq.Context()
    hostile = ctx.socket(zmq.DEALER)
    hostile.connect(server.endpoint)
    with ZmqClient.connect(server.endpoint, hello_timeout_s=0) as client:
        client.sender().send(b"first", timeout_s=1.0)
        assert _recv_all(server.receiver(), 1) == [b"first"]
        hostile.send_multipart([b"", b"qhil-eos"])  # the old end-of-stream marker
        hostile.send_multipart([b"a", b"b", b"c"])
        hostile.send_multipart([b"", encode_control(Kind.BYE, session=client.session, instance=1)])
        hostile.send(b"QSYN forged data")
        client.sender().send(b"second", timeout_s=1.0)
        assert _recv_all(server.receiver(), 1) == [b"second"]
        want = {"bad_frames": 1, "bad_control": 2, "not_in_session": 1}
        deadline = time.monotonic() + 5  # the peers' messages arrive on separate pipes
        while _subset(server.counts(), want) != want and time.monotonic() < deadline:
            server.receiver().recv_into(*packet_buffers(1, 252), timeout_s=0.01)
        assert _subset(server.counts(), want) == want
    ctx.destroy(linger=0)


def test_oversized_from_the_session_peer_is_counted() -> None:
    with ZmqServer.bind("inproc://big", max_packet=16) as srv:
        with ZmqClient.connect("inproc://big", hello_timeout_s=0, max_packet=16) as client:
            client._live_socket().send(bytes(200))  # bypass the sender's own check
            client.sender().send(b"ok", timeout_s=1.0)
            assert _recv_all(srv.receiver(), 1) == [b"ok"]
            assert srv.counts()["oversized"] == 1


def test_a_frame_over_the_zmq_limit_drops_the_peer_not_the_server() -> None:
    hostile_ctx = zmq.Context()  # its own I/O thread: the 100 MB send must not stall ours
    with ZmqServer.bind("tcp://127.0.0.1:*") as srv:
        hostile = hostile_ctx.socket(zmq.DEALER)
        hostile.connect(srv.endpoint)
        hostile.send(bytes(100_000_000))
        with ZmqClient.connect(srv.endpoint, hello_timeout_s=0) as client:
            client.sender().send(b"alive", timeout_s=1.0)
            assert _recv_all(srv.receiver(), 1) == [b"alive"]
        deadline = time.monotonic() + 5
        while srv.counts()["disconnects"] == 0 and time.monotonic() < deadline:
            srv.receiver().recv_into(*packet_buffers(1, 252), timeout_s=0.06)
        assert srv.counts()["disconnects"] >= 1
    hostile_ctx.destroy(linger=0)


def test_second_front_end_is_refused_with_the_reason() -> None:
    with ZmqServer.bind("tcp://127.0.0.1:*", idle_s=30.0) as srv:
        pump = Pump(srv)
        try:
            with ZmqClient.connect(srv.endpoint, name="rack-a") as first:
                with pytest.raises(ConnectionError, match="busy: serving front end rack-a"):
                    ZmqClient.connect(srv.endpoint, name="rack-b", hello_timeout_s=1.0)
                first.sender().send(b"still mine", timeout_s=1.0)
                assert pump.wait_for(1) == [b"still mine"]
        finally:
            pump.stop()
        assert srv.counts()["refused_busy"] >= 1


def test_a_restarted_front_end_gets_a_fresh_session() -> None:
    with ZmqServer.bind("tcp://127.0.0.1:*", idle_s=0.2) as srv:
        pump = Pump(srv)
        try:
            old = ZmqClient.connect(srv.endpoint)
            old.sender().send(b"old", timeout_s=1.0)
            assert pump.wait_for(1) == [b"old"]
            old.sender()._closed = True  # killed: no BYE goes out
            old.close(linger_s=0)
            new = ZmqClient.connect(srv.endpoint, hello_timeout_s=5.0)  # after idle_s
            new.sender().send(b"new", timeout_s=1.0)
            assert pump.wait_for(3) == [b"old", None, b"new"]
            assert srv.session is not None and srv.session.replaced == old.session
            new.close()
        finally:
            pump.stop()
        assert srv.counts()["sessions_replaced"] == 1


def _rebind(endpoint: str) -> ZmqServer:
    """Bind again where a closed server was; ZeroMQ releases the port asynchronously."""
    deadline = time.monotonic() + 5
    while True:
        try:
            return ZmqServer.bind(endpoint)
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def test_a_front_end_sees_the_decoder_restart_and_reopens_its_session() -> None:
    srv = ZmqServer.bind("tcp://127.0.0.1:*")
    endpoint = srv.endpoint
    pump = Pump(srv)
    client = ZmqClient.connect(endpoint)
    pump.stop()
    srv.close()
    srv = _rebind(endpoint)
    pump = Pump(srv)
    try:
        deadline = time.monotonic() + 10
        out, lengths = packet_buffers(4, 252)
        while not client.decoder_restarts and time.monotonic() < deadline:
            client.sender().send(b"x", timeout_s=1.0)
            client.receiver().recv_into(out, lengths, timeout_s=0.05)
        assert len(client.decoder_restarts) == 1 and client.decoder_instance == srv.instance
        client.sender().send(b"after", timeout_s=1.0)
        assert pump.wait_for(1)[-1] == b"after"
    finally:
        pump.stop()
        client.close()
        srv.close()


def test_bye_ends_the_session_and_lets_the_next_one_in() -> None:
    with ZmqServer.bind("inproc://bye", idle_s=60.0) as srv:
        rx = srv.receiver()
        a = ZmqClient.connect("inproc://bye", hello_timeout_s=0)
        a.sender().send(b"a", timeout_s=1.0)
        assert _recv_all(rx, 1) == [b"a"]
        a.close()
        b = ZmqClient.connect("inproc://bye", hello_timeout_s=0)
        b.sender().send(b"b", timeout_s=1.0)
        with pytest.raises(SessionEnded):
            _recv_all(rx, 1)
        assert _recv_all(rx, 1) == [b"b"]
        b.close()


def test_non_loopback_needs_keys() -> None:
    with pytest.raises(ValueError, match="needs CURVE authentication: pass --keys"):
        ZmqServer.bind("tcp://0.0.0.0:*")


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> CurveKeys:
    folder = tmp_path_factory.mktemp("keys") / "k"
    generate_keys(folder)
    assert stat.S_IMODE(os.stat(folder / "server.key_secret").st_mode) == 0o600
    return CurveKeys.load(folder)


def test_curve_session_works(keys: CurveKeys) -> None:
    with ZmqServer.bind("tcp://127.0.0.1:*", keys=keys) as srv:
        pump = Pump(srv)
        try:
            with ZmqClient.connect(srv.endpoint, keys=keys) as client:
                client.sender().send(b"secret round", timeout_s=1.0)
                assert pump.wait_for(1) == [b"secret round"]
                assert srv.session is not None
                assert srv.session.client_key == keys.client_public.decode()
        finally:
            pump.stop()


def test_unknown_client_key_is_refused_and_counted(keys: CurveKeys) -> None:
    stranger = CurveKeys.ephemeral()
    wrong = CurveKeys(
        server_public=keys.server_public,
        client_public=stranger.client_public,
        client_secret=stranger.client_secret,
    )
    with ZmqServer.bind("tcp://127.0.0.1:*", keys=keys) as srv:
        pump = Pump(srv)
        try:
            with pytest.raises(ConnectionRefusedError, match="refused this front end's CURVE key"):
                ZmqClient.connect(srv.endpoint, keys=wrong, hello_timeout_s=3.0)
        finally:
            pump.stop()
        assert srv.counts()["refused_unauthenticated"] >= 1


def test_forged_decoder_is_refused_by_the_front_end(keys: CurveKeys) -> None:
    forged = CurveKeys.ephemeral()  # the forger does not hold server.key_secret
    forged = CurveKeys(
        forged.server_public, forged.server_secret, authorized=frozenset({keys.client_public})
    )
    with ZmqServer.bind("tcp://127.0.0.1:*", keys=forged) as srv:
        pump = Pump(srv)
        try:
            with pytest.raises(ConnectionRefusedError, match="not the decoder whose public key"):
                ZmqClient.connect(srv.endpoint, keys=keys, hello_timeout_s=3.0)
        finally:
            pump.stop()


def test_plain_client_cannot_reach_a_curve_decoder(keys: CurveKeys) -> None:
    with ZmqServer.bind("tcp://127.0.0.1:*", keys=keys) as srv:
        pump = Pump(srv)
        try:
            with pytest.raises(ConnectionError, match="requires CURVE authentication"):
                ZmqClient.connect(srv.endpoint, hello_timeout_s=3.0)
        finally:
            pump.stop()
        assert srv.counts()["refused_handshake"] >= 1


def test_keys_folder_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="qhil keys generate"):
        CurveKeys.load(tmp_path / "none")
    generate_keys(tmp_path / "k")
    with pytest.raises(FileExistsError, match="--overwrite"):
        generate_keys(tmp_path / "k")
    (tmp_path / "k" / "client.key_secret").unlink()
    with pytest.raises(FileNotFoundError, match=r"client\.key_secret"):
        CurveKeys.load(tmp_path / "k").for_client()


def test_timeout_and_option_validation() -> None:
    with ZmqServer.bind("inproc://qhil-timeout", max_packet=16) as srv:
        out, lengths = packet_buffers(4, 16)
        t0 = time.perf_counter()
        assert srv.receiver().recv_into(out, lengths, timeout_s=0.02) == 0
        assert time.perf_counter() - t0 >= 0.02
        assert not srv.sender().try_send(b"x")  # no session: nowhere to send
        with pytest.raises(ValueError, match="17 bytes exceeds max_packet=16"):
            srv.sender().try_send(bytes(17))
    with pytest.raises(TransportClosed, match="closed"):
        srv.receiver().recv_into(out, lengths, timeout_s=0.0)
    with pytest.raises(ValueError, match="max_packet=0"):
        ZmqServer.bind("inproc://x", max_packet=0)
    with pytest.raises(ValueError, match="'tcp://', 'ipc://', 'inproc://'"):
        ZmqServer.bind("udp://127.0.0.1:5")


@pytest.mark.parametrize("scheme", ["tcp", "ipc"])
def test_cross_process_ping_pong(scheme: str, tmp_path: Path) -> None:
    where = "tcp://127.0.0.1:*" if scheme == "tcp" else f"ipc://{tmp_path}/pp.sock"
    target = importlib.import_module("qhil.bridge.zmq_test").child_echo  # spawn-picklable
    with ZmqServer.bind(where) as link:
        proc = mp.get_context("spawn").Process(target=target, args=(link.endpoint,), daemon=True)
        proc.start()
        tx, rx = link.sender(), link.receiver()
        out, lengths = packet_buffers(4, rx.max_packet)
        while link.session is None:  # the child opens its session
            rx.recv_into(out, lengths, timeout_s=0.05)
        rtts = []
        for i in range(1000):
            msg = i.to_bytes(8, "little")
            t0 = time.perf_counter_ns()
            assert tx.send(msg, timeout_s=30.0)
            assert rx.recv_into(out, lengths, timeout_s=30.0) == 1
            rtts.append(time.perf_counter_ns() - t0)
            assert bytes(out[0, : lengths[0]]) == msg
        tx.send(b"", timeout_s=1.0)
        proc.join(10)
        assert proc.exitcode == 0
    warm = np.array(rtts[200:])
    print(f"zmq {scheme} cross-process RTT ns: p50={np.median(warm):.0f}")
