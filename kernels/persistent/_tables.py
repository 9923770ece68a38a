"""The streaming persistent kernel's tables: one (geometry, model) pair, flattened.

The kernel (``qhil.kernels.persistent._kernel``) takes one time slice (one
round's packet) at a time, so every table here is laid out to be read slice by
slice. :func:`build_tables` builds them once, on the host, from the very
functions the CPU path uses (``PreDecoderGeometry.footprint``, the model's
integer weights), so the kernel reproduces ``PreDecoder.predecode`` bit for bit.

Streaming schedule
------------------
Layer ``l`` has a cubic kernel of size ``k_l`` and time padding ``p_l = k_l // 2``;
its *lag* is ``P_l = p_0 + ... + p_l``. Output slice ``t`` of layer ``l`` needs
slices ``t - p_l .. t + p_l`` of its input, so once input slice ``s`` has arrived
layer ``l`` can produce slice ``s - P_l`` and no later one. The kernel runs
*steps*: step ``s`` computes, for each layer in order, slice ``s - P_l`` when it
lies in ``0..T-1``. Step ``s`` runs when round ``s``'s packet arrives; the last
round's packet (``s = T - 1``) also runs steps ``T .. T - 1 + P_(L-1)``, where
slices ``>= T`` of every layer's input read as zero: exactly the reference's
zero padding at the time boundary. Each layer's input is kept in a ring of
``2 p_l + 1`` slices, enough for one step's reads (the newest slice is the one
written this step, the oldest the one read last).

>>> import stim
>>> from qhil.kernels._geometry import PreDecoderGeometry
>>> from qhil.kernels._model import QuantizedModel
>>> c = stim.Circuit.generated("surface_code:rotated_memory_z", distance=3, rounds=2)
>>> t = build_tables(PreDecoderGeometry.from_circuit(c),
...                  QuantizedModel.random(widths=(4, 8, 4), kernel=3, seed=1))
>>> t.layers[:, L_LAG].tolist(), t.layers[:, L_RING].tolist(), t.max_packet
([1, 2], [3, 3], 45)
>>> import zlib
>>> msg = np.frombuffer(b"123456789", dtype=np.uint8)
>>> crc = t.crc_zero[9] ^ np.bitwise_xor.reduce(t.crc_tab[8 - np.arange(9), msg])
>>> int(crc) == zlib.crc32(b"123456789")
True
"""

from __future__ import annotations

import dataclasses
import zlib

import numpy as np

from qhil.bridge import syndrome_size
from qhil.kernels._geometry import PreDecoderGeometry
from qhil.kernels._model import QuantizedModel

__all__ = ["MAX_OBS", "MAX_PACKET", "StreamTables", "build_tables", "crc_tables"]

MAX_PACKET = 1024  # bytes of one packet the kernel stages in shared memory (d <= 89)
MAX_OBS = 8  # logical observables the kernel accumulates in shared memory

# dims: int64[D_LEN] scalar parameters.
D_T, D_D, D_ACT_BITS, D_WEIGHT_BITS, D_CUT, D_LAYERS, D_STREAM, D_MAX_LAG, D_LEN = range(9)
# layers: int64[n_layers, L_LEN] per-layer shape, offsets and schedule.
L_CIN, L_COUT, L_K, L_WOFF, L_BOFF, L_AOFF, L_RING, L_LAG, L_LEN = range(9)


def crc_tables(max_len: int) -> tuple[np.ndarray, np.ndarray]:
    """Position tables for a parallel CRC-32 (zlib's) of messages up to ``max_len`` bytes.

    CRC-32 is affine in the message for a fixed length ``n``:
    ``crc32(m) = zero[n] XOR (XOR over i of tab[n - 1 - i, m[i]])``, so every
    byte's term can be looked up independently (one thread each) and the terms
    XOR-reduced in any order.

    Returns:
        tab: uint32[max_len, 256], C-contiguous; ``tab[j, b]`` is the raw CRC
            register (initial value 0, no final XOR) after byte ``b`` followed by
            ``j`` zero bytes.
        zero: uint32[max_len + 1], C-contiguous; ``zero[n] = zlib.crc32(bytes(n))``.
    """
    if max_len < 1:
        raise ValueError(f"max_len must be >= 1; got {max_len}")
    byte = np.zeros(256, dtype=np.uint32)
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0xEDB88320 if c & 1 else c >> 1
        byte[i] = c
    tab = np.empty((max_len, 256), dtype=np.uint32)
    reg = byte.copy()  # one byte b into a zero register: byte[b]
    for j in range(max_len):
        tab[j] = reg
        reg = byte[reg & 0xFF] ^ (reg >> np.uint32(8))  # one more zero byte
    zero = np.array([zlib.crc32(bytes(n)) for n in range(max_len + 1)], dtype=np.uint32)
    return tab, zero


@dataclasses.dataclass(frozen=True, eq=False)
class StreamTables:
    """Everything the streaming kernel needs about one (geometry, model) pair.

    All arrays are C-contiguous. ``plane = d * d``; a flat *output index* is
    ``(channel * T + t) * plane + cell`` into ``[4, T, d, d]``.

    Attributes:
        dims: int64[D_LEN] = (T, d, act_bits, weight_bits, cut, n_layers,
            stream_id, max_lag = P_(L-1)).
        layers: int64[n_layers, L_LEN] = (c_in, c_out, k, offset into wflat,
            offset into bflat, offset of the layer's input ring in the
            activation buffer, ring slices 2 p + 1, lag P_l).
        wflat: int64[sum of weight sizes], each layer's [c_out, c_in, k, k, k] in C order.
        bflat: int64[sum of c_out], the biases.
        round_off: int64[T + 1]; round ``t``'s detectors are ``round_off[t]:round_off[t + 1]``.
        n_bits: int64[T], detection events per round (its packet's ``n_bits``).
        det_kc: int64[n_det], ``kind * plane + cell`` of detector ``i``'s input cell
            (kind 0 = X, 1 = Z: the input channel).
        mask_act: int64[4 * T * plane], the input with no events, times 2**act_bits
            (channels 2 and 3: the X / Z present masks), by flat output index.
        out_valid: uint8[4 * T * plane], ``geometry.output_mask`` flattened.
        det_ptr: int64[n_det + 1], det_src: int64[nnz]: CSR, detector ``i`` is flipped
            by the outputs ``det_src[det_ptr[i]:det_ptr[i + 1]]`` (flat output
            indices, all in slices ``t - 1`` and ``t`` for a detector of slice ``t``).
        obs_ptr: int64[n_obs * T + 1], obs_src: int64[nnz]: CSR, row ``o * T + t`` lists
            the outputs of slice ``t`` that flip observable ``o``.
        crc_tab: uint32[max_packet, 256], crc_zero: uint32[max_packet + 1]: see
            :func:`crc_tables`.
        act_len: int64 entries of the activation buffer (every layer's input ring).
        max_packet: bytes of this layout's largest syndrome packet.
    """

    dims: np.ndarray
    layers: np.ndarray
    wflat: np.ndarray
    bflat: np.ndarray
    round_off: np.ndarray
    n_bits: np.ndarray
    det_kc: np.ndarray
    mask_act: np.ndarray
    out_valid: np.ndarray
    det_ptr: np.ndarray
    det_src: np.ndarray
    obs_ptr: np.ndarray
    obs_src: np.ndarray
    crc_tab: np.ndarray
    crc_zero: np.ndarray
    act_len: int
    max_packet: int

    @property
    def rounds(self) -> int:
        """T: packets (time slices) per shot, the final data-measurement round included."""
        return int(self.dims[D_T])

    @property
    def num_detectors(self) -> int:
        return int(self.det_kc.shape[0])

    @property
    def num_observables(self) -> int:
        return int((self.obs_ptr.shape[0] - 1) // self.rounds)

    def device_args(self) -> tuple[np.ndarray, ...]:
        """Kernel arguments, in the kernel's order (after the ring's)."""
        return (
            self.dims, self.layers, self.wflat, self.bflat, self.round_off, self.n_bits,
            self.det_kc, self.mask_act, self.out_valid, self.det_ptr, self.det_src,
            self.obs_ptr, self.obs_src, self.crc_tab, self.crc_zero,
        )  # fmt: skip


def _csr(rows: np.ndarray, cols: np.ndarray, n_rows: int) -> tuple[np.ndarray, np.ndarray]:
    """CSR of (row, col) pairs: (int64[n_rows + 1] pointers, int64[nnz] columns, ascending)."""
    order = np.lexsort((cols, rows))
    ptr = np.zeros(n_rows + 1, dtype=np.int64)
    np.cumsum(np.bincount(rows, minlength=n_rows), out=ptr[1:])
    return ptr, np.ascontiguousarray(cols[order], dtype=np.int64)


def _footprint_pairs(geometry: PreDecoderGeometry) -> tuple[np.ndarray, np.ndarray]:
    """(flat output index, detector) pairs: the detectors each unit output flips.

    The rule of ``PreDecoderGeometry.footprint`` (see its module docs), taken pair
    by pair instead of one dense matrix per output (d=13 and T=105 would need 71,000
    footprint calls): a data flip at slice t flips that slice's detectors of the
    stabilizers of the other type acting on the qubit; a measurement flip at slice
    t flips its stabilizer's detectors at t and t + 1. Only outputs in
    ``output_mask`` act; pairs that occur twice cancel (mod 2). ``persistent_test``
    checks the result against ``footprint`` on every unit output.
    """
    t_n, d, _ = geometry.shape
    plane = d * d
    det_index = geometry.det_index.reshape(2, t_n, plane)
    mask = geometry.output_mask.reshape(4, t_n, plane)
    h = geometry.layout.parity_check
    ts = np.arange(t_n)[:, None]
    outs, dets = [], []
    for kind, ch in ((0, 0), (1, 1)):  # a Z flip (channel 0) is seen by X stabilizers, ...
        stab, data = np.nonzero(h[kind])
        det = det_index[kind][ts, stab[None]]
        keep = (det >= 0) & mask[ch][ts, data[None]]
        outs.append(((ch * t_n + ts) * plane + data[None])[keep])
        dets.append(det[keep])
    cells = np.arange(plane)[None]
    for ch in (2, 3):  # measurement flips of the X (2) and Z (3) stabilizers
        out = (ch * t_n + ts) * plane + cells
        for dt in (0, 1):
            det = np.full((t_n, plane), -1, dtype=np.int64)
            det[: t_n - dt] = det_index[ch - 2][dt:]
            keep = (det >= 0) & mask[ch]
            outs.append(out[keep])
            dets.append(det[keep])
    pairs = np.stack([np.concatenate(outs), np.concatenate(dets)])
    uniq, count = np.unique(pairs, axis=1, return_counts=True)
    odd = uniq[:, count % 2 == 1]
    return odd[0].astype(np.int64), odd[1].astype(np.int64)


def _observable_outputs(geometry: PreDecoderGeometry) -> np.ndarray:
    """Flat indices of the outputs that flip the observable (``footprint``'s ``pre_L``):
    data flips of ``obs_channel`` on the logical support, in ``output_mask``."""
    t_n, d, _ = geometry.shape
    ch = geometry.obs_channel
    on = geometry.output_mask[ch] & geometry.layout.logical_support[None]
    t, r, c = np.nonzero(on)
    return ((ch * t_n + t) * d + r) * d + c


def build_tables(
    geometry: PreDecoderGeometry,
    model: QuantizedModel,
    *,
    threshold: float = 0.0,
    stream_id: int = 0,
) -> StreamTables:
    """Flatten ``model`` and ``geometry``'s footprints into the streaming kernel's tables.

    ``threshold`` is ``PreDecoder``'s: apply a correction where its logit exceeds
    ``floor(threshold * 2**(weight_bits + act_bits))``. ``stream_id``: the one
    stream the kernel takes packets from.
    """
    t_n, d, _ = geometry.shape
    plane = d * d
    vol = t_n * plane
    n_det = geometry.num_detectors
    out_idx, det = _footprint_pairs(geometry)
    obs_out = _observable_outputs(geometry)
    n_obs = 1  # PreDecoderGeometry lays out one-observable memory circuits only
    layout = geometry.layout
    round_off = np.ascontiguousarray(layout.round_offsets, dtype=np.int64)
    det_time = np.asarray(layout.time, dtype=np.int64)
    if (
        round_off.shape != (t_n + 1,)
        or not (det_time == np.repeat(np.arange(t_n), np.diff(round_off))).all()
    ):
        raise ValueError("detectors must come in time order, one contiguous range per round")
    det_ptr, det_src = _csr(det, out_idx, n_det)
    src_t = (det_src // plane) % t_n
    own_t = np.repeat(det_time, np.diff(det_ptr))
    if ((src_t != own_t) & (src_t != own_t - 1)).any():
        raise ValueError("a detector is flipped by an output outside its own or the previous slice")
    obs_ptr, obs_src = _csr((obs_out // plane) % t_n, obs_out, n_obs * t_n)
    det_kc = np.ascontiguousarray(
        np.asarray(layout.kind, dtype=np.int64) * plane
        + np.asarray(layout.row, dtype=np.int64) * d
        + np.asarray(layout.col, dtype=np.int64)
    )
    mask_act = np.zeros((4, vol), dtype=np.int64)
    mask_act[2:] = geometry.input_mask.reshape(2, vol).astype(np.int64) << model.act_bits
    layers, ws, bs = [], [], []
    w_off = b_off = a_off = lag = 0
    for w, b in zip(model.weights, model.biases, strict=True):
        c_out, c_in, k = w.shape[:3]
        lag += k // 2
        ring = 2 * (k // 2) + 1
        layers.append((c_in, c_out, k, w_off, b_off, a_off, ring, lag))
        ws.append(w.astype(np.int64).ravel())
        bs.append(b.astype(np.int64))
        w_off, b_off, a_off = w_off + w.size, b_off + b.size, a_off + c_in * ring * plane
    n_bits = np.ascontiguousarray(np.diff(round_off))
    max_packet = syndrome_size(int(n_bits.max()))
    if max_packet > MAX_PACKET:
        raise ValueError(
            f"a round of {int(n_bits.max())} detectors needs {max_packet}-byte packets; "
            f"the kernel stages at most {MAX_PACKET} bytes (use a smaller distance)"
        )
    crc_tab, crc_zero = crc_tables(max_packet)
    cut = int(np.floor(threshold * 2 ** (model.weight_bits + model.act_bits)))
    dims = (t_n, d, model.act_bits, model.weight_bits, cut, len(layers), stream_id, lag)
    return StreamTables(
        dims=np.array(dims, dtype=np.int64),
        layers=np.array(layers, dtype=np.int64).reshape(-1, L_LEN),
        wflat=np.ascontiguousarray(np.concatenate(ws)),
        bflat=np.ascontiguousarray(np.concatenate(bs)),
        round_off=round_off,
        n_bits=n_bits,
        det_kc=det_kc,
        mask_act=np.ascontiguousarray(mask_act.ravel()),
        out_valid=np.ascontiguousarray(geometry.output_mask.ravel().astype(np.uint8)),
        det_ptr=det_ptr,
        det_src=det_src,
        obs_ptr=obs_ptr,
        obs_src=obs_src,
        crc_tab=crc_tab,
        crc_zero=crc_zero,
        act_len=max(a_off, 1),
        max_packet=max_packet,
    )
