"""No module of a part of the loop, library or test, imports another part's private
names: each part is used only through its facade (``qhil.<part>.__all__``). The
loop-level tests in ``hil_tests/`` and the scripts in ``benchmarks/`` are held to the
same rule; shared test helpers live in a part's testing module. Inside a part, a
subpackage (a room, such as ``qhil.fpga.driver``) is likewise used only through its
facade by the rest of the part; its own modules share its private names."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PARTS = ("sim", "fpga", "bridge", "kernels", "host")
CLIENTS = ("hil_tests", "benchmarks")  # use every part from outside
TESTING_MODULES = ("qhil.fpga._testing",)  # helpers shared by the tests of several parts


def _imports(path: Path) -> Iterator[tuple[list[str], list[str]]]:
    """(modules, imported names) of each absolute import in ``path``."""
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield [node.module], [a.name for a in node.names]
        elif isinstance(node, ast.Import):
            yield [a.name for a in node.names], []


def private_cross_imports(path: Path, part: str) -> list[str]:
    """``module: names`` for each import in ``path`` (of package ``part``) that reaches a
    private module or name of another qhil package."""
    found = []
    for modules, names in _imports(path):
        for module in modules:
            dotted = module.split(".")
            if dotted[0] != "qhil" or len(dotted) < 2 or dotted[1] == part:
                continue
            if module in TESTING_MODULES and path.name.endswith("_test.py"):
                continue
            private = [n for n in dotted[2:] + names if n.startswith("_")]
            if private:
                found.append(f"{module}: {', '.join(private)}")
    return found


def rooms(part: str) -> set[str]:
    """The subpackages of ``part`` (folders with an ``__init__.py``)."""
    return {p.parent.name for p in (REPO / part).glob("*/__init__.py")}


def private_room_imports(path: Path, part: str, room: str | None) -> list[str]:
    """``module: names`` for each import in ``path`` (of package ``part``, inside its
    subpackage ``room``, or at its top level for None) that reaches a private module or
    name of another of ``part``'s subpackages."""
    found = []
    for modules, names in _imports(path):
        for module in modules:
            dotted = module.split(".")
            if dotted[:2] != ["qhil", part] or len(dotted) < 3 or dotted[2] == room:
                continue
            if dotted[2] not in rooms(part):
                continue
            private = [n for n in dotted[3:] + names if n.startswith("_")]
            if private:
                found.append(f"{module}: {', '.join(private)}")
    return found


# Each exception names why it stays.
ALLOWED = {
    "benchmarks/gpu_kernels.py": "times the CUDA backend's device-resident forward pass "
    "(_device_model, _forward, _per_layer), which has no public API yet: the tensor-core "
    "inference of issue 15 will give it one",
    "host/info_test.py": "patches the fpga driver's board probe in place; the front-end "
    "interface of issue 12 will give tests a board to fake instead",
}
MODULES = [(part, p) for part in PARTS + CLIENTS for p in sorted((REPO / part).rglob("*.py"))]


def test_the_scan_finds_a_private_import(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("from qhil.bridge._wire import parse_syndrome\nimport qhil.fpga._ledger\n")
    assert private_cross_imports(bad, "host") == [
        "qhil.bridge._wire: _wire",
        "qhil.fpga._ledger: _ledger",
    ]
    assert private_cross_imports(bad, "bridge") == ["qhil.fpga._ledger: _ledger"]


def test_the_scan_finds_a_private_import_from_another_room(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text(
        "from qhil.fpga.driver._driver import FrontEnd\n"
        "from qhil.fpga.model import CycleModel\n"
        "from qhil.fpga._regmap import REGISTERS\n"
        "import qhil.fpga.rtl_model._detprog_rom\n"
    )
    assert private_room_imports(bad, "fpga", "driver") == [
        "qhil.fpga.rtl_model._detprog_rom: _detprog_rom"
    ]
    assert private_room_imports(bad, "fpga", None) == [
        "qhil.fpga.driver._driver: _driver",
        "qhil.fpga.rtl_model._detprog_rom: _detprog_rom",
    ]


def test_a_testing_module_is_for_tests_only(tmp_path: Path) -> None:
    code = "from qhil.fpga._testing import rings\n"
    (tmp_path / "helpers_test.py").write_text(code)
    (tmp_path / "library.py").write_text(code)
    assert private_cross_imports(tmp_path / "helpers_test.py", "hil_tests") == []
    assert private_cross_imports(tmp_path / "library.py", "host") == [
        "qhil.fpga._testing: _testing"
    ]


@pytest.mark.parametrize(
    ("part", "path"), MODULES, ids=[str(p.relative_to(REPO)) for _, p in MODULES]
)
def test_modules_use_only_facades(part: str, path: Path) -> None:
    if str(path.relative_to(REPO)) in ALLOWED:
        pytest.skip(ALLOWED[str(path.relative_to(REPO))])
    assert private_cross_imports(path, part) == [], "use the package's facade instead"


PART_MODULES = [(part, p) for part, p in MODULES if part in PARTS]


@pytest.mark.parametrize(
    ("part", "path"), PART_MODULES, ids=[str(p.relative_to(REPO)) for _, p in PART_MODULES]
)
def test_rooms_use_only_each_others_facades(part: str, path: Path) -> None:
    inside = path.relative_to(REPO / part).parts
    room = inside[0] if len(inside) > 1 else None
    assert private_room_imports(path, part, room) == [], "use the subpackage's facade instead"
