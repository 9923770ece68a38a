"""qhil.kernels: pre-decoder kernels (NumPy reference, Numba CPU, CUDA).

Empty in this release: the loop decodes with PyMatching alone. The CNN
pre-decoder plugs into ``qhil.host``'s decoder interface (``register_decoder``)
without changes to the loop.
"""

from __future__ import annotations

__all__: list[str] = []
