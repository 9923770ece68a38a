"""qhil.kernels"""
