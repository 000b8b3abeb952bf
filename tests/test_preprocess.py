"""One view of a photo: training, evaluation, the feature cache and predict all see digiKam's pixels."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image
from skimage import data

from iqs.core.config import compose
from iqs.core.decode import load_rgb
from iqs.core.preprocess import (
    DIGIKAM_SIZE,
    DigikamToBackbone,
    InputSpec,
    digikam_blob,
    eval_transform,
    train_transform,
)
from iqs.deploy.predict import scorer as predict

SPECS = [
    InputSpec((224, 224), (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    InputSpec((299, 299), (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
    InputSpec((192, 256), (0.4, 0.5, 0.6), (0.2, 0.25, 0.3)),
]
# the identity view: a 299x299 backbone with mean = std = 0.5 receives digiKam's [-1, 1] pixels unchanged
VIEW = SPECS[1]


def photos() -> list[np.ndarray]:
    """RGB uint8 photos at 4:3, 1:1, 9:16 and a panorama, 300-900 px."""
    out = []
    for src, (w, h) in zip(
        [data.astronaut(), data.chelsea(), data.coffee(), data.rocket()],
        [(640, 480), (333, 333), (360, 640), (900, 300)],
        strict=True,
    ):
        out.append(cv2.resize(src, (w, h), interpolation=cv2.INTER_AREA))
    return out


def colours(rgb: np.ndarray) -> np.ndarray:
    """Each pixel's RGB packed into one int, for set comparisons."""
    flat = rgb.reshape(-1, 3).astype(np.int32)
    return (flat[:, 0] << 16) | (flat[:, 1] << 8) | flat[:, 2]


def to_uint8(view: torch.Tensor) -> np.ndarray:
    """The [-1, 1] tensor of the identity spec back to digiKam's uint8 (H, W, 3) pixels."""
    return np.rint((view.numpy().transpose(1, 2, 0) + 1.0) * 127.5).astype(np.uint8)


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: "x".join(map(str, s.size)))
def test_train_and_eval_transforms_agree_exactly_without_augmentation(spec: InputSpec) -> None:
    augment = OmegaConf.to_container(compose("train").augment)
    off = train_transform(spec, **{**augment, "crop": 0.0, "hflip": 0.0}, seed=7)
    on = train_transform(spec, **augment, seed=7)
    evaluate = eval_transform(spec)
    changed = 0
    for photo in photos():
        expected = evaluate(image=photo)["image"]
        assert expected.shape == (3, *spec.size) and expected.dtype == torch.float32
        assert torch.equal(off(image=photo)["image"], expected)
        changed += not torch.equal(on(image=photo)["image"], expected)
    assert changed >= 2  # the configured augmentation does change pixels


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: "x".join(map(str, s.size)))
def test_eval_transform_is_the_exported_graphs_input(spec: InputSpec) -> None:
    """digiKam's blob (BGR in, step by step) through the graph's adapter = what training evaluates on."""
    adapt = DigikamToBackbone(spec.size, spec.mean, spec.std)
    for photo in photos():
        blob = torch.from_numpy(digikam_blob(cv2.cvtColor(photo, cv2.COLOR_RGB2BGR)))
        with torch.no_grad():
            graph = adapt(blob)[0]
        assert torch.equal(eval_transform(spec)(image=photo)["image"], graph)


def test_augmentation_is_digikams_view_of_a_reframed_or_mirrored_photo() -> None:
    evaluate = eval_transform(VIEW)
    mirror = train_transform(VIEW, crop=0.0, hflip=1.0)
    crop = train_transform(VIEW, crop=0.1, hflip=0.5, seed=0)
    for photo in photos():
        # a flip is digiKam's view of the mirrored photo, pixel for pixel
        assert torch.equal(
            mirror(image=photo)["image"], evaluate(image=np.ascontiguousarray(photo[:, ::-1]))["image"]
        )
        own = colours(photo)
        for seed in range(3):
            crop.set_random_seed(seed)
            view = to_uint8(crop(image=photo)["image"])
            assert view.shape == (DIGIKAM_SIZE, DIGIKAM_SIZE, 3)
            # nearest-neighbour of a sub-window: every pixel is one of the photo's, no interpolated values
            assert np.isin(colours(view), own).all()
    # a bilinear crop-and-rescale, the old training view, would not pass that test
    rescaled = cv2.resize(
        photos()[0][20:400, 30:600], (DIGIKAM_SIZE, DIGIKAM_SIZE), interpolation=cv2.INTER_LINEAR
    )
    assert not np.isin(colours(rescaled), colours(photos()[0])).all()
    with pytest.raises(ValueError, match="augment.crop"):
        train_transform(VIEW, crop=0.6)


def test_training_decodes_photos_like_predict(tmp_path: Path) -> None:
    """A rotated JPEG (EXIF orientation 6): training rows, the feature cache and predict see the same pixels."""
    from iqs.data.table import make_table
    from iqs.train.datamodule import ImageRows
    from iqs.train.features import _ImageFiles

    path = tmp_path / "rotated.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(photos()[0]).save(path, quality=92, exif=exif)
    upright = load_rgb(path)
    assert upright.shape[0] > upright.shape[1]  # orientation applied: the 640x480 photo stands upright

    spec = SPECS[0]
    table = make_table("d", ["rotated.jpg"], ["1"], np.full(1, 5.0), np.full(1, 5.0), np.full((1, 10), 0.1))
    table["label"] = 1
    rows = ImageRows(
        table, np.arange(1), np.zeros(1, int), np.ones(1), np.array([str(path)]), eval_transform(spec)
    )
    assert np.array_equal(rows.pixels(0), upright)
    with torch.no_grad():
        graph = DigikamToBackbone(spec.size, spec.mean, spec.std)(
            torch.from_numpy(predict.prepare(path, DIGIKAM_SIZE, None))[None]
        )[0]
    assert torch.equal(rows[0]["image"], graph)
    assert torch.equal(_ImageFiles([str(path)], eval_transform(spec))[0], graph)
