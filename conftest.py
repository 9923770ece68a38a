"""Test-suite wiring shared by every folder: hardware markers and exit codes."""

from __future__ import annotations

import functools

import pytest


@functools.cache
def _gpu_reason() -> str | None:
    """None when a usable NVIDIA GPU is present, else why not."""
    try:
        import cupy  # type: ignore[import-not-found]
    except Exception as ex:
        return f"CuPy is not importable ({type(ex).__name__}); install the 'gpu' extra"
    try:
        if cupy.cuda.runtime.getDeviceCount() < 1:
            return "no CUDA device found"
        cupy.zeros(1)  # CuPy imports on GPU-less machines but cannot allocate
    except Exception as ex:
        return f"CUDA device unusable: {ex}"
    return None


@functools.cache
def _board_reason() -> str | None:
    from qhil.fpga import find_board

    found = find_board()
    return None if found.present else found.reason


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if "gpu" in item.keywords and (reason := _gpu_reason()) is not None:
            item.add_marker(pytest.mark.skip(reason=f"gpu test skipped: {reason}"))
        if "board" in item.keywords and (reason := _board_reason()) is not None:
            item.add_marker(pytest.mark.skip(reason=f"board test skipped: {reason}"))


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    # Exit code 5 means "no tests collected" (e.g. a filtered run where every
    # test is hardware-only). That is not a failure of the suite.
    if exitstatus == pytest.ExitCode.NO_TESTS_COLLECTED:
        session.exitstatus = pytest.ExitCode.OK
