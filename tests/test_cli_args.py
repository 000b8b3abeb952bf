"""The one command-line path of every `iqs` subcommand: `key=value` overrides, plus declared flags."""

from __future__ import annotations

import pytest
from hydra.errors import ConfigCompositionException

from iqs.core.config import Flags, compose, hydra_overrides
from iqs.deploy.predict.command import FLAGS as PREDICT
from iqs.report.compare import FLAGS as COMPARE


def test_threshold_options_are_plain_strings_even_in_sweeps() -> None:
    """No quoting left: `t4.5_6.5` is a group option as typed (Hydra read `4.5_6.5` as a float)."""
    cfg = compose("train", ["thresholds=t4.5_6.5"])
    assert (cfg.thresholds.t1, cfg.thresholds.t2, cfg.thresholds.name) == (4.5, 6.5, "4.5_6.5")
    assert hydra_overrides(["thresholds=t5_6,t4_7"]) == ["thresholds=t5_6,t4_7"]
    assert "demo_ava" not in compose("train", ["~data.sources.demo_ava"]).data.sources  # Hydra's delete


def test_predict_flags_are_aliases_of_config_keys() -> None:
    argv = [
        "a b/x.jpg",
        "-o",
        "0123.csv",
        "--dry-run",
        "--write-xmp",
        "model=m.onnx",
        "it's",
        "--format=json",
    ]
    cfg = compose("predict", argv, PREDICT)
    assert list(cfg.inputs) == ["a b/x.jpg", "it's"]  # paths verbatim, spaces and quotes included
    assert cfg.output == "0123.csv" and cfg.format == "json"  # not the int 123
    assert cfg.dry_run is True and cfg.write_xmp is True and cfg.overwrite is False
    assert compose("predict", ["dry_run=true"], PREDICT).dry_run is True  # the key itself works alike


def test_backslashes_and_quotes_survive() -> None:
    paths = ["C:\\dir\\", "a\\'b", "x\\y", "${oops}"[:0] + "plain"]
    assert list(compose("predict", paths, PREDICT).inputs) == paths


def test_compare_filters_stay_text_as_typed() -> None:
    cfg = compose(
        "compare",
        ["tag.thresholds=5_6", "+tags.head=1e5", "baseline=01234567", "experiment=[a,4_7]", "sweep=null"],
        COMPARE,
    )
    assert dict(cfg.tags) == {"thresholds": "5_6", "head": "1e5"}
    assert cfg.baseline == "01234567" and list(cfg.experiment_name) == ["a", "4_7"] and cfg.sweep is None
    assert compose("compare", ["digits=2"], COMPARE).digits == 2  # other keys: Hydra's own typing


def test_errors_say_what_to_do() -> None:
    with pytest.raises(ValueError, match="did you mean 'metric'"):
        compose("compare", ["metrc=srcc"], COMPARE)
    with pytest.raises(ValueError, match="unknown flag '--nope'; flags: .*--dry-run"):
        hydra_overrides(["--nope"], PREDICT)
    with pytest.raises(ValueError, match="expected key=value, got 'photos/'"):
        hydra_overrides(["photos/"], Flags())
    with pytest.raises(ValueError, match="-o needs a value"):
        hydra_overrides(["-o"], PREDICT)
    with pytest.raises(ConfigCompositionException, match="Could not find 'thresholds/t9_9'"):
        compose("train", ["thresholds=t9_9"])  # a missing group option stays Hydra's own error


def test_iqs_reports_a_bad_command_line_for_every_config_command(capsys) -> None:
    from iqs import cli

    for words, cmd in cli.COMMANDS.items():
        if cmd.config is None or words == ("data", "prepare"):  # prepare composes conf/train (slow)
            continue
        assert cli.main([*words, "dta=demo"]) == 2, words
        said = capsys.readouterr()
        assert f"iqs {' '.join(words)}: unknown key 'dta'" in said.err + said.out
    assert cli.main(["data", "stats", "data=demo", "--cfg", "job"]) == 0
    assert "demo_ava" in capsys.readouterr().out  # the composed config, nothing run


def test_predict_paths_with_hydra_grammar_characters_stay_as_typed() -> None:
    model, output = "/tmp/rv (1)/m,1/x.onnx", "/tmp/a,b [2].csv"
    cfg = compose("predict", [f"model={model}", f"output={output}", "inputs=[a (1).jpg,b.jpg]"], PREDICT)
    assert (cfg.model, cfg.output, list(cfg.inputs)) == (model, output, ["a (1).jpg", "b.jpg"])
    assert compose("predict", ["-o", output, "model=/a/m,1/x.onnx"], PREDICT).model == "/a/m,1/x.onnx"
    assert compose("predict", ["model=null"], PREDICT).model is None  # null stays null


def test_iqs_reports_hydra_grammar_errors_in_one_line(capsys) -> None:
    from iqs import cli

    for bad in ("workers=(1", "format=csv,json"):  # not path keys: Hydra's grammar still applies
        assert cli.main(["predict", "x.jpg", "model=m.onnx", bad]) == 2, bad
        err = capsys.readouterr().err.strip()
        assert err.startswith("iqs predict: ") and "\n" not in err and "key='...'" in err, err
