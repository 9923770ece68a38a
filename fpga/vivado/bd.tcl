# qhil block design: Zynq UltraScale+ PS, the qhil_frontend IP and two AXI DMAs.
#
# UNTESTED: written without Vivado (see README.md). Sourced by build.tcl, which calls
# qhil_create_bd. The names below are the ones qhil's PYNQ driver looks for
# (fpga/driver/_pynq_backend.py: LINK_DMA, REPLAY_DMA; the IP type qhil_frontend), and the
# qhil_frontend port names are the fixed ones of fpga/rtl/qhil_frontend.v;
# fpga/driver/vivado_test.py checks both.
#
#   PS M_AXI_HPM0_FPD -> axi_ctrl -> qhil_frontend_0/s_axi        0xA000_0000, 4 KiB
#                                 -> axi_dma_link/S_AXI_LITE      0xA001_0000, 64 KiB
#                                 -> axi_dma_replay/S_AXI_LITE    0xA002_0000, 64 KiB
#   axi_dma_replay/M_AXIS_MM2S (64 bit) -> replay_adapter -> qhil_frontend_0/s_axis_meas
#       one round per transfer; the adapter turns each transfer's header beat into tuser
#   qhil_frontend_0/m_axis_syn (64 bit) -> axi_dma_link/S_AXIS_S2MM      one packet per transfer
#   axi_dma_link/M_AXIS_MM2S (64 bit) -> axis_cor_64to8 -> qhil_frontend_0/s_axis_cor (8 bit)
#   DMA masters -> axi_mem -> PS S_AXI_HP0_FPD (DDR)
#   pl_clk0 = fabric clock (250 MHz) for everything; rst_fabric makes the resets.
#   logical_frame / frame_update are left for the experiment's control logic: wire them
#   to it (e.g. a QICK tProcessor input) in your own design; here LOGICAL_FRAME is read
#   over AXI-Lite.

proc qhil_create_bd {design params rom_file fabric_mhz} {
    create_bd_design $design

    # -- Zynq UltraScale+ PS ----------------------------------------------------------------
    set ps [create_bd_cell -type ip -vlnv xilinx.com:ip:zynq_ultra_ps_e zynq_ultra_ps_e_0]
    apply_bd_automation -rule xilinx.com:bd_rule:zynq_ultra_ps_e \
        -config {apply_board_preset "1"} $ps
    set_property -dict [list \
        CONFIG.PSU__USE__M_AXI_GP0 {1} \
        CONFIG.PSU__MAXIGP0__DATA_WIDTH {32} \
        CONFIG.PSU__USE__M_AXI_GP1 {0} \
        CONFIG.PSU__USE__M_AXI_GP2 {0} \
        CONFIG.PSU__USE__S_AXI_GP2 {1} \
        CONFIG.PSU__SAXIGP2__DATA_WIDTH {64} \
        CONFIG.PSU__FPGA_PL0_ENABLE {1} \
        CONFIG.PSU__CRL_APB__PL0_REF_CTRL__FREQMHZ $fabric_mhz \
        CONFIG.PSU__USE__IRQ0 {1} \
    ] $ps

    set rst [create_bd_cell -type ip -vlnv xilinx.com:ip:proc_sys_reset rst_fabric]

    # -- the front end: RTL module reference, sized for the circuit's detector program -----
    set fe [create_bd_cell -type module -reference qhil_frontend qhil_frontend_0]
    set cfg [list CONFIG.ROM_FILE $rom_file]
    dict for {name value} $params {
        lappend cfg CONFIG.$name $value
    }
    set_property -dict $cfg $fe

    # -- DMAs (simple mode: PYNQ's DMA driver does not use scatter-gather here) -------------
    set dma_link [create_bd_cell -type ip -vlnv xilinx.com:ip:axi_dma axi_dma_link]
    set_property -dict [list \
        CONFIG.c_include_sg {0} \
        CONFIG.c_sg_length_width {26} \
        CONFIG.c_addr_width {64} \
        CONFIG.c_m_axi_mm2s_data_width {64} \
        CONFIG.c_m_axis_mm2s_tdata_width {64} \
        CONFIG.c_mm2s_burst_size {16} \
        CONFIG.c_m_axi_s2mm_data_width {64} \
        CONFIG.c_s_axis_s2mm_tdata_width {64} \
        CONFIG.c_s2mm_burst_size {16} \
    ] $dma_link
    set dma_replay [create_bd_cell -type ip -vlnv xilinx.com:ip:axi_dma axi_dma_replay]
    set_property -dict [list \
        CONFIG.c_include_sg {0} \
        CONFIG.c_include_s2mm {0} \
        CONFIG.c_sg_length_width {26} \
        CONFIG.c_addr_width {64} \
        CONFIG.c_m_axi_mm2s_data_width {64} \
        CONFIG.c_m_axis_mm2s_tdata_width {64} \
        CONFIG.c_mm2s_burst_size {16} \
    ] $dma_replay

    # The DMA has no TUSER: qhil_replay_adapter (fpga/vivado/) makes it from each
    # transfer's header beat (qhil.fpga.ReplayBuffer's layout).
    create_bd_cell -type module -reference qhil_replay_adapter replay_adapter

    # Corrections leave the DMA as 64-bit beats (TKEEP marks the last one's bytes) and
    # enter the front end one byte a beat.
    set cor [create_bd_cell -type ip -vlnv xilinx.com:ip:axis_dwidth_converter axis_cor_64to8]
    set_property -dict [list \
        CONFIG.S_TDATA_NUM_BYTES {8} \
        CONFIG.M_TDATA_NUM_BYTES {1} \
        CONFIG.HAS_TKEEP {1} \
        CONFIG.HAS_TLAST {1} \
    ] $cor

    # -- streams ---------------------------------------------------------------------------
    connect_bd_intf_net [get_bd_intf_pins axi_dma_replay/M_AXIS_MM2S] \
        [get_bd_intf_pins replay_adapter/s_axis]
    connect_bd_intf_net [get_bd_intf_pins replay_adapter/m_axis] \
        [get_bd_intf_pins qhil_frontend_0/s_axis_meas]
    connect_bd_intf_net [get_bd_intf_pins qhil_frontend_0/m_axis_syn] \
        [get_bd_intf_pins axi_dma_link/S_AXIS_S2MM]
    connect_bd_intf_net [get_bd_intf_pins axi_dma_link/M_AXIS_MM2S] \
        [get_bd_intf_pins axis_cor_64to8/S_AXIS]
    connect_bd_intf_net [get_bd_intf_pins axis_cor_64to8/M_AXIS] \
        [get_bd_intf_pins qhil_frontend_0/s_axis_cor]

    # -- AXI-Lite control: PS -> front end registers and both DMAs' registers --------------
    set ctrl [create_bd_cell -type ip -vlnv xilinx.com:ip:smartconnect axi_ctrl]
    set_property -dict [list CONFIG.NUM_SI {1} CONFIG.NUM_MI {3}] $ctrl
    connect_bd_intf_net [get_bd_intf_pins zynq_ultra_ps_e_0/M_AXI_HPM0_FPD] \
        [get_bd_intf_pins axi_ctrl/S00_AXI]
    connect_bd_intf_net [get_bd_intf_pins axi_ctrl/M00_AXI] [get_bd_intf_pins qhil_frontend_0/s_axi]
    connect_bd_intf_net [get_bd_intf_pins axi_ctrl/M01_AXI] [get_bd_intf_pins axi_dma_link/S_AXI_LITE]
    connect_bd_intf_net [get_bd_intf_pins axi_ctrl/M02_AXI] \
        [get_bd_intf_pins axi_dma_replay/S_AXI_LITE]

    # -- DMA masters -> PS DDR through HP0 -------------------------------------------------
    set mem [create_bd_cell -type ip -vlnv xilinx.com:ip:smartconnect axi_mem]
    set_property -dict [list CONFIG.NUM_SI {3} CONFIG.NUM_MI {1}] $mem
    connect_bd_intf_net [get_bd_intf_pins axi_dma_link/M_AXI_MM2S] [get_bd_intf_pins axi_mem/S00_AXI]
    connect_bd_intf_net [get_bd_intf_pins axi_dma_link/M_AXI_S2MM] [get_bd_intf_pins axi_mem/S01_AXI]
    connect_bd_intf_net [get_bd_intf_pins axi_dma_replay/M_AXI_MM2S] \
        [get_bd_intf_pins axi_mem/S02_AXI]
    connect_bd_intf_net [get_bd_intf_pins axi_mem/M00_AXI] \
        [get_bd_intf_pins zynq_ultra_ps_e_0/S_AXI_HP0_FPD]

    # -- one fabric clock, one reset domain ------------------------------------------------
    connect_bd_net [get_bd_pins zynq_ultra_ps_e_0/pl_clk0] \
        [get_bd_pins zynq_ultra_ps_e_0/maxihpm0_fpd_aclk] \
        [get_bd_pins zynq_ultra_ps_e_0/saxihp0_fpd_aclk] \
        [get_bd_pins qhil_frontend_0/aclk] \
        [get_bd_pins axi_dma_link/s_axi_lite_aclk] \
        [get_bd_pins axi_dma_link/m_axi_mm2s_aclk] \
        [get_bd_pins axi_dma_link/m_axi_s2mm_aclk] \
        [get_bd_pins axi_dma_replay/s_axi_lite_aclk] \
        [get_bd_pins axi_dma_replay/m_axi_mm2s_aclk] \
        [get_bd_pins axis_cor_64to8/aclk] \
        [get_bd_pins replay_adapter/aclk] \
        [get_bd_pins axi_ctrl/aclk] \
        [get_bd_pins axi_mem/aclk] \
        [get_bd_pins rst_fabric/slowest_sync_clk]
    connect_bd_net [get_bd_pins zynq_ultra_ps_e_0/pl_resetn0] [get_bd_pins rst_fabric/ext_reset_in]
    connect_bd_net [get_bd_pins rst_fabric/peripheral_aresetn] \
        [get_bd_pins qhil_frontend_0/aresetn] \
        [get_bd_pins axi_dma_link/axi_resetn] \
        [get_bd_pins axi_dma_replay/axi_resetn] \
        [get_bd_pins axis_cor_64to8/aresetn] \
        [get_bd_pins replay_adapter/aresetn]
    connect_bd_net [get_bd_pins rst_fabric/interconnect_aresetn] \
        [get_bd_pins axi_ctrl/aresetn] [get_bd_pins axi_mem/aresetn]

    # -- DMA interrupts to the PS (PYNQ's wait_async uses them; polling does not) ----------
    set irq [create_bd_cell -type ip -vlnv xilinx.com:ip:xlconcat irq_concat]
    set_property -dict [list CONFIG.NUM_PORTS {3}] $irq
    connect_bd_net [get_bd_pins axi_dma_link/mm2s_introut] [get_bd_pins irq_concat/In0]
    connect_bd_net [get_bd_pins axi_dma_link/s2mm_introut] [get_bd_pins irq_concat/In1]
    connect_bd_net [get_bd_pins axi_dma_replay/mm2s_introut] [get_bd_pins irq_concat/In2]
    connect_bd_net [get_bd_pins irq_concat/dout] [get_bd_pins zynq_ultra_ps_e_0/pl_ps_irq0]

    # -- address map: fixed for the registers, automatic for the DMAs' view of DDR ---------
    set data [get_bd_addr_spaces zynq_ultra_ps_e_0/Data]
    assign_bd_address -offset 0xA0000000 -range 4K -target_address_space $data \
        [get_bd_addr_segs qhil_frontend_0/s_axi/reg0]
    assign_bd_address -offset 0xA0010000 -range 64K -target_address_space $data \
        [get_bd_addr_segs axi_dma_link/S_AXI_LITE/Reg]
    assign_bd_address -offset 0xA0020000 -range 64K -target_address_space $data \
        [get_bd_addr_segs axi_dma_replay/S_AXI_LITE/Reg]
    assign_bd_address
}
