"""Feature extractors: any timm model by name, with weights from the package, the hub, a file or nothing.

`create_backbone` returns a `Backbone` (pooled features, shape (N, num_features)) and a `BackboneInfo`, the
preprocessing the weights expect. That info goes into the checkpoint's `iqs_meta`, so training, export and
predict prepare pixels the same way.

Pooling (`pool`: avg | mlsp | mlsp_blocks, `pool_levels`): see `iqs.models.pooling`.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import timm
import torch
from torch import nn

from iqs.models.options import check_options
from iqs.models.packaged_weights import get_packaged, load_packaged_state_dict
from iqs.models.pooling import (
    check_levels,
    check_pool,
    mean_std_pool,
    pool_intermediates,
    pooled_num_features,
)

WEIGHT_SOURCES = ("packaged", "hub", "none")


@dataclass(frozen=True)
class BackboneConfig:
    """What builds a backbone: a timm model by `name` and the options every conf/backbone/*.yaml shares.

    The defaults are written here once; conf/backbone_defaults.yaml states the same values (so that they
    become MLflow params) and tests/test_config_groups.py keeps the two equal."""

    name: str
    weights: str = "hub"  # packaged | hub | none | <path to a state dict>; hub needs internet
    freeze: bool = True  # frozen: no gradients, BN statistics kept (eval mode)
    channels_last: bool = True  # about 2x faster on CPU
    input_size: int | list[int] | None = None  # None = from the weights' metadata
    mean: list[float] | None = None  # None = from the weights' metadata
    std: list[float] | None = None
    interpolation: str | None = None
    pool: str = "avg"  # avg | mlsp | mlsp_blocks (iqs.models.pooling)
    pool_levels: int | None = None  # MLSP only: the first k levels (None = all)
    exportable: bool = True  # false: `iqs export` refuses it (operators some digiKam OpenCV lacks)

    def create(self, weights: str | None = None) -> tuple[Backbone, BackboneInfo]:
        """The backbone and its preprocessing; `weights` overrides the configured source."""
        return create_backbone(
            name=self.name,
            weights=self.weights if weights is None else weights,
            freeze=self.freeze,
            channels_last=self.channels_last,
            input_size=self.input_size,
            mean=self.mean,
            std=self.std,
            interpolation=self.interpolation,
            pool=self.pool,
            pool_levels=self.pool_levels,
        )


def backbone_config(**options: Any) -> BackboneConfig:
    """A checked `BackboneConfig`: conf/backbone_defaults.yaml's `_target_` (so every conf/backbone/*.yaml's),
    and the reader of a mapping. An unknown key names the nearest valid one."""
    check_options("backbone", options, [f.name for f in fields(BackboneConfig)])
    if "name" not in options:
        raise KeyError("backbone config needs a 'name' (a timm model, e.g. one of conf/backbone/*.yaml)")
    return BackboneConfig(**options)


@dataclass(frozen=True)
class BackboneInfo:
    name: str
    weights: str
    num_features: int
    input_size: tuple[int, int]  # (H, W)
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str
    crop_pct: float
    pool: str = "avg"
    pool_levels: int | None = None

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        # Lists, not tuples, so the record survives YAML/JSON/OmegaConf round trips unchanged.
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}


class Backbone(nn.Module):
    """A timm model without classifier; frozen means no gradients and BN kept in eval mode even in `train()`.

    `forward` returns the pooled (N, num_features) features; with an MLSP pool they are, per level in
    network order, the channel means then the channel standard deviations. `pool_levels` keeps the first
    levels only (None = all; ignored by `avg`).
    """

    def __init__(
        self,
        body: nn.Module,
        num_features: int,
        freeze: bool,
        channels_last: bool,
        pool: str = "avg",
        pool_levels: int | None = None,
    ) -> None:
        super().__init__()
        self.body = body
        self.pool = check_pool(pool)
        self.pool_levels = None if self.pool == "avg" else check_levels(pool_levels)
        expected = pooled_num_features(body, self.pool, self.pool_levels)
        if int(num_features) != expected:
            raise ValueError(
                f"pool '{pool}' of {type(body).__name__} gives {expected} features, not {num_features}"
            )
        self.num_features = int(num_features)
        self.channels_last = channels_last
        self.frozen = False
        if channels_last:
            self.body.to(memory_format=torch.channels_last)
        self.set_frozen(freeze)

    @property
    def pooling(self) -> str:
        """The pooling in one word, e.g. `avg`, `mlsp` or `mlsp:3` (first 3 levels): a feature cache key."""
        return self.pool if self.pool_levels is None else f"{self.pool}:{self.pool_levels}"

    def set_frozen(self, frozen: bool) -> None:
        self.frozen = frozen
        for p in self.body.parameters():
            p.requires_grad_(not frozen)
        self.train(self.training)

    def train(self, mode: bool = True) -> Backbone:
        super().train(mode)
        if self.frozen:
            # BN statistics of a frozen backbone must not drift with the new data's batches.
            self.body.eval()
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self._prepare(x)
        if self.frozen:
            # No graph through a frozen body: saves the activations' memory.
            with torch.no_grad():
                return self._pooled(x)
        return self._pooled(x)

    def _pooled(self, x: torch.Tensor) -> torch.Tensor:
        if self.pool == "avg":
            return self.body(x)
        stats = []
        for level in pool_intermediates(self.body, x, self.pool, self.pool_levels):
            stats.extend(mean_std_pool(level))
        return torch.cat(stats, dim=1)

    def _prepare(self, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x


def check_backbone_name(name: str) -> None:
    if timm.is_model(name):
        return
    hint = difflib.get_close_matches(name, timm.list_models(), n=3)
    did_you_mean = f" Did you mean {', '.join(repr(h) for h in hint)}?" if hint else ""
    raise KeyError(f"unknown backbone '{name}' (not a timm model).{did_you_mean}")


def _load_state_dict_file(path: Path, model: nn.Module) -> None:
    if not path.is_file():
        raise FileNotFoundError(
            f"backbone weights file not found: {path} (weights must be one of {', '.join(WEIGHT_SOURCES)} "
            "or a path to a state dict)"
        )
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path}: expected a state dict (name -> tensor) saved with torch.save")
    # A file saved from a full classifier still fits: its classifier is not part of the backbone.
    classifier = str(model.pretrained_cfg.get("classifier") or "")
    state = {k: v for k, v in state.items() if not (classifier and k.startswith(classifier + "."))}
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise ValueError(f"{path}: does not match backbone '{type(model).__name__}': {err}") from err


def _hub_model(name: str, num_classes: int) -> nn.Module:
    try:
        return timm.create_model(name, pretrained=True, num_classes=num_classes)
    except Exception as err:  # network, hub and cache errors all end here
        raise RuntimeError(
            f"cannot fetch hub weights for backbone '{name}' ({type(err).__name__}: {err}). "
            "Without internet use weights=packaged (packaged backbones only), weights=none, "
            "or weights=<path to a state dict>."
        ) from err


def build_timm_model(name: str, weights: str, keep_classifier: bool = False) -> nn.Module:
    """The timm model with its weights; `keep_classifier` keeps ImageNet logits (packaged/hub only)."""
    check_backbone_name(name)
    if weights == "packaged":
        get_packaged(name)  # clear error before building anything
        model = timm.create_model(name, pretrained=False)
        model.load_state_dict(load_packaged_state_dict(name), strict=True)
    elif weights == "hub":
        model = _hub_model(name, num_classes=1000 if keep_classifier else 0)
    elif weights == "none":
        model = timm.create_model(name, pretrained=False)
    else:
        model = timm.create_model(name, pretrained=False, num_classes=0)
        _load_state_dict_file(Path(weights), model)
    if not keep_classifier:
        model.reset_classifier(0)
    return model


def _pair(size: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(size, int):
        return size, size
    size = tuple(int(s) for s in size)
    if len(size) == 3:  # timm's (C, H, W)
        size = size[1:]
    if len(size) != 2:
        raise ValueError(f"input_size must be an int, (H, W) or (C, H, W), got {size}")
    return size


def resolve_info(
    model: nn.Module,
    name: str,
    weights: str,
    input_size: int | Sequence[int] | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    interpolation: str | None = None,
    pool: str = "avg",
    pool_levels: int | None = None,
) -> BackboneInfo:
    """Preprocessing: explicit values win, then the packaged weights' record, then timm's pretrained cfg.

    `num_features` is the size of the `pool`ed features, what a head reads.
    """
    cfg = timm.data.resolve_data_config({}, model=model)
    base = {
        "input_size": _pair(cfg["input_size"]),
        "mean": tuple(cfg["mean"]),
        "std": tuple(cfg["std"]),
        "interpolation": cfg["interpolation"],
        "crop_pct": float(cfg["crop_pct"]),
    }
    if weights == "packaged":
        p = get_packaged(name)
        base.update(
            input_size=p.input_size,
            mean=p.mean,
            std=p.std,
            interpolation=p.interpolation,
            crop_pct=p.crop_pct,
        )
    if input_size is not None:
        base["input_size"] = _pair(input_size)
    for key, value in (("mean", mean), ("std", std)):
        if value is not None:
            if len(value) != 3:
                raise ValueError(f"backbone {key} needs 3 values (RGB), got {list(value)}")
            base[key] = tuple(float(v) for v in value)
    if interpolation is not None:
        base["interpolation"] = str(interpolation)
    pool_levels = None if pool == "avg" else check_levels(pool_levels)
    return BackboneInfo(
        name=name,
        weights=weights,
        num_features=pooled_num_features(model, pool, pool_levels),
        pool=pool,
        pool_levels=pool_levels,
        **base,
    )


def create_backbone(
    name: str,
    weights: str | None = None,
    freeze: bool | None = None,
    channels_last: bool | None = None,
    input_size: int | Sequence[int] | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    interpolation: str | None = None,
    pool: str | None = None,
    pool_levels: int | None = None,
) -> tuple[Backbone, BackboneInfo]:
    """`weights`: packaged | hub | none | <path to a state dict>; None preprocessing values come from the weights.

    `pool`: avg | mlsp | mlsp_blocks (see the module docstring); `pool_levels`: the first levels only.
    `weights`, `freeze`, `channels_last` and `pool` left None take `BackboneConfig`'s defaults.
    """
    defaults = BackboneConfig(name)
    weights = str(defaults.weights if weights is None else weights)
    freeze = bool(defaults.freeze if freeze is None else freeze)
    channels_last = bool(defaults.channels_last if channels_last is None else channels_last)
    pool = str(defaults.pool if pool is None else pool)
    check_pool(pool)
    model = build_timm_model(name, weights, keep_classifier=False)
    info = resolve_info(model, name, weights, input_size, mean, std, interpolation, pool, pool_levels)
    backbone = Backbone(
        model,
        info.num_features,
        freeze=freeze,
        channels_last=channels_last,
        pool=pool,
        pool_levels=info.pool_levels,
    )
    return backbone, info
