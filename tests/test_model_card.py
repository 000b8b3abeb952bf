"""The one model card, as training logs it and as export writes it."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from iqs.deploy.export import exporter as export
from iqs.report.model_card import metrics_by_dataset, render_model_card

META = {
    "backbone": "tf_efficientnet_lite0",
    "head": "distribution",
    "weights": "packaged",
    "input_size": [224, 256],
    "mean": [0.485, 0.456, 0.406],
    "std": [0.229, 0.224, 0.225],
    "thresholds": [4.5, 6.5],
    "class_names": ["bad", "normal", "good"],
    "onnx_opset": 17,
}
METRICS = {"test/all/srcc": 0.791234, "test/demo_ava/srcc": 0.70, "test/all/plcc": 0.81, "val/all/srcc": 0.1}


def section(card: str, title: str) -> str:
    return card.split(f"## {title}\n", 1)[1].split("\n## ", 1)[0]


def test_metrics_table_pivots_test_keys_only() -> None:
    table = metrics_by_dataset(METRICS)
    assert list(table["dataset"]) == ["demo_ava", "all"]
    assert table.set_index("dataset").loc["all", "srcc"] == METRICS["test/all/srcc"]
    assert pd.isna(table.set_index("dataset").loc["demo_ava", "plcc"])


def test_export_and_training_cards_share_sections() -> None:
    files = {"digikam": Path("out/m.digikam.pb"), "full": Path("out/m.full.onnx")}
    params = {
        "data.name": "demo",
        "thresholds.t1": "4.5",
        "rebalance.name": "sampler",
        "optimizer.lr": "0.001",
    }
    exported = export.render_model_card(META, files, "mlflow run abc", METRICS, params)
    counts = pd.DataFrame(
        {
            "dataset": ["demo_ava"] * 3,
            "split": ["train", "train", "test"],
            "label": [0, 2, 1],
            "n": [7, 5, 3],
        }
    )
    trained = render_model_card(
        title="distribution-sampler-t4.5_6.5-demo",
        source="MLflow run `abc` in experiment `iqs-digikam`",
        meta=META,
        metrics=METRICS,
        tags={"git_commit": "0123abc", "sweep_id": "s1", "fingerprint": "f00"},
        cfg={
            "data": {"name": "demo", "sources": {"demo_ava": {"weight": 2.0}}},
            "rebalance": {"name": "sampler"},
        },
        counts=counts,
        source_thresholds={"demo_ava": (4.5, 6.5)},
        command="iqs train head=distribution",
    )
    # one I/O contract, metrics table and model section, whoever renders the card
    for title in ("Input / output contract", "Test metrics (per source dataset)", "Model"):
        assert section(exported, title) == section(trained, title), title
    contract = section(exported, "Input / output contract")
    assert "224x256" in contract and "0.485, 0.456, 0.406" in contract and "`dist` (Nx10" in contract
    model = section(exported, "Model")
    assert "**4.5 / 6.5**" in model and "0 bad -> Rejected, 1 normal -> Pending, 2 good -> Accepted" in model
    assert "| all | 0.81 | 0.7912 |" in exported
    # export: files and the run's data params; training: the mixture table and the reproduce command
    assert "- `m.full.onnx` (full)" in section(exported, "Files")
    data = section(exported, "Data mixture `demo`")
    assert "`rebalance.name` | sampler" in data and "optimizer.lr" not in data
    mixture = section(trained, "Data mixture `demo`")
    assert "| demo_ava | 2 | 4.5 / 6.5 | all | 12 | 0 | 3 | 7 | 0 | 5 |" in mixture
    assert "git checkout 0123abc\niqs train head=distribution" in section(trained, "Reproduce")
    assert "## Files" not in trained and "## Reproduce" not in exported
