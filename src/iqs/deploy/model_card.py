"""A markdown model card written beside every export: data, thresholds, test metrics and the I/O contract."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from iqs.deploy.xmp import PICK_LABELS

_TEST_KEY = re.compile(r"^test/(?P<dataset>[^/]+)/(?P<metric>.+)$")
# params that describe the training data mixture and labelling, as logged by `iqs train`
_DATA_PARAM = re.compile(r"^(data|thresholds|rebalance)[./]")


def test_metric_table(metrics: Mapping[str, float]) -> str:
    """`test/<dataset>/<metric>` keys -> one row per dataset, one column per metric."""
    table: dict[str, dict[str, float]] = {}
    for key, value in metrics.items():
        match = _TEST_KEY.match(key)
        if match:
            table.setdefault(match["dataset"], {})[match["metric"]] = float(value)
    if not table:
        return "_No test metrics were recorded for this model._\n"
    columns = sorted({m for row in table.values() for m in row})
    datasets = sorted(table, key=lambda d: (d == "all", d))
    lines = ["| dataset | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for ds in datasets:
        cells = [f"{table[ds][c]:.4f}" if c in table[ds] else "" for c in columns]
        lines.append(f"| {ds} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _kv_table(items: Mapping[str, Any]) -> str:
    if not items:
        return "_Not recorded._\n"
    lines = ["| key | value |", "|---|---|"]
    for key in sorted(items):
        value = items[key]
        text = value if isinstance(value, str) else json.dumps(value, default=str)
        escaped = text.replace("|", "\\|")
        lines.append(f"| `{key}` | {escaped} |")
    return "\n".join(lines) + "\n"


def render_model_card(
    meta: Mapping[str, Any],
    files: Mapping[str, Path],
    source: str,
    metrics: Mapping[str, float] | None = None,
    params: Mapping[str, Any] | None = None,
) -> str:
    """`files`: profile -> exported path; `source`: where the weights came from (run id or checkpoint)."""
    t1, t2 = (meta.get("thresholds") or [None, None])[:2]
    class_names = list(meta.get("class_names") or ["bad", "normal", "good"])
    data_params = {k: v for k, v in (params or {}).items() if _DATA_PARAM.match(k)}
    for key in ("data", "mixture", "sources", "data_fingerprint"):
        if key in meta:
            data_params[f"meta.{key}"] = meta[key]
    head = meta.get("head", "?")
    score_note = {
        "class_index": "expected class index sum(p_c * c), range 0..2",
        "latent": "an unscaled ranking score: only its order means something",
    }.get(str(meta.get("score_scale", "common")), "predicted score on the common scale [1, 10]")
    labels = ", ".join(f"{i} {class_names[i]} -> PickLabel {PICK_LABELS[i]}" for i in range(3))
    out = [
        f"# iqs quality model: {meta.get('backbone', '?')} + {head} head",
        "",
        f"Source: `{source}`",
        "",
        "## Files",
        *(f"- `{p.name}` ({profile} profile)" for profile, p in files.items()),
        "",
        "## Training data mixture",
        _kv_table(data_params),
        "## Thresholds and classes",
        f"Common scale [1, 10]: score <= {t1} is {class_names[0]}, {t1} < score <= {t2} is {class_names[1]}, "
        f"score > {t2} is {class_names[2]}. The classification head predicts the class directly.",
        *_cuts_note(meta, class_names),
        f"Classes -> digiKam pick labels: {labels}.",
        "",
        "## Test metrics (per source dataset)",
        "PLCC/SRCC/KRCC are the plain scipy definitions (no logistic fit).",
        "",
        test_metric_table(metrics or meta.get("test_metrics") or {}),
        "## Input / output contract",
        "Both profiles take digiKam's pixels: RGB, 299x299 plain stretch with `INTER_NEAREST_EXACT` (no crop, "
        "aspect ratio not kept), `x / 127.5 - 1` in [-1, 1], NCHW float32, input name `input`. Resizing to the "
        f"backbone's {tuple(meta.get('input_size', ()))} (bilinear, no antialias) and renormalising to its "
        f"mean {tuple(meta.get('mean', ()))} / std {tuple(meta.get('std', ()))} happen inside the graph.",
        "",
        "- **digikam**: input `1x3x299x299`; output `probs` `1x3`, softmax probabilities in the order "
        "bad, normal, good. The argmax is the model's class (what digiKam's `minMaxLoc` reads); for score "
        "heads the logits are `score_to_class_logits(score, t1, t2)`, so the argmax is the thresholded "
        "class. Loads with OpenCV DNN (`cv2.dnn.readNet`), opset "
        f"{meta.get('onnx_opset', '?')}.",
        f"- **full**: input `Nx3x299x299` (dynamic batch); outputs `score` (N) - {score_note}; "
        "`probs` (Nx3, bad/normal/good)"
        + ("; `dist` (Nx10, common-scale bins 1..10)" if head == "distribution" else "")
        + ". Used by `iqs predict`.",
        "",
        "The full `iqs_meta` record is embedded in each ONNX file's metadata (key `iqs_meta`, JSON).",
        "",
        "## Model metadata",
        _kv_table({k: v for k, v in meta.items() if k != "test_metrics"}),
    ]
    return "\n".join(out)


def _cuts_note(meta: Mapping[str, Any], class_names: list[str]) -> list[str]:
    """The decision cuts tuned on validation (iqs.train.decision_cuts), which the exported graphs use."""
    cuts = meta.get("decision_cuts")
    if not cuts:
        return []
    c1, c2 = (float(c) for c in cuts)
    return [
        f"**Decision cuts tuned on the validation split** replace that mapping in both exported graphs: "
        f"predicted score <= {c1:.6g} is {class_names[0]}, <= {c2:.6g} {class_names[1]}, else "
        f"{class_names[2]} (`iqs_meta.decision_cuts`)."
    ]
