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

One kernel function, no device-function calls: Numba compiles a called device
function for the *current* device, which needs a GPU, whereas a self-contained
kernel (plus the ring's flag intrinsics) compiles with ``compile_ptx(...,
cc=(9, 0))`` anywhere.
"""

from __future__ import annotations

import numpy as np
from numba import cuda

from qhil.bridge import (
    CRC_SIZE,
    FLAG_END_OF_STREAM,
    FLAG_FIRST_ROUND,
    FLAG_LAST_ROUND,
    FLAGS_AT,
    H_CORRECTIONS,
    H_LENGTH,
    H_ROUNDS,
    H_SEQ,
    H_SHOT,
    H_STATUS,
    H_STREAM,
    H_T_FPGA,
    HEARTBEAT_EVERY,
    MAGIC_AT,
    STATE_EXITED,
    STATE_RUNNING,
    SYN_N_BITS_AT,
    SYN_PAYLOAD_AT,
    SYN_ROUND_AT,
    SYN_SEQ_AT,
    SYN_SHOT_AT,
    SYN_STREAM_AT,
    SYN_T_FPGA_AT,
    SYNDROME_MAGIC,
    VERSION_AT,
    W_COUNTERS,
    W_HEARTBEAT,
    W_IN_DONE,
    W_OUT_DONE,
    W_SHUTDOWN,
    W_STALL,
    W_STATE,
    WIRE_VERSION,
    CorrectionStatus,
    Reason,
    flag_load,
    flag_store,
)
from qhil.kernels._persistent_tables import (
    D_ACT_BITS,
    D_CUT,
    D_D,
    D_LAYERS,
    D_MAX_LAG,
    D_STREAM,
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
    MAX_OBS,
    MAX_PACKET,
)

__all__ = ["COUNTER_NAMES", "KERNEL_SIGNATURE", "N_COUNTERS", "streaming_kernel"]

# Counter block: Reason codes index their own rejections (SEQ_GAP counts gap events, not
# packets); index 0 (Reason.OK) counts rounds accepted; the rest follow.
C_ROUNDS = int(Reason.OK)
C_PACKETS, C_EOS, C_MISSING, C_DECODED, C_INCOMPLETE, C_SHUTDOWN_DROPPED = 16, 17, 18, 19, 20, 21
N_COUNTERS = 22
COUNTER_NAMES: dict[int, str] = {
    **{int(r): r.label for r in Reason if r not in (Reason.OK, Reason.UNKNOWN_SHOT)},
    C_ROUNDS: "rounds_accepted",
    C_PACKETS: "packets",
    C_EOS: "end_of_stream",
    C_MISSING: "packets_missing",
    C_DECODED: "shots_decoded",
    C_INCOMPLETE: "shots_incomplete",
    C_SHUTDOWN_DROPPED: "dropped_at_shutdown",
}
"""Counter index -> name (``Reason`` labels for the rejections)."""

# Plain ints: Numba freezes module globals as compile-time constants.
_TRUNCATED, _BAD_MAGIC = int(Reason.TRUNCATED), int(Reason.BAD_MAGIC)
_BAD_VERSION, _BAD_CRC = int(Reason.BAD_VERSION), int(Reason.BAD_CRC)
_BAD_LENGTH, _BAD_FIELD = int(Reason.BAD_LENGTH), int(Reason.BAD_FIELD)
_SEQ_GAP, _DUPLICATE, _STALE = int(Reason.SEQ_GAP), int(Reason.DUPLICATE), int(Reason.STALE)
_UNKNOWN_STREAM = int(Reason.UNKNOWN_STREAM)
_DECODED, _INCOMPLETE = int(CorrectionStatus.DECODED), int(CorrectionStatus.INCOMPLETE)
_MAGIC = tuple(SYNDROME_MAGIC)
# Thread 0's decision, as bits: abandon the open shot, open a new one, stream this round.
A_ABANDON, A_OPEN, A_ACCEPT = 1, 2, 4
# Shared int64 scalars broadcast by thread 0.
S_GO, S_LEN, S_REASON, S_SIZE, S_ACT, S_ROUND, S_OSLOT, S_NCORR, S_LEN_ALL = range(9)


@cuda.jit
def streaming_kernel(
    ctrl, in_seq, in_hdr, in_data, out_seq, out_hdr, out_data, out_obs,
    dims, layers, wflat, bflat, round_off, n_bits, det_kc, mask_act, out_valid,
    det_ptr, det_src, obs_ptr, obs_src, crc_tab, crc_zero,
    dets, act, e_buf,
):  # fmt: skip
    """Launch as ``[1, threads]`` once; streams packets until ``ctrl[W_SHUTDOWN]``.

    One long body on purpose: a persistent kernel keeps its state (the open shot,
    the stream's seq, the CNN's ring of activations) in registers and shared
    memory across loop iterations, and numba-cuda cannot share ``cuda.shared``
    arrays or ``cuda.syncthreads`` barriers across device functions without
    passing every array through; the numbered steps below are its sections.

    Ring buffers: ``qhil.bridge._gpu_ring`` (mapped memory). Tables:
    ``StreamTables`` (device memory). Scratch (device memory): dets uint8[n_det],
    act int64[act_len] (every layer's input ring), e_buf uint8[4 * T * d * d].
    """
    tid, nth = cuda.threadIdx.x, cuda.blockDim.x
    sh = cuda.shared.array(S_LEN_ALL, dtype=np.int64)
    pkt = cuda.shared.array(MAX_PACKET, dtype=np.uint8)
    crc_acc = cuda.shared.array(1, dtype=np.int64)
    cnt = cuda.shared.array(N_COUNTERS, dtype=np.int64)  # thread 0's counters
    obs_acc = cuda.shared.array(MAX_OBS, dtype=np.uint8)
    n_slots = in_seq.shape[0]
    width = in_data.shape[1]
    if width > MAX_PACKET:
        width = MAX_PACKET
    t_n, d = dims[D_T], dims[D_D]
    plane = d * d
    one = np.int64(1) << dims[D_ACT_BITS]
    wbits, cut, n_layers = dims[D_WEIGHT_BITS], dims[D_CUT], dims[D_LAYERS]
    stream_id, max_lag = dims[D_STREAM], dims[D_MAX_LAG]
    n_obs = out_obs.shape[1]
    ring0, aoff0 = layers[0, L_RING], layers[0, L_AOFF]
    # Thread 0's state: the open shot (cur_*), the stream's position, the output count m.
    beat = np.int64(0)
    cur_shot, cur_next, cur_rounds = np.int64(-1), np.int64(0), np.int64(0)
    cur_seq, cur_tf, oslot = np.int64(0), np.int64(0), np.int64(0)
    last_shot, next_seq, m = np.int64(-1), np.int64(0), np.int64(0)
    p_shot, p_seq, p_tf = np.int64(0), np.int64(0), np.int64(0)
    if tid == 0:
        for i in range(N_COUNTERS):
            cnt[i] = 0
        flag_store(ctrl, W_STATE, STATE_RUNNING)
    n = np.int64(0)
    while True:
        slot = n & (n_slots - 1)
        # 1. thread 0 waits for packet n; shutdown is honoured on every poll
        if tid == 0:
            status, spins = 0, 0
            while status == 0:
                if flag_load(ctrl, W_SHUTDOWN) != 0:
                    status = -1
                elif flag_load(ctrl, W_STALL) == 0:  # (test hook: spin, no progress, no beat)
                    if np.int64(flag_load(in_seq, slot)) == n + 1:  # acquire, system scope
                        status = 1
                    else:
                        spins += 1
                        if spins % HEARTBEAT_EVERY == 0:
                            beat += 1
                            flag_store(ctrl, W_HEARTBEAT, beat)
            cuda.threadfence_system()  # the slot reads below stay after the flag read
            sh[S_GO] = status
        cuda.syncthreads()
        if sh[S_GO] < 0:
            break
        # 2. stage the whole slot in shared memory (its length, H_LENGTH, is read alongside:
        # one PCIe round trip, not two), then hand the slot back to the producer
        if tid == 0:
            ln = in_hdr[slot, H_LENGTH]
            reason = 0
            if ln < 0 or ln > width:
                ln, reason = np.int64(0), _BAD_LENGTH  # a producer bug; never trusted
            sh[S_LEN], sh[S_REASON] = ln, reason
        for i in range(tid, width, nth):
            pkt[i] = in_data[slot, i]
        cuda.threadfence_system()  # this thread's slot reads are complete
        cuda.syncthreads()
        ln = sh[S_LEN]
        # 3. frame checks (thread 0), then the CRC by the whole block
        if tid == 0:
            flag_store(ctrl, W_IN_DONE, n + 1)
            reason, size = sh[S_REASON], np.int64(0)
            if reason == 0:
                if ln < FLAGS_AT + 1:
                    reason = _TRUNCATED
                elif (pkt[MAGIC_AT] != _MAGIC[0] or pkt[MAGIC_AT + 1] != _MAGIC[1]
                      or pkt[MAGIC_AT + 2] != _MAGIC[2]
                      or pkt[MAGIC_AT + 3] != _MAGIC[3]):  # fmt: skip
                    reason = _BAD_MAGIC
                elif pkt[VERSION_AT] != WIRE_VERSION:
                    reason = _BAD_VERSION
                elif ln < SYN_PAYLOAD_AT + CRC_SIZE:
                    reason = _TRUNCATED
                else:
                    n_bits_wire = np.int64(pkt[SYN_N_BITS_AT]) | (
                        np.int64(pkt[SYN_N_BITS_AT + 1]) << 8
                    )
                    size = SYN_PAYLOAD_AT + (n_bits_wire + 7) // 8 + CRC_SIZE
                    if ln < size:
                        reason = _TRUNCATED
                    elif ln > size:
                        reason = _BAD_LENGTH  # trailing bytes
            sh[S_REASON], sh[S_SIZE] = reason, size
            crc_acc[0] = 0
        cuda.syncthreads()
        if sh[S_REASON] == 0:
            nb = sh[S_SIZE] - CRC_SIZE
            c = np.int64(0)
            for i in range(tid, nb, nth):
                c ^= np.int64(crc_tab[nb - 1 - i, pkt[i]])
            cuda.atomic.xor(crc_acc, 0, c)
        cuda.syncthreads()
        # 4. thread 0 judges the packet against the stream and the open shot
        if tid == 0:
            reason, acts, p_rnd = sh[S_REASON], 0, np.int64(0)
            if reason == 0:
                nb = sh[S_SIZE] - CRC_SIZE
                stored = np.int64(0)
                for b in range(CRC_SIZE):
                    stored |= np.int64(pkt[nb + b]) << (8 * b)
                if (crc_acc[0] ^ np.int64(crc_zero[nb])) != stored:
                    reason = _BAD_CRC
            if reason == 0:
                flags = np.int64(pkt[FLAGS_AT])
                p_bits = np.int64(pkt[SYN_N_BITS_AT]) | (np.int64(pkt[SYN_N_BITS_AT + 1]) << 8)
                stream, p_shot, p_seq, p_tf = np.int64(0), np.int64(0), np.int64(0), np.int64(0)
                for b in range(4):
                    stream |= np.int64(pkt[SYN_STREAM_AT + b]) << (8 * b)
                    p_rnd |= np.int64(pkt[SYN_ROUND_AT + b]) << (8 * b)
                for b in range(8):  # u64 on the wire: >= 2**63 reads negative here
                    p_shot |= np.int64(pkt[SYN_SHOT_AT + b]) << (8 * b)
                    p_seq |= np.int64(pkt[SYN_SEQ_AT + b]) << (8 * b)
                    p_tf |= np.int64(pkt[SYN_T_FPGA_AT + b]) << (8 * b)
                if p_seq < 0 or p_shot < 0:
                    reason = _BAD_FIELD
                elif stream != stream_id:
                    reason = _UNKNOWN_STREAM
                elif p_seq < next_seq:
                    reason = _DUPLICATE if p_seq == next_seq - 1 else _STALE
                if reason == 0:
                    if p_seq > next_seq:
                        cnt[_SEQ_GAP] += 1  # an event; this packet is still judged below
                        cnt[C_MISSING] += p_seq - next_seq
                    next_seq = p_seq + 1
                    first = (flags & FLAG_FIRST_ROUND) != 0
                    last = (flags & FLAG_LAST_ROUND) != 0
                    if flags & FLAG_END_OF_STREAM:
                        cnt[C_EOS] += 1
                        if cur_shot >= 0:
                            acts = A_ABANDON
                    elif p_rnd >= t_n or p_bits != n_bits[p_rnd]:
                        reason = _BAD_LENGTH  # not this layout's round
                    elif first != (p_rnd == 0) or last != (p_rnd == t_n - 1):
                        reason = _BAD_FIELD
                    elif cur_shot >= 0 and p_shot == cur_shot:
                        if p_rnd == cur_next:
                            acts = A_ACCEPT
                        elif p_rnd < cur_next:
                            reason = _DUPLICATE  # a round already taken, under a new seq
                        else:
                            reason, acts = _STALE, A_ABANDON  # rounds lost: it cannot finish
                    elif p_shot <= last_shot:
                        reason = _STALE  # its shot was opened (or skipped) already
                    else:
                        last_shot = p_shot
                        acts = A_ABANDON if cur_shot >= 0 else 0
                        if p_rnd == 0:
                            acts |= A_OPEN | A_ACCEPT
                        else:
                            reason = _STALE  # its first rounds never came
            if reason != 0:
                cnt[reason] += 1
            sh[S_ACT], sh[S_ROUND] = acts, p_rnd
        cuda.syncthreads()
        acts = sh[S_ACT]
        # 5. abandon the open shot: its record, INCOMPLETE
        if acts & A_ABANDON:
            cuda.threadfence_system()  # every thread's residual stores for it come first
            cuda.syncthreads()
            if tid == 0:
                out_hdr[oslot, H_STREAM], out_hdr[oslot, H_SHOT] = stream_id, cur_shot
                out_hdr[oslot, H_SEQ], out_hdr[oslot, H_CORRECTIONS] = cur_seq, 0
                out_hdr[oslot, H_STATUS], out_hdr[oslot, H_T_FPGA] = _INCOMPLETE, cur_tf
                out_hdr[oslot, H_ROUNDS] = cur_rounds
                for o in range(n_obs):
                    out_obs[oslot, o] = 0
                cuda.threadfence_system()
                flag_store(out_seq, oslot, m + 1)  # publish (release, system scope)
                m += 1
                cnt[C_INCOMPLETE] += 1
                cur_shot = -1
        # 6. open a shot: claim output slot m once the host has consumed record m - n_slots
        if acts & A_OPEN:
            if tid == 0:
                status, spins = 0, 0
                while status == 0:
                    if flag_load(ctrl, W_SHUTDOWN) != 0:
                        status = -1
                    elif m - np.int64(flag_load(ctrl, W_OUT_DONE)) < n_slots:
                        status = 1
                    else:
                        spins += 1
                        if spins % HEARTBEAT_EVERY == 0 and flag_load(ctrl, W_STALL) == 0:
                            beat += 1
                            flag_store(ctrl, W_HEARTBEAT, beat)
                cuda.threadfence_system()  # the slot's stores stay after that read
                sh[S_GO] = status
                if status > 0:
                    oslot = m & (n_slots - 1)
                    sh[S_OSLOT], sh[S_NCORR] = oslot, 0
                    for o in range(MAX_OBS):
                        obs_acc[o] = 0
                    cur_shot, cur_next, cur_rounds = p_shot, np.int64(0), np.int64(0)
                else:  # taken, but its shot never opened: counted, as every packet is
                    cnt[C_SHUTDOWN_DROPPED] += 1
                    cnt[C_PACKETS] += 1
            cuda.syncthreads()
            if sh[S_GO] < 0:
                break
        # 7. stream round t: unpack, then the steps it makes computable
        if acts & A_ACCEPT:
            t, osl = sh[S_ROUND], sh[S_OSLOT]
            ts = t % ring0
            for j in range(tid, 4 * plane, nth):  # slice t of the input: masks, no events
                ch = j // plane
                cell = j - ch * plane
                act[aoff0 + (ch * ring0 + ts) * plane + cell] = mask_act[
                    (ch * t_n + t) * plane + cell
                ]
            cuda.syncthreads()
            base = round_off[t]
            for b in range(tid, n_bits[t], nth):  # the payload, LSB-first
                v = (pkt[SYN_PAYLOAD_AT + (b >> 3)] >> (b & 7)) & 1
                dets[base + b] = v
                if v != 0:
                    kc = det_kc[base + b]
                    ch = kc // plane
                    act[aoff0 + (ch * ring0 + ts) * plane + kc - ch * plane] = one
            cuda.syncthreads()
            s_end = t + 1 if t < t_n - 1 else t_n + max_lag
            for s in range(t, s_end):
                for li in range(n_layers):
                    t_out = s - layers[li, L_LAG]
                    if t_out < 0 or t_out >= t_n:
                        continue  # uniform across the block: no thread skips a barrier alone
                    c_in, c_out, k = layers[li, L_CIN], layers[li, L_COUT], layers[li, L_K]
                    w_off, b_off = layers[li, L_WOFF], layers[li, L_BOFF]
                    a_off, ring = layers[li, L_AOFF], layers[li, L_RING]
                    p = k // 2
                    last = li == n_layers - 1
                    a_nxt, r_nxt = np.int64(0), np.int64(1)
                    if not last:
                        a_nxt, r_nxt = layers[li + 1, L_AOFF], layers[li + 1, L_RING]
                    ncorr = np.int64(0)
                    for j in range(tid, c_out * plane, nth):  # output (channel, cell) = j
                        co = j // plane
                        cell = j - co * plane
                        y = cell // d
                        x = cell - y * d
                        acc = bflat[b_off + co]
                        for ci in range(c_in):
                            w_ci = w_off + (co * c_in + ci) * k * k * k
                            for dt in range(k):
                                tt = t_out + dt - p
                                if tt < 0 or tt >= t_n:
                                    continue  # zero padding in time
                                a_t = a_off + (ci * ring + tt % ring) * plane
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
                        if last:
                            oi = (co * t_n + t_out) * plane + cell
                            e = 1 if acc > cut and out_valid[oi] != 0 else 0
                            e_buf[oi] = e
                            ncorr += e
                        else:  # ReLU, rescale (floor), into the next layer's input ring
                            act[a_nxt + (co * r_nxt + t_out % r_nxt) * plane + cell] = (
                                acc if acc > 0 else 0
                            ) >> wbits
                    if ncorr != 0:
                        cuda.atomic.add(sh, S_NCORR, ncorr)
                    cuda.syncthreads()
                t_e = s - max_lag  # the slice whose outputs this step finalized
                if t_e >= 0:
                    for i in range(round_off[t_e] + tid, round_off[t_e + 1], nth):
                        r = dets[i]
                        for q in range(det_ptr[i], det_ptr[i + 1]):
                            r ^= e_buf[det_src[q]]
                        out_data[osl, i] = r
                    for o in range(tid, n_obs, nth):  # each observable has one owner thread
                        r = obs_acc[o]
                        for q in range(obs_ptr[o * t_n + t_e], obs_ptr[o * t_n + t_e + 1]):
                            r ^= e_buf[obs_src[q]]
                        obs_acc[o] = r
                if tid == 0 and flag_load(ctrl, W_STALL) == 0:
                    beat += 1  # a step done: progress, even while a long flush runs
                    flag_store(ctrl, W_HEARTBEAT, beat)
                cuda.syncthreads()
            if tid == 0:
                cnt[C_ROUNDS] += 1
                cur_next, cur_rounds, cur_seq, cur_tf = t + 1, cur_rounds + 1, p_seq, p_tf
            if t == t_n - 1:  # 8. the shot is complete: its record, DECODED
                cuda.threadfence_system()  # this thread's residual stores reach the host first
                cuda.syncthreads()
                if tid == 0:
                    out_hdr[oslot, H_STREAM], out_hdr[oslot, H_SHOT] = stream_id, cur_shot
                    out_hdr[oslot, H_SEQ], out_hdr[oslot, H_CORRECTIONS] = cur_seq, sh[S_NCORR]
                    out_hdr[oslot, H_STATUS], out_hdr[oslot, H_T_FPGA] = _DECODED, cur_tf
                    out_hdr[oslot, H_ROUNDS] = cur_rounds
                    for o in range(n_obs):
                        out_obs[oslot, o] = obs_acc[o]
                    cuda.threadfence_system()
                    flag_store(out_seq, oslot, m + 1)  # publish (release, system scope)
                    m += 1
                    cnt[C_DECODED] += 1
                    cur_shot = -1
        # 9. counters; C_PACKETS last, with release: the others are current when it is
        if tid == 0:
            cnt[C_PACKETS] += 1
            for i in range(N_COUNTERS):
                if i != C_PACKETS:
                    ctrl[W_COUNTERS + i] = np.uint64(cnt[i])
            flag_store(ctrl, W_COUNTERS + C_PACKETS, cnt[C_PACKETS])
        n += 1
    # Shut down: an open shot is emitted INCOMPLETE (its slot is claimed), then the exit flag.
    cuda.threadfence_system()
    cuda.syncthreads()
    if tid == 0:
        if cur_shot >= 0:
            out_hdr[oslot, H_STREAM], out_hdr[oslot, H_SHOT] = stream_id, cur_shot
            out_hdr[oslot, H_SEQ], out_hdr[oslot, H_CORRECTIONS] = cur_seq, 0
            out_hdr[oslot, H_STATUS], out_hdr[oslot, H_T_FPGA] = _INCOMPLETE, cur_tf
            out_hdr[oslot, H_ROUNDS] = cur_rounds
            for o in range(n_obs):
                out_obs[oslot, o] = 0
            cuda.threadfence_system()
            flag_store(out_seq, oslot, m + 1)
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
