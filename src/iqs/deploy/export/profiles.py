"""Export profiles, declared once: which file each writes, from which graph, for which consumer.

digiKam 8.0-9.2 load exactly one file for the Image Quality Sorter: `weights_inceptionv3_299.pb`, a
TensorFlow frozen graph read with `cv::dnn::readNetFromTensorflow` (../shared/digikam.md). So the profile
named `digikam` IS that `.pb`, and no other profile carries digiKam's name: an ONNX in the same contract is
`contract_onnx`, for onnxruntime and other tools, which digiKam itself never reads.

Graphs (iqs.deploy.export.onnx_wrappers): `contract` is digiKam's I/O contract (1x3x299x299 RGB in [-1, 1] ->
1x3 softmax bad/normal/good); `full` is what `iqs predict` reads (score, probs, and dist for distribution
heads, any batch size).
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass


@dataclass(frozen=True)
class Profile:
    name: str  # what `profiles=[...]` says
    suffix: str  # the file is <name>.<suffix>
    graph: str  # the traced graph (onnx_wrappers.GRAPHS)
    consumer: str  # who reads the file: the model card, `iqs export --help`, error messages


DIGIKAM = Profile(
    "digikam",
    "digikam.pb",
    "contract",
    "digiKam 8.0-9.2 (cv::dnn::readNetFromTensorflow), installed as weights_inceptionv3_299.pb",
)
FULL = Profile(
    "full", "full.onnx", "full", "iqs predict (onnxruntime): score, class probabilities, distribution"
)
CONTRACT_ONNX = Profile(
    "contract_onnx",
    "contract.onnx",
    "contract",
    "onnxruntime and other ONNX tools, in digiKam's I/O contract; digiKam itself does not read ONNX",
)
PROFILES: dict[str, Profile] = {p.name: p for p in (DIGIKAM, FULL, CONTRACT_ONNX)}
DEFAULT_PROFILES = (DIGIKAM.name, FULL.name)  # what digiKam loads, plus what `iqs predict` needs
# names of earlier releases: `digikam` was an ONNX that no digiKam reads, `digikam_tf` the .pb
RENAMED = {"digikam_tf": DIGIKAM.name}


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


def file_name(name: str, profile_name: str) -> str:
    return f"{name}.{profile(profile_name).suffix}"
