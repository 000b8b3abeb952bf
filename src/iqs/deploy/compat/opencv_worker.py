"""Run one model file on image files exactly the way digiKam's aesthetic detector does, in any OpenCV.

Standalone on purpose: `opencv_matrix` runs this file with the Python of a small virtualenv that holds only
numpy and one OpenCV release (4.6 ... 5.x), so it imports nothing from `iqs`.

    <venv>/bin/python opencv_worker.py < job.json > result.json
    job:    {"models": [{"model": "m.onnx" | "m.pb", "output": null | "probs"}, ...],
             "images": ["a.png", ...],
             "blob_dir": null | "dir",   # dir: also save each image's blob as dir/<index>.npy
             "blobs": null | "x.npy"}    # instead of images: run these (N, 3, 299, 299) blobs as they are
    result: {"runs": [one per model, in order:
              {"opencv": "4.6.0", "numpy": "1.26.4", "model": ..., "error": null | "load error",
               "load_ms": 12.3, "images": [{"class": 2, "probs": [p_bad, p_normal, p_good], "ms": 4.5}
                                           | {"error": "..."}, ...]}]}

Each model gets its own net, loaded once and used for every photo, as digiKam's detector holds one; the
models of a job only share the process (and its imports).

Mirrors digiKam 8.x `AestheticDetector` (core/libs/imgqsort/detectors/aesthetic_detector.cpp) call for
call: one static `cv::dnn::Net`, loaded once (readNet for ONNX, readNetFromTensorflow for a frozen graph),
backend/target set as digiKam sets them, then per photo cvtColor BGR->RGB, resize 299x299 INTER_NEAREST_EXACT,
convertTo CV_32FC3, `mul(1.0F / 127.5F)`, `subtract(Scalar(1, 1, 1))`, blobFromImage(1, 299x299, 0, false,
false), setInput, forward, minMaxLoc. The scale step is OpenCV's own multiply by the float constant, not a
division: x / 127.5 and x * (1.0F / 127.5F) differ in the last bit for many pixel values.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import cv2
import numpy as np

SIZE = 299
# digiKam: `cv_resized.mul(1.0F / 127.5F)`, a float constant that OpenCV receives as a 1x1 double Mat
SCALE = float(np.float32(1.0) / np.float32(127.5))


def digikam_preprocess(bgr: np.ndarray) -> np.ndarray:
    """digiKam's `AestheticDetector::preprocess`: 8-bit BGR (H, W, 3) -> float32 blob (1, 3, 299, 299)."""
    rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    resized = cv2.resize(rgb, (SIZE, SIZE), interpolation=cv2.INTER_NEAREST_EXACT)
    resized = resized.astype(np.float32)  # convertTo(CV_32FC3): exact for 8-bit values
    resized = cv2.multiply(resized, np.full((1, 1), SCALE, dtype=np.float64))
    resized = cv2.subtract(resized, (1.0, 1.0, 1.0, 0.0))
    return cv2.dnn.blobFromImage(resized, 1.0, (SIZE, SIZE), (0, 0, 0), False, False)


def load_net(path: str) -> cv2.dnn.Net:
    """The loader digiKam uses for this file type: `.pb` (8.0-8.4) or the generic `readNet` (8.5+)."""
    suffix = Path(path).suffix.lower()
    if suffix == ".pb":
        net = cv2.dnn.readNetFromTensorflow(path)
    elif suffix == ".onnx":
        net = cv2.dnn.readNet(path)
    else:
        raise ValueError(f"{path}: unknown model type '{suffix}' (expected .onnx or .pb)")
    # digiKam passes DNN_TARGET_CPU (0) to both calls; as a backend 0 means DNN_BACKEND_DEFAULT
    net.setPreferableBackend(cv2.dnn.DNN_TARGET_CPU)
    net.setPreferableTarget(cv2.dnn.DNN_TARGET_CPU)
    return net


def _message(err: BaseException) -> str:
    text = " ".join(str(err).split())
    return f"{type(err).__name__}: {text}"


def run(
    model: str,
    images: list[str],
    output: str | None = None,
    blob_dir: str | None = None,
    blobs: str | None = None,
) -> dict:
    """`output`: the layer to read (a multi-output graph); None = `forward()` as digiKam calls it.

    `blob_dir`: save the blobs, so that the same pixels can be run elsewhere (this release's resize picks
    other source pixels than OpenCV 5's). `blobs`: a .npy of ready blobs, run instead of images (the model
    alone, compared with PyTorch on the same numbers). Each row times its preprocessing and forward pass."""
    result: dict = {"opencv": cv2.__version__, "numpy": np.__version__, "model": model, "error": None}
    start = time.perf_counter()
    try:
        net = load_net(model)
    except Exception as err:  # cv2.error and friends: the model does not load in this release
        result.update(error=_message(err), images=[])
        return result
    result["load_ms"] = (time.perf_counter() - start) * 1e3
    ready = np.load(blobs) if blobs else None
    rows = []
    for index in range(len(ready) if ready is not None else len(images)):
        start = time.perf_counter()
        if ready is not None:
            blob = np.ascontiguousarray(ready[index : index + 1], dtype=np.float32)
        else:
            bgr = cv2.imread(images[index], cv2.IMREAD_COLOR)
            if bgr is None:
                rows.append({"error": f"{images[index]}: OpenCV cannot read this image"})
                continue
            blob = digikam_preprocess(bgr)
        if blob_dir:
            np.save(str(Path(blob_dir) / f"{index:04d}.npy"), blob)
        try:
            net.setInput(blob)
            out = net.forward(output) if output else net.forward()
        except Exception as err:  # a release that loads a graph may still fail to run it
            rows.append({"error": _message(err)})
            continue
        _, _, _, max_loc = cv2.minMaxLoc(out.reshape(1, -1))
        ms = (time.perf_counter() - start) * 1e3
        rows.append({"class": int(max_loc[0]), "probs": [float(v) for v in out.ravel()], "ms": ms})
    result["images"] = rows
    return result


def main() -> int:
    job = json.load(sys.stdin)
    images = [str(p) for p in job["images"]]
    result = {
        "runs": [
            run(str(m["model"]), images, m.get("output"), job.get("blob_dir"), job.get("blobs"))
            for m in job["models"]
        ]
    }
    # one write: json.dump writes token by token, a syscall each when stdout is unbuffered (PYTHONUNBUFFERED),
    # and a probe's full-image output is ~10^6 tokens
    sys.stdout.write(json.dumps(result))
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
