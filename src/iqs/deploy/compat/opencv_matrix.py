"""The OpenCV compatibility matrix: model files run in every OpenCV release digiKam links, as digiKam runs them.

    from iqs.deploy.compat.opencv_matrix import run_matrix
    runs = run_matrix(["m.digikam.pb", "m.contract.onnx"], ["a.png", "b.png"])
    runs["4.6.0.66"]["m.digikam.pb"].classes          # or .error when the release cannot load it

Each release of `onnx_ops.OPENCV_RELEASES` gets one small virtualenv (pip `opencv-python-headless` at that
exact version, plus numpy), cached once per machine and reused (iqs.deploy.compat.tool_venvs). `opencv_worker.py` runs inside it with one `cv::dnn::Net`
per model file, reused for every image, and digiKam's own preprocessing and argmax.

`iqs compat` (`make compat`) exports fixed-seed models and prints the matrix against
`iqs predict` (onnxruntime, full profile) and PyTorch.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from iqs.deploy.compat.tool_venvs import VenvError, cached_venv, compile_lock, lock_path
from iqs.deploy.export.onnx_ops import OPENCV_RELEASES, release_name

WORKER = Path(__file__).with_name("opencv_worker.py")
# The 4.6 and 4.8 wheels are built against numpy 1.x and fail to import under numpy 2.
NUMPY_PINS = {"4.6.0.66": ("numpy<2",), "4.8.0.76": ("numpy<2",)}
WORKER_TIMEOUT_S = 1800


class MatrixError(RuntimeError):
    pass


def venv_requirements(version: str) -> list[str]:
    """What the venv of OpenCV `version` needs; its lock (requirements/opencv-<version>.txt) pins the rest."""
    return [f"opencv-python-headless=={version}", *NUMPY_PINS.get(version, ())]


def lock_releases(
    pip_compile: str | Path, releases: Sequence[str] = OPENCV_RELEASES, args: Sequence[str] = ()
) -> list[Path]:
    """(Re)compile the lock of every release's venv (`make lock`; `args` go to pip-compile, e.g. --upgrade)."""
    return [compile_lock(venv_requirements(v), lock_path(f"opencv-{v}"), pip_compile, args) for v in releases]


def ensure_venv(version: str, root: str | Path | None = None) -> Path:
    """The Python of the venv holding `opencv-python-headless==version`; built on first use, then reused.
    The releases of the matrix install their committed lock; another version (a one-off check) installs
    `venv_requirements` unlocked."""
    lock = lock_path(f"opencv-{version}")
    if version in OPENCV_RELEASES and not lock.is_file():
        raise MatrixError(f"no lock {lock} for OpenCV {version}: run `make lock`")
    try:
        python = cached_venv(
            f"opencv-{version}",
            venv_requirements(version),
            f"OpenCV {version}",
            root=root,
            lock=lock if lock.is_file() else None,
        )
    except VenvError as err:
        raise MatrixError(str(err)) from None
    probe = "import cv2, numpy; print(cv2.__version__, numpy.__version__)"
    found = _run([str(python), "-c", probe], f"import cv2 with {python}").split()
    if found[0] != release_name(version):
        raise MatrixError(f"{python}: imports OpenCV {found[0]}, expected {release_name(version)}")
    return python


def _run(cmd: list[str], what: str) -> str:
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-8:])
        raise MatrixError(f"cannot {what}:\n{tail}")
    return proc.stdout


@dataclass
class ModelRun:
    """One model file in one OpenCV release: per image a class and output row, or an error."""

    release: str
    model: str
    error: str | None = None
    classes: list[int | None] = field(default_factory=list)
    probs: list[list[float] | None] = field(default_factory=list)
    image_errors: list[str | None] = field(default_factory=list)
    blob_dir: str | None = None  # where the worker saved this release's blobs, if asked
    load_ms: float | None = None  # readNet* time
    ms: list[float | None] = field(default_factory=list)  # per image: preprocessing + forward

    def blobs(self) -> np.ndarray:
        """This release's own blobs of the images, (N, 3, 299, 299)."""
        if self.blob_dir is None:
            raise MatrixError(f"{self.model} in OpenCV {release_name(self.release)}: blobs were not kept")
        return np.concatenate([np.load(p) for p in sorted(Path(self.blob_dir).glob("*.npy"))])

    @property
    def loads(self) -> bool:
        return self.error is None


def output_layer(model: str | Path) -> str | None:
    """The output OpenCV reads: the export profile's `opencv_output` (iqs.core.export_profiles: `probs`
    for a full profile), else `forward()`'s (a `.pb`, an ONNX of another profile or of none)."""
    from iqs.core.export_profiles import ONNX, format_of, profile_of_export

    path = Path(model)
    if format_of(path) is not ONNX:
        return None
    import onnx

    props = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
    spec = profile_of_export(props.get("iqs_profile"))
    return None if spec is None else spec.opencv_output


def run_worker(
    python: Path,
    model: str | Path,
    images: Sequence[str | Path],
    release: str,
    blob_dir: Path | None = None,
    blobs: Path | None = None,
) -> ModelRun:
    """`model` in one worker process of `release` (see run_workers)."""
    return run_workers(python, [model], images, release, blob_dir, blobs)[0]


def run_workers(
    python: Path,
    models: Sequence[str | Path],
    images: Sequence[str | Path],
    release: str,
    blob_dir: Path | None = None,
    blobs: Path | None = None,
) -> list[ModelRun]:
    """`models` on `images` in one worker process of `release`, each with its own net (the process start and
    its imports cost more than a small net). A worker that dies (a crash inside OpenCV) is retried one process
    per model, so that the crash costs its own cell only. `blobs`: a .npy of ready blobs, run instead of
    `images`."""
    job = {
        "models": [{"model": str(m), "output": output_layer(m)} for m in models],
        "images": [str(p) for p in images],
        "blob_dir": str(blob_dir) if blob_dir else None,
        "blobs": str(blobs) if blobs else None,
    }
    timeout = WORKER_TIMEOUT_S * len(models)
    try:
        proc = subprocess.run(
            [str(python), str(WORKER)],
            input=json.dumps(job),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        error = (
            None
            if proc.returncode == 0
            else f"worker exited with {proc.returncode}: " + " ".join(proc.stderr.strip().splitlines()[-3:])
        )
    except subprocess.TimeoutExpired:
        error = f"worker timed out after {timeout} s"
    if error is not None:
        if len(models) > 1:
            return [run_workers(python, [m], images, release, blob_dir, blobs)[0] for m in models]
        return [ModelRun(release, str(models[0]), error=error)]
    return [_model_run(release, result, blob_dir) for result in json.loads(proc.stdout)["runs"]]


def _model_run(release: str, result: dict[str, Any], blob_dir: Path | None) -> ModelRun:
    run = ModelRun(
        release, result["model"], error=result["error"], blob_dir=str(blob_dir) if blob_dir else None
    )
    run.load_ms = result.get("load_ms")
    for row in result["images"]:
        run.classes.append(row.get("class"))
        run.probs.append(row.get("probs"))
        run.image_errors.append(row.get("error"))
        run.ms.append(row.get("ms"))
    return run


def run_on_blobs(
    model: str | Path, blobs: np.ndarray, releases: Sequence[str], root: str | Path | None = None
) -> dict[str, ModelRun]:
    """{pip version: ModelRun} of `model` on ready (N, 3, 299, 299) blobs: the model alone, without
    digiKam's image preprocessing, to compare its numbers with PyTorch's on the same input."""
    import tempfile
    from concurrent.futures import ThreadPoolExecutor

    with tempfile.TemporaryDirectory(prefix="iqs-blobs-") as tmp:
        path = Path(tmp) / "blobs.npy"
        np.save(path, np.ascontiguousarray(blobs, dtype=np.float32))

        def one(release: str) -> ModelRun:
            return run_worker(ensure_venv(release, root), model, [], release, blobs=path)

        # one process per release: their pip installs (first use) and imports overlap
        with ThreadPoolExecutor(max_workers=max(1, len(releases))) as pool:
            return dict(zip(releases, pool.map(one, releases), strict=True))


def run_matrix(
    models: Iterable[str | Path],
    images: Sequence[str | Path],
    releases: Sequence[str] = OPENCV_RELEASES,
    root: str | Path | None = None,
    progress: bool = True,
    blob_root: str | Path | None = None,
) -> dict[str, dict[str, ModelRun]]:
    """{pip version: {model path: ModelRun}}; `.onnx` loads with readNet, `.pb` with readNetFromTensorflow.

    `blob_root`: keep each release's blobs under `<blob_root>/<release>/` (`ModelRun.blobs()`)."""
    from rich.progress import Progress

    models = [str(m) for m in models]
    for path in [*models, *map(str, images)]:
        if not Path(path).is_file():
            raise MatrixError(f"not a file: {path}")
    out: dict[str, dict[str, ModelRun]] = {}
    with Progress(transient=True, disable=not progress) as bar:
        task = bar.add_task("OpenCV matrix", total=len(releases))
        for version in releases:
            bar.update(task, description=f"OpenCV {release_name(version)}: venv")
            python = ensure_venv(version, root)
            blob_dir = Path(blob_root) / version if blob_root is not None else None
            if blob_dir is not None:
                blob_dir.mkdir(parents=True, exist_ok=True)
            bar.update(task, description=f"OpenCV {release_name(version)}: {len(models)} model(s)")
            runs = run_workers(python, models, images, version, blob_dir)
            out[version] = dict(zip(models, runs, strict=True))
            bar.advance(task)
    return out


@dataclass
class Agreement:
    """One matrix row: a release against the references, over N images."""

    release: str
    loads: bool
    error: str | None
    total: int
    agree: dict[str, int]  # reference name -> images whose class equals it
    max_prob_diff: float | None  # max |p - p_ref| against the first reference with probabilities


def compare(
    run: ModelRun,
    classes: Mapping[str, Sequence[int]],
    probs: np.ndarray | None = None,
) -> Agreement:
    """`run` against reference classes (e.g. {'predict': ..., 'torch': ...}) and reference (N, 3) probs."""
    total = len(next(iter(classes.values())))
    if not run.loads:
        return Agreement(run.release, False, run.error, total, dict.fromkeys(classes, 0), None)
    got = run.classes
    agree = {name: sum(int(a == b) for a, b in zip(got, ref, strict=True)) for name, ref in classes.items()}
    diff = None
    if probs is not None:
        rows = [(p, r) for p, r in zip(run.probs, probs, strict=True) if p is not None]
        diff = max((float(np.abs(np.asarray(p) - r).max()) for p, r in rows), default=None)
    first_error = next((e for e in run.image_errors if e), None)
    return Agreement(run.release, True, first_error, total, agree, diff)


def matrix_table(rows: Sequence[Agreement], title: str, prob_ref: str = "onnxruntime"):
    """A narrow rich table: OpenCV | loads | one `= ref` column per reference | max |Δp|."""
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    table.add_column("OpenCV")
    table.add_column("loads")
    refs = list(dict.fromkeys(ref for row in rows for ref in row.agree))
    for ref in refs:
        table.add_column(f"= {ref}", justify="right")
    table.add_column(f"max |Δp| vs {prob_ref}", justify="right")
    for row in rows:
        cells = [release_name(row.release), "yes" if row.loads else "NO"]
        cells += [f"{row.agree[r]}/{row.total}" if r in row.agree else "-" for r in refs]
        cells.append("-" if row.max_prob_diff is None else f"{row.max_prob_diff:.1e}")
        table.add_row(*cells)
    return table


def failures(rows: Sequence[Agreement], only: Iterable[str] | None = None) -> list[str]:
    """A line per release that does not load or whose classes differ from a reference (`only` these)."""
    wanted = None if only is None else set(only)
    lines = []
    for row in rows:
        if not row.loads:
            lines.append(f"OpenCV {release_name(row.release)} cannot load it: {row.error}")
            continue
        for ref, n in row.agree.items():
            if n != row.total and (wanted is None or ref in wanted):
                lines.append(f"OpenCV {release_name(row.release)}: {n}/{row.total} classes equal {ref}")
        if row.error:
            lines.append(f"OpenCV {release_name(row.release)}: {row.error}")
    return lines


def main(argv: list[str] | None = None) -> int:
    """`iqs compat lock <pip-compile> [--upgrade]` (`make lock`): conf/compat_lock.yaml."""
    from iqs.core.config import compose

    cfg = compose("compat_lock", list(argv or []))
    args = [*(["--upgrade"] if cfg.upgrade else []), *[str(a) for a in cfg.pip_args]]
    for path in lock_releases(str(cfg.pip_compile), args=args):
        print(f"locked {path}")
    return 0
