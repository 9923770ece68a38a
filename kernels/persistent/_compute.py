"""The block's part of the streaming kernel: a round in, the CNN steps it makes
computable, and the residual slices those steps finalize.

Each function is an ``inline_device`` step of ``_kernel.streaming_kernel`` that every
thread runs, each taking its share (``range(tid, n, nth)``). ``stream_round`` is step 7
of the kernel; its schedule is ``_tables``': step ``t`` for a round ``t < T - 1``, steps
``T - 1 .. T - 1 + P`` for the last (``P = dims[D_MAX_LAG]``), the later ones reading
zeros beyond slice ``T - 1`` exactly as the reference pads.
"""

from __future__ import annotations

import numpy as np
from numba import cuda, types

from qhil.bridge import SYN_PAYLOAD_AT, W_HEARTBEAT, W_STALL
from qhil.kernels.persistent._device import flag_load, flag_store, inline_device
from qhil.kernels.persistent._judge import S_NCORR, S_OSLOT, S_ROUND, ST_BEAT
from qhil.kernels.persistent._tables import (
    D_ACT_BITS,
    D_CUT,
    D_D,
    D_LAYERS,
    D_MAX_LAG,
    D_T,
    D_WEIGHT_BITS,
    L_AOFF,
    L_BOFF,
    L_CIN,
    L_COUT,
    L_K,
    L_LAG,
    L_RING,
    L_WOFF,
)

__all__ = ["stream_round"]

_I64 = types.int64


@inline_device(_I64)
def mask_slice(act, mask_act, aoff0, ring0, t, t_n, plane, tid, nth):  # type: ignore[no-untyped-def]
    """Block: slice ``t`` of layer 0's input ring takes the round's masks, no events."""
    ts = t % ring0
    for j in range(tid, 4 * plane, nth):
        ch = j // plane
        cell = j - ch * plane
        act[aoff0 + (ch * ring0 + ts) * plane + cell] = mask_act[(ch * t_n + t) * plane + cell]
    return np.int64(0)


@inline_device(_I64)
def unpack_round(pkt, dets, det_kc, act, base, n, aoff0, ring0, t, plane, one, tid, nth):  # type: ignore[no-untyped-def]
    """Block: the payload's ``n`` bits (LSB-first) into the shot's detection events at
    ``base``, and each event into slice ``t`` of layer 0's input ring."""
    ts = t % ring0
    for b in range(tid, n, nth):
        v = (pkt[SYN_PAYLOAD_AT + (b >> 3)] >> (b & 7)) & 1
        dets[base + b] = v
        if v != 0:
            kc = det_kc[base + b]
            ch = kc // plane
            act[aoff0 + (ch * ring0 + ts) * plane + kc - ch * plane] = one
    return np.int64(0)


@inline_device(_I64)
def conv_at(act, wflat, a_off, ring, w_ci, k, t_out, t_n, y, x, d, plane):  # type: ignore[no-untyped-def]
    """One input channel's 3D convolution term at output (t_out, y, x), zero-padded."""
    p = k // 2
    acc = np.int64(0)
    for dt in range(k):
        tt = t_out + dt - p
        if tt < 0 or tt >= t_n:
            continue
        a_t = a_off + (tt % ring) * plane
        for dy in range(k):
            yy = y + dy - p
            if yy < 0 or yy >= d:
                continue
            for dx in range(k):
                xx = x + dx - p
                if xx < 0 or xx >= d:
                    continue
                a = act[a_t + yy * d + xx]
                if a != 0:
                    acc += a * wflat[w_ci + (dt * k + dy) * k + dx]
    return acc


@inline_device(_I64)
def layer_slice(act, wflat, bflat, layers, li, last, t_out, t_n, d, wbits, cut, out_valid,
                e_buf, tid, nth):  # type: ignore[no-untyped-def]  # fmt: skip
    """Block: layer ``li`` on time slice ``t_out``. Hidden layers write ReLU(acc) >> wbits
    into the next layer's input ring; the last binarizes (``acc > cut`` where the output
    is valid) into ``e_buf``. Returns this thread's corrections."""
    plane = d * d
    c_in, c_out, k = layers[li, L_CIN], layers[li, L_COUT], layers[li, L_K]
    w_off, b_off = layers[li, L_WOFF], layers[li, L_BOFF]
    a_off, ring = layers[li, L_AOFF], layers[li, L_RING]
    a_nxt, r_nxt = np.int64(0), np.int64(1)
    if not last:
        a_nxt, r_nxt = layers[li + 1, L_AOFF], layers[li + 1, L_RING]
    ncorr = np.int64(0)
    for j in range(tid, c_out * plane, nth):  # output (channel, cell) = j
        co = j // plane
        cell = j - co * plane
        y = cell // d
        acc = bflat[b_off + co]
        for ci in range(c_in):
            w_ci = w_off + (co * c_in + ci) * k * k * k
            acc += conv_at(act, wflat, a_off + ci * ring * plane, ring, w_ci, k, t_out, t_n,
                           y, cell - y * d, d, plane)  # fmt: skip
        if last:
            oi = (co * t_n + t_out) * plane + cell
            e = 1 if acc > cut and out_valid[oi] != 0 else 0
            e_buf[oi] = e
            ncorr += e
        else:
            act[a_nxt + (co * r_nxt + t_out % r_nxt) * plane + cell] = (
                acc if acc > 0 else 0
            ) >> wbits
    return ncorr


@inline_device(_I64)
def finalize_slice(dets, e_buf, det_ptr, det_src, obs_ptr, obs_src, round_off, out_data,
                   osl, obs_acc, n_obs, t_e, t_n, tid, nth):  # type: ignore[no-untyped-def]  # fmt: skip
    """Block: slice ``t_e``'s residual detectors into output slot ``osl``, and its share of
    each observable's ``pre_L`` into ``obs_acc`` (one owner thread per observable)."""
    for i in range(round_off[t_e] + tid, round_off[t_e + 1], nth):
        r = dets[i]
        for q in range(det_ptr[i], det_ptr[i + 1]):
            r ^= e_buf[det_src[q]]
        out_data[osl, i] = r
    for o in range(tid, n_obs, nth):
        r = obs_acc[o]
        for q in range(obs_ptr[o * t_n + t_e], obs_ptr[o * t_n + t_e + 1]):
            r ^= e_buf[obs_src[q]]
        obs_acc[o] = r
    return np.int64(0)


@inline_device(_I64)
def stream_round(ctrl, pkt, sh, st, obs_acc, n_obs, out_data, dims, layers, wflat, bflat, round_off,
                 n_bits, det_kc, mask_act, out_valid, det_ptr, det_src, obs_ptr, obs_src,
                 dets, act, e_buf, tid, nth):  # type: ignore[no-untyped-def]  # fmt: skip
    """Block: stream the accepted round ``sh[S_ROUND]`` of the open shot (output slot
    ``sh[S_OSLOT]``): unpack it, then run the steps it makes computable, each layer on at
    most one time slice, finalizing the slices whose outputs are complete. Thread 0 beats
    the heartbeat after each step (progress, even while a long flush runs) and adds the
    corrections to ``sh[S_NCORR]``; ``n_obs`` of ``obs_acc``'s entries are observables."""
    t, osl = sh[S_ROUND], sh[S_OSLOT]
    t_n, d, max_lag, n_layers = dims[D_T], dims[D_D], dims[D_MAX_LAG], dims[D_LAYERS]
    plane = d * d
    aoff0, ring0 = layers[0, L_AOFF], layers[0, L_RING]
    mask_slice(act, mask_act, aoff0, ring0, t, t_n, plane, tid, nth)
    cuda.syncthreads()
    one = np.int64(1) << dims[D_ACT_BITS]
    unpack_round(pkt, dets, det_kc, act, round_off[t], n_bits[t], aoff0, ring0, t, plane, one,
                 tid, nth)  # fmt: skip
    cuda.syncthreads()
    s_end = t + 1 if t < t_n - 1 else t_n + max_lag
    for s in range(t, s_end):
        for li in range(n_layers):
            t_out = s - layers[li, L_LAG]
            if t_out < 0 or t_out >= t_n:
                continue  # uniform across the block: no thread skips a barrier alone
            ncorr = layer_slice(act, wflat, bflat, layers, li, li == n_layers - 1, t_out, t_n,
                                d, dims[D_WEIGHT_BITS], dims[D_CUT], out_valid, e_buf, tid,
                                nth)  # fmt: skip
            if ncorr != 0:
                cuda.atomic.add(sh, S_NCORR, ncorr)
            cuda.syncthreads()
        t_e = s - max_lag  # the slice whose outputs this step finalized
        if t_e >= 0:
            finalize_slice(dets, e_buf, det_ptr, det_src, obs_ptr, obs_src, round_off, out_data,
                           osl, obs_acc, n_obs, t_e, t_n, tid, nth)  # fmt: skip
        if tid == 0 and flag_load(ctrl, W_STALL) == 0:
            st[ST_BEAT] += 1
            flag_store(ctrl, W_HEARTBEAT, st[ST_BEAT])
        cuda.syncthreads()
    return np.int64(0)
