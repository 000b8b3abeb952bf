"""Export profiles, declared once: which file each writes, from which graph, for which consumer, and what the
model card says of it. On the ground floor because the model card (iqs.report) describes them as well as the
exporter (iqs.deploy) writes them.

digiKam 8.0-9.2 load exactly one file for the Image Quality Sorter: `weights_inceptionv3_299.pb`, a
TensorFlow frozen graph read with `cv::dnn::readNetFromTensorflow` (../shared/digikam.md). So the profile
named `digikam` IS that `.pb`, and no other profile carries digiKam's name: an ONNX in the same contract is
`contract_onnx`, for onnxruntime and other tools, which digiKam itself never reads.

Graphs (iqs.deploy.export.onnx_wrappers): `contract` is digiKam's I/O contract (1x3x299x299 RGB in [-1, 1] ->
1x3 softmax bad/normal/good); `full` is what `iqs predict` reads (score, probs, and dist for distribution
heads, any batch size).

Adding a profile: its `Profile` record here (and a `Format` with its writer, when the file type is new). The
exporter writes and checks it through the record, the model card describes it from `card`; `iqs predict` (`predict`), `iqs digikam install`
(`digikam`), the OpenCV matrix (`opencv_output`) and the checks in OpenCV (`opencv_releases`) ask the record.
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Format:
    """A file format an export is written in: its extension, its writer, its check, how OpenCV opens it."""

    name: str
    extension: str  # the file's last suffix, with its dot
    # "module:function", imported on use (torch, onnx and the TF protos only when writing):
    # (model, meta, path, profile, opset, verify, opencv_releases) -> path of the kept file
    writer: str
    verifier: str  # how a file is checked before it is kept (the model card, messages)
    opencv_loader: str  # the OpenCV call digiKam uses for this file type (iqs.deploy.compat.opencv_worker)

    def load_writer(self) -> Callable[..., Path]:
        module, function = self.writer.split(":")
        return getattr(importlib.import_module(module), function)


ONNX = Format(
    "onnx",
    ".onnx",
    "iqs.deploy.export.onnx_export:write_profile",
    "onnxruntime against PyTorch",
    "readNet (ONNX importer)",
)
TF_GRAPHDEF = Format(
    "tf_graphdef",
    ".pb",
    "iqs.deploy.export.tf_export:write_profile",
    "readNetFromTensorflow in the OpenCV releases digiKam links, against PyTorch",
    "readNetFromTensorflow",
)
FORMATS = (ONNX, TF_GRAPHDEF)


@dataclass(frozen=True)
class Profile:
    name: str  # what `profiles=[...]` says
    suffix: str  # the file is <name>.<suffix>; it ends with the format's extension
    graph: str  # the traced graph (iqs.deploy.export.onnx_wrappers.GRAPHS)
    format: Format  # the writer and the verifier
    consumer: str  # who reads the file: the model card, `iqs export --help`, error messages
    predict: bool = False  # `iqs predict` reads it (score and class probabilities)
    digikam: bool = False  # `iqs digikam install` installs it: the file digiKam's detector loads
    # the OpenCV releases (pip versions) the file is loaded in before it is kept (conf/export.yaml
    # `verify_opencv` overrides them); empty: not checked in OpenCV
    opencv_releases: tuple[str, ...] = ()
    opencv_output: str | None = None  # the output OpenCV reads: None is forward()'s default one
    # the model card's paragraph on the file (iqs.report.model_card), after its name and suffix; filled in
    # per model: {score} (what the score means), {dist} (the distribution output, or nothing), {opset},
    # {releases} (the OpenCV releases above)
    card: str = ""

    def __post_init__(self) -> None:
        if not self.suffix.endswith(self.format.extension):
            raise ValueError(
                f"profile '{self.name}': suffix {self.suffix!r} is not a {self.format.name} file"
            )

    def write(
        self,
        model: Any,
        meta: Any,
        path: Path,
        opset: int,
        verify: bool = True,
        opencv_releases: Sequence[str] | None = None,
    ) -> Path:
        """Write (and with `verify`, check) this profile's file at `path`; the kept file's path."""
        releases = tuple(opencv_releases) if opencv_releases else self.opencv_releases
        return self.format.load_writer()(model, meta, path, self, opset, verify, releases)


DIGIKAM = Profile(
    "digikam",
    "digikam.pb",
    "contract",
    TF_GRAPHDEF,
    "digiKam 8.0-9.2 (cv::dnn::readNetFromTensorflow), installed as weights_inceptionv3_299.pb",
    digikam=True,
    # Debian 12 / Ubuntu 24.04 (4.6), Debian 13 / Fedora (4.10) and the newest 4.x (4.12); `make compat` and
    # the tests run all five of iqs.deploy.export.onnx_ops.OPENCV_RELEASES
    opencv_releases=("4.6.0.66", "4.10.0.84", "4.12.0.88"),
    card="the file digiKam loads. A TensorFlow frozen graph, read by every digiKam 8.0-9.2 with "
    "`cv::dnn::readNetFromTensorflow` once `iqs digikam install` has put it in place as "
    "`weights_inceptionv3_299.pb`; input `1x3x299x299` (digiKam's NCHW blob; NHWC inside), output `1x3`, softmax "
    "in the order bad, normal, good. The argmax is the class digiKam reads (`minMaxLoc`); for score heads it is "
    "the thresholded score. Checked with readNetFromTensorflow in OpenCV {releases} against PyTorch before it "
    "is kept.",
)
FULL = Profile(
    "full",
    "full.onnx",
    "full",
    ONNX,
    "iqs predict (onnxruntime): score, class probabilities, distribution",
    predict=True,
    opencv_output="probs",
    card="input `Nx3x299x299`; outputs `score` (N) - {score}; `probs` (Nx3){dist}. Used by `iqs predict` "
    "(onnxruntime), opset {opset}.",
)
CONTRACT_ONNX = Profile(
    "contract_onnx",
    "contract.onnx",
    "contract",
    ONNX,
    "onnxruntime and other ONNX tools, in digiKam's I/O contract; digiKam itself does not read ONNX",
    card="digiKam's contract as ONNX, for onnxruntime and other tools. digiKam itself never reads an ONNX file "
    "for this feature.",
)
PROFILES: dict[str, Profile] = {p.name: p for p in (DIGIKAM, FULL, CONTRACT_ONNX)}
DEFAULT_PROFILES = (DIGIKAM.name, FULL.name)  # what digiKam loads, plus what `iqs predict` needs
# names of earlier releases: `digikam` was an ONNX that no digiKam reads, `digikam_tf` the .pb
RENAMED = {"digikam_tf": DIGIKAM.name}


def _only(what: str, found: list[Profile]) -> Profile:
    if len(found) != 1:
        raise RuntimeError(f"exactly one export profile must be {what}, found {[p.name for p in found]}")
    return found[0]


# the profile `iqs predict` reads, and the one `iqs digikam install` installs
PREDICT = _only("read by `iqs predict`", [p for p in PROFILES.values() if p.predict])
INSTALL = _only("installed into digiKam", [p for p in PROFILES.values() if p.digikam])


class ProfileError(ValueError):
    pass


def profile(name: str) -> Profile:
    """The profile called `name`, or an error that names the right one."""
    name = str(name)
    if name in PROFILES:
        return PROFILES[name]
    if name in RENAMED:
        raise ProfileError(
            f"export profile '{name}' is now called '{RENAMED[name]}' (the .pb digiKam loads): "
            f"profiles=[{RENAMED[name]}]"
        )
    close = difflib.get_close_matches(name, PROFILES, n=1)
    hint = f"; did you mean '{close[0]}'?" if close else ""
    raise ProfileError(f"unknown export profile '{name}'{hint} Profiles: {', '.join(PROFILES)}")


def release_span(releases: Sequence[str]) -> str:
    """'4.6-4.12' for pip versions ('4.6.0.66', ..., '4.12.0.88'): the OpenCV releases as people name them."""
    named = sorted({tuple(int(v) for v in r.split(".")[:2]) for r in releases})
    if not named:
        return "no release"
    first, last = (f"{a}.{b}" for a, b in (named[0], named[-1]))
    return first if first == last else f"{first}-{last}"


def file_name(name: str, profile_name: str) -> str:
    return f"{name}.{profile(profile_name).suffix}"


def profile_of_export(name: str | None) -> Profile | None:
    """The profile an exported file says it is (its `iqs_profile` / `export_profile`); None if none is known."""
    return PROFILES.get(str(name)) if name is not None else None


def format_of(path: str | Path) -> Format | None:
    """The format of a file, by its extension; None for any other file."""
    extension = Path(path).suffix.lower()
    return next((f for f in FORMATS if f.extension == extension), None)
