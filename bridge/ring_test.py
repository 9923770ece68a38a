from __future__ import annotations

import collections
import importlib
import logging
import multiprocessing as mp
import os
import stat
import subprocess
import sys
import time
from multiprocessing.shared_memory import SharedMemory
from pathlib import Path

import llvmlite.binding as llvm
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numba import njit
from numba.core.errors import TypingError

from qhil.bridge._atomics import load_acquire_u64, store_release_u64
from qhil.bridge._ring import ShmRing
from qhil.bridge._ring_kernels import W_CREATOR
from qhil.bridge._ring_segment import process_token
from qhil.bridge._transport import PacketReceiver, PacketSender, TransportClosed, packet_buffers

N_CROSS = 100_000


def _expected(i: int, n: int) -> bytes:
    body = (np.arange(8, n, dtype=np.uint64) + i).astype(np.uint8).tobytes()
    return int(i).to_bytes(8, "little") + body


def _lengths(seed: int, count: int, max_packet: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(8, max_packet + 1, size=count)


def child_produce(name: str, seed: int, count: int) -> None:
    """Spawned: attach to `name` and send `count` counter-stamped packets."""
    with ShmRing.attach(name) as ring:
        tx = ring.sender()
        for i, n in enumerate(_lengths(seed, count, ring.max_packet)):
            assert tx.send(_expected(i, int(n)), timeout_s=10.0)
        tx.close()


def child_echo(ping: str, pong: str) -> None:
    """Spawned: echo every packet from ring `ping` back on ring `pong` until closed."""
    with ShmRing.attach(ping) as rin, ShmRing.attach(pong) as rout:
        rx, tx = rin.receiver(), rout.sender()
        out, lengths = packet_buffers(64, rx.max_packet)
        while True:
            try:
                k = rx.recv_into(out, lengths, timeout_s=10.0)
            except TransportClosed:
                return
            for i in range(k):
                assert tx.send(out[i, : lengths[i]], timeout_s=10.0)


def _spawn(target_name: str, *args: object) -> mp.process.BaseProcess:
    # Import by the package name so spawn can pickle the target (pytest's importlib
    # mode gives this module a name a child cannot import).
    target = getattr(importlib.import_module("qhil.bridge.ring_test"), target_name)
    proc = mp.get_context("spawn").Process(target=target, args=args, daemon=True)
    proc.start()
    return proc


def _drain(rx: PacketReceiver, n_max: int = 64) -> list[bytes]:
    out, lengths = packet_buffers(n_max, rx.max_packet)
    k = rx.recv_into(out, lengths, timeout_s=0.0)
    return [bytes(out[i, : lengths[i]]) for i in range(k)]


@njit
def _publish_then_read(a: np.ndarray, i: int, v: int) -> int:
    store_release_u64(a, i, v)
    return load_acquire_u64(a, i)


def test_atomics_in_njit_code_emit_acquire_release() -> None:
    a = np.zeros(4, np.uint64)
    assert _publish_then_read(a, 3, 2**64 - 1) == 2**64 - 1 and a[3] == 2**64 - 1
    ir = _publish_then_read.inspect_llvm(_publish_then_read.signatures[0])
    assert "store atomic i64" in ir and "release, align 8" in ir
    assert "load atomic i64" in ir and "acquire, align 8" in ir
    with pytest.raises((TypeError, TypingError), match="1-D uint64"):
        _publish_then_read(np.zeros(4, np.int64), 0, 1)


def test_atomics_lower_to_ldar_stlr_on_aarch64() -> None:
    llvm.initialize_all_targets()
    llvm.initialize_all_asmprinters()
    triple = "aarch64-unknown-linux-gnu"
    try:
        machine = llvm.Target.from_triple(triple).create_target_machine(opt=2)
    except RuntimeError:
        pytest.skip("this llvmlite has no AArch64 backend")
    mod = llvm.parse_assembly(
        "define void @f(ptr %p, ptr %q) {\n"
        "  %v = load atomic i64, ptr %p acquire, align 8\n"
        "  store atomic i64 %v, ptr %q release, align 8\n  ret void\n}\n"
    )
    mod.triple = triple
    asm = machine.emit_assembly(mod)
    assert "ldar" in asm and "stlr" in asm


def test_implements_the_protocols() -> None:
    with ShmRing.create(n_slots=8, slot_size=64) as ring:
        assert isinstance(ring.sender(), PacketSender)
        assert isinstance(ring.receiver(), PacketReceiver)
        assert ring.max_packet == 60


def test_push_pop_wraps_around_many_times() -> None:
    with ShmRing.create(n_slots=4, slot_size=64) as ring:
        tx, rx = ring.sender(), ring.receiver()
        for i in range(1000):
            assert tx.try_send(bytes([i % 256]) * (i % 61))
            assert ring.occupancy() == 1
            assert _drain(rx) == [bytes([i % 256]) * (i % 61)]
        assert ring.occupancy() == 0


def test_full_ring_refuses_then_batch_pop_frees_it() -> None:
    with ShmRing.create(n_slots=8, slot_size=64) as ring:
        tx, rx = ring.sender(), ring.receiver()
        assert all(tx.try_send(bytes([i])) for i in range(8))
        assert not tx.try_send(b"x")
        assert tx.reserve() is None
        assert not tx.send(b"x", timeout_s=0.01)
        assert _drain(rx, n_max=3) == [b"\x00", b"\x01", b"\x02"]
        assert ring.occupancy() == 5
        assert tx.try_send(b"y")
        assert _drain(rx) == [bytes([i]) for i in range(3, 8)] + [b"y"]
        assert _drain(rx) == []


def test_reserve_commit_is_zero_copy() -> None:
    with ShmRing.create(n_slots=4, slot_size=64) as ring:
        tx, rx = ring.sender(), ring.receiver()
        with pytest.raises(RuntimeError, match="reserve"):
            tx.commit(1)
        view = tx.reserve()
        assert view is not None and view.shape == (60,) and view.dtype == np.uint8
        view[:3] = [7, 8, 9]
        with pytest.raises(ValueError, match="max_packet=60"):
            tx.commit(61)
        tx.commit(3)
        del view  # a live view would keep the mapping alive past close()
        assert _drain(rx) == [b"\x07\x08\x09"]


def test_oversize_and_bad_buffers_are_rejected() -> None:
    with ShmRing.create(n_slots=4, slot_size=64) as ring:
        tx, rx = ring.sender(), ring.receiver()
        with pytest.raises(ValueError, match="61 bytes exceeds max_packet=60"):
            tx.try_send(bytes(61))
        with pytest.raises(ValueError, match="dtype uint8"):
            tx.try_send(np.zeros(3, np.int32))
        with pytest.raises(ValueError, match="C-contiguous"):
            rx.recv_into(np.zeros((4, 30), np.uint8), np.zeros(4, np.uint32), timeout_s=0)
        with pytest.raises(ValueError, match="lengths must be uint32"):
            rx.recv_into(np.zeros((4, 60), np.uint8), np.zeros(4, np.int64), timeout_s=0)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"n_slots": 6}, "power of two"),
        ({"n_slots": 1}, "power of two"),
        ({"slot_size": 100}, "multiple of 64"),
        ({"slot_size": 1 << 20}, "multiple of 64 in 64..65536"),
        ({"name": "a/b"}, "without '/'"),
    ],
)
def test_create_validates(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        ShmRing.create(**kwargs)  # type: ignore[arg-type]


def test_closed_flag_drains_then_raises() -> None:
    with ShmRing.create(n_slots=8, slot_size=64) as ring:
        tx, rx = ring.sender(), ring.receiver()
        tx.try_send(b"a")
        tx.try_send(b"b")
        tx.close()
        assert ring.is_closed
        assert _drain(rx) == [b"a", b"b"]
        with pytest.raises(TransportClosed, match="drained"):
            _drain(rx)
        with pytest.raises(TransportClosed):
            tx.try_send(b"c")


def test_owner_close_reaches_attached_sender_and_is_idempotent() -> None:
    owner = ShmRing.create(n_slots=8, slot_size=64)
    peer = ShmRing.attach(owner.name)
    tx = peer.sender()
    assert tx.try_send(b"ok")
    owner.close()
    owner.close()
    with pytest.raises(TransportClosed, match="marked closed"):
        tx.try_send(b"late")
    peer.close()
    peer.close()
    with pytest.raises(FileNotFoundError, match="no ring named"):
        ShmRing.attach(owner.name)


def test_attach_errors_are_clear() -> None:
    with pytest.raises(FileNotFoundError, match="is the producer running"):
        ShmRing.attach("qhil-test-missing-ring")
    shm = SharedMemory(create=True, size=4096)
    try:
        assert shm.buf is not None
        shm.buf[:8] = b"garbage!"
        with pytest.raises(ValueError, match="not a qhil ring"):
            ShmRing.attach(shm.name, wait_s=0.0)
    finally:
        shm.close()
        shm.unlink()


def test_independent_attacher_does_not_unlink_or_warn() -> None:
    # A separate interpreter has its own resource tracker; it must not unlink at exit.
    with ShmRing.create(n_slots=8, slot_size=64) as ring:
        code = (
            "from qhil.bridge._ring import ShmRing\n"
            f"r = ShmRing.attach({ring.name!r}); r.sender().try_send(b'hi'); r.sender()\n"
        )
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        assert "leaked" not in done.stderr and "Warning" not in done.stderr
        assert _drain(ring.receiver()) == [b"hi"]
        ShmRing.attach(ring.name).close()  # still there


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["send", "reserve", "pop"]), st.integers(0, 60))))
def test_random_interleavings_match_a_deque(ops: list[tuple[str, int]]) -> None:
    model: collections.deque[bytes] = collections.deque()
    with ShmRing.create(n_slots=8, slot_size=64) as ring:
        tx, rx = ring.sender(), ring.receiver()
        for step, (op, arg) in enumerate(ops):
            payload = bytes([step % 256]) * arg
            if op == "send":
                assert tx.try_send(payload) == (len(model) < 8)
                if len(model) < 8:
                    model.append(payload)
            elif op == "reserve":
                view = tx.reserve()
                assert (view is None) == (len(model) == 8)
                if view is not None:
                    view[:arg] = step % 256
                    tx.commit(arg)
                    model.append(payload)
                del view
            else:
                got = _drain(rx, n_max=max(1, arg % 9))
                assert got == [model.popleft() for _ in range(len(got))]
                assert len(got) == min(max(1, arg % 9), len(got) + len(model))
            assert ring.occupancy() == len(model)


def test_cross_process_100k_packets_in_order() -> None:
    seed = 1234
    with ShmRing.create(n_slots=1024, slot_size=64) as ring:
        rx = ring.receiver()
        proc = _spawn("child_produce", ring.name, seed, N_CROSS)
        expected_lengths = _lengths(seed, N_CROSS, ring.max_packet)
        out, lengths = packet_buffers(256, rx.max_packet)
        seen = 0
        while True:
            try:
                k = rx.recv_into(out, lengths, timeout_s=30.0)
            except TransportClosed:
                break
            assert k > 0, "producer stalled"
            assert np.array_equal(lengths[:k], expected_lengths[seen : seen + k])
            counters = out[:k, :8].copy().view("<u8").ravel()
            assert np.array_equal(counters, np.arange(seen, seen + k, dtype=np.uint64))
            for i in range(0, k, 97):  # spot-check bodies; counters+lengths cover order
                assert bytes(out[i, : lengths[i]]) == _expected(seen + i, int(lengths[i]))
            seen += k
        proc.join(10)
        assert proc.exitcode == 0
        assert seen == N_CROSS


def test_cross_process_ping_pong() -> None:
    with (
        ShmRing.create(n_slots=64, slot_size=64) as ping,
        ShmRing.create(n_slots=64, slot_size=64) as pong,
    ):
        tx, rx = ping.sender(), pong.receiver()
        proc = _spawn("child_echo", ping.name, pong.name)
        out, lengths = packet_buffers(4, rx.max_packet)
        rtts = []
        for i in range(3000):
            msg = i.to_bytes(8, "little")
            t0 = time.perf_counter_ns()
            assert tx.send(msg, timeout_s=30.0)
            assert rx.recv_into(out, lengths, timeout_s=30.0) == 1
            rtts.append(time.perf_counter_ns() - t0)
            assert bytes(out[0, : lengths[0]]) == msg
        tx.close()
        proc.join(10)
        assert proc.exitcode == 0
        warm = np.array(rtts[500:])
        p50, p99 = np.percentile(warm, [50, 99])
        print(f"shm cross-process RTT ns: p50={p50:.0f} p99={p99:.0f}")


def test_create_refuses_a_name_whose_creator_still_runs() -> None:
    with ShmRing.create(n_slots=2, slot_size=64) as ring:
        with pytest.raises(
            FileExistsError, match=f"process {os.getpid()}, which created it, still"
        ):
            ShmRing.create(name=ring.name)
        assert ring.receiver().recv_into(*packet_buffers(1, 60), timeout_s=0) == 0
        ring._control()[W_CREATOR] = 0  # as rings made before they recorded their creator
        with pytest.raises(FileExistsError, match="does not record its creator"):
            ShmRing.create(name=ring.name)


def _orphan_ring(name: str) -> int:
    """Create ring ``name`` in a process that then dies without unlinking it, as when every
    process of a run (its resource tracker too) is killed at once; returns its PID."""
    code = (
        "import os\nfrom multiprocessing import resource_tracker\n"
        "from qhil.bridge._ring import ShmRing\n"
        f"r = ShmRing.create(n_slots=2, slot_size=64, name={name!r})\n"
        "resource_tracker.unregister('/' + r.name, 'shared_memory')\n"
        "print(os.getpid(), flush=True)\nos._exit(0)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return int(done.stdout)


def test_create_replaces_a_stale_ring_of_a_dead_process(caplog: pytest.LogCaptureFixture) -> None:
    name = f"qhil-stale-{os.getpid()}"
    pid = _orphan_ring(name)
    with ShmRing.attach(name) as stale:
        assert stale.n_slots == 2  # left behind
    with caplog.at_level(logging.WARNING, logger="qhil.bridge"):
        ring = ShmRing.create(n_slots=8, slot_size=64, name=name)
    with ring, ShmRing.attach(name) as fresh:
        assert fresh.n_slots == 8
    assert f"removed stale ring {name!r} left by process {pid}" in caplog.text
    with pytest.raises(FileNotFoundError):
        ShmRing.attach(name)  # the owner's close() unlinked the fresh ring


@pytest.mark.skipif(process_token(os.getpid()) == 0, reason="no process start times here")
def test_a_reused_pid_is_not_taken_for_the_creator() -> None:
    name = f"qhil-reused-{os.getpid()}"
    _orphan_ring(name)
    with ShmRing.attach(name) as stale:  # as if this process had got the dead creator's PID
        stale._control()[W_CREATOR] = (process_token(os.getpid()) ^ 1) << 32 | os.getpid()
    ShmRing.create(n_slots=4, slot_size=64, name=name).close()


@pytest.mark.skipif(not Path("/dev/shm").is_dir(), reason="no /dev/shm to look at")
def test_rings_are_owner_only() -> None:
    with ShmRing.create(n_slots=2, slot_size=64) as ring:
        assert stat.S_IMODE(os.stat(f"/dev/shm/{ring.name}").st_mode) == 0o600
