"""The locks are what runs: requirements/main.txt pins every distribution of the running environment at its
installed version (so `make setup` on a new machine rebuilds exactly the tested stack), covers
pyproject.toml's dependencies within their ranges, and every pin carries hashes; each OpenCV release of
the matrix has its own hashed lock.

Run with another environment's Python to check that environment against the lock, e.g. a fresh venv built
with `pip install --require-hashes -r requirements/main.txt`:
    /tmp/fresh/bin/python -m pytest -q -p no:cacheprovider tests/test_lock.py
"""

from __future__ import annotations

import os
import re
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from iqs.deploy.compat.opencv_matrix import venv_requirements
from iqs.deploy.compat.tool_venvs import lock_path
from iqs.deploy.export.onnx_ops import OPENCV_RELEASES

ROOT = Path(__file__).resolve().parents[1]
MAIN_LOCK = ROOT / "requirements" / "main.txt"
PROJECT = "iqs-digikam"
# pip itself comes with the venv (`python -m venv`) and is not a dependency of anything
NOT_LOCKED = {"pip"}
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)((?:\s*\\\n\s*--hash=sha256:[0-9a-f]{64})*)", re.M)


def read_lock(path: Path) -> dict[str, tuple[str, int]]:
    """{canonical name: (version, number of hashes)} of a pip-compile lock; a line that pins nothing fails."""
    text = path.read_text(encoding="utf-8")
    pins: dict[str, tuple[str, int]] = {}
    for m in PIN.finditer(text):
        name = canonicalize_name(m[1])
        assert name not in pins, f"{path.name}: {m[1]} pinned twice"
        pins[name] = (m[2], m[3].count("--hash="))
    for n, line in enumerate(text.splitlines(), 1):
        if line and not line[0].isspace() and not line.startswith("#"):
            assert PIN.match(line + "\n") or "==" in line, f"{path.name}:{n}: not a pin: {line!r}"
    return pins


def installed() -> dict[str, str]:
    return {canonicalize_name(d.metadata["Name"]): d.version for d in metadata.distributions()}


def test_every_installed_distribution_is_locked_at_its_version() -> None:
    pins = read_lock(MAIN_LOCK)
    here = {n: v for n, v in installed().items() if n not in NOT_LOCKED and n != PROJECT}
    unlocked = sorted(f"{n}=={v}" for n, v in here.items() if n not in pins)
    differs = sorted(
        f"{n}: installed {v}, lock {pins[n][0]}" for n, v in here.items() if n in pins and pins[n][0] != v
    )
    missing = sorted(f"{n}=={v}" for n, (v, _) in pins.items() if n not in here)
    assert not (unlocked or differs or missing), (
        f"this environment is not {MAIN_LOCK.name}: installed but not locked {unlocked}; other versions "
        f"{differs}; locked but not installed {missing}. `make setup` installs the lock; `make lock` refreshes it"
    )


def test_lock_pins_every_dependency_in_its_range_with_hashes() -> None:
    pins = read_lock(MAIN_LOCK)
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    wanted = [Requirement(r) for r in [*project["dependencies"], *project["optional-dependencies"]["dev"]]]
    for req in wanted:
        name = canonicalize_name(req.name)
        assert name in pins, f"{req} (pyproject.toml) is not in {MAIN_LOCK.name}: run `make lock`"
        assert req.specifier.contains(pins[name][0], prereleases=True), (
            f"{MAIN_LOCK.name} pins {req.name}=={pins[name][0]}, outside pyproject.toml's {req}: run `make lock`"
        )
    no_hash = sorted(n for n, (_, hashes) in pins.items() if hashes == 0)
    assert not no_hash, f"pins without hashes (pip --require-hashes refuses them): {no_hash}"
    # the stack the tests pass with: OpenCV 5.1 dropped readNetFromTensorflow
    assert pins["opencv-python-headless"][0] == "5.0.0.93" and pins["torch"][0] == "2.14.1"


@pytest.mark.parametrize("release", OPENCV_RELEASES)
def test_every_opencv_release_has_a_hashed_lock(release: str) -> None:
    pins = read_lock(lock_path(f"opencv-{release}"))
    assert pins["opencv-python-headless"][0] == release
    for text in venv_requirements(release):
        req = Requirement(text)
        assert req.specifier.contains(pins[canonicalize_name(req.name)][0]), (release, text)
    assert all(hashes > 0 for _, hashes in pins.values()), release
    assert set(pins) == {"opencv-python-headless", "numpy"}, release  # nothing else to resolve


def test_read_lock_rejects_a_malformed_lock(tmp_path: Path) -> None:
    bad = tmp_path / "lock.txt"
    bad.write_text("numpy>=1.26 \\\n    --hash=sha256:" + "0" * 64 + "\n", encoding="utf-8")
    with pytest.raises(AssertionError, match="not a pin"):
        read_lock(bad)
    bad.write_text("numpy==1.26.4\nNumPy==2.0\n", encoding="utf-8")
    with pytest.raises(AssertionError, match="pinned twice"):
        read_lock(bad)


@pytest.mark.slow
@pytest.mark.compat
def test_an_opencv_venv_holds_exactly_its_lock() -> None:
    """The tool venv of one release (cached per machine, built from the lock with --require-hashes)."""
    import subprocess

    from iqs.deploy.compat.opencv_matrix import ensure_venv

    release = "5.0.0.93"
    python = ensure_venv(release)
    assert python.parent.parent.name.startswith(f"opencv-{release}-")  # one folder per lock content
    freeze = subprocess.run(
        [str(python), "-m", "pip", "freeze", "--all"],
        capture_output=True,
        text=True,
        check=True,
        env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"},  # the venv alone, not this checkout
    ).stdout
    got = {canonicalize_name(n): v for n, v in re.findall(r"^(\S+)==(\S+)$", freeze, re.M)}
    got.pop("pip"), got.pop("setuptools", None)  # come with `python -m venv`
    assert got == {n: v for n, (v, _) in read_lock(lock_path(f"opencv-{release}")).items()}
