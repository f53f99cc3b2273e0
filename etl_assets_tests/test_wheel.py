"""The wheel, which `pip install .` and so the image install, holds what production runs and none of the
dev tooling: no benchmark, demo or local-stores module."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
# Copied into a temporary checkout without these, so the build neither reads nor leaves anything here.
NOT_SOURCE = shutil.ignore_patterns(".git", ".venv", ".local", "__pycache__", "*.egg-info", "build", "dist",
                                    "bench-results", ".pytest_cache", ".ruff_cache")
DEV_ONLY_PREFIXES = ("bench", "demo", "local")


@pytest.fixture(scope="module")
def wheel_files(tmp_path_factory) -> set[str]:
    tmp = tmp_path_factory.mktemp("wheel")
    source, out = tmp / "src", tmp / "out"
    shutil.copytree(REPO_ROOT, source, ignore=NOT_SOURCE)
    # No build isolation: the dev extra installs the build backend, so the build needs no network.
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--disable-pip-version-check",
         "-q", "-w", str(out), str(source)],
        capture_output=True, text=True, timeout=120)
    assert build.returncode == 0, build.stderr
    [wheel] = out.glob("*.whl")
    with zipfile.ZipFile(wheel) as archive:
        return set(archive.namelist())


def test_the_wheel_holds_only_the_production_package(wheel_files):
    top_level = {name.split("/")[0] for name in wheel_files if ".dist-info/" not in name}
    assert top_level == {"etl_assets"}
    dev_only = sorted(name for name in wheel_files
                      if any(part.startswith(DEV_ONLY_PREFIXES) for part in name.split("/")))
    assert dev_only == [], f"the wheel ships dev tooling: {dev_only}"


def test_the_wheel_holds_the_definitions_and_the_migrations(wheel_files):
    migrations = {path.relative_to(REPO_ROOT).as_posix()
                  for pattern in ("*/env.py", "*/script.py.mako", "*/versions/*.py")
                  for path in (REPO_ROOT / "etl_assets" / "migrations").glob(pattern)}
    assert migrations, "no migration found in the checkout"
    assert {"etl_assets/definitions.py", *migrations} <= wheel_files
