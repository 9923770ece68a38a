// qhil_regs: the front end's AXI4-Lite register block.
//
// Implements the map in qhil_regmap.vh (generated from fpga/_regmap.py; see
// REGS.md). 32-bit data, byte addresses, one outstanding transaction per
// channel (one write, one read), OKAY / SLVERR responses:
//
//   * rw registers (CTRL, STREAM_ID, ROUND_PERIOD, BUDGET, CORR_TIMEOUT) are
//     writable byte by byte under WSTRB and drive the output ports of the same
//     name. CTRL bit CLEAR_COUNTERS is self-clearing: writing 1 pulses
//     clear_counters for one clock and the bit always reads back 0.
//   * ro registers return the input port of the same name (lower case); a
//     LO/HI pair is one 64-bit port. ID, VERSION and FABRIC_MHZ are constants
//     (their _RESET values from the header).
//   * Reading a pair's LO register latches the HI half at the same clock edge;
//     reading HI returns that latched half, so LO-then-HI is a coherent 64-bit
//     snapshot (HI reads 0 until LO has been read once).
//   * A write to an ro register, an unmapped address or a non-word-aligned
//     address returns SLVERR and changes nothing. A read of an unmapped or
//     non-word-aligned address returns SLVERR with RDATA = 0.
//
// Every input is assumed synchronous to aclk. Verilog-2005.

`timescale 1ns / 1ps
`default_nettype none
`include "qhil_regmap.vh"

module qhil_regs #(
    // Byte-address bits decoded; addresses in [2**QHIL_REG_ADDR_WIDTH,
    // 2**ADDR_WIDTH) are unmapped (SLVERR). 12 = one 4 KiB AXI window.
    parameter ADDR_WIDTH = 12
) (
    input  wire                  aclk,
    input  wire                  aresetn,

    // AXI4-Lite slave
    input  wire [ADDR_WIDTH-1:0] s_axi_awaddr,
    input  wire [2:0]            s_axi_awprot,
    input  wire                  s_axi_awvalid,
    output wire                  s_axi_awready,
    input  wire [31:0]           s_axi_wdata,
    input  wire [3:0]            s_axi_wstrb,
    input  wire                  s_axi_wvalid,
    output wire                  s_axi_wready,
    output reg  [1:0]            s_axi_bresp,
    output reg                   s_axi_bvalid,
    input  wire                  s_axi_bready,
    input  wire [ADDR_WIDTH-1:0] s_axi_araddr,
    input  wire [2:0]            s_axi_arprot,
    input  wire                  s_axi_arvalid,
    output wire                  s_axi_arready,
    output reg  [31:0]           s_axi_rdata,
    output reg  [1:0]            s_axi_rresp,
    output reg                   s_axi_rvalid,
    input  wire                  s_axi_rready,

    // rw registers, as stored
    output reg  [31:0]           ctrl,
    output wire                  ctrl_enable,
    output wire                  ctrl_lockstep,
    output reg                   clear_counters,   // one-clock pulse
    output reg  [31:0]           stream_id,
    output reg  [31:0]           round_period,
    output reg  [31:0]           budget,
    output reg  [31:0]           corr_timeout,

    // ro registers, fed by the front end
    input  wire [31:0]           status,
    input  wire [63:0]           cycle,
    input  wire [63:0]           rounds_emitted,
    input  wire [63:0]           shots_decoded,
    input  wire [31:0]           rounds_backpressure,
    input  wire [31:0]           corr_accepted,
    input  wire [31:0]           corr_bad_magic,
    input  wire [31:0]           corr_bad_version,
    input  wire [31:0]           corr_truncated,
    input  wire [31:0]           corr_bad_crc,
    input  wire [31:0]           corr_bad_length,
    input  wire [31:0]           corr_bad_field,
    input  wire [31:0]           corr_unknown_stream,
    input  wire [31:0]           corr_unknown_shot,
    input  wire [31:0]           corr_duplicate,
    input  wire [31:0]           shots_incomplete,
    input  wire [31:0]           shots_decoder_error,
    input  wire [31:0]           shots_timed_out,
    input  wire [31:0]           budget_misses,
    input  wire [31:0]           lat_last,
    input  wire [31:0]           lat_max,
    input  wire [31:0]           logical_frame
);

    localparam [1:0] RESP_OKAY   = 2'b00;
    localparam [1:0] RESP_SLVERR = 2'b10;
    localparam [31:0] CLEAR_MASK = 32'd1 << `QHIL_CTRL_CLEAR_COUNTERS;

    assign ctrl_enable   = ctrl[`QHIL_CTRL_ENABLE];
    assign ctrl_lockstep = ctrl[`QHIL_CTRL_LOCKSTEP];

    // Byte-lane merge of a write into a stored value.
    function [31:0] merge;
        input [31:0] old;
        input [31:0] data;
        input [3:0]  strb;
        integer i;
        begin
            for (i = 0; i < 4; i = i + 1)
                merge[8*i +: 8] = strb[i] ? data[8*i +: 8] : old[8*i +: 8];
        end
    endfunction

    // ------------------------------------------------------------------
    // Write channel: capture AW and W (either order), then apply once both
    // are held and the previous response has been taken.
    // ------------------------------------------------------------------
    reg                  aw_full;
    reg [ADDR_WIDTH-1:0] aw_addr;
    reg                  w_full;
    reg [31:0]           w_data;
    reg [3:0]            w_strb;

    assign s_axi_awready = ~aw_full;
    assign s_axi_wready  = ~w_full;

    wire do_write = aw_full & w_full & ~s_axi_bvalid;

    always @(posedge aclk) begin
        if (!aresetn) begin
            aw_full        <= 1'b0;
            aw_addr        <= {ADDR_WIDTH{1'b0}};
            w_full         <= 1'b0;
            w_data         <= 32'd0;
            w_strb         <= 4'd0;
            s_axi_bvalid   <= 1'b0;
            s_axi_bresp    <= RESP_OKAY;
            clear_counters <= 1'b0;
            ctrl           <= `QHIL_REG_CTRL_RESET & ~CLEAR_MASK;
            stream_id      <= `QHIL_REG_STREAM_ID_RESET;
            round_period   <= `QHIL_REG_ROUND_PERIOD_RESET;
            budget         <= `QHIL_REG_BUDGET_RESET;
            corr_timeout   <= `QHIL_REG_CORR_TIMEOUT_RESET;
        end else begin
            clear_counters <= 1'b0;
            if (s_axi_bvalid && s_axi_bready)
                s_axi_bvalid <= 1'b0;
            if (s_axi_awvalid && !aw_full) begin
                aw_full <= 1'b1;
                aw_addr <= s_axi_awaddr;
            end
            if (s_axi_wvalid && !w_full) begin
                w_full <= 1'b1;
                w_data <= s_axi_wdata;
                w_strb <= s_axi_wstrb;
            end
            if (do_write) begin
                aw_full      <= 1'b0;
                w_full       <= 1'b0;
                s_axi_bvalid <= 1'b1;
                s_axi_bresp  <= RESP_OKAY;
                case (aw_addr)
                    `QHIL_REG_CTRL: begin
                        ctrl <= merge(ctrl, w_data, w_strb) & ~CLEAR_MASK;
                        clear_counters <= w_strb[`QHIL_CTRL_CLEAR_COUNTERS / 8]
                                          & w_data[`QHIL_CTRL_CLEAR_COUNTERS];
                    end
                    `QHIL_REG_STREAM_ID:    stream_id    <= merge(stream_id, w_data, w_strb);
                    `QHIL_REG_ROUND_PERIOD: round_period <= merge(round_period, w_data, w_strb);
                    `QHIL_REG_BUDGET:       budget       <= merge(budget, w_data, w_strb);
                    `QHIL_REG_CORR_TIMEOUT: corr_timeout <= merge(corr_timeout, w_data, w_strb);
                    // ro registers and unmapped / unaligned addresses
                    default:                s_axi_bresp  <= RESP_SLVERR;
                endcase
            end
        end
    end

    // ------------------------------------------------------------------
    // Read channel: one read in flight; RDATA is registered.
    // ------------------------------------------------------------------
    reg [31:0] cycle_hi_q;
    reg [31:0] rounds_emitted_hi_q;
    reg [31:0] shots_decoded_hi_q;

    assign s_axi_arready = ~s_axi_rvalid;

    always @(posedge aclk) begin
        if (!aresetn) begin
            s_axi_rvalid        <= 1'b0;
            s_axi_rresp         <= RESP_OKAY;
            s_axi_rdata         <= 32'd0;
            cycle_hi_q          <= 32'd0;
            rounds_emitted_hi_q <= 32'd0;
            shots_decoded_hi_q  <= 32'd0;
        end else begin
            if (s_axi_rvalid && s_axi_rready)
                s_axi_rvalid <= 1'b0;
            if (s_axi_arvalid && !s_axi_rvalid) begin
                s_axi_rvalid <= 1'b1;
                s_axi_rresp  <= RESP_OKAY;
                case (s_axi_araddr)
                    `QHIL_REG_ID:                  s_axi_rdata <= `QHIL_REG_ID_RESET;
                    `QHIL_REG_VERSION:             s_axi_rdata <= `QHIL_REG_VERSION_RESET;
                    `QHIL_REG_CTRL:                s_axi_rdata <= ctrl;
                    `QHIL_REG_STATUS:              s_axi_rdata <= status;
                    `QHIL_REG_STREAM_ID:           s_axi_rdata <= stream_id;
                    `QHIL_REG_ROUND_PERIOD:        s_axi_rdata <= round_period;
                    `QHIL_REG_BUDGET:              s_axi_rdata <= budget;
                    `QHIL_REG_CORR_TIMEOUT:        s_axi_rdata <= corr_timeout;
                    `QHIL_REG_FABRIC_MHZ:          s_axi_rdata <= `QHIL_REG_FABRIC_MHZ_RESET;
                    `QHIL_REG_CYCLE_LO: begin
                        s_axi_rdata <= cycle[31:0];
                        cycle_hi_q  <= cycle[63:32];
                    end
                    `QHIL_REG_CYCLE_HI:            s_axi_rdata <= cycle_hi_q;
                    `QHIL_REG_ROUNDS_EMITTED_LO: begin
                        s_axi_rdata         <= rounds_emitted[31:0];
                        rounds_emitted_hi_q <= rounds_emitted[63:32];
                    end
                    `QHIL_REG_ROUNDS_EMITTED_HI:   s_axi_rdata <= rounds_emitted_hi_q;
                    `QHIL_REG_SHOTS_DECODED_LO: begin
                        s_axi_rdata        <= shots_decoded[31:0];
                        shots_decoded_hi_q <= shots_decoded[63:32];
                    end
                    `QHIL_REG_SHOTS_DECODED_HI:    s_axi_rdata <= shots_decoded_hi_q;
                    `QHIL_REG_ROUNDS_BACKPRESSURE: s_axi_rdata <= rounds_backpressure;
                    `QHIL_REG_CORR_ACCEPTED:       s_axi_rdata <= corr_accepted;
                    `QHIL_REG_CORR_BAD_MAGIC:      s_axi_rdata <= corr_bad_magic;
                    `QHIL_REG_CORR_BAD_VERSION:    s_axi_rdata <= corr_bad_version;
                    `QHIL_REG_CORR_TRUNCATED:      s_axi_rdata <= corr_truncated;
                    `QHIL_REG_CORR_BAD_CRC:        s_axi_rdata <= corr_bad_crc;
                    `QHIL_REG_CORR_BAD_LENGTH:     s_axi_rdata <= corr_bad_length;
                    `QHIL_REG_CORR_BAD_FIELD:      s_axi_rdata <= corr_bad_field;
                    `QHIL_REG_CORR_UNKNOWN_STREAM: s_axi_rdata <= corr_unknown_stream;
                    `QHIL_REG_CORR_UNKNOWN_SHOT:   s_axi_rdata <= corr_unknown_shot;
                    `QHIL_REG_CORR_DUPLICATE:      s_axi_rdata <= corr_duplicate;
                    `QHIL_REG_SHOTS_INCOMPLETE:    s_axi_rdata <= shots_incomplete;
                    `QHIL_REG_SHOTS_DECODER_ERROR: s_axi_rdata <= shots_decoder_error;
                    `QHIL_REG_SHOTS_TIMED_OUT:     s_axi_rdata <= shots_timed_out;
                    `QHIL_REG_BUDGET_MISSES:       s_axi_rdata <= budget_misses;
                    `QHIL_REG_LAT_LAST:            s_axi_rdata <= lat_last;
                    `QHIL_REG_LAT_MAX:             s_axi_rdata <= lat_max;
                    `QHIL_REG_LOGICAL_FRAME:       s_axi_rdata <= logical_frame;
                    default: begin
                        s_axi_rdata <= 32'd0;
                        s_axi_rresp <= RESP_SLVERR;
                    end
                endcase
            end
        end
    end

    // AxPROT is accepted and ignored.
    wire unused_prot = ^{s_axi_awprot, s_axi_arprot};

endmodule

`default_nettype wire
