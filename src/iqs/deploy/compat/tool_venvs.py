"""Cached virtualenvs for tools that cannot live in the project's environment.

The consumer: the OpenCV releases digiKam links (`opencv_matrix`: 4.6 and 4.8 need numpy < 2, and the
project's own OpenCV is another release). The `.pb` digiKam loads is verified there
(iqs.deploy.export.tf_export), never in the project's OpenCV.

They live under `$IQS_VENV_DIR`, by default `$XDG_CACHE_HOME/iqs-digikam/venvs` (`~/.cache/...`), not in a
checkout's `cache/`: a venv depends only on its pinned requirements, never on data or code, so every
checkout, worktree and CI run on a machine shares one build (about 60 MB and half a minute each) and
`make clean` keeps them. Each venv is built once under a file lock (parallel pytest workers and sweep jobs
wait for one build), and a stamp file holding the exact requirements marks a complete build: a half-built
or differently pinned venv is rebuilt, never used.

Each venv installs a committed lock, `requirements/<name>.txt` (every package pinned with its hashes,
`pip install --require-hashes`), so a machine builds exactly the set the tests passed with; `make lock`
recompiles the locks from their requirements with pip-tools (`compile_lock`).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

STAMP = ".iqs-requirements"
LOCK_TIMEOUT_S = 1800  # a first install on a slow line takes minutes; never wait forever


# the checkout's requirements/ (the project runs from its checkout: `make setup` installs it editable)
LOCK_DIR = Path(__file__).resolve().parents[4] / "requirements"


class VenvError(RuntimeError):
    pass


def lock_path(name: str) -> Path:
    """The committed lock of the tool venv `name`: requirements/<name>.txt."""
    return LOCK_DIR / f"{name}.txt"


def compile_lock(
    requirements: Sequence[str], lock: Path, pip_compile: str | Path, args: Sequence[str] = ()
) -> Path:
    """Resolve `requirements` into the hashed lock `lock` with pip-tools' `pip-compile` (for this Python and
    platform). Pins already in `lock` are kept where they still satisfy `requirements`; pass a missing or
    emptied lock to take the newest versions."""
    lock.parent.mkdir(parents=True, exist_ok=True)
    command = [
        str(pip_compile), "--quiet", "--generate-hashes", "--allow-unsafe", "--strip-extras",
        "--no-emit-index-url", "--no-emit-find-links", "--no-header", "--output-file", str(lock), *args, "-",
    ]  # fmt: skip
    proc = subprocess.run(command, input="\n".join(requirements) + "\n", capture_output=True, text=True)
    if proc.returncode != 0:
        raise VenvError(f"`{' '.join(command)}` failed for {', '.join(requirements)}:\n{proc.stderr[-2000:]}")
    header = (
        "# "
        + " ".join(requirements)
        + " (iqs.deploy.compat.tool_venvs.compile_lock; `make lock` refreshes it)\n"
    )
    lock.write_text(header + lock.read_text(encoding="utf-8"), encoding="utf-8")
    return lock


def venv_root() -> Path:
    """`$IQS_VENV_DIR`, else `$XDG_CACHE_HOME/iqs-digikam/venvs` (`~/.cache/iqs-digikam/venvs`)."""
    if os.environ.get("IQS_VENV_DIR"):
        return Path(os.environ["IQS_VENV_DIR"]).expanduser()
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache").expanduser()
    return cache / "iqs-digikam" / "venvs"


def cached_venv(
    name: str,
    requirements: Sequence[str],
    what: str,
    root: str | Path | None = None,
    quiet: bool = True,
    lock: Path | None = None,
) -> Path:
    """The Python of `<root>/<name>` holding exactly `requirements`; built on first use, then reused.
    With `lock` (a hashed requirements file, e.g. `lock_path(name)`) it holds exactly the lock instead,
    installed with `--require-hashes`.

    `what` names the tool in messages. Raises VenvError naming the failed command (pip needs the package
    registry once; afterwards everything runs offline).
    """
    from filelock import FileLock

    root = Path(root) if root is not None else venv_root()
    if lock is not None:  # one folder per lock content: checkouts with other locks never rebuild each other's
        name += "-" + hashlib.sha256(lock.read_bytes()).hexdigest()[:10]
    venv = (root / name).resolve()
    python, stamp = venv / "bin" / "python", venv / STAMP
    wanted = lock.read_text(encoding="utf-8") if lock is not None else "\n".join(requirements) + "\n"
    install = ["--require-hashes", "-r", str(lock)] if lock is not None else list(requirements)
    venv.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(venv) + ".lock", timeout=LOCK_TIMEOUT_S):
        if stamp.is_file() and python.is_file() and stamp.read_text(encoding="utf-8") == wanted:
            return python
        shutil.rmtree(venv, ignore_errors=True)
        print(f"iqs: installing {what} ({', '.join(requirements)}) into {venv}, once", file=sys.stderr)
        pip = [str(python), "-m", "pip", "install", "--disable-pip-version-check", *(["-q"] if quiet else [])]
        for command in ([sys.executable, "-m", "venv", str(venv)], [*pip, *install]):
            try:
                proc = subprocess.run(command, capture_output=quiet, text=True, check=False)
                failed = proc.returncode != 0
                detail = (
                    "\n".join(((proc.stderr or proc.stdout) or "").strip().splitlines()[-8:]) if quiet else ""
                )
            except OSError as err:
                failed, detail = True, str(err)
            if failed:
                shutil.rmtree(venv, ignore_errors=True)
                raise VenvError(
                    f"installing {what} ({', '.join(requirements)}) into {venv} failed at `{' '.join(command)}`; "
                    "pip needs the package "
                    f"registry (PyPI or $PIP_INDEX_URL) once, after which the venv is reused offline"
                    + (f":\n{detail}" if detail else "")
                )
        stamp.write_text(wanted, encoding="utf-8")
    return python
