"""The cycle-accurate front-end model on its own (no simulator): what it emits and counts.

``rtl_frontend_test.py`` proves the RTL equal to this model; these tests pin the
model to the definitions it must follow: ``DetectorProgram`` for the events,
``SyndromePacket`` for the bytes, ``_correction_rules`` for the corrections, and
the latencies the RTL documents.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import stim

from qhil.bridge import CorrectionPacket, CorrectionStatus, Reason, SyndromePacket
from qhil.fpga import FrontendModel, FrontendParams, Stimulus
from qhil.fpga._correction_rules import Verdict, judge
from qhil.fpga._detection import DetectorProgram
from qhil.fpga.rtl_model._frontend_scenario import ScenarioHost

NOISE = 0.02
D13 = {"max_meas": 169, "max_dets": 168, "max_terms": 5, "rounds_max": 16}


def _circuit(basis: str, d: int, rounds: int) -> stim.Circuit:
    return stim.Circuit.generated(
        f"surface_code:rotated_memory_{basis}",
        distance=d,
        rounds=rounds,
        after_clifford_depolarization=NOISE,
        before_measure_flip_probability=NOISE,
    )


def _words(bits: np.ndarray) -> list[int]:
    value = int.from_bytes(np.packbits(bits, bitorder="little").tobytes(), "little")
    return [(value >> (64 * k)) & (2**64 - 1) for k in range(max(1, (len(bits) + 63) // 64))]


def _stream(
    program: DetectorProgram,
    record: np.ndarray,
    *,
    ctrl: int,
    gap: int = 0,
    period: int = 0,
    **kw: object,
) -> Stimulus:
    s = Stimulus(**kw)  # type: ignore[arg-type]
    s.write("ROUND_PERIOD", period)
    s.write("CTRL", ctrl)
    for shot in range(record.shape[0]):
        for t in range(program.num_rounds):
            lo, hi = program.meas_offsets[t], program.meas_offsets[t + 1]
            s.add_round(
                _words(record[shot, lo:hi]),
                last_round=t == program.num_rounds - 1,
                gaps=[gap],
            )
    return s


@pytest.mark.parametrize(("basis", "d"), [("z", 3), ("x", 5), ("z", 7)])
def test_lockstep_packets_carry_the_programs_events(basis: str, d: int) -> None:
    circuit = _circuit(basis, d, 3)
    program = DetectorProgram.from_circuit(circuit)
    record = circuit.compile_sampler(seed=d).sample(12)
    model = FrontendModel.from_program(program, **D13)
    trace = model.run(_stream(program, record, ctrl=0b11))
    assert len(trace.packets) == record.shape[0] * program.num_rounds  # lockstep drops none
    for seq, out in enumerate(trace.packets):
        p = SyndromePacket.decode(np.frombuffer(out.data, np.uint8))
        assert (p.seq, p.shot, p.round) == (
            seq,
            seq // program.num_rounds,
            seq % program.num_rounds,
        )
        assert np.array_equal(p.bits, program.round_events(record, p.round)[p.shot])
        want_flags = (p.round == 0) | (p.round == program.num_rounds - 1) << 1
        assert p.flags == want_flags
        assert p.t_fpga == trace.rounds_in[seq]
    assert model.register("ROUNDS_EMITTED") == len(trace.packets)


def test_isolated_round_latencies_meet_the_goal() -> None:
    """Last measurement beat -> last syndrome beat, d = 3..13, m_axis always ready."""
    measured = {}
    for d in (3, 5, 7, 9, 11, 13):
        circuit = _circuit("z", d, 2)
        program = DetectorProgram.from_circuit(circuit)
        record = circuit.compile_sampler(seed=1).sample(1)
        model = FrontendModel.from_program(program, **D13)
        trace = model.run(_stream(program, record, ctrl=0b01, gap=40))
        measured[d] = dict(trace.packet_latencies())
    # 3 cycles to the packetizer, then its CRC and beats (qhil_packetizer.v's table).
    assert measured[3] == {4: 11, 8: 11}
    assert measured[5] == {12: 11, 24: 12}
    assert measured[13] == {84: 13, 168: 15}
    assert max(c for lat in measured.values() for c in lat.values()) <= 25


def _one_shot(ctrl: int = 0b01, **regs: int) -> tuple[FrontendModel, Stimulus, DetectorProgram]:
    circuit = _circuit("z", 3, 1)
    program = DetectorProgram.from_circuit(circuit)
    record = circuit.compile_sampler(seed=3).sample(1)
    model = FrontendModel.from_program(program)
    s = _stream(program, record, ctrl=ctrl)
    for name, value in regs.items():
        s.write(name, value)
    model.run(s)
    return model, s, program


def _send(model: FrontendModel, s: Stimulus, data: bytes, *, wait: int = 8) -> None:
    s.add_correction(data)
    s.drain = wait
    model.run(s)


def _correction(s: Stimulus, **kw: object) -> bytes:
    last = s.trace.packets[-1]
    fields: dict[str, object] = {
        "stream_id": 0,
        "shot": last.shot,
        "seq": last.seq,
        "t_fpga": last.t_fpga,
        "obs": [1],
    }
    fields.update(kw)
    return CorrectionPacket(**fields).encode()  # type: ignore[arg-type]


def test_a_correction_flips_the_frame_two_cycles_after_its_last_byte() -> None:
    model, s, _ = _one_shot(BUDGET=10)
    _send(model, s, _correction(s))
    assert s.trace.frames, "no frame update"
    cycle, frame = s.trace.frames[0]
    assert frame == 1 and cycle - 1 - s.trace.corrections_in[0] == 2
    last = s.trace.packets[-1]
    lat = s.trace.corrections_in[0] - last.t_fpga
    assert model.register("LAT_LAST") == model.register("LAT_MAX") == lat
    assert model.register("BUDGET_MISSES") == 1  # lat > 10
    assert model.register("SHOTS_DECODED") == model.register("CORR_ACCEPTED") == 1
    # The same again: the shot is no longer pending.
    _send(model, s, _correction(s))
    assert model.register("CORR_DUPLICATE") == 1 and model.register("LOGICAL_FRAME") == 1


@pytest.mark.parametrize(
    ("fields", "register"),
    [
        ({"seq": 99}, "CORR_BAD_FIELD"),
        ({"stream_id": 5}, "CORR_UNKNOWN_STREAM"),
        ({"shot": 1}, "CORR_UNKNOWN_SHOT"),
        ({"obs": [1, 1]}, "CORR_BAD_LENGTH"),
        ({"status": CorrectionStatus.INCOMPLETE, "obs": [], "frame": [1]}, "CORR_BAD_LENGTH"),
        ({"status": CorrectionStatus.INCOMPLETE, "obs": [], "frame": [1, 0]}, "SHOTS_INCOMPLETE"),
        ({"status": CorrectionStatus.DECODER_ERROR, "obs": []}, "SHOTS_DECODER_ERROR"),
    ],
)
def test_each_rule_counts_under_its_register(fields: dict[str, object], register: str) -> None:
    model, s, _ = _one_shot()
    _send(model, s, _correction(s, **fields))
    assert model.register(register) == 1
    accepted = register.startswith("SHOTS_")
    assert model.register("CORR_ACCEPTED") == int(accepted)
    assert model.register("LOGICAL_FRAME") == 0


def test_corrupt_bytes_are_counted_by_reason() -> None:
    model, s, _ = _one_shot()
    good = _correction(s)
    _send(model, s, good[:-1])  # truncated
    _send(model, s, good[:-1] + bytes([good[-1] ^ 1]))  # bad CRC
    _send(model, s, b"XCOR" + good[4:])  # bad magic
    assert [model.register(n) for n in ("CORR_TRUNCATED", "CORR_BAD_CRC", "CORR_BAD_MAGIC")] == [
        1,
        1,
        1,
    ]
    _send(model, s, good)
    assert model.register("CORR_ACCEPTED") == 1


def test_timeout_end_of_stream_and_clear() -> None:
    model, s, _ = _one_shot(CORR_TIMEOUT=50)
    s.drain = 200
    model.run(s)
    assert model.register("SHOTS_TIMED_OUT") == 1
    assert model.register("STATUS") == 0b0101  # RUNNING, DECODER_UNRESPONSIVE
    s.add_end_of_stream()
    s.drain = 30
    model.run(s)
    eos = s.trace.packets[-1]
    assert eos.flags == 0x80 and eos.n_bits == 0 and eos.seq == 2
    assert model.register("ROUNDS_EMITTED") == 2  # END_OF_STREAM is not a round
    _send(model, s, _correction(s, shot=0, obs=[], flags=0x80))
    assert model.register("STATUS") & 0b10  # DONE
    s.write("CTRL", 0b101)
    s.drain = 8
    model.run(s)
    assert model.register("STATUS") == 1 and model.register("SHOTS_TIMED_OUT") == 0
    assert model.register("ROUNDS_EMITTED") == 0 and model.shot_cnt == 0


def test_paced_mode_drops_and_counts_rounds_lockstep_never_does() -> None:
    circuit = _circuit("x", 5, 4)
    program = DetectorProgram.from_circuit(circuit)
    record = circuit.compile_sampler(seed=9).sample(10)
    ready = [0] * 300 + [1] * 10**5  # m_axis held off for a while
    for ctrl in (0b01, 0b11):
        model = FrontendModel.from_program(program)
        s = _stream(program, record, ctrl=ctrl, ready=lambda k: ready[k], drain=400)
        trace = model.run(s)
        dropped = model.register("ROUNDS_BACKPRESSURE")
        assert dropped + len(trace.packets) == record.shape[0] * program.num_rounds
        assert [p.seq for p in trace.packets] == list(range(len(trace.packets)))  # no gaps
        assert (dropped > 0) == (ctrl == 0b01)
        assert bool(model.register("STATUS") & 0b1000) == (ctrl == 0b01)


def test_round_period_paces_intake() -> None:
    circuit = _circuit("z", 3, 4)
    program = DetectorProgram.from_circuit(circuit)
    record = circuit.compile_sampler(seed=2).sample(3)
    model = FrontendModel.from_program(program)
    trace = model.run(_stream(program, record, ctrl=0b01, period=40))
    starts = np.diff(trace.rounds_in)  # one beat a round at d = 3: start = last beat
    assert len(trace.packets) == record.shape[0] * program.num_rounds
    assert starts.min() >= 40 and np.median(starts) == 40


def test_random_scenario_balances_its_books() -> None:
    """The proof's own scenario, on the model alone: what the counters must satisfy."""
    circuit = _circuit("x", 3, 3)
    program = DetectorProgram.from_circuit(circuit)
    record = circuit.compile_sampler(seed=4).sample(60)
    model = FrontendModel.from_program(program, **D13, pending_log2=3)
    host = ScenarioHost(program, record, seed=4)
    trace = model.run(host)
    tot = model.totals
    assert tot["rounds_in"] == record.shape[0] * program.num_rounds
    assert tot["packets_out"] + tot["dropped"] == tot["rounds_in"]
    assert len(trace.packets) == tot["packets_out"] + 1  # and END_OF_STREAM
    assert host.probe_frame_latency == 2
    assert tot["END_OF_STREAM"] == 1 and tot["clears"] == 1
    assert tot["DECODED"] > 0 and tot["DUPLICATE"] > 0


def test_judge_table_order() -> None:
    ok: dict[str, Any] = {
        "end_of_stream": False,
        "stream_ok": True,
        "started": True,
        "pending": True,
        "status": 0,
        "n_obs_ok": True,
        "seq_ok": True,
        "n_frame_ok": True,
    }
    assert judge(Reason.OK, **ok) == (Verdict.DECODED, Reason.OK)
    assert judge(Reason.BAD_CRC, **ok)[1] == Reason.BAD_CRC
    cases: list[tuple[dict[str, Any], tuple[Verdict, Reason]]] = [
        ({"end_of_stream": True, "stream_ok": False}, (Verdict.END_OF_STREAM, Reason.OK)),
        ({"stream_ok": False, "pending": False}, (Verdict.REJECTED, Reason.UNKNOWN_STREAM)),
        ({"pending": False, "started": False}, (Verdict.REJECTED, Reason.UNKNOWN_SHOT)),
        ({"n_obs_ok": False, "seq_ok": False}, (Verdict.REJECTED, Reason.BAD_LENGTH)),
        ({"seq_ok": False}, (Verdict.REJECTED, Reason.BAD_FIELD)),
        ({"status": 1, "seq_ok": False}, (Verdict.INCOMPLETE, Reason.OK)),
        ({"status": 2, "n_obs_ok": False}, (Verdict.DECODER_ERROR, Reason.OK)),
    ]
    for change, want in cases:
        assert judge(Reason.OK, **{**ok, **change}) == want, change


def test_parameters_are_checked() -> None:
    with pytest.raises(ValueError, match=r"num_obs must be 1\.\.32"):
        FrontendParams(9, 8, 5, 4, num_obs=40)
    program = DetectorProgram.from_circuit(_circuit("z", 3, 1))
    model = FrontendModel.from_program(program)
    with pytest.raises(ValueError, match="does not match the parameters"):
        FrontendModel(model._rom_words, model.layout, FrontendParams(9, 8, 5, 99))
