"""The README's two set-up commands work in either order, on a fresh venv.

Numba once cached its kernels next to the installed sources, in
``site-packages/qhil/*/__pycache__``. ``pip`` does not remove files it did not
install, so after ``pip install . && qhil run`` then ``pip install -e .``
those folders stayed behind and hid the editable package: every import from
``qhil.bridge`` failed. This test runs that sequence, and the reverse, in a
fresh venv on a copy of the source tree.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("sim", "fpga", "bridge", "kernels", "host")

# Imports every public name of every package and prints where the packages came from.
_IMPORT_ALL = """
import importlib
for part in {parts!r}:
    module = importlib.import_module("qhil." + part)
    for name in module.__all__:
        getattr(module, name)
    print(module.__file__)
"""


def _source_copy(dest: Path) -> Path:
    """The repository's files a clone would have (tracked, or new and not ignored)."""
    try:
        listed = subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=REPO,
            capture_output=True,
            check=True,
        ).stdout.split(b"\0")
        files = [REPO / f.decode() for f in listed if f]
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("needs git to list the tracked files of the repository")
    for path in files:
        if path.is_file():
            target = dest / path.relative_to(REPO)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, target)
    return dest


def _fresh_venv(where: Path) -> Path:
    """A venv whose dependencies come from this interpreter's site-packages (no download),
    added as a plain path entry: its .pth files (an editable qhil among them) do not run."""
    subprocess.run([sys.executable, "-m", "venv", str(where)], check=True)
    python = where / "bin" / "python"
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    Path(site, "outer-deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return python


def _run(cmd: list[str], env: dict[str, str], cwd: Path) -> str:
    done = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, f"{' '.join(cmd)} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.mark.slow
def test_install_then_editable_install_then_install_again(tmp_path: Path) -> None:
    src = _source_copy(tmp_path / "src")
    python = _fresh_venv(tmp_path / "venv")
    bindir = python.parent
    cache = tmp_path / "cache"
    env = {**os.environ, "QHIL_CACHE_DIR": str(cache), "PATH": f"{bindir}:{os.environ['PATH']}"}
    env.pop("PYTHONPATH", None)
    env.pop("NUMBA_CACHE_DIR", None)
    pip = [str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation"]
    qhil_run = [str(bindir / "qhil"), "run", "-n", "200", "--no-progress", "--out", "out"]
    site = Path(
        _run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
             env, tmp_path).strip()
    )  # fmt: skip
    import_all = [str(python), "-c", _IMPORT_ALL.format(parts=PACKAGES)]

    _run([*pip, str(src)], env, tmp_path)  # the demo's command: a normal install
    assert "decoded" in _run(qhil_run, env, tmp_path)
    assert not list((site / "qhil").rglob("*.nbi")), "numba cached into the installed package"
    assert list(cache.rglob("*.nbi")), "no kernel was cached in QHIL_CACHE_DIR"

    _run([*pip, "-e", str(src)], env, tmp_path)  # the tests' command: an editable install
    assert "decoded" in _run(qhil_run, env, tmp_path)
    files = _run(import_all, env, tmp_path).split()
    assert all(f.startswith(str(src)) for f in files), files  # the editable sources, not leftovers

    _run([*pip, str(src)], env, tmp_path)  # and back again
    assert "decoded" in _run(qhil_run, env, tmp_path)
    files = _run(import_all, env, tmp_path).split()
    assert all(f.startswith(str(site)) for f in files), files
