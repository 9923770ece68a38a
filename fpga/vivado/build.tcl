# Build the qhil front-end overlay for the RFSoC 4x2 and export what PYNQ's Overlay needs.
#
# UNTESTED: written without Vivado (see README.md for how to run it and what to check).
#
#   python -m qhil.fpga.driver._driver_program CIRCUIT.stim --out PREP_DIR
#   vivado -mode batch -source fpga/vivado/build.tcl -tclargs PREP_DIR OUT_DIR ?JOBS?
#
# OUT_DIR receives qhil_rfsoc4x2.bit, qhil_rfsoc4x2.hwh (PYNQ's Overlay reads both) and
# qhil_rfsoc4x2.qhil.json (the detector-program manifest FrontEnd.open checks), plus
# timing_summary.rpt and utilization.rpt; the Vivado project goes to OUT_DIR/proj.

set here [file dirname [file normalize [info script]]]
set rtl_dir [file normalize [file join $here .. rtl]]

if {[llength $argv] < 2} {
    puts stderr "usage: vivado -mode batch -source build.tcl -tclargs PREP_DIR OUT_DIR ?JOBS?"
    puts stderr "  PREP_DIR: from `python -m qhil.fpga.driver._driver_program CIRCUIT.stim --out PREP_DIR`"
    exit 2
}
set prep_dir [file normalize [lindex $argv 0]]
set out_dir [file normalize [lindex $argv 1]]
set jobs [expr {[llength $argv] > 2 ? [lindex $argv 2] : 4}]

# The board: Real Digital RFSoC 4x2 (a PYNQ 3.0 board). Another Zynq UltraScale+ board
# needs its part, board part and a PL clock of 250 MHz; nothing else here is board-specific.
set board rfsoc4x2
set part xczu48dr-ffvg1517-2-e
set board_pattern "*rfsoc4x2*"
set fabric_mhz 250
set name qhil_$board

foreach f {qhil_params.tcl qhil_detprog.hex qhil_program.json} {
    if {![file exists [file join $prep_dir $f]]} {
        error "$prep_dir/$f is missing: run `python -m qhil.fpga.driver._driver_program CIRCUIT.stim\
            --out $prep_dir` first (it writes the ROM, the RTL parameters and the manifest)"
    }
}
# Defines qhil_params (RTL parameter -> value) and qhil_rom_file (absolute path).
source [file join $prep_dir qhil_params.tcl]

# -- project ------------------------------------------------------------------------------
file mkdir $out_dir
create_project $name [file join $out_dir proj] -part $part -force
set board_parts [get_board_parts -quiet -latest_file_version $board_pattern]
if {[llength $board_parts] == 0} {
    error "no board files for $board_pattern: install the RFSoC 4x2 board files\
        (github.com/RealDigitalOrg/RFSoC4x2-BSP, board_files/) under\
        <Vivado>/data/xhub/boards/XilinxBoardStore/boards or set_param board.repoPaths"
}
set_property board_part [lindex $board_parts 0] [current_project]

# -- sources: every RTL file, the replay adapter, the register-map header and the ROM -------
set rtl_files [concat [glob -directory $rtl_dir *.v] [glob -directory $here *.v]]
set header_files [glob -directory $rtl_dir *.vh]
add_files -norecurse $rtl_files
add_files -norecurse $header_files
set_property file_type {Verilog Header} [get_files $header_files]
set_property include_dirs [list $rtl_dir] [current_fileset]
add_files -norecurse $qhil_rom_file
set_property file_type {Memory Initialization Files} [get_files $qhil_rom_file]
update_compile_order -fileset sources_1

# -- block design ---------------------------------------------------------------------------
source [file join $here bd.tcl]
qhil_create_bd qhil $qhil_params $qhil_rom_file $fabric_mhz
validate_bd_design
save_bd_design
set bd_file [get_files qhil.bd]
generate_target all $bd_file
add_files -norecurse [make_wrapper -files $bd_file -top]
set_property top qhil_wrapper [current_fileset]
update_compile_order -fileset sources_1

# -- synthesis, implementation, bitstream ---------------------------------------------------
launch_runs impl_1 -to_step write_bitstream -jobs $jobs
wait_on_run impl_1
set impl [get_runs impl_1]
if {[get_property PROGRESS $impl] ne "100%"} {
    error "implementation did not finish: see [get_property DIRECTORY $impl]/runme.log"
}
open_run impl_1
report_timing_summary -file [file join $out_dir timing_summary.rpt]
report_utilization -hierarchical -file [file join $out_dir utilization.rpt]
set wns [get_property SLACK [get_timing_paths -max_paths 1 -nworst 1 -setup]]
if {$wns < 0} {
    puts "CRITICAL WARNING: timing is not met at $fabric_mhz MHz (WNS $wns ns);\
        see $out_dir/timing_summary.rpt before trusting this bitstream"
}

# -- export for PYNQ: <name>.bit and <name>.hwh side by side, plus qhil's manifest ----------
set bit_src [file join [get_property DIRECTORY $impl] qhil_wrapper.bit]
set hwh_src [file join $out_dir proj $name.gen sources_1 bd qhil hw_handoff qhil.hwh]
file copy -force $bit_src [file join $out_dir $name.bit]
file copy -force $hwh_src [file join $out_dir $name.hwh]
file copy -force [file join $prep_dir qhil_program.json] [file join $out_dir $name.qhil.json]
puts "qhil: wrote $out_dir/$name.bit, $name.hwh and $name.qhil.json (WNS $wns ns)"
