"""How a prepared shard stores each image: raw uint8 pixels or JPEG bytes.

Raw pixels cost h*w*3 bytes: at short side 320, 410 KB for a 4:3 photo (427x320) to 461 KB for a 3:2 one
(480x320, bench/shard_format_bench.py's measurement), so about 105-118 GB for AVA's 255k photos. JPEG at
quality 95 with full-resolution chroma (4:4:4) is about 7x smaller on the demo data (bench/shard_format_bench.py)
and decodes with libjpeg-turbo (simplejpeg, already a dependency) at hundreds to thousands of images per second
per core, far above a CPU fine-tuning step, so a loader worker or two keep a GPU fed. 4:4:4 because this model
judges quality: halving chroma resolution would add exactly the kind of degradation it learns to see
(4:2:0 loses ~4 dB PSNR on the demo's worst image for 15% fewer bytes).

Each shard manifest row records its image's format (`"format": "raw" | "jpeg"`, plus `nbytes` for JPEG), so a
reader never guesses; rows without the key come from shards written before JPEG existed and are raw.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

FORMATS = ("raw", "jpeg")
DEFAULT_QUALITY = 95


@dataclass(frozen=True)
class ShardFormat:
    """`prepare.format` (raw | jpeg) and `prepare.jpeg_quality` (1-100; JPEG only)."""

    name: str = "raw"
    quality: int = DEFAULT_QUALITY

    def __post_init__(self) -> None:
        if self.name not in FORMATS:
            raise ValueError(f"prepare.format must be one of {', '.join(FORMATS)}, got {self.name!r}")
        if not 1 <= int(self.quality) <= 100:
            raise ValueError(f"prepare.jpeg_quality must be 1-100, got {self.quality!r}")

    @classmethod
    def from_cfg(cls, prepare_cfg: Mapping[str, Any] | None) -> ShardFormat:
        p = prepare_cfg or {}
        # `is None`, not `or`: jpeg_quality=0 or format='' must reach the range checks, not become the defaults
        name, quality = p.get("format"), p.get("jpeg_quality")
        return cls("raw" if name is None else str(name), DEFAULT_QUALITY if quality is None else int(quality))

    @property
    def key(self) -> str:
        """Part of the cache folder's and shard's hash; empty for raw so shards written before JPEG keep their key."""
        return "" if self.name == "raw" else f"|jpeg{self.quality}"

    def encode(self, rgb: np.ndarray) -> tuple[bytes, dict[str, Any]]:
        """(bytes to append to the shard, manifest fields describing them)."""
        if self.name == "raw":
            return rgb.tobytes(), {"format": "raw"}
        import simplejpeg

        buf = simplejpeg.encode_jpeg(
            np.ascontiguousarray(rgb), quality=int(self.quality), colorspace="RGB", colorsubsampling="444"
        )
        return buf, {"format": "jpeg", "nbytes": len(buf)}


RAW = ShardFormat()


def entry_nbytes(entry: Mapping[str, Any]) -> int:
    """Bytes an image's manifest row occupies in the shard."""
    if entry.get("format", "raw") == "raw":
        return int(entry["h"]) * int(entry["w"]) * 3
    return int(entry["nbytes"])


def decode(entry: Mapping[str, Any], data: np.ndarray) -> np.ndarray:
    """HxWx3 uint8 RGB from the shard bytes `data` of a manifest row (raw: a view, no copy)."""
    fmt = entry.get("format", "raw")
    h, w = int(entry["h"]), int(entry["w"])
    if fmt == "raw":
        return data.reshape(h, w, 3)
    if fmt == "jpeg":
        import simplejpeg

        rgb = simplejpeg.decode_jpeg(data, colorspace="RGB")
        if rgb.shape != (h, w, 3):
            raise ValueError(f"JPEG in shard decodes to {rgb.shape}, manifest says {(h, w, 3)}")
        return rgb
    raise ValueError(f"unknown shard format {fmt!r} (known: {', '.join(FORMATS)}); re-run `iqs data prepare`")


def decode_jpeg_batch_cuda(buffers: Sequence[bytes | np.ndarray], device: str = "cuda") -> list[Any]:
    """JPEG shard images decoded on the GPU by nvJPEG (torchvision.io.decode_jpeg), as 3xHxW uint8 tensors.

    For a training loop that augments on the GPU; the DataModule's albumentations path decodes on the CPU.
    """
    import torch
    from torchvision.io import ImageReadMode, decode_jpeg

    tensors = [torch.frombuffer(bytearray(b), dtype=torch.uint8) for b in buffers]
    return decode_jpeg(tensors, mode=ImageReadMode.RGB, device=device)
