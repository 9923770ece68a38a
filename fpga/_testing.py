"""Helpers the front end's tests share (a testing module, not a test file).

``surface_circuit`` is a small noisy rotated-memory circuit; ``drain_syndromes``
takes the syndrome packets a front end has emitted; ``correction_for`` answers
one; ``exchange_and_check`` streams shots through a front end and checks every
packet against stim.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import stim

from qhil.bridge import CorrectionPacket, SyndromePacket, packet_buffers
from qhil.fpga._driver import FrontEnd, FrontEndConfig
from qhil.fpga._regmap import REGISTERS

__all__ = ["correction_for", "drain_syndromes", "exchange_and_check", "surface_circuit"]


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
