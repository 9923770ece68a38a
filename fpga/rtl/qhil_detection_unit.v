// qhil_detection_unit: measurement results in, detection events out, one QEC round at a time.
//
// The hardware twin of qhil.fpga._detection.DetectorProgram.round_events. Each round the
// unit receives that round's measurement results and XORs them, following a detector
// program held in a ROM, with the results it kept from the previous round. It holds
// exactly ONE previous round (register `prev`), so one RTL serves any circuit whose
// detectors reach back at most one round; the circuit itself lives only in the ROM.
//
// Interface (all synchronous to clk, active-high synchronous rst):
//   meas_valid, meas[MAX_MEAS-1:0], round_index[15:0]
//       One round's results, meas[j] = j-th measurement of the round (record order);
//       bits at and above that round's count are ignored. round_index is the round's
//       time t (0 = first round, the last is the final data-qubit measurement).
//   dets_valid, dets[MAX_DETS-1:0], n_dets[15:0], round_error
//       dets[i] = i-th detection event of the round (stim detector order within the
//       round); bits at and above n_dets are 0. round_error = 1 (with n_dets = 0 and
//       dets = 0) when round_index >= ROUNDS_MAX. n_dets matches the packetizer's n_bits.
//
// Latency: 2 cycles (two register stages), throughput 1 round per cycle (back-to-back
// rounds allowed). A round presented in cycle c (meas_valid=1, sampled by the rising edge
// ending cycle c) has dets_valid=1 and its dets/n_dets/round_error in cycle c+2 (sampled
// by the consumer on the edge ending cycle c+2):
//   edge ending c:    ROM word of round_index read (synchronous read, BRAM/LUTRAM
//                     friendly); meas and `prev` latched; meas shifted into `prev`.
//   edge ending c+1:  the XOR network's result registered onto the outputs.
//   `prev` is only updated by meas_valid; idle cycles between rounds are fine.
//
// ROM format ($readmemh, file named by parameter ROM_FILE, default from the define
// QHIL_DETPROG_ROM, else "qhil_detprog.hex" relative to the simulator's directory).
// Written by qhil.fpga.rtl_model._detprog_rom.write_rom. One line per round t = 0..ROUNDS_MAX-1,
// one WORD_W-bit word per line in hex, most significant digit first. Fields, from bit 0:
//   for detector i = 0..MAX_DETS-1, entry at [i*ENTRY_W +: ENTRY_W], ENTRY_W = 1 + MAX_TERMS*IDX_W:
//     bit 0                   ref: the detector's noiseless parity, XORed in
//     [1 + k*IDX_W +: IDX_W]  term k: index into the window W = {0, cur, prev}
//                             (IDX_W = clog2(2*MAX_MEAS + 1)):
//                               0 .. MAX_MEAS-1           prev[idx]   (previous round)
//                               MAX_MEAS .. 2*MAX_MEAS-1  cur[idx - MAX_MEAS] (this round)
//                               2*MAX_MEAS (and above)    constant 0 (unused term)
//   [MAX_DETS*ENTRY_W +: CNT_W]          n_meas: measurements in this round (informative)
//   [MAX_DETS*ENTRY_W + CNT_W +: CNT_W]  n_dets: detectors in this round
//   CNT_W = 16, WORD_W = MAX_DETS*ENTRY_W + 2*CNT_W.
// Rounds past the circuit's last round may be all zeros (n_dets = 0: no events).
//
// Verilog-2005, synthesizable (no latches; the ROM is an initialized memory).

`ifndef QHIL_DETPROG_ROM
`define QHIL_DETPROG_ROM "qhil_detprog.hex"
`endif

module qhil_detection_unit #(
    parameter MAX_MEAS   = 169,
    parameter MAX_DETS   = 168,
    parameter MAX_TERMS  = 5,
    parameter ROUNDS_MAX = 8,
    parameter ROM_FILE   = `QHIL_DETPROG_ROM
) (
    input  wire                clk,
    input  wire                rst,
    input  wire                meas_valid,
    input  wire [MAX_MEAS-1:0] meas,
    input  wire [15:0]         round_index,
    output reg                 dets_valid,
    output reg  [MAX_DETS-1:0] dets,
    output reg  [15:0]         n_dets,
    output reg                 round_error
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

    localparam WIN_N   = 2 * MAX_MEAS + 1;             // prev, cur, constant 0
    localparam IDX_W   = clog2(WIN_N);
    localparam WIN_W   = 1 << IDX_W;                    // every IDX_W-bit index is defined
    localparam ENTRY_W = 1 + MAX_TERMS * IDX_W;
    localparam CNT_W   = 16;
    localparam DETS_W  = MAX_DETS * ENTRY_W;
    localparam WORD_W  = DETS_W + 2 * CNT_W;
    localparam ADDR_W  = (ROUNDS_MAX > 1) ? clog2(ROUNDS_MAX) : 1;

    reg [WORD_W-1:0] rom [0:ROUNDS_MAX-1];
    initial $readmemh(ROM_FILE, rom);

    // Round held for the next round's detectors.
    reg [MAX_MEAS-1:0] prev;

    // Stage 1: ROM word and the two rounds the detectors read.
    reg                s1_valid;
    reg                s1_bad;
    reg [WORD_W-1:0]   s1_word;
    reg [MAX_MEAS-1:0] s1_cur;
    reg [MAX_MEAS-1:0] s1_prev;

    wire in_range = (round_index < ROUNDS_MAX);

    always @(posedge clk) begin
        if (rst) begin
            s1_valid <= 1'b0;
            s1_bad   <= 1'b0;
            prev     <= {MAX_MEAS{1'b0}};
        end else begin
            s1_valid <= meas_valid;
            if (meas_valid) begin
                s1_bad  <= ~in_range;
                s1_cur  <= meas;
                s1_prev <= prev;
                prev    <= meas;
            end
        end
    end

    // Synchronous ROM read, no reset (keeps it a plain BRAM/LUTRAM read port).
    always @(posedge clk) begin
        if (meas_valid) s1_word <= rom[round_index[ADDR_W-1:0]];
    end

    // Stage 2: the XOR network.
    wire [WIN_W-1:0] window = {{(WIN_W - WIN_N + 1){1'b0}}, s1_cur, s1_prev};
    wire [CNT_W-1:0] s1_n_dets = s1_bad ? {CNT_W{1'b0}} : s1_word[DETS_W + CNT_W +: CNT_W];
    wire [MAX_DETS-1:0] dets_comb;

    genvar i, k;
    generate
        for (i = 0; i < MAX_DETS; i = i + 1) begin : g_det
            wire [MAX_TERMS-1:0] term_bits;
            for (k = 0; k < MAX_TERMS; k = k + 1) begin : g_term
                wire [IDX_W-1:0] idx = s1_word[i * ENTRY_W + 1 + k * IDX_W +: IDX_W];
                assign term_bits[k] = window[idx];
            end
            assign dets_comb[i] = (s1_n_dets > i) & (s1_word[i * ENTRY_W] ^ (^term_bits));
        end
    endgenerate

    always @(posedge clk) begin
        if (rst) begin
            dets_valid  <= 1'b0;
            dets        <= {MAX_DETS{1'b0}};
            n_dets      <= {CNT_W{1'b0}};
            round_error <= 1'b0;
        end else begin
            dets_valid <= s1_valid;
            if (s1_valid) begin
                dets        <= dets_comb;
                n_dets      <= s1_n_dets;
                round_error <= s1_bad;
            end
        end
    end
endmodule
