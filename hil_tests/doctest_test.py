"""Runs every ``>>>`` example in every qhil module, subpackages included, so documented
examples stay true."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

PACKAGES = ("qhil.sim", "qhil.bridge", "qhil.fpga", "qhil.kernels", "qhil.host")


def _modules() -> list[str]:
    names = []
    for pkg_name in PACKAGES:
        pkg = importlib.import_module(pkg_name)
        names.append(pkg_name)
        for info in pkgutil.walk_packages(pkg.__path__, prefix=f"{pkg_name}."):
            # *_cocotb modules are HDL testbenches: they need cocotb and a simulator.
            if not info.name.endswith(("_test", "__main__", "_cocotb")):
                names.append(info.name)
    return names


@pytest.mark.parametrize("module_name", _modules())
def test_doctests(module_name: str) -> None:
    module = importlib.import_module(module_name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0, f"{result.failed} doctest(s) failed in {module_name}"
