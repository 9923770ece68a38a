"""cocotb testbench for ``fpga/vivado/qhil_replay_adapter.v``; run by ``vivado_replay_test.py``.

Not a pytest module: the coroutine runs inside the simulator. It streams a
``FrontEnd.replay_buffer`` (plus end-of-stream and header-only transfers) into
the adapter the way the replay DMA does, one transfer per row with ``tlast``
on the row's last beat, under random ``tvalid`` gaps and random downstream
``tready``. Expected output: each transfer minus its header beat, with
``tuser`` = the header's two low bits on every beat. This is how the twin
(``FrontEndTwin.send_round``) reads the same transfers.

Environment: ``QHIL_RTL_SEED`` seeds the stimulus.
"""

from __future__ import annotations

import os
import random
from typing import Any

import cocotb
import stim
from cocotb.clock import Clock
from cocotb.triggers import ReadOnly, RisingEdge

from qhil.fpga import FrontEnd

SEED = int(os.environ.get("QHIL_RTL_SEED", "1"))


def _transfers(rng: random.Random) -> list[list[int]]:
    """Replay rows of two circuits, an end-of-stream transfer and header-only ones."""
    out: list[list[int]] = []
    for d in (3, 11):
        circuit = stim.Circuit.generated(
            "surface_code:rotated_memory_z",
            distance=d,
            rounds=2,
            before_measure_flip_probability=0.3,
        )
        fe = FrontEnd.open(circuit, target="model")
        replay = fe.replay_buffer(circuit.compile_sampler(seed=SEED).sample(3))
        rounds = len(replay.round_nbytes)
        for row in range(replay.rounds):
            n = replay.round_nbytes[row % rounds] // 8
            out.append([int(x) for x in replay.beats[row, :n]])
    out.append([0b10, 0])  # END_OF_STREAM
    out.append([0b01])  # header with tlast: dropped whole
    rng.shuffle(out)
    return out


@cocotb.test()
async def replay_adapter_strips_the_header_into_tuser(dut: Any) -> None:
    rng = random.Random(SEED)
    dut.s_axis_tvalid.value = 0
    dut.s_axis_tdata.value = 0
    dut.s_axis_tlast.value = 0
    dut.m_axis_tready.value = 0
    dut.aresetn.value = 0
    Clock(dut.aclk, 4, unit="ns").start()  # 250 MHz
    for _ in range(3):
        await RisingEdge(dut.aclk)
    dut.aresetn.value = 1
    transfers = _transfers(rng)
    expected = [
        (beat, i == len(t) - 1, t[0] & 3)
        for t in transfers
        if len(t) > 1
        for i, beat in enumerate(t)
        if i > 0
    ]
    seen: list[tuple[int, bool, int]] = []

    async def sink() -> None:
        while True:
            dut.m_axis_tready.value = int(rng.random() < 0.7)
            await ReadOnly()
            if dut.m_axis_tvalid.value and dut.m_axis_tready.value:
                seen.append(
                    (
                        int(dut.m_axis_tdata.value),
                        bool(dut.m_axis_tlast.value),
                        int(dut.m_axis_tuser.value),
                    )
                )
            await RisingEdge(dut.aclk)

    cocotb.start_soon(sink())
    for t in transfers:
        for i, beat in enumerate(t):
            while rng.random() < 0.3:  # the DMA pauses
                dut.s_axis_tvalid.value = 0
                await RisingEdge(dut.aclk)
            dut.s_axis_tvalid.value = 1
            dut.s_axis_tdata.value = beat
            dut.s_axis_tlast.value = int(i == len(t) - 1)
            while True:
                await ReadOnly()
                taken = bool(dut.s_axis_tready.value)
                await RisingEdge(dut.aclk)
                if taken:
                    break
        dut.s_axis_tvalid.value = 0
    for _ in range(20):
        await RisingEdge(dut.aclk)
    assert len(seen) == len(expected), f"{len(seen)} beats out, {len(expected)} expected"
    for k, (got, want) in enumerate(zip(seen, expected, strict=True)):
        assert got == want, f"beat {k}: got (tdata, tlast, tuser) {got}, expected {want}"
