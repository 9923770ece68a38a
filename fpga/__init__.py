"""qhil.fpga"""
