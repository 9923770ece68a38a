// qhil_replay_adapter: the measurement-replay DMA's stream into qhil_frontend's s_axis_meas.
//
// qhil_frontend samples s_axis_meas_tuser with each round's tlast: bit 0 LAST_ROUND (the
// round ends its shot), bit 1 END_OF_STREAM (emit the end-of-stream packet). An AXI DMA
// (MM2S, simple mode) has no TUSER. So every transfer of a replay buffer
// (qhil.fpga.ReplayBuffer) starts with one header beat, and this adapter turns that beat
// into tuser for the rest of the transfer:
//
//   transfer = header beat: tdata[1:0] = {END_OF_STREAM, LAST_ROUND}, other bits 0
//            + the round's measurement beats (stim's order, LSB first), the last with tlast
//
// The header beat is taken and never forwarded. A header beat that carries tlast (a
// one-beat transfer) is dropped whole. After the header, tdata, tvalid, tlast and tready
// pass straight through (no added cycle); tuser holds the header's bits until the next
// header. The adapter is for the replay path only: a readout chain drives
// s_axis_meas_tuser itself.
//
// aresetn: synchronous, active low. Verilog-2005 (Icarus 11, yosys 0.23), no latches.
// Tested by fpga/benches/vivado_replay_test.py (cocotb, Icarus) against the twin's reading of the
// same buffer.

`default_nettype none

module qhil_replay_adapter (
    input  wire        aclk,
    input  wire        aresetn,
    input  wire [63:0] s_axis_tdata,
    input  wire        s_axis_tvalid,
    output wire        s_axis_tready,
    input  wire        s_axis_tlast,
    output wire [63:0] m_axis_tdata,
    output wire        m_axis_tvalid,
    input  wire        m_axis_tready,
    output wire        m_axis_tlast,
    output wire [1:0]  m_axis_tuser
);
    reg       in_body;  // this transfer's header has been taken
    reg [1:0] flags;    // its {END_OF_STREAM, LAST_ROUND}

    assign s_axis_tready = in_body ? m_axis_tready : 1'b1;
    assign m_axis_tvalid = in_body & s_axis_tvalid;
    assign m_axis_tdata  = s_axis_tdata;
    assign m_axis_tlast  = s_axis_tlast;
    assign m_axis_tuser  = flags;

    always @(posedge aclk) begin
        if (!aresetn) begin
            in_body <= 1'b0;
            flags   <= 2'b00;
        end else if (s_axis_tvalid && s_axis_tready) begin
            if (!in_body) begin
                in_body <= !s_axis_tlast;
                flags   <= s_axis_tdata[1:0];
            end else if (s_axis_tlast) begin
                in_body <= 1'b0;
            end
        end
    end
endmodule

`default_nettype wire
