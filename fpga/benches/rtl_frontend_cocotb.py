"""cocotb testbench: ``qhil_frontend`` RTL against ``FrontendModel``, every port, every cycle.

Not a pytest module: run by ``rtl_frontend_test.py`` in Icarus, on the wrapper
``qhil_frontend_tb`` (which packs the front end's ports into ``tb_in`` / ``tb_out``
in ``INPUT_PORTS`` / ``OUTPUT_PORTS`` order, so one cycle costs one write and one
read). One ``ScenarioHost`` drives both the RTL and the model with the same inputs;
at every falling edge the RTL's outputs must equal the model's. The first difference
fails the test, naming the cycle, the port and, for packet data, the round and field.

Environment (set by the pytest side): ``QHIL_FE_CIRCUIT`` (stim generated-circuit
name), ``QHIL_FE_DISTANCE``, ``QHIL_FE_ROUNDS``, ``QHIL_FE_SHOTS``, ``QHIL_FE_SEED``,
``QHIL_FE_PARAMS`` (the build's parameters, JSON). The testbench writes what it
measured to ``frontend_result.json`` in its working directory.
"""

from __future__ import annotations

import json
import os
from typing import Any

import cocotb
import stim
from cocotb.clock import Clock
from cocotb.triggers import FallingEdge

from qhil.fpga._detection import DetectorProgram
from qhil.fpga._regmap import REGISTERS
from qhil.fpga.rtl_model import (
    OUTPUT_PORTS,
    FrontendInputs,
    FrontendModel,
    FrontendOutputs,
    ScenarioHost,
    header_field,
)

NOISE = 0.01
_NAMES = {r.offset: r.name for r in REGISTERS}


def build_circuit(name: str, distance: int, rounds: int) -> stim.Circuit:
    """The noisy memory circuit both sides use (the pytest side writes its ROM)."""
    return stim.Circuit.generated(
        name,
        distance=distance,
        rounds=rounds,
        after_clifford_depolarization=NOISE,
        before_measure_flip_probability=NOISE,
        after_reset_flip_probability=NOISE,
        before_round_data_depolarization=NOISE,
    )


def describe(cycle: int, got: FrontendOutputs, want: FrontendOutputs, model: FrontendModel) -> str:
    """The first differing port of a cycle, with the round / correction / register it concerns."""
    lines = [f"cycle {cycle}: RTL and model outputs differ"]
    for name, _ in OUTPUT_PORTS:
        g, w = getattr(got, name), getattr(want, name)
        if g != w:
            lines.append(f"  port {name}: RTL {g:#x}, model {w:#x}")
    pk = model.pk
    if (
        got.m_axis_syn_tdata != want.m_axis_syn_tdata
        or got.m_axis_syn_tkeep != want.m_axis_syn_tkeep
    ):
        beat = pk.oidx - 1
        diff = got.m_axis_syn_tdata ^ want.m_axis_syn_tdata
        byte = ((diff & -diff).bit_length() - 1) // 8 if diff else 0
        words = b"".join(w.to_bytes(8, "little") for w in pk.words)
        n_bits = int.from_bytes(words[6:8], "little")
        lines.append(
            f"  in the model's packet shot {int.from_bytes(words[16:24], 'little')} round "
            f"{int.from_bytes(words[12:16], 'little')} seq {int.from_bytes(words[24:32], 'little')}"
            f": beat {beat}, first differing byte {8 * beat + byte} "
            f"({header_field(8 * beat + byte, n_bits)})"
        )
    lines.append(f"  model's last correction ruling: {model.last_ruling}")
    if got.s_axi_rdata != want.s_axi_rdata or got.s_axi_rresp != want.s_axi_rresp:
        addr = model.regs.last_araddr
        lines.append(f"  read of {addr:#x} ({_NAMES.get(addr, 'unmapped')})")
    if got.s_axis_meas_tready != want.s_axis_meas_tready:
        lines.append(
            f"  model: CTRL {model.regs.rw['CTRL']:#x}, queue "
            f"{'full' if model.buf is not None else 'empty'}, shot {model.shot_cnt} round "
            f"{model.round_cnt}, pending slots {sum(model.tab_valid)}"
        )
    return "\n".join(lines)


@cocotb.test()
async def frontend_matches_model(dut: Any) -> None:
    """One scenario: every output port of the RTL equals the model's, on every cycle."""
    name = os.environ["QHIL_FE_CIRCUIT"]
    distance = int(os.environ["QHIL_FE_DISTANCE"])
    rounds = int(os.environ["QHIL_FE_ROUNDS"])
    shots = int(os.environ["QHIL_FE_SHOTS"])
    seed = int(os.environ["QHIL_FE_SEED"])
    params = json.loads(os.environ["QHIL_FE_PARAMS"])
    label = f"{name} d={distance} rounds={rounds} seed={seed}"

    circuit = build_circuit(name, distance, rounds)
    program = DetectorProgram.from_circuit(circuit)
    model = FrontendModel.from_program(
        program,
        max_meas=params["MAX_MEAS"],
        max_dets=params["MAX_DETS"],
        max_terms=params["MAX_TERMS"],
        rounds_max=params["ROUNDS_MAX"],
        num_obs=params["NUM_OBS"],
        pending_log2=params["PENDING_LOG2"],
    )
    record = circuit.compile_sampler(seed=seed).sample(shots)
    host = ScenarioHost(program, record, seed=seed)

    Clock(dut.aclk, 4, unit="ns").start()  # 250 MHz
    dut.tb_in.value = FrontendInputs(aresetn=0).pack()
    for _ in range(4):
        await FallingEdge(dut.aclk)
    cycle = 0
    limit = 200 * host.rounds_planned + 20_000
    while not host.done():
        assert cycle < limit, f"{label}: stalled; {host.progress()}"
        want = model.outputs()
        raw = dut.tb_out.value
        try:
            got_int = int(raw)
        except ValueError:
            raise AssertionError(f"{label}: cycle {cycle}: X or Z on an output: {raw}") from None
        if got_int != want.pack():
            got = FrontendOutputs.unpack(got_int)
            raise AssertionError(f"{label}\n" + describe(cycle, got, want, model))
        inputs = host.drive(want)
        dut.tb_in.value = inputs.pack()
        model.step(inputs)
        await FallingEdge(dut.aclk)
        cycle += 1

    trace = host.trace
    totals = dict(model.totals)
    result = {
        "label": label,
        "cycles": cycle,
        "rounds_in": totals.get("rounds_in", 0),
        "packets": len(trace.packets),
        "corrections": len(trace.corrections_in),
        "reads": len(trace.reads),
        "writes": len(trace.writes),
        "probe_packets": host.probe_packets,
        "probe_frame_latency": host.probe_frame_latency,
        "min_packet_latency": min((c for _, c in trace.packet_latencies()), default=None),
        "kinds": host.kinds,
        "totals": totals,
    }
    dut._log.info("%s", json.dumps(result))
    with open("frontend_result.json", "w", encoding="ascii") as f:
        json.dump(result, f)
