// qhil_crc32.v: CRC-32 (IEEE 802.3, the zlib.crc32 function), BYTES bytes a step.
//
// Reflected polynomial 0xEDB88320, state initialised to 0xFFFFFFFF, result
// XORed with 0xFFFFFFFF. Bytes are fed least-significant bit first, which is
// what the reflected form does, so no bit reversal is needed anywhere.
//
// qhil_crc32_next: the combinational next-state function. It takes the raw
// (un-finalized) state and BYTES bytes, data[7:0] first, and returns the raw
// state after them. Unrolled by synthesis into an XOR tree: each output bit
// depends on at most 32 state and 8*BYTES data bits (2-3 LUT6 levels for
// BYTES = 1, 3-4 for BYTES = 8). The receiver uses BYTES = 1, the packetizer
// 8, 4, 2 and 1.
//
// Verilog-2005, no latches.

`default_nettype none

module qhil_crc32_next #(
    parameter BYTES = 1
) (
    input  wire [31:0]        state,   // raw (un-finalized) CRC state
    input  wire [8*BYTES-1:0] data,
    output wire [31:0]        next
);
    function [31:0] step;
        input [31:0]        s;
        input [8*BYTES-1:0] d;
        integer i;
        reg [31:0] c;
        begin
            c = s;
            for (i = 0; i < 8 * BYTES; i = i + 1)
                c = (c >> 1) ^ (32'hEDB88320 & {32{c[0] ^ d[i]}});
            step = c;
        end
    endfunction

    assign next = step(state, data);
endmodule

`default_nettype wire
