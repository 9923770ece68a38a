// qhil_crc32.v: byte-wise CRC-32 (IEEE 802.3, the zlib.crc32 function).
//
// Reflected polynomial 0xEDB88320, state initialised to 0xFFFFFFFF, result
// XORed with 0xFFFFFFFF. Bytes are fed least-significant bit first, which is
// what the reflected form does, so no bit reversal is needed anywhere.
//
// qhil_crc32_next: the combinational next-state function (one byte per call).
// qhil_crc32:      a register around it; `crc` is always the finalized CRC of
//                  the bytes taken since the last clear, so it can be sent as is.
//
// Verilog-2005, no latches.

`default_nettype none

module qhil_crc32_next (
    input  wire [31:0] state,   // raw (un-finalized) CRC state
    input  wire [7:0]  data,
    output wire [31:0] next
);
    // Eight shift/XOR steps, unrolled by synthesis into an XOR tree: each
    // output bit depends on at most 8 data and 32 state bits (2-3 LUT levels).
    function [31:0] step8;
        input [31:0] s;
        input [7:0]  d;
        integer i;
        reg [31:0] c;
        begin
            c = s ^ {24'd0, d};
            for (i = 0; i < 8; i = i + 1)
                c = (c >> 1) ^ (32'hEDB88320 & {32{c[0]}});
            step8 = c;
        end
    endfunction

    assign next = step8(state, data);
endmodule

module qhil_crc32 (
    input  wire        clk,
    input  wire        rst,     // synchronous, active high
    input  wire        clear,   // restart; a byte valid in the same cycle is the first one
    input  wire        valid,
    input  wire [7:0]  data,
    output wire [31:0] crc      // finalized CRC of the bytes since the last clear
);
    reg  [31:0] state;
    // clear and valid together start a new message with this byte, so
    // back-to-back messages need no idle cycle between them.
    wire [31:0] base = clear ? 32'hFFFFFFFF : state;
    wire [31:0] next;

    qhil_crc32_next u_next (.state(base), .data(data), .next(next));

    always @(posedge clk) begin
        if (rst)
            state <= 32'hFFFFFFFF;
        else if (valid)
            state <= next;
        else if (clear)
            state <= 32'hFFFFFFFF;
    end

    assign crc = ~state;
endmodule

`default_nettype wire
