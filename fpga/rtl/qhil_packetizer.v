// qhil_packetizer.v: one QEC round -> one wire-v1 syndrome packet, as a 64-bit AXI stream.
//
// Packet (bridge/_wire.py is the definition; every integer little-endian):
//   0 "QSYN" | 4 version=1 | 5 flags | 6 n_bits u16 | 8 stream_id u32 | 12 round u32
//   16 shot u64 | 24 seq u64 | 32 t_fpga u64 | 40 payload P=ceil(n_bits/8) bytes
//   40+P crc32 u32 over the body, bytes [0, L) with L = 40+P
// Payload bit i is bits[i], packed LSB-first; bits at and above n_bits are sent
// as zero whatever `bits` holds there.
//
// Input: `start` takes the header fields and `bits` on the edge where
// start && start_ready; they may change after it. A start while start_ready is
// low is ignored. start_ready is high when idle and also in the cycle the last
// beat is accepted, so packets can follow each other with no idle beat.
//
// Output: AXI4-Stream, 64-bit. Byte k of the packet is out_data[8*(k%8) +: 8] of
// beat k/8 (little-endian within a beat); out_keep marks the bytes of the last
// beat (the others are all 0xFF); the unused bytes of the last beat are 0.
// A beat moves on a rising edge where out_valid && out_ready; out_data,
// out_keep and out_last hold while out_ready is low (and after the last beat,
// until the next packet's first beat). All outputs are registered.
//
// CRC: computed from the latched body, independently of out_ready, 8 bytes a
// cycle for the L/8 whole words, then one cycle each for 4, 2 and 1 of the
// L%8 = P%8 remaining bytes (bits 2, 1, 0 of L%8). Beats that hold only body
// bytes go out meanwhile; the beat holding the first CRC byte waits for it.
// The body is latched twice, into two shift registers that move down one word
// as the CRC / the output takes it, so neither selects a word by index.
//
// Latency, edge 0 = the edge that samples start, out_ready held high:
//   beat k < L/8 moves on edge k+2 (the first beat on edge 2);
//   the CRC is complete after edge C = L/8 + popcount(L%8);
//   the beat holding CRC byte 0 moves on edge max(C+2, L/8+2), the next (if
//   the CRC spills over, L%8 >= 5) one edge later.
//     n_bits  8 (d=3):  L=41 -> last beat on edge 8   (6 beats)
//     n_bits 24 (d=5):  L=43 -> edge 9  (6 beats)
//     n_bits 48 (d=7):  L=46 -> edge 10 (7 beats)
//     n_bits 80 (d=9):  L=50 -> edge 9  (7 beats)
//     n_bits 120 (d=11): L=55 -> edge 12 (8 beats)
//     n_bits 168 (d=13): L=61 -> edge 12 (9 beats)
//   Throughput: the next start is taken on the edge the last beat moves.
//
// n_bits > MAX_BITS: the packet still has the length n_bits says; payload
// bytes past MAX_BITS are zero. n_bits <= MAX_BITS is the intended use.
//
// Reset: `rst`, synchronous, active high. Verilog-2005, no latches.

`default_nettype none

module qhil_packetizer #(
    parameter MAX_BITS = 1024
) (
    input  wire                clk,
    input  wire                rst,

    input  wire                start,
    output wire                start_ready,
    input  wire [31:0]         stream_id,
    input  wire [31:0]         round,
    input  wire [63:0]         shot,
    input  wire [63:0]         seq,
    input  wire [63:0]         t_fpga,
    input  wire [7:0]          flags,
    input  wire [15:0]         n_bits,
    input  wire [MAX_BITS-1:0] bits,

    output reg                 out_valid,
    input  wire                out_ready,
    output reg  [63:0]         out_data,
    output reg  [7:0]          out_keep,
    output reg                 out_last
);
    localparam HDR     = 40;                       // header bytes (5 words)
    localparam PAY_MAX = (MAX_BITS + 7) / 8;       // payload bytes held
    localparam NW      = (HDR + PAY_MAX + 7) / 8;  // body words held
    localparam IW      = 11;                       // word index: (8232 + 3) / 8 < 2**11
    localparam [31:0] MAGIC = 32'h4E595351;        // "QSYN" little-endian
    localparam [2:0] PH_FULL = 3'd0, PH_T4 = 3'd1, PH_T2 = 3'd2, PH_T1 = 3'd3, PH_DONE = 3'd4;

    // ---- payload, masked to n_bits: whole bytes below, the partial byte, zeros above ----
    wire [8*PAY_MAX-1:0] bits_pad   = bits;           // zero-extends to whole bytes
    wire [12:0]          full_bytes = n_bits[15:3];
    wire [7:0]           part_mask  = 8'hFF >> (4'd8 - {1'b0, n_bits[2:0]});
    reg  [8*PAY_MAX-1:0] pay;
    integer j;
    always @(*) begin
        for (j = 0; j < PAY_MAX; j = j + 1) begin
            if (j < full_bytes)
                pay[8*j +: 8] = bits_pad[8*j +: 8];
            else if (j == full_bytes)
                pay[8*j +: 8] = bits_pad[8*j +: 8] & part_mask;   // mask 0 if n_bits%8 == 0
            else
                pay[8*j +: 8] = 8'd0;
        end
    end

    // ---- state ----
    reg  [64*NW-1:0] r_cbody;    // body words from cidx on, cidx's at [63:0], zero past the body
    reg  [64*NW-1:0] r_obody;    // body words from oidx on, oidx's at [63:0], zero past the body
    reg  [IW-1:0]    r_nfull;    // whole body words, L/8 (>= 5)
    reg  [2:0]       r_rem;      // body bytes in the partial word, L%8 = P%8
    reg  [IW-1:0]    r_lastw;    // index of the last beat, (L+3)/8
    reg  [7:0]       r_lastkeep; // out_keep of the last beat: ((L+3)%8)+1 bytes
    reg              busy;
    reg  [IW-1:0]    oidx;       // next beat to load into the output register
    reg  [IW-1:0]    cidx;       // next body word for the CRC
    reg  [2:0]       phase;
    reg  [31:0]      crc_s;      // raw CRC state

    wire [13:0] n_pay    = ({1'b0, n_bits} + 17'd7) >> 3;   // P <= 8192
    wire [13:0] body_len = HDR + n_pay;                     // L <= 8232

    // The body is held twice, as shift registers: the CRC takes the word at the bottom
    // of r_cbody and the output the one at the bottom of r_obody, each shifting one word
    // down as it goes, so no word is selected by an index (a deep barrel shifter).
    wire [63:0] cword = r_cbody[63:0];
    wire [63:0] oword = r_obody[63:0];
    wire [31:0] crc_fin  = ~crc_s;
    wire [31:0] crc8, crc4, crc2, crc1;   // the raw state after 8, 4, 2 or 1 more bytes
    qhil_crc32_next #(.BYTES(8)) u_crc8 (.state(crc_s), .data(cword), .next(crc8));
    qhil_crc32_next #(.BYTES(4)) u_crc4 (.state(crc_s), .data(cword[31:0]), .next(crc4));
    qhil_crc32_next #(.BYTES(2)) u_crc2 (
        .state(crc_s), .data(cword[{r_rem[2], 5'd0} +: 16]), .next(crc2));
    qhil_crc32_next #(.BYTES(1)) u_crc1 (
        .state(crc_s), .data(cword[{r_rem[2:1], 4'd0} +: 8]), .next(crc1));
    wire        crc_done = (phase == PH_DONE);

    // The CRC's next phase, given the tail bytes still to take (bit 2: 4, bit 1: 2, bit 0: 1).
    function [2:0] after;
        input [2:0] left;
        begin
            if (left[2])      after = PH_T4;
            else if (left[1]) after = PH_T2;
            else if (left[0]) after = PH_T1;
            else              after = PH_DONE;
        end
    endfunction

    // Beat oidx: a body word, the partial word with the CRC's first bytes, or the spill-over.
    reg [63:0] beat;
    always @(*) begin
        if (oidx < r_nfull)
            beat = oword;
        else if (oidx == r_nfull)
            beat = oword | ({32'd0, crc_fin} << {r_rem, 3'b000});
        else
            beat = {32'd0, crc_fin} >> {3'd0 - r_rem, 3'b000};
    end
    wire beat_ok = (oidx < r_nfull) | crc_done;

    wire accept = out_valid & out_ready;
    assign start_ready = ~busy | (accept & out_last);
    wire take = start & start_ready;

    always @(posedge clk) begin
        if (rst) begin
            busy      <= 1'b0;
            out_valid <= 1'b0;
            out_data  <= 64'd0;
            out_keep  <= 8'd0;
            out_last  <= 1'b0;
            phase     <= PH_DONE;
            crc_s     <= 32'hFFFFFFFF;
            cidx      <= {IW{1'b0}};
            oidx      <= {IW{1'b0}};
        end else if (take) begin
            r_nfull    <= body_len[IW+1:3];
            r_rem      <= body_len[2:0];
            r_lastw    <= (body_len + 14'd3) >> 3;
            r_lastkeep <= 8'hFF >> (3'd4 - body_len[2:0]);
            r_cbody    <= {pay, t_fpga, seq, shot, round, stream_id, n_bits, flags, 8'd1, MAGIC};
            r_obody    <= {pay, t_fpga, seq, shot, round, stream_id, n_bits, flags, 8'd1, MAGIC};
            busy       <= 1'b1;
            out_valid  <= 1'b0;
            out_last   <= 1'b0;
            oidx       <= {IW{1'b0}};
            cidx       <= {IW{1'b0}};
            phase      <= PH_FULL;
            crc_s      <= 32'hFFFFFFFF;
        end else begin
            // CRC, independent of the output.
            case (phase)
                PH_FULL: begin
                    crc_s   <= crc8;
                    cidx    <= cidx + 1'b1;
                    r_cbody <= r_cbody >> 64;
                    if (cidx == r_nfull - 1'b1)
                        phase <= after(r_rem);
                end
                PH_T4: begin
                    crc_s <= crc4;
                    phase <= after({1'b0, r_rem[1:0]});
                end
                PH_T2: begin
                    crc_s <= crc2;
                    phase <= after({2'b0, r_rem[0]});
                end
                PH_T1: begin
                    crc_s <= crc1;
                    phase <= PH_DONE;
                end
                default: ;
            endcase
            // Output register.
            if (accept && out_last) begin
                out_valid <= 1'b0;
                busy      <= 1'b0;
            end else if (busy && (!out_valid || out_ready) && oidx <= r_lastw && beat_ok) begin
                out_valid <= 1'b1;
                out_data  <= beat;
                out_keep  <= (oidx == r_lastw) ? r_lastkeep : 8'hFF;
                out_last  <= (oidx == r_lastw);
                oidx      <= oidx + 1'b1;
                r_obody   <= r_obody >> 64;
            end else if (accept) begin
                out_valid <= 1'b0;
            end
        end
    end
endmodule

`default_nettype wire
