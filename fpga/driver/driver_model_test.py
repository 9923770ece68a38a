"""The twin's replay-adapter and pending-table behaviour, as rtl/qhil_frontend.v documents it."""

from __future__ import annotations

import numpy as np
import pytest

from qhil.bridge import FLAG_END_OF_STREAM, CorrectionPacket, SyndromePacket
from qhil.fpga import FrontEnd, FrontEndConfig
from qhil.fpga._detection import DetectorProgram
from qhil.fpga._regmap import REGISTERS
from qhil.fpga._testing import correction_for, drain_syndromes, surface_circuit
from qhil.fpga.driver._driver_model import FrontEndTwin

_OFFSET = {r.name: r.offset for r in REGISTERS}


def _twin(*, fifo_packets: int = 64, pending_log2: int = 6, lockstep: bool = True) -> FrontEndTwin:
    circuit = surface_circuit()
    twin = FrontEndTwin(
        DetectorProgram.from_circuit(circuit),
        circuit.num_observables,
        reason="test",
        fifo_packets=fifo_packets,
        pending_log2=pending_log2,
    )
    twin.write(_OFFSET["CTRL"], 0b01 | (0b10 if lockstep else 0))
    return twin


def _round(last: bool = False, eos: bool = False, nbytes: int = 16) -> np.ndarray:
    buf = np.zeros(nbytes // 8, dtype=np.uint64)
    buf[0] = int(last) | int(eos) << 1
    return buf


def _packets(twin: FrontEndTwin) -> list[SyndromePacket]:
    row, out = np.zeros(256, dtype=np.uint8), []
    while n := twin.recv_packet(row, 0.0):
        out.append(SyndromePacket.decode(row[:n]))
    return out


def test_end_of_stream_is_queued_after_the_rounds_and_its_ack_sets_done() -> None:
    fe = FrontEnd.open(surface_circuit(), target="model")
    fe.start()
    fe.send_measurements(np.zeros((1, fe.program.meas_offsets[-1]), dtype=bool))
    fe.send_end_of_stream()
    packets = drain_syndromes(fe)
    eos = packets[-1]
    assert [p.end_of_stream for p in packets] == [False] * 3 + [True]
    assert (eos.shot, eos.round, eos.seq, eos.bits.size) == (0, 0, 3, 0)
    assert fe.regs.read64("ROUNDS_EMITTED") == 3, "end of stream is not a round"
    assert not fe.status()["DONE"]
    fe.send_correction(
        CorrectionPacket(
            stream_id=0, shot=0, seq=0, t_fpga=0, obs=[], flags=FLAG_END_OF_STREAM
        ).encode()
    )
    assert fe.status()["DONE"] and fe.regs["CORR_ACCEPTED"] == 0
    fe.stop()
    with pytest.raises(RuntimeError, match="call start"):
        fe.send_end_of_stream()


def test_rounds_follow_the_header_and_rounds_past_the_program_carry_no_bits() -> None:
    twin = _twin()
    for last in (False, False, False, False, True, False):
        assert twin.send_round(_round(last), 0, 16, 0.0)
    got = [(p.shot, p.round, p.bits.size, p.first_round, p.last_round) for p in _packets(twin)]
    assert got == [
        (0, 0, 4, True, False),
        (0, 1, 8, False, False),
        (0, 2, 4, False, False),
        (0, 3, 0, False, False),
        (0, 4, 0, False, True),
        (1, 0, 4, True, False),
    ]


def test_a_header_only_transfer_is_dropped_and_a_disabled_ip_takes_nothing() -> None:
    twin = _twin()
    assert twin.send_round(_round(nbytes=8), 0, 8, 0.0) and _packets(twin) == []
    twin.write(_OFFSET["CTRL"], 0)
    assert not twin.send_round(_round(), 0, 16, 0.0)


def test_lockstep_waits_for_a_pending_slot_paced_evicts() -> None:
    twin = _twin(pending_log2=1)  # two slots: shots 0 and 2 share one
    for _ in range(2):  # shots 0 and 1, three rounds each
        for last in (False, False, True):
            assert twin.send_round(_round(last), 0, 16, 0.0)
    assert not twin.send_round(_round(), 0, 16, 0.0), "shot 2's slot holds shot 0"
    packets = _packets(twin)
    correction = correction_for(packets[2], [1])
    assert twin.send_packet(np.frombuffer(correction, dtype=np.uint8), 0.0)
    assert twin.send_round(_round(), 0, 16, 0.0), "shot 0 answered: its slot is free"

    paced = _twin(pending_log2=1, lockstep=False)
    for _ in range(3):
        for last in (False, False, True):
            assert paced.send_round(_round(last), 0, 16, 0.0)
    assert paced.read(_OFFSET["SHOTS_TIMED_OUT"]) == 1, "shot 2 evicted shot 0"
    status = paced.read(_OFFSET["STATUS"])
    assert status & 0b100, "DECODER_UNRESPONSIVE"


def test_an_incomplete_correction_must_echo_the_rounds_sent() -> None:
    fe = FrontEnd.open(surface_circuit(), target="model", config=FrontEndConfig())
    fe.start()
    fe.send_measurements(np.zeros((1, fe.program.meas_offsets[-1]), dtype=bool))
    last = drain_syndromes(fe)[-1]
    fe.send_correction(correction_for(last, [], status=1, frame=[1, 1]))
    assert fe.regs["CORR_BAD_LENGTH"] == 1
    fe.send_correction(correction_for(last, [], status=1, frame=[1, 1, 0]))
    assert fe.regs["SHOTS_INCOMPLETE"] == 1


def test_the_twin_refuses_what_the_rtl_cannot_hold() -> None:
    circuit = surface_circuit()
    program = DetectorProgram.from_circuit(circuit)
    with pytest.raises(ValueError, match=r"1\.\.32 logical observables"):
        FrontEndTwin(program, 33, reason="", fifo_packets=1)
    with pytest.raises(ValueError, match="fifo_packets must be >= 1"):
        FrontEndTwin(program, 1, reason="", fifo_packets=0)
    twin = _twin()
    with pytest.raises(PermissionError, match=r"SLVERR.*ROUNDS_BACKPRESSURE"):
        twin.write(_OFFSET["ROUNDS_BACKPRESSURE"], 1)
    with pytest.raises(PermissionError, match="offset 0x3"):
        twin.write(3, 1)
    assert twin.read(0x200) == 0


def test_the_twin_agrees_with_the_rtl_model_on_packets_and_counters() -> None:
    """Same rounds and corrections into the twin and into ``FrontendModel`` (the RTL's
    cycle-accurate model): the same packets (but ``t_fpga``) and the same counters
    (but the latency ones, which count wall-clock time in the twin)."""
    from qhil.fpga.rtl_model import FrontendModel, Stimulus

    circuit = surface_circuit(d=3, rounds=2, p=0.05)
    fe = FrontEnd.open(circuit, target="model")
    replay = fe.replay_buffer(circuit.compile_sampler(seed=9).sample(5))
    fe.regs["STREAM_ID"] = 5
    fe.regs["CTRL"] = 0b11  # ENABLE, LOCKSTEP
    fe.send_measurements(replay)
    twin_packets = drain_syndromes(fe)
    last = {p.shot: p for p in twin_packets if p.last_round}
    eos_ack = CorrectionPacket(stream_id=5, shot=0, seq=0, t_fpga=0, obs=[], flags=0x80)
    bad_crc = bytearray(correction_for(last[0], [1]))
    bad_crc[-1] ^= 1
    corrections = [
        correction_for(last[1], [1], seq=last[1].seq - 1),  # BAD_FIELD
        correction_for(last[0], [1]),
        correction_for(last[0], [1]),  # DUPLICATE
        bytes(bad_crc),
        correction_for(last[1], [0]),
        correction_for(last[2], [], status=1, frame=[1, 0, 1]),  # INCOMPLETE
        correction_for(last[3], [], status=2),  # DECODER_ERROR
        correction_for(last[3], [1], shot=9),  # UNKNOWN_SHOT
        correction_for(last[3], [1], stream_id=6),  # UNKNOWN_STREAM
        eos_ack.encode(),
    ]
    for c in corrections[:-1]:
        fe.send_correction(c)
    fe.send_end_of_stream()
    twin_packets += drain_syndromes(fe)
    fe.send_correction(corrections[-1])
    names = [
        r.name
        for r in REGISTERS
        if r.access == "ro"
        and r.name not in ("CYCLE_LO", "CYCLE_HI", "LAT_LAST", "LAT_MAX")
        and r.name != "BUDGET_MISSES"
        and not r.name.endswith("_HI")
    ]
    twin = {name: fe.regs[name] for name in names}

    s = Stimulus()
    s.write("STREAM_ID", 5)
    s.write("CTRL", 0b11)
    rounds = len(replay.round_nbytes)
    for row in range(replay.rounds):
        n = replay.round_nbytes[row % rounds] // 8
        words = [int(w) for w in replay.beats[row, 1:n]]
        s.add_round(words, last_round=bool(replay.beats[row, 0] & 1), cycle=100)
    for c in corrections[:-1]:
        s.add_correction(c, cycle=1000)
    s.add_end_of_stream(cycle=3000)
    s.add_correction(corrections[-1], cycle=3500)
    for name in names:
        s.read(name, cycle=5000)
    trace = FrontendModel.from_circuit(circuit).run(s)

    def key(p: SyndromePacket) -> tuple[object, ...]:
        return (p.stream_id, p.shot, p.round, p.seq, p.flags, p.bits.tobytes())

    rtl_packets = [SyndromePacket.decode(p.data) for p in trace.packets]
    assert [key(p) for p in twin_packets] == [key(p) for p in rtl_packets]
    rtl = {
        name: rdata for _, addr, rdata, _ in trace.reads for name in names if _OFFSET[name] == addr
    }
    assert twin == rtl
    assert twin["CORR_ACCEPTED"] == 4 and twin["LOGICAL_FRAME"] == 1 and twin["STATUS"] & 0b10
