"""qhil.bridge: the wire format and the transports between front end and decoder.

- Wire format v1 (``_wire``): packet layouts, numba encoders and parsers, and
  the ``Reason`` every rejected packet is counted under.
- ``SyndromePacket`` / ``CorrectionPacket``: the same format as frozen records.
- Transports behind one ``PacketSender`` / ``PacketReceiver`` interface: the
  shared-memory SPSC ring (``ShmRing``), ZeroMQ (``ZmqServer`` on the decoder,
  ``ZmqClient`` on the front end: sessions opened by a HELLO control message,
  ``CurveKeys`` for CURVE authentication over tcp://), and the
  ``FaultInjector`` used by the end-to-end tests; ``open_bridge(BridgeSpec(...))``
  opens either side of one by name.
- ``floor_round_trips``: the physical floor of any two-process transport here (a
  compiled ping-pong), which the bridge benchmark reports every transport against.
- Compiled hot loops: ``RingReceiver``/``RingSender.kernel_args()`` with ``ring_pop``,
  ``ring_room`` and ``ring_publish`` use the ring from njit code; ``clock_ns()`` reads
  the monotonic clock there.
- ``njit_cached``: how every qhil CPU kernel is compiled, with numba's cache in
  ``cache_dir()`` (``$QHIL_CACHE_DIR`` or the user cache folder), never in the
  installed package; ``kernel_cache_report()`` says what was compiled or loaded.
"""

from __future__ import annotations

from typing import Any

from qhil.bridge._clock import clock_ns
from qhil.bridge._control import Refusal, layout_fingerprint
from qhil.bridge._curve import CurveKeys, generate_keys
from qhil.bridge._faults import KINDS as FAULT_KINDS
from qhil.bridge._faults import FaultInjector, InjectedFault
from qhil.bridge._floor import FLOOR_METHODS, Floor, floor_round_trips
from qhil.bridge._gc_pause import GcPause
from qhil.bridge._hostile import HOSTILE_KINDS, hostile_messages
from qhil.bridge._jit import (
    KernelCacheReport,
    cache_dir,
    kernel_cache_report,
    njit_cached,
    on_first_compile,
)
from qhil.bridge._open import TRANSPORTS, Bridge, BridgeSpec, open_bridge, warm_up
from qhil.bridge._packets import CorrectionPacket, PacketError, SyndromePacket
from qhil.bridge._ring import RingReceiver, RingSender, ShmRing, closed_ring_args
from qhil.bridge._ring_kernels import pop as ring_pop
from qhil.bridge._ring_kernels import publish as ring_publish
from qhil.bridge._ring_kernels import room as ring_room
from qhil.bridge._sim_testing import run_scenario  # for the GPU-path tests of other parts
from qhil.bridge._transport import PacketReceiver, PacketSender, TransportClosed, packet_buffers
from qhil.bridge._wire import (
    COR_N_FRAME_AT,
    COR_N_OBS_AT,
    COR_OBS_AT,
    COR_RESERVED_AT,
    COR_SEQ_AT,
    COR_SHOT_AT,
    COR_STATUS_AT,
    COR_STREAM_AT,
    COR_T_FPGA_AT,
    COR_T_HOST_RX_AT,
    COR_T_HOST_TX_AT,
    CORRECTION_HEADER_SIZE,
    CORRECTION_MAGIC,
    CRC_SIZE,
    FLAG_END_OF_STREAM,
    FLAG_FIRST_ROUND,
    FLAG_LAST_ROUND,
    FLAGS_AT,
    MAGIC_AT,
    SYN_N_BITS_AT,
    SYN_PAYLOAD_AT,
    SYN_ROUND_AT,
    SYN_SEQ_AT,
    SYN_SHOT_AT,
    SYN_STREAM_AT,
    SYN_T_FPGA_AT,
    SYNDROME_HEADER_SIZE,
    SYNDROME_MAGIC,
    VERSION_AT,
    WIRE_VERSION,
    CorrectionStatus,
    Reason,
    correction_size,
    parse_correction,
    parse_syndrome,
    syndrome_size,
    write_correction,
    write_syndrome,
)
from qhil.bridge._zmq import SessionEnded, ZmqClient, is_loopback
from qhil.bridge._zmq_server import SessionInfo, ZmqServer, check_server_endpoint

__all__ = [
    "CORRECTION_HEADER_SIZE",
    "CORRECTION_MAGIC",
    "COR_N_FRAME_AT",
    "COR_N_OBS_AT",
    "COR_OBS_AT",
    "COR_RESERVED_AT",
    "COR_SEQ_AT",
    "COR_SHOT_AT",
    "COR_STATUS_AT",
    "COR_STREAM_AT",
    "COR_T_FPGA_AT",
    "COR_T_HOST_RX_AT",
    "COR_T_HOST_TX_AT",
    "CRC_SIZE",
    "FAULT_KINDS",
    "FLAGS_AT",
    "FLAG_END_OF_STREAM",
    "FLAG_FIRST_ROUND",
    "FLAG_LAST_ROUND",
    "FLOOR_METHODS",
    "HOSTILE_KINDS",
    "MAGIC_AT",
    "SYNDROME_HEADER_SIZE",
    "SYNDROME_MAGIC",
    "SYN_N_BITS_AT",
    "SYN_PAYLOAD_AT",
    "SYN_ROUND_AT",
    "SYN_SEQ_AT",
    "SYN_SHOT_AT",
    "SYN_STREAM_AT",
    "SYN_T_FPGA_AT",
    "TRANSPORTS",
    "VERSION_AT",
    "WIRE_VERSION",
    "Bridge",
    "BridgeSpec",
    "CorrectionPacket",
    "CorrectionStatus",
    "CurveKeys",
    "FaultInjector",
    "Floor",
    "GcPause",
    "InjectedFault",
    "KernelCacheReport",
    "PacketError",
    "PacketReceiver",
    "PacketSender",
    "Reason",
    "Refusal",
    "RingReceiver",
    "RingSender",
    "SessionEnded",
    "SessionInfo",
    "ShmRing",
    "SyndromePacket",
    "TransportClosed",
    "ZmqClient",
    "ZmqServer",
    "cache_dir",
    "check_server_endpoint",
    "clock_ns",
    "closed_ring_args",
    "correction_size",
    "floor_round_trips",
    "generate_keys",
    "hostile_messages",
    "is_loopback",
    "kernel_cache_report",
    "layout_fingerprint",
    "njit_cached",
    "on_first_compile",
    "open_bridge",
    "packet_buffers",
    "parse_correction",
    "parse_syndrome",
    "ring_pop",
    "ring_publish",
    "ring_room",
    "run_scenario",
    "syndrome_size",
    "warm_up",
    "write_correction",
    "write_syndrome",
]

# The host side of the GPU path: the mapped slot ring the persistent kernels poll
# (qhil.kernels.persistent), its layout (slot header words H_*, control words W_*,
# kernel states STATE_*), its compiled producer and consumer (for njit callers) and
# the sender that writes wire-v1 packets into it. Imported on first use, so that
# importing qhil.bridge does not load numba.cuda.
_GPU_RING_NAMES = (
    "CONTROL_WORDS", "COUNTER_WORDS", "HEADER_WORDS", "HEARTBEAT_EVERY",
    "H_CORRECTIONS", "H_LENGTH", "H_ROUNDS", "H_SEQ", "H_SHOT", "H_STATUS", "H_STREAM", "H_T_FPGA",
    "STATE_EXITED", "STATE_IDLE", "STATE_RUNNING",
    "W_COUNTERS", "W_HEARTBEAT", "W_IN_DONE", "W_OUT_DONE", "W_SHUTDOWN", "W_STALL", "W_STATE",
    "MappedRingSpec", "MappedSlotRing", "consume_results", "produce_window", "simulator_enabled",
)  # fmt: skip
_GPU_SENDER_NAMES = ("GpuPacketSender", "SyndromeRounds")
__all__ += [*_GPU_RING_NAMES, *_GPU_SENDER_NAMES]


def __getattr__(name: str) -> Any:
    if name in _GPU_RING_NAMES:
        from qhil.bridge import _gpu_ring

        return getattr(_gpu_ring, name)
    if name in _GPU_SENDER_NAMES:
        from qhil.bridge import _gpu_sender

        return getattr(_gpu_sender, name)
    raise AttributeError(f"module 'qhil.bridge' has no attribute {name!r}")
