"""`iqs compat` (`make compat`): export fixed-seed models and print the OpenCV matrix against `iqs predict`
and PyTorch (options: conf/compat.yaml).

    iqs compat                                   # the demo config (experiment=demo), three heads,
                                                 # profiles digikam (.pb), full and contract_onnx
    iqs compat --backbones                       # also every conf/backbone/*.yaml (weights=none)
    iqs compat --heads= --backbones=resnet50,inception_v3
    iqs compat --images 8 --heads regression

Nothing is trained: the backbone keeps its packaged weights (or random ones with `weights=none`, which still
exercise every operator), the head is seeded, and score thresholds sit at the score terciles of the photos, so
all three classes occur. The photos are real (scikit-image's sample photos), cropped to the aspect ratios
digiKam meets, some blurred, noised or JPEG-compressed, and saved as PNG so that OpenCV's `imread` and
`iqs predict`'s decoder see the same pixels: the matrix compares models, not decoders.
"""

from __future__ import annotations

import io
import json
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from torch import nn

from iqs.core.export_profiles import CONTRACT_ONNX, PREDICT, PROFILES
from iqs.core.preprocess import DigikamToBackbone, digikam_blob
from iqs.deploy.compat.opencv_matrix import compare, failures, matrix_table, run_matrix

# (width, height) ratios digiKam meets: 4:3, 3:2, 1:1, 9:16, 2:3 and two panoramas
ASPECTS = [(4, 3), (3, 2), (1, 1), (9, 16), (2, 3), (3, 1), (16, 5)]
PHOTOS = [
    "astronaut",
    "chelsea",
    "coffee",
    "rocket",
    "immunohistochemistry",
    "hubble_deep_field",
    "camera",
    "coins",
]


def compat_photos(n: int = 56, seed: int = 0) -> list[np.ndarray]:
    """BGR uint8 photos 300-600 px: crops of skimage photos at several aspect ratios, some distorted."""
    from PIL import Image, ImageFilter
    from skimage import data

    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        src = getattr(data, PHOTOS[i % len(PHOTOS)])()
        src = np.dstack([src] * 3) if src.ndim == 2 else src[:, :, :3]
        aw, ah = ASPECTS[i % len(ASPECTS)]
        h0, w0 = src.shape[:2]
        scale = min(w0 / aw, h0 / ah) * rng.uniform(0.6, 1.0)
        cw, ch = max(8, int(aw * scale)), max(8, int(ah * scale))
        x, y = rng.integers(0, w0 - cw + 1), rng.integers(0, h0 - ch + 1)
        crop = src[y : y + ch, x : x + cw]
        long_side = int(rng.integers(300, 601))
        f = long_side / max(cw, ch)
        crop = cv2.resize(crop, (max(1, round(cw * f)), max(1, round(ch * f))), interpolation=cv2.INTER_AREA)
        img = Image.fromarray(crop)
        kind = i % 4
        if kind == 1:
            img = img.filter(ImageFilter.GaussianBlur(rng.uniform(1, 4)))
        elif kind == 2:
            noisy = np.asarray(img).astype(float) + rng.normal(0, rng.uniform(5, 25), crop.shape)
            img = Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8))
        elif kind == 3:
            buf = io.BytesIO()
            img.save(buf, "JPEG", quality=int(rng.integers(5, 30)))
            img = Image.open(buf).convert("RGB")
        out.append(cv2.cvtColor(np.asarray(img), cv2.COLOR_RGB2BGR))
    return out


def write_photos(photos: Sequence[np.ndarray], folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, bgr in enumerate(photos):
        path = folder / f"photo-{i:03d}.png"
        if not cv2.imwrite(str(path), bgr):
            raise OSError(f"cannot write {path}")
        paths.append(path)
    return paths


def fixed_seed_model(cfg: Mapping[str, Any], blobs: np.ndarray | None = None, seed: int = 0) -> nn.Module:
    """The model of `cfg` (groups backbone, head, thresholds) with a seeded head; with `blobs`, the score
    thresholds move to the score terciles (score heads) or the logits are centred (classification) so that
    all three classes occur on these photos."""
    from iqs.models import build_quality_model

    torch.manual_seed(seed)
    model = build_quality_model(dict(cfg)).eval()
    if blobs is not None:
        with torch.no_grad():
            out = model(DigikamToBackbone.from_meta(model.meta)(torch.from_numpy(blobs)))
        if model.meta["head"] == "classification":
            last = [m for m in model.head.modules() if isinstance(m, nn.Linear)][-1]
            last.bias.data -= out["logits3"].mean(0)
        else:
            t1, t2 = np.quantile(out["score"].numpy(), [1 / 3, 2 / 3])
            model.head.t1, model.head.t2 = float(t1), float(t2)
            model.meta["thresholds"] = [float(t1), float(t2)]
    return model


def read_blobs(images: Sequence[Path]) -> np.ndarray:
    """digiKam's blobs of image files decoded as digiKam's preview is (OpenCV, BGR)."""
    return np.concatenate([digikam_blob(cv2.imread(str(p), cv2.IMREAD_COLOR)) for p in images])


def torch_reference(model: nn.Module, blobs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(classes, probs) of the PyTorch model on digiKam's blobs: the run's own classes (argmax of logits3)."""
    with torch.no_grad():
        out = model(DigikamToBackbone.from_meta(model.meta)(torch.from_numpy(blobs)))
    return out["logits3"].argmax(-1).numpy(), out["probs"].numpy()


def predict_reference(full_onnx: Path, images: Sequence[Path]) -> tuple[np.ndarray, np.ndarray]:
    """(classes, probs) from `iqs predict` on the full profile (onnxruntime), read back from its JSON."""
    from iqs.deploy.export.exporter import read_onnx_meta
    from iqs.deploy.predict.command import main as predict_main

    names = list(read_onnx_meta(full_onnx)["class_names"])
    with tempfile.TemporaryDirectory(prefix="iqs-compat-") as tmp:
        out = Path(tmp) / "predict.json"
        code = predict_main([*map(str, images), "--output", str(out), "--strict", f"model={full_onnx}"])
        if code != 0:
            raise RuntimeError(f"iqs predict failed (exit {code}) on {full_onnx}")
        rows = {Path(r["path"]).resolve(): r for r in json.loads(out.read_text(encoding="utf-8"))}
    ordered = [rows[Path(p).resolve()] for p in images]
    classes = np.array([names.index(r["class"]) for r in ordered])
    probs = np.array([[r["prob_bad"], r["prob_normal"], r["prob_good"]] for r in ordered], dtype=np.float64)
    return classes, probs


def ort_session(path: Path):
    import onnxruntime as ort

    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def check_model(
    model: nn.Module,
    name: str,
    images: Sequence[Path],
    out_dir: Path,
    console: Any,
    profiles: Sequence[str] = tuple(PROFILES),
) -> tuple[list[str], dict[str, list]]:
    """Export the profiles, run the matrix, print one table per profile; returns (failures, rows).

    The profile `iqs predict` reads and `contract_onnx` are needed (the references come from them, and from
    onnxruntime on each release's own pixels); `digikam`, the .pb digiKam loads with readNetFromTensorflow,
    is checked against them like every other file.
    """
    from iqs.deploy.export.exporter import export_model

    profiles = list(dict.fromkeys([PREDICT.name, CONTRACT_ONNX.name, *profiles]))
    files = export_model(model, model.meta, out_dir, name, profiles, 17, "compat", verify=True)
    blobs = read_blobs(images)
    torch_cls, _ = torch_reference(model, blobs)
    ort_cls, ort_probs = predict_reference(files[PREDICT.name], images)
    with tempfile.TemporaryDirectory(prefix="iqs-blobs-") as blob_root:
        runs = run_matrix([files[p] for p in profiles], images, blob_root=blob_root)
        # onnxruntime on each release's own blobs: the model alone, without the resize difference
        contract = str(files[CONTRACT_ONNX.name])
        session = ort_session(files[CONTRACT_ONNX.name])
        same = {
            release: np.concatenate(
                [session.run(None, {"input": b[None]})[0] for b in by_model[contract].blobs()]
            )
            for release, by_model in runs.items()
            if by_model[contract].loads
        }
    lines: list[str] = []
    rows: dict[str, list] = {}
    for profile in profiles:
        model_file = str(files[profile])
        agreements = []
        for release, by_model in runs.items():
            own = same.get(release)
            refs = {"predict": ort_cls, "torch": torch_cls}
            if own is not None:
                refs["ort same px"] = own.argmax(1)
            agreements.append(compare(by_model[model_file], refs, own if own is not None else ort_probs))
        console.print(
            matrix_table(agreements, f"{Path(model_file).name}, {len(images)} photos", "ort same px")
        )
        # the model must give onnxruntime's classes on the release's own pixels; a class that differs
        # from iqs predict only because that release's resize picked other pixels is a note, not a failure
        lines += [f"{Path(model_file).name}: {line}" for line in failures(agreements, ["ort same px"])]
        for note in sorted(set(failures(agreements)) - set(failures(agreements, ["ort same px"]))):
            console.print(f"note: {note} (its INTER_NEAREST_EXACT resize picks other pixels than OpenCV 5)")
        rows[profile] = agreements
    return lines, rows


def _check_backbones(
    backbones: str, images: list[Path], blobs: np.ndarray, exports: Path, console: Any
) -> list[str]:
    """`--backbones`: each conf/backbone yaml (all, or the named ones) exported and checked; its problems."""
    from iqs.core.config import compose, conf_dir
    from iqs.deploy.export.exporter import ExportError

    problems: list[str] = []
    wanted = None if backbones == "all" else set(backbones.split(","))
    for yaml in sorted((conf_dir() / "backbone").glob("*.yaml")):
        if wanted is not None and yaml.stem not in wanted:
            continue
        cfg = compose("train", [f"backbone={yaml.stem}", "backbone.weights=none", "head=regression"])
        console.rule(f"conf/backbone/{yaml.name} (weights=none), regression head")
        model = fixed_seed_model({k: cfg[k] for k in ("backbone", "head", "thresholds")}, blobs[:8])
        exportable = bool(cfg.backbone.get("exportable", True))
        try:
            lines, _ = check_model(model, f"backbone-{yaml.stem}", images[:8], exports, console)
        except ExportError as err:
            console.print(f"refused at export: {err}")
            if exportable:
                problems.append(f"{yaml.name}: claims to be exportable, but export refused it: {err}")
            continue
        if not exportable:
            problems.append(f"{yaml.name}: marked exportable: false, yet export accepted it")
        problems += [f"{yaml.name}: {line}" for line in lines]
    return problems


def main(argv: list[str] | None = None) -> int:
    from rich.console import Console

    from iqs.core.config import compose

    cfg = compose("compat", list(argv or []))
    images_n, heads, backbones = int(cfg.images), str(cfg.heads or ""), cfg.backbones
    console = Console()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    out_dir = Path(str(cfg.out_dir or Path(str(cfg.paths.cache_dir)) / "compat"))
    images = write_photos(compat_photos(images_n), out_dir / "photos")
    blobs = read_blobs(images)
    problems: list[str] = []
    for head in [h for h in heads.split(",") if h]:
        demo = compose("train", ["experiment=demo", f"head={head}"])
        model = fixed_seed_model({k: demo[k] for k in ("backbone", "head", "thresholds")}, blobs)
        console.rule(f"demo config (experiment=demo), {head} head")
        problems += check_model(model, f"demo-{head}", images, out_dir / "exports", console)[0]
    if backbones:
        problems += _check_backbones(str(backbones), images, blobs, out_dir / "exports", console)
    if problems:
        console.print("[bold red]not digiKam-ready:[/]\n  " + "\n  ".join(problems))
        return 1
    console.print(
        "every model loads in every OpenCV release and gives onnxruntime's classes on that release's pixels"
    )
    return 0
