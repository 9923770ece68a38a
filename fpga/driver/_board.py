"""Finding a PYNQ board. pynq is an optional extra: without it the cycle model runs."""

from __future__ import annotations

import dataclasses

__all__ = ["BoardProbe", "find_board"]


@dataclasses.dataclass(frozen=True)
class BoardProbe:
    """Whether a board is usable, and if not, why not (a sentence naming the fix)."""

    present: bool
    reason: str
    name: str = ""


def find_board() -> BoardProbe:
    """Look for a PYNQ device without touching it.

    >>> probe = find_board()
    >>> probe.present or "pynq" in probe.reason or "device" in probe.reason
    True
    """
    try:
        import pynq  # type: ignore[import-not-found]
    except Exception as ex:
        return BoardProbe(
            False,
            f"pynq is not importable ({type(ex).__name__}); on a board image install the "
            "'board' extra; elsewhere the cycle model is used",
        )
    try:
        devices = list(pynq.Device.devices)
    except Exception as ex:
        return BoardProbe(False, f"no PYNQ device found ({ex}); the cycle model is used")
    if not devices:
        return BoardProbe(False, "no PYNQ device found; the cycle model is used")
    return BoardProbe(True, "PYNQ device found", name=str(getattr(devices[0], "name", devices[0])))
