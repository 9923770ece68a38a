"""Getting a run's kernels ready before its first round, and saying so.

Every numba kernel a run uses compiles (first run on a machine, tens of
seconds) or loads from the cache (later runs) before the front end emits its
first round, so compilation never lands inside the measured loop. While that
compile (no earlier run filled the cache), the user sees one status line the
moment the first one starts, rather than silence.
The report then says whether the measured run was warm: nothing compiled
during it, in either process.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from qhil.bridge import (
    KernelCacheReport,
    cache_dir,
    kernel_cache_report,
    on_first_compile,
)

__all__ = ["KernelWarmth", "Preparation", "compiling_message", "preparing"]


@dataclasses.dataclass(frozen=True)
class KernelWarmth:
    """Whether a run's kernels were ready before its first round (``report.json``'s ``kernels``).

    ``warm``: no kernel compiled during the measured run, in either process;
    ``prepare_s``: wall time from start-up to the decoder being ready;
    ``compiled_before_run`` / ``loaded_from_cache``: kernel signatures compiled
    (no cache entry: a first run) or loaded while preparing;
    ``compiled_during_run``: signatures compiled while the front end streamed.
    """

    warm: bool
    prepare_s: float
    compiled_before_run: int
    loaded_from_cache: int
    compiled_during_run: int
    cache: str

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class Preparation:
    """The start-up phase of one run: its kernels' counts at the start and when ready."""

    def __init__(self) -> None:
        self._t0 = time.monotonic()
        self.ready_s = 0.0
        self.front_end: KernelCacheReport = kernel_cache_report()
        self.decoder: KernelCacheReport | None = None

    def warmth(self, *, decoder_compiled_in_run: int) -> KernelWarmth:
        """Call after the run: compares this process's counts now with those when ready."""
        now = kernel_cache_report()
        d = self.decoder
        during = now.compiled - self.front_end.compiled + decoder_compiled_in_run
        return KernelWarmth(
            warm=during == 0,
            prepare_s=round(self.ready_s, 3),
            compiled_before_run=self.front_end.compiled + (d.compiled if d else 0),
            loaded_from_cache=self.front_end.loaded + (d.loaded if d else 0),
            compiled_during_run=during,
            cache=now.folder or "(not cached: the cache folder is not writable)",
        )


def compiling_message(role: str) -> str:
    return f"{role}: compiling kernels, first run only (cached in {cache_dir()})"


@contextmanager
def preparing(on_status: Callable[[str], None] | None) -> Iterator[Preparation]:
    """Time the start-up inside; tell ``on_status`` when a kernel starts compiling.

    On leaving, ``Preparation.front_end`` holds this process's kernel counts; the
    caller sets ``Preparation.decoder`` to the decoder process's, if there is one.
    """
    prep = Preparation()
    say = on_status or (lambda line: None)
    with on_first_compile(lambda: say(compiling_message("qhil run"))):
        yield prep
    prep.ready_s = time.monotonic() - prep._t0
    prep.front_end = kernel_cache_report()
