"""qhil.fpga.model: the software front end the loop runs, and its account of every round.

- ``CycleModel`` (``_cycle_model.py``): the round clock, detection events,
  packetizer, correction receiver, cycle counter and budget check, in software,
  at wall-clock speed. It puts rounds on a bridge (``_cycle_emit.py``), judges
  the corrections that come back (``_cycle_corrections.py``) and keeps one run's
  state (``_cycle_run.py``).
- ``Fate``, ``FrontEndResult``, ``FrontEndProgress``, ``PacingStats``
  (``_ledger.py``): what became of every emitted round, and the run's timing.

Its settings are ``qhil.fpga.FrontEndConfig``, shared with the driver.
"""

from __future__ import annotations

from qhil.fpga.model._cycle_model import CycleModel
from qhil.fpga.model._ledger import Fate, FrontEndProgress, FrontEndResult, PacingStats

__all__ = ["CycleModel", "Fate", "FrontEndProgress", "FrontEndResult", "PacingStats"]
