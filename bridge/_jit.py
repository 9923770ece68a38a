"""Compiled kernels and where their cache lives: a user cache folder, never the package.

Numba's ``cache=True`` writes next to the source file by default, that is into
``site-packages/qhil/<part>/__pycache__`` for a normal install. Those folders
outlive ``pip uninstall`` (pip removes only what it installed), and a later
editable install then finds them first: ``qhil.bridge`` becomes an empty
namespace package and every import from it fails. So every qhil kernel is
compiled with :func:`njit_cached`, which points numba's cache at
:func:`cache_dir` while the kernel is decorated, and leaves the setting of the
rest of the process alone.

The folder is ``$QHIL_CACHE_DIR`` when set, else the platform's user cache
folder (``$XDG_CACHE_HOME/qhil`` or ``~/.cache/qhil`` on Linux). Numba keys
each source file's cache by that file's full path and content hash, so several
installs and versions share the folder safely. Where the folder cannot be
written, kernels compile on every run (with one warning naming the fix) rather
than fall back to the package folder.

>>> kernel_cache_report().kernels > 0  # the bridge's own kernels, made at import
True
>>> "QHIL_CACHE_DIR" in os.environ or cache_dir().name == "qhil"
True
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import os
import sys
import tempfile
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import numba
from numba.core import config as numba_config
from numba.core import event as numba_event

__all__ = [
    "KernelCacheReport",
    "cache_dir",
    "kernel_cache_report",
    "njit_cached",
    "on_first_compile",
]

F = TypeVar("F", bound=Callable[..., Any])

_NUMBA_CONFIG: Any = numba_config  # its settings are set at run time, unseen by mypy
_DISPATCHERS: list[Any] = []  # every kernel made by njit_cached, for kernel_cache_report


def cache_dir() -> Path:
    """The folder qhil's compiled-kernel caches go to (not created here).

    ``$QHIL_CACHE_DIR`` when set; else ``%LOCALAPPDATA%\\qhil`` on Windows,
    ``~/Library/Caches/qhil`` on macOS, ``$XDG_CACHE_HOME/qhil`` or
    ``~/.cache/qhil`` elsewhere.
    """
    explicit = os.environ.get("QHIL_CACHE_DIR")
    if explicit:
        return Path(explicit).expanduser()
    if sys.platform == "win32" and os.environ.get("LOCALAPPDATA"):
        return Path(os.environ["LOCALAPPDATA"]) / "qhil"
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Caches" / "qhil"
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "qhil"


@functools.cache
def _numba_cache_dir() -> str | None:
    """Numba's cache folder for qhil kernels; None (compile every run) if unwritable.
    A user's own ``NUMBA_CACHE_DIR`` wins: they chose where numba caches go."""
    if _NUMBA_CONFIG.CACHE_DIR:
        return str(_NUMBA_CONFIG.CACHE_DIR)
    folder = cache_dir() / "numba"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=folder).close()
    except OSError as exc:
        warnings.warn(
            f"qhil cannot write its kernel cache into {str(folder)!r} ({exc.strerror}); "
            "kernels will compile on every run. Set QHIL_CACHE_DIR to a writable folder.",
            RuntimeWarning,
            stacklevel=3,
        )
        return None
    return str(folder)


@contextlib.contextmanager
def _numba_cache_at(folder: str) -> Iterator[None]:
    # Numba fixes a function's cache locator when it is decorated, from this setting.
    before = _NUMBA_CONFIG.CACHE_DIR
    _NUMBA_CONFIG.CACHE_DIR = folder
    try:
        yield
    finally:
        _NUMBA_CONFIG.CACHE_DIR = before


def njit_cached(**options: Any) -> Callable[[F], F]:
    """``numba.njit(cache=True, **options)``, with the cache in :func:`cache_dir`.

    The decorator qhil's CPU kernels use instead of ``numba.njit(cache=True)``.
    """

    def decorate(func: F) -> F:
        folder = _numba_cache_dir()
        if folder is None:
            dispatcher = numba.njit(cache=False, **options)(func)
        else:
            with _numba_cache_at(folder):
                dispatcher = numba.njit(cache=True, **options)(func)
        _DISPATCHERS.append(dispatcher)
        return dispatcher  # type: ignore[no-any-return]

    return decorate


@dataclasses.dataclass(frozen=True)
class KernelCacheReport:
    """What this process's qhil kernels did so far: compiled now or loaded from the cache.

    ``kernels``: kernels made by :func:`njit_cached` (imported so far);
    ``compiled``: signatures compiled in this process (the cache had none);
    ``loaded``: signatures loaded from the cache; ``folder``: numba's cache
    folder for them ("" when kernels are not cached).
    """

    kernels: int
    compiled: int
    loaded: int
    folder: str


def kernel_cache_report() -> KernelCacheReport:
    """Compile and cache-load counts over every qhil kernel this process has imported."""
    hits = sum(sum(d.stats.cache_hits.values()) for d in _DISPATCHERS)
    misses = sum(sum(d.stats.cache_misses.values()) for d in _DISPATCHERS)
    return KernelCacheReport(
        kernels=len(_DISPATCHERS), compiled=misses, loaded=hits, folder=_numba_cache_dir() or ""
    )


class _FirstCompile(numba_event.Listener):
    """Calls back once, when the first compilation inside starts."""

    def __init__(self, callback: Callable[[], None]) -> None:
        self.callback: Callable[[], None] | None = callback

    def on_start(self, event: Any) -> None:
        if self.callback is not None:
            callback, self.callback = self.callback, None
            callback()

    def on_end(self, event: Any) -> None:
        pass


@contextlib.contextmanager
def on_first_compile(callback: Callable[[], None]) -> Iterator[None]:
    """Inside, call ``callback`` once when numba starts compiling a kernel (a cache
    miss, tens of seconds for the loop's kernels), and never for a cache load:
    the moment to tell the user why start-up is slow.

    >>> with on_first_compile(lambda: print("compiling")):
    ...     kernel_cache_report().kernels > 0  # nothing compiles here
    True
    """
    with numba_event.install_listener("numba:compile", _FirstCompile(callback)):
        yield
