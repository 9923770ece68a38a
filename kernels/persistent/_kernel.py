"""The streaming persistent pre-decoder kernel: wire-v1 packets in, residuals out.

Launched ONCE as ``[1, threads]`` on a :class:`~qhil.bridge._gpu_ring.MappedSlotRing`
whose input slots hold raw syndrome packets, one per QEC round (written by
:class:`~qhil.bridge._gpu_sender.GpuPacketSender`). It loops until the shutdown
flag. Thread 0 polls, parses and decides; the whole block copies, checks the CRC
and computes. For input packet ``n`` (slot ``n & (n_slots - 1)``):

1. **Wait** (thread 0) until the slot's flag reads ``n + 1`` (``ld.acquire.sys``),
   checking ``W_SHUTDOWN`` on every poll and bumping the heartbeat every
   ``HEARTBEAT_EVERY`` polls; then ``__threadfence_system()`` so the slot reads
   stay after the flag read.
2. **Stage** the slot's bytes in shared memory (one byte per thread, all loads
   in flight at once, the length word ``H_LENGTH`` read alongside them, rather
   than one PCIe round trip after another), fence, synchronize, and hand the
   slot back (``W_IN_DONE = n + 1``) before any compute: the producer may
   refill it while the block works.
3. **Validate** as ``qhil.bridge.parse_syndrome`` does: length, magic, version,
   ``n_bits`` against the length, then the CRC-32, computed in parallel from
   position tables (``crc_tables``: every byte's term looked up by its own
   thread, the terms XOR-reduced with a shared-memory atomic).
4. **Judge** it against the one stream and the open shot (thread 0). Rounds must
   arrive in order, since each one is computed on as it lands:

   - ``BAD_FIELD``: shot or seq >= 2**63, or FIRST/LAST_ROUND flags that do not
     match the round; ``UNKNOWN_STREAM``: not this kernel's stream;
     ``BAD_LENGTH``: a round outside ``0..T-1`` or an ``n_bits`` that is not
     this layout's for the round.
   - seq below the next expected: ``DUPLICATE`` if it repeats the last one,
     else ``STALE`` (a late packet; the stream has moved on). seq above it:
     one ``SEQ_GAP`` event plus the missing count, then the packet is judged
     on its own.
   - the open shot's next round: accepted. An earlier round of it:
     ``DUPLICATE``. A later round (rounds were lost): ``STALE``, and the open
     shot is *abandoned*. Round 0 of a newer shot abandons the open shot (if
     any) and opens the new one; any other round of a shot that is not open is
     ``STALE``.
   - END_OF_STREAM: counted, abandons the open shot.
5. **Stream** an accepted round ``t``: unpack its bits into the shot's
   detection events and into slice ``t`` of layer 0's input ring, then run the
   steps that round makes computable (``_persistent_tables``' schedule): step
   ``t`` for rounds ``t < T - 1``; steps ``T - 1 .. T - 1 + P`` for the last
   round (``P = dims[D_MAX_LAG]``), the later ones reading zeros beyond slice
   ``T - 1`` exactly as the reference pads. A step runs each layer on at most
   one time slice, binarizes the last layer's slice (``logit > cut``, masked to
   ``output_mask``), and finalizes that slice's residual detectors (they
   depend only on outputs of their own and the previous slice) straight into
   the shot's output slot, and its share of ``pre_L``.

   **Work bound per round**: one step (at most ``n_layers`` layer-slices of
   ``c_out * d * d`` outputs each, plus ``d * d``-sized unpacking and residual
   work) for every round but the last, and ``1 + P`` steps for the last;
   ``P = sum of k_l // 2`` is fixed by the model. Neither depends on T.
6. **Emit** after the last round: header (stream, shot, seq and ``t_fpga`` of
   the last packet, corrections, ``H_STATUS = DECODED``, rounds received) and
   ``pre_L``; every thread fences; thread 0 stores the output flag
   (``st.release.sys``). An abandoned shot gets the same record with
   ``H_STATUS = INCOMPLETE`` and the rounds it received (its residual bytes
   are meaningless). The output slot is claimed when the shot opens (waiting,
   with shutdown honoured, for the host to free it: ``W_OUT_DONE``), so the
   residual can be written slice by slice.

Every packet taken ends up counted exactly once in the counter block
(``ctrl[W_COUNTERS + i]``, see ``C_*``): accepted (``C_ROUNDS``), rejected under
its ``Reason``, END_OF_STREAM (``C_EOS``), or dropped at shutdown before its shot
could open (``C_SHUTDOWN_DROPPED``); ``C_PACKETS`` (stored last, with release
semantics) counts them all. Every shot opened ends in exactly one output record.
On shutdown an open shot is emitted as INCOMPLETE, so nothing is lost silently.

The steps are ``inline_device`` functions (``_device``): thread 0's in ``_judge``,
the block's in ``_compute``. They are compiled into this kernel, so it still compiles
with ``compile_ptx(..., cc=(9, 0))`` on a machine without a GPU.
"""

from __future__ import annotations

import numpy as np
from numba import cuda, types

from qhil.bridge import (
    CRC_SIZE,
    H_LENGTH,
    STATE_EXITED,
    STATE_RUNNING,
    W_COUNTERS,
    W_IN_DONE,
    W_OUT_DONE,
    W_STATE,
    CorrectionStatus,
    Reason,
)
from qhil.kernels.persistent._compute import stream_round
from qhil.kernels.persistent._device import await_flag, flag_store, inline_device
from qhil.kernels.persistent._judge import (
    A_ABANDON,
    A_ACCEPT,
    A_OPEN,
    C_DECODED,
    C_INCOMPLETE,
    C_PACKETS,
    COUNTER_NAMES,
    N_COUNTERS,
    S_ACT,
    S_GO,
    S_LEN,
    S_LEN_ALL,
    S_NCORR,
    S_REASON,
    S_ROUND,
    S_SIZE,
    ST_BEAT,
    ST_CUR_SHOT,
    ST_LEN,
    ST_M,
    ST_STREAM,
    crc_share,
    frame_reason,
    judge,
    open_shot,
    publish_record,
    start_state,
    store_counters,
    took_round,
    write_record,
)
from qhil.kernels.persistent._tables import D_STREAM, D_T, MAX_OBS, MAX_PACKET

__all__ = ["COUNTER_NAMES", "KERNEL_SIGNATURE", "N_COUNTERS", "streaming_kernel"]

_BAD_LENGTH = int(Reason.BAD_LENGTH)
_DECODED, _INCOMPLETE = int(CorrectionStatus.DECODED), int(CorrectionStatus.INCOMPLETE)


@inline_device(types.int64)
def take_packet(ctrl, in_seq, in_hdr, in_data, pkt, sh, st, crc_acc, crc_tab, n, tid, nth):  # type: ignore[no-untyped-def]
    """Block, steps 1-3: wait for packet ``n`` (thread 0; shutdown honoured on every poll),
    stage its slot in shared ``pkt``, hand the slot back, then the frame checks (thread 0)
    and the CRC (the block, into ``crc_acc[0]``). Returns -1 on shutdown, else 1."""
    slot = n & (in_seq.shape[0] - 1)
    width = in_data.shape[1]
    if width > MAX_PACKET:
        width = MAX_PACKET
    if tid == 0:
        sh[S_GO], st[ST_BEAT] = await_flag(ctrl, in_seq, slot, n + 1, st[ST_BEAT])
        cuda.threadfence_system()  # the slot reads below stay after the flag read
        ln = in_hdr[slot, H_LENGTH]  # read alongside the bytes: one PCIe round trip, not two
        bad = ln < 0 or ln > width  # a producer bug; never trusted
        sh[S_LEN], sh[S_REASON] = (0, _BAD_LENGTH) if bad else (ln, 0)
    cuda.syncthreads()
    if sh[S_GO] < 0:
        return np.int64(-1)
    for i in range(tid, width, nth):
        pkt[i] = in_data[slot, i]
    cuda.threadfence_system()  # this thread's slot reads are complete
    cuda.syncthreads()
    if tid == 0:  # the slot goes back to the producer before any compute
        flag_store(ctrl, W_IN_DONE, n + 1)
        sh[S_REASON], sh[S_SIZE] = frame_reason(pkt, sh[S_LEN], sh[S_REASON])
        crc_acc[0] = 0
    cuda.syncthreads()
    if sh[S_REASON] == 0:
        cuda.atomic.xor(crc_acc, 0, crc_share(pkt, crc_tab, sh[S_SIZE] - CRC_SIZE, tid, nth))
    cuda.syncthreads()
    return np.int64(1)


@inline_device(types.int64)
def emit_shot(out_seq, out_hdr, out_obs, st, obs_acc, cnt, status, ncorr, counter, tid):  # type: ignore[no-untyped-def]
    """Block: the open shot's record with ``status`` (DECODED: ``ncorr`` and ``pre_L``;
    else 0 and zeros), published once every thread's residual stores are visible;
    counted under ``counter``."""
    cuda.threadfence_system()  # every thread's residual stores reach the host first
    cuda.syncthreads()
    if tid == 0:
        decoded = status == _DECODED
        write_record(out_hdr, out_obs, st, obs_acc, status, ncorr if decoded else 0, decoded,
                     st[ST_STREAM])  # fmt: skip
        cuda.threadfence_system()
        publish_record(out_seq, st)
        cnt[counter] += 1
    return np.int64(0)


@cuda.jit
def streaming_kernel(
    ctrl, in_seq, in_hdr, in_data, out_seq, out_hdr, out_data, out_obs,
    dims, layers, wflat, bflat, round_off, n_bits, det_kc, mask_act, out_valid,
    det_ptr, det_src, obs_ptr, obs_src, crc_tab, crc_zero,
    dets, act, e_buf,
):  # fmt: skip
    """Launch as ``[1, threads]`` once; streams packets until ``ctrl[W_SHUTDOWN]``.

    Ring buffers: ``qhil.bridge.MappedSlotRing`` (mapped memory). Tables:
    ``StreamTables`` (device memory). Scratch (device memory): dets uint8[n_det],
    act int64[act_len] (every layer's input ring), e_buf uint8[4 * T * d * d].
    The numbered comments are the module docstring's steps.
    """
    tid, nth = cuda.threadIdx.x, cuda.blockDim.x
    sh = cuda.shared.array(S_LEN_ALL, dtype=np.int64)
    pkt = cuda.shared.array(MAX_PACKET, dtype=np.uint8)
    crc_acc = cuda.shared.array(1, dtype=np.int64)
    cnt = cuda.shared.array(N_COUNTERS, dtype=np.int64)  # thread 0's counters
    obs_acc = cuda.shared.array(MAX_OBS, dtype=np.uint8)
    st = cuda.local.array(ST_LEN, dtype=np.int64)  # thread 0's state
    n_slots, t_n = in_seq.shape[0], dims[D_T]
    if tid == 0:
        start_state(st, cnt, dims[D_STREAM])
        flag_store(ctrl, W_STATE, STATE_RUNNING)
    n = np.int64(0)
    while True:
        # 1-3. wait for packet n, stage it, hand the slot back, frame checks and CRC
        if take_packet(ctrl, in_seq, in_hdr, in_data, pkt, sh, st, crc_acc, crc_tab, n, tid,
                       nth) < 0:  # fmt: skip
            break
        if tid == 0:  # 4. judge it against the stream and the open shot
            sh[S_ACT] = 0
            if sh[S_REASON] != 0:
                cnt[sh[S_REASON]] += 1
            else:
                sh[S_ACT], sh[S_ROUND] = judge(pkt, st, cnt, n_bits, sh[S_SIZE], crc_acc[0],
                                               crc_zero, t_n)  # fmt: skip
        cuda.syncthreads()
        acts = sh[S_ACT]
        if acts & A_ABANDON:  # 5. abandon the open shot: its record, INCOMPLETE
            emit_shot(out_seq, out_hdr, out_obs, st, obs_acc, cnt, _INCOMPLETE, 0, C_INCOMPLETE,
                      tid)  # fmt: skip
        if acts & A_OPEN:  # 6. open a shot once the host has consumed record m - n_slots
            if tid == 0:
                status, st[ST_BEAT] = await_flag(ctrl, ctrl, W_OUT_DONE, st[ST_M] + 1 - n_slots,
                                                 st[ST_BEAT])  # fmt: skip
                cuda.threadfence_system()  # the slot's stores stay after that read
                open_shot(st, sh, obs_acc, cnt, status, n_slots)
            cuda.syncthreads()
            if sh[S_GO] < 0:
                break
        if acts & A_ACCEPT:  # 7. stream the round
            stream_round(ctrl, pkt, sh, st, obs_acc, out_obs.shape[1], out_data, dims, layers,
                         wflat, bflat, round_off, n_bits, det_kc, mask_act, out_valid, det_ptr,
                         det_src, obs_ptr, obs_src, dets, act, e_buf, tid, nth)  # fmt: skip
            if tid == 0:
                took_round(st, cnt, sh[S_ROUND])
            if sh[S_ROUND] == t_n - 1:  # 8. the shot is complete: its record, DECODED
                emit_shot(out_seq, out_hdr, out_obs, st, obs_acc, cnt, _DECODED, sh[S_NCORR],
                          C_DECODED, tid)  # fmt: skip
        if tid == 0:  # 9. the counters
            cnt[C_PACKETS] += 1
            store_counters(ctrl, cnt)
        n += 1
    # Shut down: an open shot is emitted INCOMPLETE (its slot is claimed), then the exit flag.
    cuda.threadfence_system()
    cuda.syncthreads()
    if tid == 0:
        if st[ST_CUR_SHOT] >= 0:
            write_record(out_hdr, out_obs, st, obs_acc, _INCOMPLETE, 0, False, st[ST_STREAM])
            cuda.threadfence_system()
            publish_record(out_seq, st)
            cnt[C_INCOMPLETE] += 1
        for i in range(N_COUNTERS):
            ctrl[W_COUNTERS + i] = np.uint64(cnt[i])
        cuda.threadfence_system()
        flag_store(ctrl, W_STATE, STATE_EXITED)


KERNEL_SIGNATURE = (
    "void(uint64[::1], uint64[::1], int64[:, ::1], uint8[:, ::1], "
    "uint64[::1], int64[:, ::1], uint8[:, ::1], uint8[:, ::1], "
    "int64[::1], int64[:, ::1], int64[::1], int64[::1], int64[::1], int64[::1], "
    "int64[::1], int64[::1], uint8[::1], int64[::1], int64[::1], int64[::1], int64[::1], "
    "uint32[:, ::1], uint32[::1], "
    "uint8[::1], int64[::1], uint8[::1])"
)
"""``streaming_kernel``'s argument types, for ``numba.cuda.compile_ptx`` without a GPU."""
