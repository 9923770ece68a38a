"""CRC-32 (IEEE 802.3, the zlib polynomial) in numba, for packets built in place.

``zlib.crc32`` is faster from Python, but the packet encoders and the batch
parsers run inside numba-compiled loops where a call back into Python would
cost more than the checksum itself. The table-driven form below is the same
function as ``zlib.crc32``: reflected polynomial 0xEDB88320, initial value
0xFFFFFFFF, final XOR 0xFFFFFFFF.

>>> import zlib
>>> import numpy as np
>>> data = np.frombuffer(b"123456789", dtype=np.uint8)
>>> hex(crc32(data, 9))
'0xcbf43926'
>>> crc32(data, 9) == zlib.crc32(b"123456789")
True
"""

from __future__ import annotations

import numpy as np

from qhil.bridge._jit import njit_cached

__all__ = ["crc32"]


def _make_table() -> np.ndarray:
    table = np.zeros(256, dtype=np.uint32)
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0xEDB88320 if c & 1 else c >> 1
        table[i] = c
    return table


_TABLE = _make_table()


@njit_cached(nogil=True)
def _crc32(data: np.ndarray, n: int, table: np.ndarray) -> np.uint32:
    c = np.uint32(0xFFFFFFFF)
    for i in range(n):
        c = table[(c ^ data[i]) & 0xFF] ^ (c >> np.uint32(8))
    return c ^ np.uint32(0xFFFFFFFF)


@njit_cached(nogil=True)
def crc32(data: np.ndarray, n: int) -> np.uint32:
    """CRC-32 of ``data[:n]``.

    Args:
        data: uint8[>= n], any contiguity.
        n: number of leading bytes to checksum.

    Returns:
        The checksum as an unsigned 32-bit integer, equal to ``zlib.crc32``.
    """
    return _crc32(data, n, _TABLE)
