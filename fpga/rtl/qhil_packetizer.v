// qhil_packetizer.v: one QEC round -> one wire-v1 syndrome packet, as a byte stream.
//
// Packet (bridge/_wire.py is the definition; every integer little-endian):
//   0 "QSYN" | 4 version=1 | 5 flags | 6 n_bits u16 | 8 stream_id u32 | 12 round u32
//   16 shot u64 | 24 seq u64 | 32 t_fpga u64 | 40 payload P=ceil(n_bits/8) bytes
//   40+P crc32 u32 over bytes [0, 40+P)
// Payload bit i is bits[i], packed LSB-first; the unused high bits of the last
// payload byte are sent as zero whatever `bits` holds there.
//
// Input: `start` takes the header fields and `bits` in the cycle where
// start && start_ready; they may change the cycle after. A start while
// start_ready is low is ignored. start_ready is high when idle and also in the
// cycle the last byte is accepted, so packets can go back to back with no gap.
//
// Output: valid/ready byte stream (AXI-Stream style). A byte moves on a rising
// edge where out_valid && out_ready; out_data/out_last hold while out_ready is
// low. out_last marks the last CRC byte. All outputs are registered.
//
// Latency (cycle 0 = the edge that samples start; out_ready held high):
//   start -> first byte on out_data: 1 cycle (it is valid right after edge 0).
//   byte k is on the output in cycle k+1, so the last byte of an N-byte packet,
//   N = 44 + ceil(n_bits/8), leaves on edge N: the CRC adds no cycles, it is
//   computed as the bytes go out.
//     d=5  (24 bits):  N = 47 -> 47 cycles (188 ns at 250 MHz)
//     d=13 (168 bits): N = 65 -> 65 cycles (260 ns at 250 MHz)
//   The issue's goal (last measurement bit -> last byte <= 25 cycles) is NOT met
//   by an 8-bit stream: the 40-byte header alone is 40 cycles. Meeting it needs a
//   wider stream (64-bit beats: 6 beats for d=5, 9 for d=13) or sending the
//   header before the round's last bit (then only P + 4 bytes follow the bits).
//
// n_bits > MAX_BITS: the packet still has the length n_bits says; payload bytes
// past MAX_BITS are sent as zero. n_bits <= MAX_BITS is the intended use.
//
// Verilog-2005, no latches.

`default_nettype none

module qhil_packetizer #(
    parameter MAX_BITS = 1024
) (
    input  wire                clk,
    input  wire                rst,         // synchronous, active high

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
    output reg  [7:0]          out_data,
    output reg                 out_last
);
    localparam HDR     = 40;                    // header bytes
    localparam PAY_MAX = (MAX_BITS + 7) / 8;    // payload bytes held
    localparam BODY    = HDR + PAY_MAX;         // bytes held in r_body
    localparam IW      = 14;                    // byte index: 44 + 8192 < 2**14
    localparam [31:0] MAGIC = 32'h4E595351;     // "QSYN" little-endian

    // Everything before the CRC, latched at start, byte k at [8k +: 8]. The
    // magic and version bits are constant, so synthesis drops those flops.
    reg  [8*BODY-1:0] r_body;
    reg  [IW-1:0]     r_crc0;       // index of the first CRC byte, 40 + P
    reg  [IW-1:0]     r_paylast;    // index of the last payload byte, 39 + P
    reg  [IW-1:0]     r_lastidx;    // index of the last CRC byte, 43 + P
    reg               r_has_tail;   // n_bits % 8 != 0: the last payload byte is partial
    reg  [7:0]        r_tail_mask;
    reg  [IW-1:0]     nidx;         // index of the byte to load next
    reg               cur_body;     // the byte on out_data goes into the CRC
    reg  [31:0]       crc_state;    // raw CRC of the bytes accepted so far

    wire [8*PAY_MAX-1:0] bits_pad = bits;   // zero-extends to whole bytes
    wire [IW-1:0]        n_pay    = ({1'b0, n_bits} + 17'd7) >> 3;

    wire accept = out_valid & out_ready;
    assign start_ready = ~out_valid | (out_ready & out_last);
    wire take = start & start_ready;

    // CRC including the byte now on out_data: the first CRC byte is loaded on
    // the same edge that accepts the last payload byte, so no bubble.
    wire [31:0] crc_next;
    qhil_crc32_next u_crc (.state(crc_state), .data(out_data), .next(crc_next));
    wire [31:0] crc_fin  = ~crc_state;
    wire [1:0]  crc_j    = nidx[1:0] - r_crc0[1:0];    // CRC byte 0..3 being loaded

    // The next byte, from registers only (nidx is registered, so no adder here).
    reg [7:0] nxt_byte;
    always @* begin
        if (nidx >= r_crc0) begin
            case (crc_j)
                2'd0:    nxt_byte = ~crc_next[7:0];
                2'd1:    nxt_byte = crc_fin[15:8];
                2'd2:    nxt_byte = crc_fin[23:16];
                default: nxt_byte = crc_fin[31:24];
            endcase
        end else if (nidx >= BODY) begin
            nxt_byte = 8'h00;                           // past MAX_BITS
        end else begin
            nxt_byte = r_body[8*nidx +: 8];
            if (r_has_tail && nidx == r_paylast)
                nxt_byte = nxt_byte & r_tail_mask;
        end
    end

    always @(posedge clk) begin
        if (rst) begin
            out_valid <= 1'b0;
            out_last  <= 1'b0;
        end else if (take) begin
            r_body      <= {bits_pad, t_fpga, seq, shot, round, stream_id,
                            n_bits, flags, 8'd1, MAGIC};
            r_crc0      <= HDR + n_pay;
            r_paylast   <= HDR - 1 + n_pay;
            r_lastidx   <= HDR + 3 + n_pay;
            r_has_tail  <= n_bits[2:0] != 3'd0;
            r_tail_mask <= 8'hFF >> (4'd8 - {1'b0, n_bits[2:0]});
            out_data    <= MAGIC[7:0];
            out_valid   <= 1'b1;
            out_last    <= 1'b0;
            nidx        <= 1;
            cur_body    <= 1'b1;
            crc_state   <= 32'hFFFFFFFF;
        end else if (accept) begin
            if (out_last) begin
                out_valid <= 1'b0;
                out_last  <= 1'b0;
            end else begin
                out_data  <= nxt_byte;
                out_last  <= nidx == r_lastidx;
                nidx      <= nidx + 1'b1;
                cur_body  <= nidx < r_crc0;
                if (cur_body)
                    crc_state <= crc_next;
            end
        end
    end
endmodule

`default_nettype wire
