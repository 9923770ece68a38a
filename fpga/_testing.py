"""Helpers the front end's tests share (a testing module, not a test file).

``surface_circuit`` is a small noisy rotated-memory circuit; ``drain_syndromes``
takes the syndrome packets a front end has emitted; ``correction_for`` answers
one; ``exchange_and_check`` streams shots through a front end and checks every
packet against stim.

For ``CycleModel`` runs (``fpga/model/cycle_model_test.py`` and the loop-level tests in
``hil_tests/``): ``warm_up_codecs``, ``rings``, ``model_for``, ``PeerThread``,
``check_ledger``, the ``STATUS_*`` bits and ``FAST_TIMEOUTS``.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import stim

from qhil.bridge import CorrectionPacket, ShmRing, SyndromePacket, packet_buffers
from qhil.bridge import warm_up as warm_up_bridge
from qhil.fpga._config import FrontEndConfig
from qhil.fpga._regmap import REGISTERS, STATUS_BITS
from qhil.fpga.driver import FrontEnd
from qhil.fpga.model import CycleModel, Fate, FrontEndResult

__all__ = [
    "FAST_TIMEOUTS",
    "STATUS_BACKPRESSURE",
    "STATUS_DONE",
    "STATUS_RUNNING",
    "STATUS_UNRESPONSIVE",
    "PeerThread",
    "check_ledger",
    "correction_for",
    "drain_syndromes",
    "exchange_and_check",
    "model_for",
    "rings",
    "surface_circuit",
    "warm_up_codecs",
]

STATUS_DONE = 1 << STATUS_BITS["DONE"]
STATUS_UNRESPONSIVE = 1 << STATUS_BITS["DECODER_UNRESPONSIVE"]
STATUS_BACKPRESSURE = 1 << STATUS_BITS["BACKPRESSURE"]
STATUS_RUNNING = 1 << STATUS_BITS["RUNNING"]

# Short timeouts keep the failure cases fast; the happy paths never get near them.
FAST_TIMEOUTS = {"correction_timeout_s": 0.2, "stall_timeout_s": 0.5}


def surface_circuit(basis: str = "z", d: int = 3, rounds: int = 2, p: float = 0.02) -> stim.Circuit:
    return stim.Circuit.generated(
        f"surface_code:rotated_memory_{basis}",
        distance=d,
        rounds=rounds,
        after_clifford_depolarization=p,
        before_measure_flip_probability=p,
    )


def drain_syndromes(fe: FrontEnd, n_max: int = 64) -> list[SyndromePacket]:
    out, lengths = packet_buffers(n_max, fe.max_packet)
    n = fe.recv_syndromes(out, lengths, timeout_s=0.0)
    return [SyndromePacket.decode(out[i, : lengths[i]]) for i in range(n)]


def correction_for(p: SyndromePacket, obs: list[int], **kw: Any) -> bytes:
    fields: dict[str, Any] = {
        "stream_id": p.stream_id,
        "shot": p.shot,
        "seq": p.seq,
        "t_fpga": p.t_fpga,
    }
    fields.update(kw)
    return CorrectionPacket(obs=obs, **fields).encode()


def exchange_and_check(fe: FrontEnd, circuit: stim.Circuit, shots: int) -> None:
    """Send shots one at a time, check every syndrome packet against stim's detection
    events, and answer each with a correction carrying the true observable flips."""
    meas = circuit.compile_sampler(seed=11).sample(shots)
    dets, obs = circuit.compile_m2d_converter().convert(
        measurements=meas, separate_observables=True
    )
    fe.configure(FrontEndConfig(stream_id=3))
    fe.clear_counters()
    seq0 = None
    fe.start()
    replay = fe.replay_buffer(meas)
    n_rounds, frame = fe.program.num_rounds, fe.logical_frame
    for s in range(shots):
        start, stop = replay.shot_rounds(s)
        assert fe.send_measurements(replay, start_round=start, stop_round=stop) == n_rounds
        packets = drain_syndromes(fe)
        assert len(packets) == n_rounds
        seq0 = packets[0].seq if seq0 is None else seq0
        assert [p.round for p in packets] == list(range(n_rounds))
        assert [p.seq - seq0 for p in packets] == list(range(s * n_rounds, (s + 1) * n_rounds))
        assert len({p.shot for p in packets}) == 1 and all(p.stream_id == 3 for p in packets)
        assert packets[0].first_round and packets[-1].last_round
        assert not any(p.first_round for p in packets[1:])
        assert [p.t_fpga for p in packets] == sorted(p.t_fpga for p in packets)
        np.testing.assert_array_equal(np.concatenate([p.bits for p in packets]), dets[s])
        fe.send_correction(correction_for(packets[-1], obs[s].astype(int).tolist()))
        frame ^= int(obs[s][0])
    assert fe.regs.read64("ROUNDS_EMITTED") == shots * n_rounds
    assert fe.regs.read64("SHOTS_DECODED") == fe.regs["CORR_ACCEPTED"] == shots
    assert fe.logical_frame == frame and obs.any(), "the sample flips the observable"
    assert 0 < fe.regs["LAT_LAST"] <= fe.regs["LAT_MAX"]
    counted = [r.name for r in REGISTERS if r.access == "ro" and r.name.startswith("CORR_")]
    rejected = [name for name in counted if fe.regs[name]]
    assert rejected == ["CORR_ACCEPTED"]


def warm_up_codecs() -> None:
    """Compile (or load) numba code now, not while a timeout runs: the ring's hot paths
    and the packet encoders and parsers."""
    warm_up_bridge()
    with ShmRing.create(n_slots=2, slot_size=64) as ring:  # the peer sends bytes (read-only)
        assert ring.sender().send(b"warm", timeout_s=1.0)
    buf, lengths = packet_buffers(1, 252)
    for data in (
        SyndromePacket(stream_id=0, shot=1, round=0, seq=1, t_fpga=1, bits=[1]).encode(),
        CorrectionPacket(stream_id=0, shot=1, seq=1, t_fpga=1, obs=[1], frame=[1]).encode(),
    ):
        buf[0, : len(data)] = np.frombuffer(data, np.uint8)
        lengths[0] = len(data)
        with contextlib.suppress(ValueError):
            SyndromePacket.decode(buf[0, : lengths[0]])
        with contextlib.suppress(ValueError):
            CorrectionPacket.decode(buf[0, : lengths[0]])


@contextlib.contextmanager
def rings(up_slots: int = 256) -> Iterator[tuple[ShmRing, ShmRing]]:
    """The up (syndromes) and down (corrections) rings of one run."""
    with ShmRing.create(n_slots=up_slots) as up, ShmRing.create(n_slots=256) as down:
        yield up, down


def model_for(circuit: stim.Circuit, **config: object) -> CycleModel:
    return CycleModel.from_circuit(circuit, config=FrontEndConfig(**config))  # type: ignore[arg-type]


class PeerThread(threading.Thread):
    """A daemon thread whose exception is re-raised by ``finish``."""

    def __init__(self, target: Callable[[], object]) -> None:
        super().__init__(daemon=True)
        self._target_fn = target
        self.error: BaseException | None = None
        self.value: Any = None

    def run(self) -> None:
        try:
            self.value = self._target_fn()
        except BaseException as ex:
            self.error = ex

    def finish(self, timeout_s: float = 5.0) -> Any:
        self.join(timeout_s)
        assert not self.is_alive(), "peer thread did not finish"
        if self.error is not None:
            raise self.error
        return self.value


def check_ledger(res: FrontEndResult) -> None:
    """The run's fates, registers and rejections agree, and it ended DONE."""
    res.check_nothing_lost_silently()
    regs = res.registers
    assert regs["SHOTS_DECODED_LO"] == int(np.count_nonzero(res.decoded))
    assert regs["ROUNDS_BACKPRESSURE"] == res.rounds_lost()["backpressure"]
    assert regs["SHOTS_DECODER_ERROR"] == int(
        np.count_nonzero(res.fates[:, -1] == Fate.LOST_DECODER_ERROR)
    )
    assert regs["SHOTS_TIMED_OUT"] == int(np.count_nonzero(res.fates[:, -1] == Fate.LOST_TIMEOUT))
    for label, count in res.rejections.items():
        if f"CORR_{label.upper()}" in regs:
            assert regs[f"CORR_{label.upper()}"] == count, label
    assert (res.latency_ns >= 0).tolist() == res.decoded.tolist()
    assert (res.latency_cycles >= 0).tolist() == res.decoded.tolist()
    assert not res.predictions[~res.decoded].any()
    assert regs["STATUS"] & STATUS_DONE and not regs["STATUS"] & STATUS_RUNNING
