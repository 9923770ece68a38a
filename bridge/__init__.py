"""qhil.bridge: the wire format and the transports between front end and decoder.

- Wire format v1 (``_wire``): packet layouts, numba encoders and parsers, and
  the ``Reason`` every rejected packet is counted under.
- ``SyndromePacket`` / ``CorrectionPacket``: the same format as frozen records.
- Transports behind one ``PacketSender`` / ``PacketReceiver`` interface: the
  shared-memory SPSC ring (``ShmRing``), ZeroMQ (``ZmqLink``), and the
  ``FaultInjector`` used by the end-to-end tests.
"""

from __future__ import annotations

from qhil.bridge._packets import CorrectionPacket, PacketError, SyndromePacket
from qhil.bridge._ring import ShmRing
from qhil.bridge._transport import PacketReceiver, PacketSender, TransportClosed, packet_buffers
from qhil.bridge._wire import (
    CORRECTION_HEADER_SIZE,
    CRC_SIZE,
    FLAG_END_OF_STREAM,
    FLAG_FIRST_ROUND,
    FLAG_LAST_ROUND,
    SYNDROME_HEADER_SIZE,
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

__all__ = [
    "CORRECTION_HEADER_SIZE",
    "CRC_SIZE",
    "FLAG_END_OF_STREAM",
    "FLAG_FIRST_ROUND",
    "FLAG_LAST_ROUND",
    "SYNDROME_HEADER_SIZE",
    "WIRE_VERSION",
    "CorrectionPacket",
    "CorrectionStatus",
    "PacketError",
    "PacketReceiver",
    "PacketSender",
    "Reason",
    "ShmRing",
    "SyndromePacket",
    "TransportClosed",
    "correction_size",
    "packet_buffers",
    "parse_correction",
    "parse_syndrome",
    "syndrome_size",
    "write_correction",
    "write_syndrome",
]
