// qhil_correction_rx.v: wire-v1 correction packet (decoder -> front end) receiver.
//
// Packet (bridge/_wire.py is the definition; every integer little-endian):
//   0 "QCOR" | 4 version=1 | 5 flags | 6 n_obs u16 | 8 stream_id u32 | 12 status
//   13 reserved | 14 n_frame u16 | 16 shot u64 | 24 seq u64 | 32 t_fpga u64
//   40 t_host_rx u64 | 48 t_host_tx u64 | 56 obs O=ceil(n_obs/8) | 56+O frame
//   F=ceil(n_frame/8) | 56+O+F crc32 u32 over bytes [0, 56+O+F)
//
// Input: a byte stream, in_valid / in_data / in_last, always ready (no
// back-pressure). A byte moves on every rising edge with in_valid high; in_last
// marks the last byte of a packet. Packets may go back to back, and in_valid may
// drop for any number of cycles inside a packet. A packet's length is the number
// of bytes up to and including the one with in_last.
//
// Output, per packet: `done` is high for exactly one cycle, the cycle right after
// the edge that takes the in_last byte. In that cycle `reason` is the
// bridge.Reason code that parse_correction returns for the same bytes, checked in
// its order:
//   length < 6                            -> TRUNCATED   (3)
//   bytes 0..3 != "QCOR"                  -> BAD_MAGIC   (1)
//   byte 4 != 1                           -> BAD_VERSION (2)
//   length < 60 + O + F                   -> TRUNCATED   (3)
//   length > 60 + O + F (trailing bytes)  -> BAD_LENGTH  (5)
//   CRC-32 mismatch                       -> BAD_CRC     (4)
//   status > 2                            -> BAD_FIELD   (10)
//   otherwise                             -> OK          (0)
// and the header fields (stream_id, shot, seq, t_fpga, t_host_rx, t_host_tx,
// status, flags, n_obs, n_frame) and obs[31:0] (obs bits 0..31, bits at and above
// n_obs read as 0) are those of the packet. The fields are meaningful when reason
// is OK; they are read straight from the capture registers, so they hold until
// the next packet's bytes overwrite them (at the earliest, the edge after done
// rises overwrites byte 0, i.e. magic; the fields above stay through that edge).
//
// What a packet means to the front end (shot table, sequence check, logical
// frame, counters) is decided by qhil_frontend's judge stage, which takes
// done / reason and these fields.
//
// Latency, edge 0 = the rising edge that takes the in_last byte:
//   done / reason / fields valid right after edge 0, so a consumer samples them
//   on edge 1. The CRC and length checks are done as the bytes arrive, so the
//   latency does not depend on the packet length. The CRC check uses the residue property:
// a message followed by its own CRC-32 (little-endian) leaves the raw CRC state
// 0xDEBB20E3. One byte before the end that is "state ^ {24'd0, last byte} ==
// 0x00BE26ED" (the 8-step CRC map inverted), so the last byte only goes
// through an 8-bit compare, not the CRC XOR tree, on its way to `reason`.
//
// Reset is `rst`: synchronous and active high. Verilog-2005, no latches.

`default_nettype none

module qhil_correction_rx (
    input  wire            clk,
    input  wire            rst,
    // byte stream in (always ready)
    input  wire            in_valid,
    input  wire [7:0]      in_data,
    input  wire            in_last,
    // per packet, valid while done is high
    output reg             done,
    output reg  [3:0]      reason,
    output wire [7:0]      flags,
    output wire [15:0]     n_obs,
    output wire [31:0]     stream_id,
    output wire [7:0]      status,
    output wire [15:0]     n_frame,
    output wire [63:0]     shot,
    output wire [63:0]     seq,
    output wire [63:0]     t_fpga,
    output wire [63:0]     t_host_rx,
    output wire [63:0]     t_host_tx,
    output wire [31:0]     obs
);
    localparam [3:0] R_OK = 4'd0, R_BAD_MAGIC = 4'd1, R_BAD_VERSION = 4'd2,
                     R_TRUNCATED = 4'd3, R_BAD_CRC = 4'd4, R_BAD_LENGTH = 4'd5,
                     R_BAD_FIELD = 4'd10;
    localparam [31:0] CRC_PRE_RESIDUE = 32'h00BE26ED;  // state ^ last byte, see above
    localparam CW = 17;  // byte counter; saturates at 2^17-1 > 60 + 2 * 8192

    // ---- per-packet state -------------------------------------------------
    reg  [CW-1:0]  cnt;        // bytes of this packet taken so far (saturating)
    reg  [31:0]    crc_s;      // raw CRC state over those bytes
    reg            magic_ok;   // bytes taken of 0..3 match "QCOR"
    reg            ver_ok;     // byte 4 == 1
    reg  [CW-1:0]  size_m1;    // packet size the header implies, minus 1 (>= 59)
    reg  [447:0]   hdr;        // bytes 0..55
    reg  [31:0]    obs_raw;    // bytes 56..59

    wire [31:0] crc_next;
    qhil_crc32_next u_crc (.state(crc_s), .data(in_data), .next(crc_next));

    assign flags     = hdr[5*8 +: 8];
    assign n_obs     = hdr[6*8 +: 16];
    assign stream_id = hdr[8*8 +: 32];
    assign status    = hdr[12*8 +: 8];
    assign n_frame   = hdr[14*8 +: 16];
    assign shot      = hdr[16*8 +: 64];
    assign seq       = hdr[24*8 +: 64];
    assign t_fpga    = hdr[32*8 +: 64];
    assign t_host_rx = hdr[40*8 +: 64];
    assign t_host_tx = hdr[48*8 +: 64];

    // obs bits at and above n_obs are not obs flips (frame bits, CRC or padding).
    reg [31:0] obs_mask;
    integer i;
    always @(*) begin
        for (i = 0; i < 32; i = i + 1)
            obs_mask[i] = (n_obs > i);
    end
    assign obs = obs_raw & obs_mask;

    // ---- the reason, for a byte with in_last (comb from state + that byte) ----
    wire magic_byte_ok = (cnt == 0) ? (in_data == "Q") :
                         (cnt == 1) ? (in_data == "C") :
                         (cnt == 2) ? (in_data == "O") :
                                      (in_data == "R");
    wire crc_ok = (crc_s[31:8] == CRC_PRE_RESIDUE[31:8]) &&
                  ((crc_s[7:0] ^ in_data) == CRC_PRE_RESIDUE[7:0]);
    reg [3:0] reason_c;
    always @(*) begin
        if (cnt < 5)                        // length < 6
            reason_c = R_TRUNCATED;
        else if (!magic_ok)
            reason_c = R_BAD_MAGIC;
        else if (!ver_ok)
            reason_c = R_BAD_VERSION;
        else if (cnt < size_m1)             // length < size (covers length < 60)
            reason_c = R_TRUNCATED;
        else if (cnt != size_m1)            // length > size
            reason_c = R_BAD_LENGTH;
        else if (!crc_ok)
            reason_c = R_BAD_CRC;
        else if (status > 8'd2)
            reason_c = R_BAD_FIELD;
        else
            reason_c = R_OK;
    end

    // ceil(n/8) for the size the header implies
    wire [13:0] n_ob = {1'b0, n_obs[15:3]} + {13'd0, |n_obs[2:0]};
    wire [13:0] n_fb = {1'b0, n_frame[15:3]} + {13'd0, |n_frame[2:0]};

    always @(posedge clk) begin
        if (rst) begin
            cnt      <= {CW{1'b0}};
            crc_s    <= 32'hFFFFFFFF;
            magic_ok <= 1'b0;
            ver_ok   <= 1'b0;
            size_m1  <= 59;
            done     <= 1'b0;
            reason   <= R_OK;
        end else begin
            // n_obs / n_frame are complete from byte 16 on; used only from byte 59.
            size_m1 <= 59 + n_ob + n_fb;
            done    <= in_valid && in_last;
            if (in_valid) begin
                if (cnt < 4)
                    magic_ok <= (cnt == 0 || magic_ok) && magic_byte_ok;
                if (cnt == 4)
                    ver_ok <= (in_data == 8'd1);
                if (in_last) begin
                    reason <= reason_c;
                    cnt    <= {CW{1'b0}};
                    crc_s  <= 32'hFFFFFFFF;
                end else begin
                    cnt    <= (&cnt) ? cnt : cnt + 1'b1;
                    crc_s  <= crc_next;
                end
            end
        end
    end

    // Capture registers, one byte enable each: no reset needed (qualified by
    // done / reason).
    genvar j;
    generate
        for (j = 0; j < 56; j = j + 1) begin : g_hdr
            always @(posedge clk)
                if (in_valid && cnt == j)
                    hdr[j*8 +: 8] <= in_data;
        end
        for (j = 0; j < 4; j = j + 1) begin : g_obs
            always @(posedge clk)
                if (in_valid && cnt == 56 + j)
                    obs_raw[j*8 +: 8] <= in_data;
        end
    endgenerate

endmodule

`default_nettype wire
