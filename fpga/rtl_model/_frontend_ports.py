"""The ports and parameters of ``rtl/qhil_frontend.v``, as its Python model sees them.

``FrontendInputs`` / ``FrontendOutputs`` hold one cycle's port values (ints, bit i
of the int is bit i of the port); ``pack`` / ``unpack`` give the one-vector form a
testbench wrapper uses, in ``INPUT_PORTS`` / ``OUTPUT_PORTS`` order, first port
at bit 0. ``FrontendParams`` are the RTL's parameters.

>>> FrontendInputs(aresetn=0, s_axis_meas_tvalid=1).pack() == 1 << 65  # after tdata[63:0]
True
>>> sum(w for _, w in OUTPUT_PORTS)
150
"""

from __future__ import annotations

import dataclasses

__all__ = ["INPUT_PORTS", "OUTPUT_PORTS", "FrontendInputs", "FrontendOutputs", "FrontendParams"]

_M64 = (1 << 64) - 1
_M32 = (1 << 32) - 1

# Port name -> width, in the order a testbench packs them (first port at bit 0).
INPUT_PORTS: tuple[tuple[str, int], ...] = (
    ("aresetn", 1),
    ("s_axis_meas_tdata", 64),
    ("s_axis_meas_tvalid", 1),
    ("s_axis_meas_tlast", 1),
    ("s_axis_meas_tuser", 2),
    ("m_axis_syn_tready", 1),
    ("s_axis_cor_tdata", 8),
    ("s_axis_cor_tvalid", 1),
    ("s_axis_cor_tlast", 1),
    ("s_axi_awaddr", 12),
    ("s_axi_awprot", 3),
    ("s_axi_awvalid", 1),
    ("s_axi_wdata", 32),
    ("s_axi_wstrb", 4),
    ("s_axi_wvalid", 1),
    ("s_axi_bready", 1),
    ("s_axi_araddr", 12),
    ("s_axi_arprot", 3),
    ("s_axi_arvalid", 1),
    ("s_axi_rready", 1),
)
OUTPUT_PORTS: tuple[tuple[str, int], ...] = (
    ("s_axis_meas_tready", 1),
    ("m_axis_syn_tdata", 64),
    ("m_axis_syn_tkeep", 8),
    ("m_axis_syn_tvalid", 1),
    ("m_axis_syn_tlast", 1),
    ("s_axis_cor_tready", 1),
    ("logical_frame", 32),
    ("frame_update", 1),
    ("s_axi_awready", 1),
    ("s_axi_wready", 1),
    ("s_axi_bresp", 2),
    ("s_axi_bvalid", 1),
    ("s_axi_arready", 1),
    ("s_axi_rdata", 32),
    ("s_axi_rresp", 2),
    ("s_axi_rvalid", 1),
)


@dataclasses.dataclass(slots=True)
class FrontendInputs:
    """The input ports' values in one cycle (all 0 but ``aresetn`` by default)."""

    aresetn: int = 1
    s_axis_meas_tdata: int = 0
    s_axis_meas_tvalid: int = 0
    s_axis_meas_tlast: int = 0
    s_axis_meas_tuser: int = 0
    m_axis_syn_tready: int = 0
    s_axis_cor_tdata: int = 0
    s_axis_cor_tvalid: int = 0
    s_axis_cor_tlast: int = 0
    s_axi_awaddr: int = 0
    s_axi_awprot: int = 0
    s_axi_awvalid: int = 0
    s_axi_wdata: int = 0
    s_axi_wstrb: int = 0
    s_axi_wvalid: int = 0
    s_axi_bready: int = 0
    s_axi_araddr: int = 0
    s_axi_arprot: int = 0
    s_axi_arvalid: int = 0
    s_axi_rready: int = 0

    def pack(self) -> int:
        """All inputs as one int, ``INPUT_PORTS`` order, first port at bit 0."""
        return _pack(self, INPUT_PORTS)


@dataclasses.dataclass(slots=True, frozen=True)
class FrontendOutputs:
    """The output ports' values in one cycle (they change only on rising edges)."""

    s_axis_meas_tready: int
    m_axis_syn_tdata: int
    m_axis_syn_tkeep: int
    m_axis_syn_tvalid: int
    m_axis_syn_tlast: int
    s_axis_cor_tready: int
    logical_frame: int
    frame_update: int
    s_axi_awready: int
    s_axi_wready: int
    s_axi_bresp: int
    s_axi_bvalid: int
    s_axi_arready: int
    s_axi_rdata: int
    s_axi_rresp: int
    s_axi_rvalid: int

    def pack(self) -> int:
        """All outputs as one int, ``OUTPUT_PORTS`` order, first port at bit 0."""
        return _pack(self, OUTPUT_PORTS)

    @classmethod
    def unpack(cls, value: int) -> FrontendOutputs:
        fields = {}
        for name, width in OUTPUT_PORTS:
            fields[name] = value & ((1 << width) - 1)
            value >>= width
        return cls(**fields)


def _layout(ports: tuple[tuple[str, int], ...]) -> tuple[tuple[str, int, int], ...]:
    out, shift = [], 0
    for name, width in ports:
        out.append((name, (1 << width) - 1, shift))
        shift += width
    return tuple(out)


_LAYOUTS = {id(INPUT_PORTS): _layout(INPUT_PORTS), id(OUTPUT_PORTS): _layout(OUTPUT_PORTS)}


def _pack(obj: object, ports: tuple[tuple[str, int], ...]) -> int:
    value = 0
    for name, mask, shift in _LAYOUTS[id(ports)]:
        value |= (getattr(obj, name) & mask) << shift
    return value


@dataclasses.dataclass(frozen=True)
class FrontendParams:
    """The RTL's parameters (``qhil_frontend #(...)``), as a build passes them."""

    max_meas: int
    max_dets: int
    max_terms: int
    rounds_max: int
    num_obs: int = 1
    pending_log2: int = 6

    def __post_init__(self) -> None:
        if not 1 <= self.num_obs <= 32:
            raise ValueError(f"num_obs must be 1..32 (the frame is 32 bits); got {self.num_obs}")
        if not 1 <= self.pending_log2 <= 16:
            raise ValueError(f"pending_log2 must be 1..16; got {self.pending_log2}")

    @property
    def verilog(self) -> dict[str, int]:
        """Parameter overrides for a simulator or synthesis build (ROM_FILE aside)."""
        return {
            "MAX_MEAS": self.max_meas,
            "MAX_DETS": self.max_dets,
            "MAX_TERMS": self.max_terms,
            "ROUNDS_MAX": self.rounds_max,
            "NUM_OBS": self.num_obs,
            "PENDING_LOG2": self.pending_log2,
        }
