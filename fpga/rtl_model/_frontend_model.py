"""Cycle-accurate model of ``rtl/qhil_frontend.v``: the same ports, the same flip-flops.

``FrontendModel`` is the RTL front end in Python at the level of its ports and
registers: ``outputs()`` gives every output port after the last rising edge, and
``step(inputs)`` is one rising edge with the given input port values. It shares
the correction rules and counters with the wall-clock ``CycleModel``
(``_correction_rules``) and reads the same detector ROM words, so for equal inputs
it produces the RTL's outputs bit for bit, cycle for cycle; the cocotb test
``rtl_frontend_test.py`` checks that on every cycle. ``run`` plays a timed
``Stimulus`` and returns the packets, frame updates, register reads and latencies.
The registers are ``FrontendState``'s (``_frontend_state``); ``step`` runs the
measurement path (``_frontend_datapath``) and the correction side (``_frontend_table``).

Cycle numbering: cycle ``k`` is the clock period before rising edge ``k`` (edge 0
is the first edge after reset). Inputs given to ``step`` in cycle ``k`` are
sampled by edge ``k``; the cycle counter (``CYCLE``, ``t_fpga``) reads ``k`` during
cycle ``k``. Registers the RTL does not reset start at 0 here; no output depends
on their value before their first load.

>>> import stim
>>> c = stim.Circuit.generated("surface_code:rotated_memory_z", distance=3, rounds=2)
>>> model = FrontendModel.from_circuit(c)
>>> model.params.max_meas, model.params.max_dets, model.outputs().s_axis_meas_tready
(9, 8, 0)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import stim

from qhil.fpga._detection import DetectorProgram
from qhil.fpga.rtl_model._detprog_rom import RomLayout, encode_rom
from qhil.fpga.rtl_model._frontend_datapath import (
    clock_input_stage,
    clock_queue,
    input_stage,
    queue_stage,
    step_submodules,
)
from qhil.fpga.rtl_model._frontend_ports import FrontendInputs, FrontendOutputs, FrontendParams
from qhil.fpga.rtl_model._frontend_state import FrontendState, Settings
from qhil.fpga.rtl_model._frontend_table import (
    clock_counters,
    clock_table_storage,
    judge_first_stage,
    table_ops,
)

if TYPE_CHECKING:
    from qhil.fpga.rtl_model._frontend_stimulus import FrontendTrace, Stimulus

__all__ = ["FrontendModel"]

_M32 = (1 << 32) - 1


class FrontendModel(FrontendState):
    """Port-level, cycle-accurate twin of the ``qhil_frontend`` RTL.

    Build it with ``from_program`` / ``from_circuit`` (the ROM written from the
    same program by ``write_rom`` with the same sizes is what the RTL must load).
    """

    def __init__(self, rom_words: Sequence[int], layout: RomLayout, params: FrontendParams) -> None:
        if (layout.max_meas, layout.max_dets, layout.max_terms, layout.rounds_max) != (
            params.max_meas,
            params.max_dets,
            params.max_terms,
            params.rounds_max,
        ):
            raise ValueError(
                f"ROM layout {layout.parameters} does not match the parameters {params.verilog}; "
                "encode the ROM with the same max_* sizes"
            )
        super().__init__(rom_words, layout, params)

    @classmethod
    def from_program(
        cls,
        program: DetectorProgram,
        *,
        max_meas: int | None = None,
        max_dets: int | None = None,
        max_terms: int | None = None,
        rounds_max: int | None = None,
        num_obs: int = 1,
        pending_log2: int = 6,
    ) -> FrontendModel:
        """The model of an RTL built with these sizes (each defaults to what ``program`` needs)."""
        words, lay = encode_rom(
            program,
            max_meas=max_meas,
            max_dets=max_dets,
            max_terms=max_terms,
            rounds_max=rounds_max,
        )
        params = FrontendParams(
            lay.max_meas, lay.max_dets, lay.max_terms, lay.rounds_max, num_obs, pending_log2
        )
        return cls(words, lay, params)

    @classmethod
    def from_circuit(cls, circuit: stim.Circuit, **sizes: int) -> FrontendModel:
        """``from_program`` for a circuit's ``DetectorProgram``; ``num_obs`` from the circuit."""
        sizes.setdefault("num_obs", max(1, circuit.num_observables))
        return cls.from_program(DetectorProgram.from_circuit(circuit), **sizes)

    # -- ports ------------------------------------------------------------------------------

    def outputs(self) -> FrontendOutputs:
        pk, regs = self.pk, self.regs
        return FrontendOutputs(
            s_axis_meas_tready=self.meas_tready(),
            m_axis_syn_tdata=pk.out_data,
            m_axis_syn_tkeep=pk.out_keep,
            m_axis_syn_tvalid=pk.out_valid,
            m_axis_syn_tlast=pk.out_last,
            s_axis_cor_tready=1,
            logical_frame=self.counters.frame & _M32,
            frame_update=self.frame_update,
            s_axi_awready=1 - regs.aw_full,
            s_axi_wready=1 - regs.w_full,
            s_axi_bresp=regs.bresp,
            s_axi_bvalid=regs.bvalid,
            s_axi_arready=1 - regs.rvalid,
            s_axi_rdata=regs.rdata,
            s_axi_rresp=regs.rresp,
            s_axi_rvalid=regs.rvalid,
        )

    # -- one rising edge ----------------------------------------------------------------------

    def step(self, i: FrontendInputs) -> None:
        """One rising edge: every register takes its next value from the values before it.

        The cycle's combinational logic is worked out first, from the state before the
        edge; then the sub-modules and this module's register blocks take the edge.
        """
        if not i.aresetn:
            self.reset()
            return
        rw = self.regs.rw
        # Sampled now: the register file's own edge below may rewrite them.
        cfg = Settings(self.regs.clear_counters, rw["STREAM_ID"], rw["BUDGET"], rw["CORR_TIMEOUT"])
        cyc = self.cyc
        inp = input_stage(self, i)
        q = queue_stage(self, i.m_axis_syn_tready)
        tab = table_ops(self, q)
        j_next = judge_first_stage(self, cfg.stream_id, tab)
        # The detection unit's outputs this cycle, which the queue loads on this edge.
        dets, n_dets = self.det.dets, self.det.n_dets
        step_submodules(self, i, inp, q)
        clock_input_stage(self, i, inp, q.q_eos, cfg.clear)
        clock_queue(self, q, cfg.stream_id, dets, n_dets)
        clock_table_storage(self, q, tab, cfg.corr_timeout)
        clock_counters(self, inp, q, tab, cfg, cyc)
        self.j = j_next

    # -- stimulus ---------------------------------------------------------------------------

    def run(self, stimulus: Stimulus, *, max_cycles: int = 10_000_000) -> FrontendTrace:
        """Play ``stimulus`` from the current state until it is done; what came out.

        Raises RuntimeError if the stimulus is not done after ``max_cycles``.
        """
        for _ in range(max_cycles):
            if stimulus.done():
                return stimulus.trace
            out = self.outputs()
            self.step(stimulus.drive(out))
        raise RuntimeError(
            f"stimulus not done after {max_cycles} cycles: {stimulus.progress()}; "
            "raise max_cycles or check that the front end is enabled"
        )
