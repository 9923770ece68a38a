"""A normal (non-editable) install exposes qhil.<folder> and nothing bare like `host` or `sim`."""

from __future__ import annotations

import site
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = ("host", "fpga", "bridge", "kernels", "sim")


@pytest.mark.slow
def test_wheel_installs_qhil_namespace_only(tmp_path: Path) -> None:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path / "dist"),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    (wheel,) = (tmp_path / "dist").glob("qhil-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names if not n.split("/")[0].endswith((".dist-info", ".data"))}
    assert tops == {"qhil"}, f"the wheel installs top-level {sorted(tops)}"
    for folder in FOLDERS:
        assert f"qhil/{folder}/__init__.py" in names
    assert "qhil/__init__.py" not in names  # qhil is a namespace over the design-card folders

    target = tmp_path / "site"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--no-deps",
            "-q",
            "--target",
            str(target),
            str(wheel),
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    # -S: no site processing, so the editable install's finder is not active; the
    # dependencies come from the plain site-packages folders.
    code = (
        "import sys, importlib, importlib.util\n"
        f"sys.path[:0] = [{str(target)!r}] + {site.getsitepackages()!r}\n"
        f"for f in {FOLDERS!r}:\n"
        "    m = importlib.import_module('qhil.' + f)\n"
        f"    assert m.__file__.startswith({str(target)!r}), m.__file__\n"
        "    assert importlib.util.find_spec(f) is None, f'bare package {f} is importable'\n"
        "from qhil.host import main\n"
        "assert main(command_line_args=['info']) == 0\n"
    )
    out = subprocess.run(
        [sys.executable, "-S", "-c", code], cwd=tmp_path, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    assert "front end:  cycle model" in out.stdout
