"""Fixtures for the installer tests: a wheel built from a copy of the working tree, and a fresh
virtualenv with that wheel installed, exactly as a school's technician would get it.

The build runs on a copy so it never writes build/ or *.egg-info into the shared tree.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

from tests.installer.helpers import ROOT, run

_COPY_IGNORE = shutil.ignore_patterns(
    ".venv", ".git", "__pycache__", "*.pyc", ".pytest_cache", ".ruff_cache", ".mypy_cache",
    ".hypothesis", "build", "dist", "*.egg-info", ".vigil-demo", "test-artifacts",
    "node_modules",
)


@pytest.fixture(scope="session")
def built_wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`python -m build --wheel` on a copy of the working tree; returns the .whl path."""
    base = tmp_path_factory.mktemp("wheel")
    src = base / "src"
    shutil.copytree(ROOT, src, ignore=_COPY_IGNORE, symlinks=True)
    dist = base / "dist"
    proc = run([sys.executable, "-m", "build", "--wheel", "--outdir", str(dist), "."], cwd=src)
    assert proc.returncode == 0, f"wheel build failed:\n{proc.stderr[-3000:]}"
    wheels = sorted(dist.glob("vigil-*.whl"))
    assert len(wheels) == 1, f"expected one wheel in {dist}, found {wheels}"
    return wheels[0]


@pytest.fixture(scope="session")
def fresh_venv(built_wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A brand-new virtualenv (no system site-packages) with vigil[agent,collector] installed
    from the built wheel; dependencies come from the package index. Returns the venv root."""
    venv = tmp_path_factory.mktemp("venv") / "v"
    proc = run([sys.executable, "-m", "venv", str(venv)], cwd=venv.parent)
    assert proc.returncode == 0, proc.stderr
    proc = run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q",
                f"{built_wheel}[agent,collector]"], cwd=venv.parent)
    assert proc.returncode == 0, f"pip install failed:\n{proc.stderr[-3000:]}"
    return venv
