"""What a run is called and how it is tagged: the research axes, the label rule's key, the run name and
the sweep id, all derived from the run's config (iqs.tracking.config_view).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from iqs.metrics.label_rule import LabelRule, pair_name
from iqs.tracking.config_view import cfg_get, safe_name

# the research axes: tag name -> config key of the chosen option's name
AXES = {
    "head": "head.name",
    "rebalance": "rebalance.name",
    "thresholds": "thresholds.name",
    "data": "data.name",
}


def thresholds_name(cfg: Any) -> str:
    """`5_6` from the pair's values: `thresholds=t5_6 thresholds.t1=4 thresholds.t2=7` is `4_7`, not its
    config group's name; the name is used only when the config has no values."""
    t1, t2 = cfg_get(cfg, "thresholds.t1"), cfg_get(cfg, "thresholds.t2")
    if t1 is not None and t2 is not None:
        return pair_name(float(t1), float(t2))
    name = cfg_get(cfg, "thresholds.name")
    return "none" if name is None else str(name)


def source_thresholds(
    cfg: Any, sources: list[str], default: tuple[float, float]
) -> dict[str, tuple[float, float]]:
    """Each source's threshold pair: its own override in `data.sources.<name>.thresholds`, else the run's."""
    out = {}
    for name in sources:
        own = cfg_get(cfg, f"data.sources.{name}.thresholds")
        if own is not None and cfg_get(own, "t1") is not None:
            out[name] = (float(cfg_get(own, "t1")), float(cfg_get(own, "t2")))
        else:
            out[name] = (float(default[0]), float(default[1]))
    return out


def label_rule_of(cfg: Any) -> LabelRule | None:
    """The run's label rule (declared pair + source overrides) from its config; None without thresholds."""
    t1, t2 = cfg_get(cfg, "thresholds.t1"), cfg_get(cfg, "thresholds.t2")
    if t1 is None or t2 is None:
        return None
    declared = (float(t1), float(t2))
    sources = cfg_get(cfg, "data.sources") or {}
    return LabelRule(declared, source_thresholds(cfg, [str(s) for s in sources], declared))


def axes_of(cfg: Any) -> dict[str, str]:
    """The values of the research axes (head, rebalance, thresholds, data, backbone), 'none' when absent,
    and `labels`: the label rule's key (the declared pair plus any source's own pair, e.g.
    `5_6; demo_ava=4_7`); runs label their images alike iff their `labels` tags are equal."""
    axes = {tag: str(cfg_get(cfg, key, "none")) for tag, key in AXES.items()}
    axes["thresholds"] = thresholds_name(cfg)
    axes["backbone"] = str(cfg_get(cfg, "backbone.name", "none"))
    rule = label_rule_of(cfg)
    axes["labels"] = rule.key if rule is not None else axes["thresholds"]
    return axes


def run_name_for(cfg: Any) -> str:
    """ASCII run name from the axes, e.g. `regression-sampler-t5_6-demo`."""
    a = axes_of(cfg)
    return "-".join(
        [
            safe_name(a["head"]),
            safe_name(a["rebalance"]),
            "t" + safe_name(a["thresholds"]),
            safe_name(a["data"]),
        ]
    )


def sweep_id_for(cfg: Any) -> str:
    """`logger.sweep_id` when set, else the Hydra multirun's sweep folder (one id per `-m` launch), else 'none'."""
    explicit = cfg_get(cfg, "logger.sweep_id") or cfg_get(cfg, "sweep_id")
    if explicit:
        return str(explicit)
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        if HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN:
            sweep_dir = Path(HydraConfig.get().sweep.dir)
            try:
                sweep_dir = sweep_dir.resolve().relative_to(Path.cwd().resolve())
            except ValueError:
                sweep_dir = Path(*sweep_dir.parts[-2:])
            parts = [p for p in sweep_dir.parts if p not in ("multirun", "/")]
            return safe_name("_".join(parts))
    except (ImportError, ValueError):
        pass
    return "none"
