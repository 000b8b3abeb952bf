"""digikam_tf profile: the frozen graph digiKam 8.0-8.4 load, run as they run it in every OpenCV they link.

The slow tests build (once) the `tf` extra's venv (about 1.5 GB from PyPI) and one small venv per OpenCV
release; cached under cache/, they then take about a minute.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from iqs.deploy import export, tf_export
from iqs.deploy.compat import compat_photos, fixed_seed_model, read_blobs, torch_reference, write_photos
from iqs.deploy.onnx_ops import OPENCV_RELEASES
from iqs.deploy.opencv_matrix import compare, failures, run_matrix
from test_export import save_checkpoint

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / "cache"
LITE0_REGRESSION = {
    "backbone": {"name": "tf_efficientnet_lite0", "weights": "packaged"},
    "head": {"name": "regression"},
    "thresholds": {"t1": 5.0, "t2": 6.0},
}


def test_tf_extra_is_pinned_exactly() -> None:
    requirements = tf_export.tf_requirements()
    names = {r.split("==")[0] for r in requirements}
    assert {"onnx2tf", "tensorflow"} <= names
    assert all(r.count("==") == 1 for r in requirements), requirements


def test_unchecked_tf_operator_is_refused(tmp_path: Path) -> None:
    with pytest.raises(export.ExportError, match=r"\['Minimum'\].*OpenCV 4.6-4.12"):
        tf_export.check_ops(tmp_path / "m.pb", {"Conv2D": 3, "Minimum": 1, "Softmax": 1})
    tf_export.check_ops(tmp_path / "m.pb", {"Conv2D": 3, "Relu": 2, "Softmax": 1})


def test_missing_converter_names_the_extra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # a venv that cannot be built (here: no interpreter to build it with) is a clear export error
    monkeypatch.setattr(sys, "executable", str(tmp_path / "no-python"))
    with pytest.raises(export.ExportError, match=r"the `tf` extra for profile digikam_tf.*onnx2tf==.*PyPI"):
        tf_export.converter_python(tmp_path)
    assert not any(tmp_path.glob("tf-*/bin")), "a half-built venv must not be left behind"


@pytest.mark.slow
def test_converter_is_offline() -> None:
    """The worker's guard stops onnx2tf's own sample-image download, so a conversion that succeeds under it
    (test_digikam_tf_matrix) touched no network."""
    python = tf_export.converter_python()
    probe = (
        "import sys; sys.path.insert(0, sys.argv[1]); import tf_worker; tf_worker.block_network()\n"
        "from onnx2tf.utils.common_functions import download_test_image_data\n"
        "try:\n    download_test_image_data()\nexcept Exception as err:\n    print('failed:', err)\n"
    )
    proc = subprocess.run(
        [str(python), "-c", probe, str(tf_export.WORKER.parent)],
        capture_output=True,
        text=True,
        cwd=tf_export.WORKER.parent.parent,  # no cached sample file here
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    # requests wraps the guard's error in its own ConnectionError; the guard's message shows it was the cause
    assert proc.stdout.startswith("failed:") and "tf_worker: network access is blocked" in proc.stdout


@pytest.mark.slow
@pytest.mark.compat
def test_digikam_tf_matrix(tmp_path: Path) -> None:
    """The .pb in every OpenCV release digiKam links, run by digiKam's steps with one net (opencv_matrix),
    gives the classes of PyTorch and onnxruntime (the digikam ONNX) on 20 photos."""
    photos = write_photos(compat_photos(20, seed=1), tmp_path / "photos")
    blobs = read_blobs(photos)
    model = fixed_seed_model(
        LITE0_REGRESSION, blobs
    )  # a score head: the score -> class mapping is in the graph
    ckpt = save_checkpoint(model, tmp_path / "best.ckpt")
    out_dir = tmp_path / "exports"
    args = [
        f"checkpoint={ckpt}",
        f"out_dir={out_dir}",
        "profiles=[digikam,digikam_tf]",
        f"paths.cache_dir={CACHE}",
    ]
    assert export.main(args) == 0
    pb = out_dir / "best.digikam_tf.pb"
    assert pb.is_file() and pb.name in (out_dir / "MODEL_CARD.md").read_text()

    torch_cls, torch_probs = torch_reference(model, blobs)
    assert set(torch_cls.tolist()) == {0, 1, 2}, "classes must be spread for the proof to mean anything"
    session = ort.InferenceSession(str(out_dir / "best.digikam.onnx"), providers=["CPUExecutionProvider"])
    ort_cls = np.array([session.run(None, {"input": b[None]})[0][0] for b in blobs]).argmax(1)
    runs = run_matrix([pb], photos, progress=False)
    assert set(runs) == set(OPENCV_RELEASES)
    for release, by_model in runs.items():
        row = compare(by_model[str(pb)], {"onnxruntime": ort_cls, "torch": torch_cls}, torch_probs)
        assert failures([row]) == [], release
        # 4.x's INTER_NEAREST_EXACT picks a few other source pixels than 5.x (see test_opencv_matrix)
        assert row.max_prob_diff < 2e-2, (release, row.max_prob_diff)
