"""digikam_tf profile: the frozen graph digiKam 8.0-8.4 load, run as they run it in every OpenCV they link.

The slow tests build (once) the `tf` extra's venv (about 1.5 GB from PyPI) and one small venv per OpenCV
release; cached under cache/, they then take about a minute.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from iqs.deploy import export, tf_export
from iqs.deploy.onnx_ops import OPENCV_RELEASES, release_name
from iqs.deploy.preprocess import DigikamToBackbone, digikam_blob
from test_export import demo_photos, make_model, save_checkpoint

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / "cache"
# TEMPORARY stand-in for branch opencv-compat's `opencv_matrix.run_matrix` (not committed yet): one venv per
# release of `onnx_ops.OPENCV_RELEASES`, in a folder of its own so that it never touches that module's venvs.
NUMPY_PINS = {"4.6.0.66": ["numpy<2"], "4.8.0.76": ["numpy<2"]}  # these wheels need numpy 1.x
RUN_LIKE_DIGIKAM = """
import json, sys, cv2, numpy as np
net = cv2.dnn.readNetFromTensorflow(sys.argv[1])  # one static net, as digiKam 8.0-8.4 hold it
probs = []
for blob in np.load(sys.argv[2]):
    net.setInput(blob[None])
    probs.append(net.forward().reshape(-1).tolist())
print(json.dumps({"opencv": cv2.__version__, "probs": probs}))
"""


def run_matrix_pb(pb: Path, blobs: Path) -> dict[str, np.ndarray]:
    """{pip version: (N, 3) outputs} of `pb` fed digiKam's blobs in every OpenCV release."""
    out = {}
    for version in OPENCV_RELEASES:
        reqs = [f"opencv-python-headless=={version}", *NUMPY_PINS.get(version, [])]
        python = tf_export.cached_venv(CACHE / "opencv-venvs-tfcheck" / version, reqs, f"OpenCV {version}")
        proc = subprocess.run(
            [str(python), "-c", RUN_LIKE_DIGIKAM, str(pb), str(blobs)], capture_output=True, text=True
        )
        assert proc.returncode == 0, f"OpenCV {version}: {proc.stderr[-2000:]}"
        got = json.loads(proc.stdout.strip().splitlines()[-1])
        assert got["opencv"] == release_name(version)
        out[version] = np.array(got["probs"])
    return out


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
    assert not any((tmp_path / "tf-venv").glob("*/bin")), "a half-built venv must not be left behind"


@pytest.mark.slow
def test_converter_is_offline() -> None:
    """The worker's guard stops onnx2tf's own sample-image download, so a conversion that succeeds under it
    (test_digikam_tf_matrix) touched no network."""
    python = tf_export.converter_python(CACHE)
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
def test_digikam_tf_matrix(tmp_path: Path) -> None:
    photos = demo_photos(20, seed=1)
    blobs = np.concatenate([digikam_blob(p) for p in photos])  # digiKam's exact preprocessing
    np.save(tmp_path / "blobs.npy", blobs)
    model = make_model("regression", blobs)  # score head: exercises the score -> class mapping
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
    assert pb.is_file() and "best.digikam_tf.pb" in (out_dir / "MODEL_CARD.md").read_text()

    with torch.no_grad():
        ref = model(DigikamToBackbone.from_meta(model.meta)(torch.from_numpy(blobs)))
    ref_probs, ref_cls = ref["probs"].numpy(), ref["logits3"].argmax(1).numpy()
    assert set(ref_cls.tolist()) == {0, 1, 2}, "classes must be spread for the proof to mean anything"
    session = ort.InferenceSession(str(out_dir / "best.digikam.onnx"), providers=["CPUExecutionProvider"])
    ort_cls = np.array([session.run(None, {"input": b[None]})[0][0] for b in blobs]).argmax(1)
    np.testing.assert_array_equal(ort_cls, ref_cls)

    outputs = run_matrix_pb(pb, tmp_path / "blobs.npy")
    assert set(outputs) == set(OPENCV_RELEASES) and any(v.startswith("5.") for v in outputs)
    for version, probs in outputs.items():
        np.testing.assert_array_equal(probs.argmax(1), ref_cls, err_msg=f"OpenCV {version}")
        np.testing.assert_allclose(probs, ref_probs, atol=1e-4, rtol=0, err_msg=f"OpenCV {version}")
