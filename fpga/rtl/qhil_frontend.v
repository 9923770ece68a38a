// qhil_frontend: the QEC front end. Measurements in, wire-v1 syndrome packets out,
// correction packets in, logical frame out, with an AXI4-Lite register block.
//
// The cycle-accurate twin is qhil.fpga.FrontendModel (fpga/rtl_model/_frontend_model.py);
// fpga/benches/rtl_frontend_test.py proves them equal, port by port and cycle by cycle.
// fpga/rtl/README.md has the block diagram and the latency table.
//
// Clock and reset: everything is synchronous to aclk (250 MHz); aresetn is
// synchronous and active low.
//
// ---- Measurements: s_axis_meas (AXI4-Stream, 64-bit) ----------------------------
// One QEC round is ceil(n_meas/64) beats: the round's measurement results in stim's
// measurement order, LSB first (result j is bit j%64 of beat j/64); tlast marks the
// round's last beat. Beats past ceil(MAX_MEAS/64) are ignored, as are bits past the
// round's n_meas. tuser, sampled with tlast:
//   tuser[0] LAST_ROUND     this round is the last of its shot (the next round
//                           starts shot+1 at round 0)
//   tuser[1] END_OF_STREAM  not a round: emit the END_OF_STREAM packet (flags 0x80,
//                           shot 0, round 0, no payload) after every round before it
// tready (a function of registers only):
//   CTRL.ENABLE = 0: low. Nothing is taken, so nothing is lost.
//   paced (CTRL.LOCKSTEP = 0): high, except that a round's first beat waits for a
//     tick of the round clock (one tick every ROUND_PERIOD cycles; ticks do not
//     accumulate past one; ROUND_PERIOD = 0 turns pacing off, for a readout chain
//     that keeps its own time). A round that finds the queue full is DROPPED and
//     counted (ROUNDS_BACKPRESSURE, STATUS.BACKPRESSURE): a readout chain cannot wait.
//   lockstep: high only when no round is in flight before the packetizer (the
//     detection pipeline and the one-round queue are empty) and the current shot's
//     pending-table slot is free; no round is ever dropped.
//   After an END_OF_STREAM beat: low until that packet is queued.
//
// ---- Rounds -> packets -------------------------------------------------------------
// Edge E0 takes a round's last beat. The round gets its shot and round index from the
// shot/round counters, flags FIRST_ROUND (round == 0) and LAST_ROUND (tuser[0]), and
// t_fpga = the cycle counter's value in the cycle of E0 (so the reaction latency
// includes the front end's own time). The detection-event unit (2 cycles) turns it into
// detection events; on E2 the round enters a one-round queue and takes seq (the
// per-stream packet counter; dropped rounds take none); the packetizer takes it from
// the queue when free (E3 at the earliest). Its syndrome packet's last beat leaves on
// E3 + the packetizer's latency (qhil_packetizer.v): 11..15 cycles after E0 at d=3..13.
// n_bits is the detector count of the round in the ROM; a round index past the ROM
// (ROUNDS_MAX) gives n_bits = 0, so the host sees the fault.
//
// ---- Pending shots -----------------------------------------------------------------
// When a shot's last round reaches E2 and at least one of its rounds took a seq, the
// shot enters a table of 2**PENDING_LOG2 slots, slot = shot mod 2**PENDING_LOG2, with
// the seq of its last packet, its round count, and deadline = t_fpga of its last packet
// + CORR_TIMEOUT. One slot is scanned per idle cycle (no correction being judged, no
// insertion): a pending shot past its deadline times out (SHOTS_TIMED_OUT,
// STATUS.DECODER_UNRESPONSIVE). A shot inserted into a slot still held by an older
// shot (paced mode only) evicts it, counted the same way.
//
// ---- Corrections: s_axis_cor (AXI4-Stream, 8-bit, tready always high) -----------
// qhil_correction_rx parses and checks each packet: edge C0 takes its last byte, and
// its verdict is ready right after. On C1 the judge registers the lookups; on C2 it
// rules, by the table in
// fpga/_correction_rules.py (END_OF_STREAM ack, UNKNOWN_STREAM, DUPLICATE /
// UNKNOWN_SHOT, then per status: n_obs == NUM_OBS and the echoed seq for DECODED,
// n_frame == the shot's rounds for INCOMPLETE), and applies the ruling: counters, the
// slot freed, and for DECODED the frame flip and the reaction latency
// (C0's cycle count - echoed t_fpga, modulo 2**64): LAT_LAST / LAT_MAX (saturated at
// 2**32 - 1), BUDGET_MISSES (latency > BUDGET). logical_frame changes on C2, 2 cycles
// after the last byte, and frame_update is high for the one cycle after that edge.
// An END_OF_STREAM acknowledgement sets STATUS.DONE.
//
// ---- Registers (qhil_regs, map in qhil_regmap.vh) -------------------------------
// STATUS = {DONE, DECODER_UNRESPONSIVE, BACKPRESSURE: sticky; RUNNING = CTRL.ENABLE}.
// CYCLE: the free-running cycle counter (reset only by aresetn). ROUNDS_EMITTED counts
// syndrome packets (END_OF_STREAM excluded) whose last beat has left.
// CTRL.CLEAR_COUNTERS starts a new run: on the edge it takes effect every counter, the
// sticky STATUS bits, LAT_*, the logical frame (frame_update pulses if it was not 0),
// the pending table and the shot/round/seq counters are zeroed, and any count or
// insertion due on that edge is discarded. Rounds and packets already in flight go on
// with the fields they were given. Meant for the idle moment between runs.
//
// Verilog-2005 (Icarus 11, yosys 0.23), no latches.

`timescale 1ns / 1ps
`default_nettype none
`include "qhil_regmap.vh"

`ifndef QHIL_DETPROG_ROM
`define QHIL_DETPROG_ROM "qhil_detprog.hex"
`endif

module qhil_frontend #(
    // Detection-event unit and its ROM (fpga/rtl_model/_detprog_rom.py writes the file).
    parameter MAX_MEAS     = 169,
    parameter MAX_DETS     = 168,
    parameter MAX_TERMS    = 5,
    parameter ROUNDS_MAX   = 16,
    parameter ROM_FILE     = `QHIL_DETPROG_ROM,
    // Logical observables a DECODED correction carries (1..32).
    parameter NUM_OBS      = 1,
    // Pending-shot table: 2**PENDING_LOG2 slots.
    parameter PENDING_LOG2 = 6
) (
    input  wire        aclk,
    input  wire        aresetn,

    input  wire [11:0] s_axi_awaddr,
    input  wire [2:0]  s_axi_awprot,
    input  wire        s_axi_awvalid,
    output wire        s_axi_awready,
    input  wire [31:0] s_axi_wdata,
    input  wire [3:0]  s_axi_wstrb,
    input  wire        s_axi_wvalid,
    output wire        s_axi_wready,
    output wire [1:0]  s_axi_bresp,
    output wire        s_axi_bvalid,
    input  wire        s_axi_bready,
    input  wire [11:0] s_axi_araddr,
    input  wire [2:0]  s_axi_arprot,
    input  wire        s_axi_arvalid,
    output wire        s_axi_arready,
    output wire [31:0] s_axi_rdata,
    output wire [1:0]  s_axi_rresp,
    output wire        s_axi_rvalid,
    input  wire        s_axi_rready,

    input  wire [63:0] s_axis_meas_tdata,
    input  wire        s_axis_meas_tvalid,
    output wire        s_axis_meas_tready,
    input  wire        s_axis_meas_tlast,
    input  wire [1:0]  s_axis_meas_tuser,

    output wire [63:0] m_axis_syn_tdata,
    output wire [7:0]  m_axis_syn_tkeep,
    output wire        m_axis_syn_tvalid,
    input  wire        m_axis_syn_tready,
    output wire        m_axis_syn_tlast,

    input  wire [7:0]  s_axis_cor_tdata,
    input  wire        s_axis_cor_tvalid,
    output wire        s_axis_cor_tready,
    input  wire        s_axis_cor_tlast,

    output wire [31:0] logical_frame,
    output reg         frame_update
);
    function integer clog2;
        input integer value;
        integer v;
        begin
            v = value - 1;
            clog2 = 0;
            while (v > 0) begin
                clog2 = clog2 + 1;
                v = v >> 1;
            end
        end
    endfunction

    localparam NSLOT = 1 << PENDING_LOG2;
    localparam BEATS = (MAX_MEAS + 63) / 64;
    localparam BI_W  = clog2(BEATS + 1);
    // bridge.Reason codes (bridge/_wire.py)
    localparam [3:0] R_OK = 4'd0, R_BAD_MAGIC = 4'd1, R_BAD_VERSION = 4'd2,
                     R_TRUNCATED = 4'd3, R_BAD_CRC = 4'd4, R_BAD_LENGTH = 4'd5,
                     R_DUPLICATE = 4'd7, R_UNKNOWN_STREAM = 4'd8, R_UNKNOWN_SHOT = 4'd9,
                     R_BAD_FIELD = 4'd10;
    // Verdict codes (fpga/_correction_rules.py)
    localparam [2:0] V_DECODED = 3'd0, V_INCOMPLETE = 3'd1, V_DECODER_ERROR = 3'd2,
                     V_EOS = 3'd3, V_REJECTED = 3'd4;

    wire rst = ~aresetn;

    // =================================================================== registers
    wire [31:0] ctrl, stream_id, round_period, budget, corr_timeout;
    wire        ctrl_enable, ctrl_lockstep, clear;

    reg  [63:0] cyc;
    reg  [63:0] rounds_emitted, shots_decoded;
    reg  [31:0] rounds_backpressure, corr_accepted, corr_bad_magic, corr_bad_version,
                corr_truncated, corr_bad_crc, corr_bad_length, corr_bad_field,
                corr_unknown_stream, corr_unknown_shot, corr_duplicate, shots_incomplete,
                shots_decoder_error, shots_timed_out, budget_misses, lat_last, lat_max;
    reg  [31:0] frame;
    reg         st_done, st_unresp, st_bp;
    wire [31:0] status = ({31'd0, ctrl_enable} << `QHIL_STATUS_RUNNING) |
                         ({31'd0, st_done} << `QHIL_STATUS_DONE) |
                         ({31'd0, st_unresp} << `QHIL_STATUS_DECODER_UNRESPONSIVE) |
                         ({31'd0, st_bp} << `QHIL_STATUS_BACKPRESSURE);

    qhil_regs #(.ADDR_WIDTH(12)) u_regs (
        .aclk(aclk), .aresetn(aresetn),
        .s_axi_awaddr(s_axi_awaddr), .s_axi_awprot(s_axi_awprot),
        .s_axi_awvalid(s_axi_awvalid), .s_axi_awready(s_axi_awready),
        .s_axi_wdata(s_axi_wdata), .s_axi_wstrb(s_axi_wstrb), .s_axi_wvalid(s_axi_wvalid),
        .s_axi_wready(s_axi_wready), .s_axi_bresp(s_axi_bresp), .s_axi_bvalid(s_axi_bvalid),
        .s_axi_bready(s_axi_bready), .s_axi_araddr(s_axi_araddr),
        .s_axi_arprot(s_axi_arprot), .s_axi_arvalid(s_axi_arvalid),
        .s_axi_arready(s_axi_arready), .s_axi_rdata(s_axi_rdata), .s_axi_rresp(s_axi_rresp),
        .s_axi_rvalid(s_axi_rvalid), .s_axi_rready(s_axi_rready),
        .ctrl(ctrl), .ctrl_enable(ctrl_enable), .ctrl_lockstep(ctrl_lockstep),
        .clear_counters(clear), .stream_id(stream_id), .round_period(round_period),
        .budget(budget), .corr_timeout(corr_timeout),
        .status(status),
        .cycle(cyc), .rounds_emitted(rounds_emitted), .shots_decoded(shots_decoded),
        .rounds_backpressure(rounds_backpressure), .corr_accepted(corr_accepted),
        .corr_bad_magic(corr_bad_magic), .corr_bad_version(corr_bad_version),
        .corr_truncated(corr_truncated), .corr_bad_crc(corr_bad_crc),
        .corr_bad_length(corr_bad_length), .corr_bad_field(corr_bad_field),
        .corr_unknown_stream(corr_unknown_stream), .corr_unknown_shot(corr_unknown_shot),
        .corr_duplicate(corr_duplicate), .shots_incomplete(shots_incomplete),
        .shots_decoder_error(shots_decoder_error), .shots_timed_out(shots_timed_out),
        .budget_misses(budget_misses), .lat_last(lat_last), .lat_max(lat_max),
        .logical_frame(frame)
    );
    assign logical_frame = frame;

    // ==================================================== pending-shot table (storage)
    reg  [NSLOT-1:0] tab_valid;
    reg  [63:0]      tab_shot [0:NSLOT-1];
    reg  [63:0]      tab_seq  [0:NSLOT-1];
    reg  [31:0]      tab_nrnd [0:NSLOT-1];
    reg  [63:0]      tab_dl   [0:NSLOT-1];

    // ================================================================= input stage
    reg  [BI_W-1:0]     beat_idx;     // next beat of the round; BEATS = past the end
    reg  [64*BEATS-1:0] acc;          // the round's beats so far
    reg  [63:0]         shot_cnt;
    reg  [31:0]         round_cnt;
    reg                 eos_req;      // END_OF_STREAM taken, not yet queued
    reg  [63:0]         eos_t;
    reg  [31:0]         rc_cnt;       // round clock: cycles since the last tick
    reg                 credit;       // a tick not yet used by a round's first beat

    // Pipeline beside the detection unit, and the one-round queue.
    reg                 sb1_valid, sb2_valid;
    reg  [63:0]         sb1_shot, sb2_shot, sb1_t, sb2_t;
    reg  [31:0]         sb1_round, sb2_round;
    reg                 sb1_first, sb2_first, sb1_last, sb2_last;
    reg                 buf_full;
    reg  [31:0]         buf_stream, buf_round;
    reg  [63:0]         buf_shot, buf_seq, buf_t;
    reg  [7:0]          buf_flags;
    reg  [15:0]         buf_n;
    reg  [MAX_DETS-1:0] buf_dets;
    reg                 buf_eos;

    wire pk_ready;
    wire pk_take  = buf_full & pk_ready;
    wire buf_free = ~buf_full | pk_take;
    wire q_round  = sb2_valid;                 // aligned with det_valid
    wire q_load   = q_round & buf_free;
    wire q_drop   = q_round & ~buf_free;       // paced only: lockstep never gets here full
    wire q_eos    = eos_req & ~sb1_valid & ~sb2_valid & buf_free;

    wire pace_ok  = (round_period == 32'd0) | credit | (beat_idx != {BI_W{1'b0}});
    wire slot_free = ~tab_valid[shot_cnt[PENDING_LOG2-1:0]];
    wire room     = ~sb1_valid & ~sb2_valid & ~buf_full;
    assign s_axis_meas_tready = ctrl_enable & ~eos_req &
                                (ctrl_lockstep ? (room & slot_free) : pace_ok);
    wire beat_in  = s_axis_meas_tvalid & s_axis_meas_tready;
    wire round_in = beat_in & s_axis_meas_tlast & ~s_axis_meas_tuser[1];
    wire eos_in   = beat_in & s_axis_meas_tlast & s_axis_meas_tuser[1];
    wire tick     = (rc_cnt + 32'd1 >= round_period);

    // The round as the detection unit sees it: earlier beats, with this beat in its lane.
    reg [64*BEATS-1:0] meas_round;
    integer b;
    always @(*) begin
        meas_round = acc;
        for (b = 0; b < BEATS; b = b + 1)
            if (beat_idx == b)
                meas_round[64*b +: 64] = s_axis_meas_tdata;
    end
    wire [15:0] round_index = (round_cnt > 32'hFFFF) ? 16'hFFFF : round_cnt[15:0];

    always @(posedge aclk) begin
        if (rst) begin
            beat_idx  <= {BI_W{1'b0}};
            shot_cnt  <= 64'd0;
            round_cnt <= 32'd0;
            eos_req   <= 1'b0;
            eos_t     <= 64'd0;
            rc_cnt    <= 32'd0;
            credit    <= 1'b0;
            cyc       <= 64'd0;
            acc       <= {64*BEATS{1'b0}};
        end else begin
            cyc    <= cyc + 64'd1;
            rc_cnt <= tick ? 32'd0 : rc_cnt + 32'd1;
            credit <= tick | (credit & ~(beat_in & (beat_idx == {BI_W{1'b0}})));
            if (beat_in) begin
                if (beat_idx != BEATS)
                    acc[64*beat_idx +: 64] <= s_axis_meas_tdata;
                beat_idx <= s_axis_meas_tlast ? {BI_W{1'b0}} :
                            (beat_idx == BEATS) ? beat_idx : beat_idx + 1'b1;
            end
            if (eos_in) begin
                eos_req <= 1'b1;
                eos_t   <= cyc;
            end else if (q_eos) begin
                eos_req <= 1'b0;
            end
            if (clear) begin
                shot_cnt  <= 64'd0;
                round_cnt <= 32'd0;
            end else if (round_in) begin
                shot_cnt  <= shot_cnt + s_axis_meas_tuser[0];
                round_cnt <= s_axis_meas_tuser[0] ? 32'd0 : round_cnt + 32'd1;
            end
        end
    end

    // ====================================================== detection-event unit
    wire                det_valid;
    wire [MAX_DETS-1:0] det_dets;
    wire [15:0]         det_n;
    wire                det_err;   // round index past ROUNDS_MAX: det_n is 0 (see above)

    qhil_detection_unit #(
        .MAX_MEAS(MAX_MEAS), .MAX_DETS(MAX_DETS), .MAX_TERMS(MAX_TERMS),
        .ROUNDS_MAX(ROUNDS_MAX), .ROM_FILE(ROM_FILE)
    ) u_det (
        .clk(aclk), .rst(rst), .meas_valid(round_in), .meas(meas_round[MAX_MEAS-1:0]),
        .round_index(round_index), .dets_valid(det_valid), .dets(det_dets), .n_dets(det_n),
        .round_error(det_err)
    );

    always @(posedge aclk) begin
        if (rst) begin
            sb1_valid <= 1'b0;
            sb2_valid <= 1'b0;
        end else begin
            sb1_valid <= round_in;
            sb2_valid <= sb1_valid;
        end
        if (round_in) begin
            sb1_shot  <= shot_cnt;
            sb1_round <= round_cnt;
            sb1_first <= (round_cnt == 32'd0);
            sb1_last  <= s_axis_meas_tuser[0];
            sb1_t     <= cyc;
        end
        sb2_shot  <= sb1_shot;
        sb2_round <= sb1_round;
        sb2_first <= sb1_first;
        sb2_last  <= sb1_last;
        sb2_t     <= sb1_t;
    end

    // ============================================ queue stage (E2) and the packetizer

    reg  [63:0] seq_cnt, started;
    reg         cur_any;                       // a round of the current shot took a seq
    reg  [63:0] cur_seq, cur_t;                // ... the last such round's seq and t_fpga
    wire        eff_any = cur_any | q_load;
    wire [63:0] eff_seq = q_load ? seq_cnt : cur_seq;
    wire [63:0] eff_t   = q_load ? sb2_t : cur_t;

    always @(posedge aclk) begin
        if (rst) begin
            buf_full <= 1'b0;
        end else if (q_load | q_eos) begin
            buf_full <= 1'b1;
        end else if (pk_take) begin
            buf_full <= 1'b0;
        end
        if (q_load) begin
            buf_eos    <= 1'b0;
            buf_stream <= stream_id;
            buf_shot   <= sb2_shot;
            buf_round  <= sb2_round;
            buf_flags  <= {6'd0, sb2_last, sb2_first};
            buf_seq    <= seq_cnt;
            buf_t      <= sb2_t;
            buf_n      <= det_n;
            buf_dets   <= det_dets;
        end else if (q_eos) begin
            buf_eos    <= 1'b1;
            buf_stream <= stream_id;
            buf_shot   <= 64'd0;
            buf_round  <= 32'd0;
            buf_flags  <= 8'h80;
            buf_seq    <= seq_cnt;
            buf_t      <= eos_t;
            buf_n      <= 16'd0;
            buf_dets   <= {MAX_DETS{1'b0}};
        end
    end

    reg pk_eos;   // the packet in the packetizer is the END_OF_STREAM one
    always @(posedge aclk)
        if (pk_take) pk_eos <= buf_eos;

    qhil_packetizer #(.MAX_BITS(MAX_DETS)) u_pk (
        .clk(aclk), .rst(rst),
        .start(pk_take), .start_ready(pk_ready),
        .stream_id(buf_stream), .round(buf_round), .shot(buf_shot), .seq(buf_seq),
        .t_fpga(buf_t), .flags(buf_flags), .n_bits(buf_n), .bits(buf_dets),
        .out_valid(m_axis_syn_tvalid), .out_ready(m_axis_syn_tready),
        .out_data(m_axis_syn_tdata), .out_keep(m_axis_syn_tkeep), .out_last(m_axis_syn_tlast)
    );
    wire pkt_out = m_axis_syn_tvalid & m_axis_syn_tready & m_axis_syn_tlast & ~pk_eos;

    // ============================================================ correction receiver
    wire        rx_done;
    wire [3:0]  rx_reason;
    wire [7:0]  rx_flags, rx_status;
    wire [15:0] rx_n_obs, rx_n_frame;
    wire [31:0] rx_stream, rx_obs;
    wire [63:0] rx_shot, rx_seq, rx_t_fpga, rx_t_host_rx, rx_t_host_tx;

    assign s_axis_cor_tready = 1'b1;
    qhil_correction_rx u_rx (
        .clk(aclk), .rst(rst),
        .in_valid(s_axis_cor_tvalid), .in_data(s_axis_cor_tdata), .in_last(s_axis_cor_tlast),
        .done(rx_done), .reason(rx_reason), .flags(rx_flags), .n_obs(rx_n_obs),
        .stream_id(rx_stream), .status(rx_status), .n_frame(rx_n_frame), .shot(rx_shot),
        .seq(rx_seq), .t_fpga(rx_t_fpga), .t_host_rx(rx_t_host_rx),
        .t_host_tx(rx_t_host_tx), .obs(rx_obs)
    );

    // ===================================================== table operations this cycle
    wire [PENDING_LOG2-1:0] ins_slot = sb2_shot[PENDING_LOG2-1:0];
    wire [PENDING_LOG2-1:0] rx_slot  = rx_shot[PENDING_LOG2-1:0];
    reg  [PENDING_LOG2-1:0] scan_ptr;
    wire ins      = q_round & sb2_last & eff_any;

    // Judge, second stage (C2): the ruling, from the first stage's registers.
    reg                     j_valid, j_eos, j_stream_ok, j_known, j_pend, j_stale;
    reg                     j_nobs_ok, j_seq_ok, j_nfr_ok;
    reg  [3:0]              j_reason;
    reg  [7:0]              j_status;
    reg  [63:0]             j_lat;
    reg  [NUM_OBS-1:0]      j_obs;
    reg  [PENDING_LOG2-1:0] j_slot;
    reg  [2:0]              v_verdict;
    reg  [3:0]              v_reason;
    always @(*) begin
        v_reason = R_OK;
        if (j_reason != R_OK) begin
            v_verdict = V_REJECTED;
            v_reason  = j_reason;
        end else if (j_eos) begin
            v_verdict = V_EOS;
        end else if (!j_stream_ok) begin
            v_verdict = V_REJECTED;
            v_reason  = R_UNKNOWN_STREAM;
        end else if (!j_pend || j_stale) begin
            v_verdict = V_REJECTED;
            v_reason  = j_known ? R_DUPLICATE : R_UNKNOWN_SHOT;
        end else if (j_status == 8'd0) begin
            v_verdict = (j_nobs_ok && j_seq_ok) ? V_DECODED : V_REJECTED;
            v_reason  = !j_nobs_ok ? R_BAD_LENGTH : !j_seq_ok ? R_BAD_FIELD : R_OK;
        end else if (j_status == 8'd1) begin
            v_verdict = j_nfr_ok ? V_INCOMPLETE : V_REJECTED;
            v_reason  = j_nfr_ok ? R_OK : R_BAD_LENGTH;
        end else begin
            v_verdict = V_DECODER_ERROR;
        end
    end
    wire j_accept = j_valid & (v_verdict == V_DECODED | v_verdict == V_INCOMPLETE |
                               v_verdict == V_DECODER_ERROR);
    wire j_rej    = j_valid & (v_verdict == V_REJECTED);
    wire j_dec    = j_valid & (v_verdict == V_DECODED);
    wire [31:0] j_lat32 = (j_lat[63:32] != 32'd0) ? 32'hFFFFFFFF : j_lat[31:0];
    wire [31:0] flips   = {{(32 - NUM_OBS){1'b0}}, j_obs};

    // Insertion evicts an older occupant, unless the judge frees that slot on this edge.
    wire evict    = ins & tab_valid[ins_slot] & ~(j_accept & (j_slot == ins_slot));
    wire scan_en  = ~rx_done & ~j_valid & ~ins;
    wire expire   = scan_en & tab_valid[scan_ptr] & (cyc >= tab_dl[scan_ptr]);

    always @(posedge aclk) begin
        if (ins) begin
            tab_shot[ins_slot] <= sb2_shot;
            tab_seq[ins_slot]  <= eff_seq;
            tab_nrnd[ins_slot] <= sb2_round + 32'd1;
            tab_dl[ins_slot]   <= eff_t + {32'd0, corr_timeout};
        end
    end

    // Judge, first stage (C1): compare against the table while the fields are fresh.
    always @(posedge aclk) begin
        if (rst)
            j_valid <= 1'b0;
        else
            j_valid <= rx_done;
        if (rx_done) begin
            j_reason    <= rx_reason;
            j_eos       <= rx_flags[7];
            j_stream_ok <= (rx_stream == stream_id);
            j_known     <= (rx_shot < started);
            j_pend      <= tab_valid[rx_slot] & (tab_shot[rx_slot] == rx_shot);
            // The slot changes on this edge: its snapshot is stale.
            j_stale     <= (ins & (ins_slot == rx_slot)) | (j_accept & (j_slot == rx_slot));
            j_status    <= rx_status;
            j_nobs_ok   <= (rx_n_obs == NUM_OBS);
            j_seq_ok    <= (tab_seq[rx_slot] == rx_seq);
            j_nfr_ok    <= (tab_nrnd[rx_slot] == {16'd0, rx_n_frame});
            j_lat       <= cyc + ~rx_t_fpga;      // (cycle of the last byte) - t_fpga
            j_obs       <= rx_obs[NUM_OBS-1:0];
            j_slot      <= rx_slot;
        end
    end

    // ================================================ counters, table valid bits, frame
    always @(posedge aclk) begin
        if (rst || clear) begin
            tab_valid           <= {NSLOT{1'b0}};
            scan_ptr            <= {PENDING_LOG2{1'b0}};
            seq_cnt             <= 64'd0;
            started             <= 64'd0;
            cur_any             <= 1'b0;
            cur_seq             <= 64'd0;
            cur_t               <= 64'd0;
            rounds_emitted      <= 64'd0;
            shots_decoded       <= 64'd0;
            rounds_backpressure <= 32'd0;
            corr_accepted       <= 32'd0;
            corr_bad_magic      <= 32'd0;
            corr_bad_version    <= 32'd0;
            corr_truncated      <= 32'd0;
            corr_bad_crc        <= 32'd0;
            corr_bad_length     <= 32'd0;
            corr_bad_field      <= 32'd0;
            corr_unknown_stream <= 32'd0;
            corr_unknown_shot   <= 32'd0;
            corr_duplicate      <= 32'd0;
            shots_incomplete    <= 32'd0;
            shots_decoder_error <= 32'd0;
            shots_timed_out     <= 32'd0;
            budget_misses       <= 32'd0;
            lat_last            <= 32'd0;
            lat_max             <= 32'd0;
            frame               <= 32'd0;
            frame_update        <= rst ? 1'b0 : (frame != 32'd0);
            st_done             <= 1'b0;
            st_unresp           <= 1'b0;
            st_bp               <= 1'b0;
        end else begin
            // ---- queue stage
            if (q_load | q_eos)
                seq_cnt <= seq_cnt + 64'd1;
            if (q_round) begin
                started <= sb2_shot + 64'd1;
                cur_any <= sb2_last ? 1'b0 : eff_any;
                cur_seq <= eff_seq;
                cur_t   <= eff_t;
            end
            if (q_drop) begin
                rounds_backpressure <= rounds_backpressure + 32'd1;
                st_bp               <= 1'b1;
            end
            if (pkt_out)
                rounds_emitted <= rounds_emitted + 64'd1;
            // ---- table: the judge frees, insertion fills (after it), the scan expires
            if (scan_en)
                scan_ptr <= scan_ptr + 1'b1;
            if (j_accept)
                tab_valid[j_slot] <= 1'b0;
            if (expire)
                tab_valid[scan_ptr] <= 1'b0;
            if (ins)
                tab_valid[ins_slot] <= 1'b1;
            if (evict | expire) begin
                shots_timed_out <= shots_timed_out + 32'd1;
                st_unresp       <= 1'b1;
            end
            // ---- the judge's ruling
            frame_update <= j_dec & (flips != 32'd0);
            if (j_dec) begin
                frame         <= frame ^ flips;
                shots_decoded <= shots_decoded + 64'd1;
                lat_last      <= j_lat32;
                if (j_lat32 > lat_max)
                    lat_max <= j_lat32;
                if (j_lat > {32'd0, budget})
                    budget_misses <= budget_misses + 32'd1;
            end
            if (j_accept)
                corr_accepted <= corr_accepted + 32'd1;
            if (j_valid && v_verdict == V_INCOMPLETE)
                shots_incomplete <= shots_incomplete + 32'd1;
            if (j_valid && v_verdict == V_DECODER_ERROR)
                shots_decoder_error <= shots_decoder_error + 32'd1;
            if (j_valid && v_verdict == V_EOS)
                st_done <= 1'b1;
            if (j_rej) begin
                case (v_reason)
                    R_BAD_MAGIC:      corr_bad_magic      <= corr_bad_magic + 32'd1;
                    R_BAD_VERSION:    corr_bad_version    <= corr_bad_version + 32'd1;
                    R_TRUNCATED:      corr_truncated      <= corr_truncated + 32'd1;
                    R_BAD_CRC:        corr_bad_crc        <= corr_bad_crc + 32'd1;
                    R_BAD_LENGTH:     corr_bad_length     <= corr_bad_length + 32'd1;
                    R_BAD_FIELD:      corr_bad_field      <= corr_bad_field + 32'd1;
                    R_UNKNOWN_STREAM: corr_unknown_stream <= corr_unknown_stream + 32'd1;
                    R_UNKNOWN_SHOT:   corr_unknown_shot   <= corr_unknown_shot + 32'd1;
                    R_DUPLICATE:      corr_duplicate      <= corr_duplicate + 32'd1;
                    default: ;
                endcase
            end
        end
    end

    // Unused: the correction's host timestamps (the host's own records), the detection
    // unit's round_error (its round gets n_bits = 0) and dets_valid (sb2_valid is the
    // same signal), CTRL as a whole (its bits are used) and obs bits past NUM_OBS.
    wire unused = ^{rx_t_host_rx, rx_t_host_tx, det_err, det_valid, ctrl, rx_obs};
endmodule

`default_nettype wire
