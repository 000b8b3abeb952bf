"""The one command-line path of every `iqs` subcommand: `key=value` overrides, plus declared flags."""

from __future__ import annotations

import sys

import pytest
from hydra.errors import ConfigCompositionException

from iqs.core.config import ALIASES, CommandLineError, Flags, compose, hydra_overrides

PREDICT = ALIASES["predict"]


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
    cfg = compose("predict", argv)
    assert list(cfg.inputs) == ["a b/x.jpg", "it's"]  # paths verbatim, spaces and quotes included
    assert cfg.output == "0123.csv" and cfg.format == "json"  # not the int 123
    assert cfg.dry_run is True and cfg.write_xmp is True and cfg.overwrite is False
    assert compose("predict", ["dry_run=true"]).dry_run is True  # the key itself works alike


def test_backslashes_and_quotes_survive() -> None:
    paths = ["C:\\dir\\", "a\\'b", "x\\y", "${oops}"[:0] + "plain"]
    assert list(compose("predict", paths).inputs) == paths


def test_compare_filters_stay_text_as_typed() -> None:
    cfg = compose(
        "compare",
        ["tag.thresholds=5_6", "+tags.head=1e5", "baseline=01234567", "experiment=[a,4_7]", "sweep=null"],
    )
    assert dict(cfg.tags) == {"thresholds": "5_6", "head": "1e5"}
    assert cfg.baseline == "01234567" and list(cfg.experiment_name) == ["a", "4_7"] and cfg.sweep is None
    assert compose("compare", ["digits=2"]).digits == 2  # other keys: Hydra's own typing


def test_errors_say_what_to_do() -> None:
    with pytest.raises(ValueError, match="did you mean 'metric'"):
        compose("compare", ["metrc=srcc"])
    with pytest.raises(ValueError, match="unknown flag '--nope'; flags: .*--dry-run"):
        hydra_overrides(["--nope"], PREDICT)
    with pytest.raises(ValueError, match="expected key=value, got 'photos/'"):
        hydra_overrides(["photos/"], Flags())
    with pytest.raises(ValueError, match="-o needs a value"):
        hydra_overrides(["-o"], PREDICT)
    with pytest.raises(ConfigCompositionException, match="Could not find 'thresholds/t9_9'"):
        compose("train", ["thresholds=t9_9"])  # a missing group option stays Hydra's own error


@pytest.mark.slow
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
    cfg = compose("predict", [f"model={model}", f"output={output}", "inputs=[a (1).jpg,b.jpg]"])
    assert (cfg.model, cfg.output, list(cfg.inputs)) == (model, output, ["a (1).jpg", "b.jpg"])
    assert compose("predict", ["-o", output, "model=/a/m,1/x.onnx"]).model == "/a/m,1/x.onnx"
    assert compose("predict", ["model=null"]).model is None  # null stays null


def test_iqs_reports_hydra_grammar_errors_in_one_line(capsys) -> None:
    from iqs import cli

    for bad in ("workers=(1", "format=csv,json"):  # not path keys: Hydra's grammar still applies
        assert cli.main(["predict", "x.jpg", "model=m.onnx", bad]) == 2, bad
        err = capsys.readouterr().err.strip()
        assert err.startswith("iqs predict: ") and "\n" not in err and "key='...'" in err, err


@pytest.mark.slow
def test_every_flag_is_in_the_one_alias_table(capsys) -> None:
    """The flags of every command: in `ALIASES`, listed by `--help`, and meaning their config key."""
    from iqs import cli

    assert compose("predict", ["x.jpg", "--write-xmp", "rating"]).write_xmp == "rating"
    assert compose("predict", ["--write-xmp", "x.jpg"]).write_xmp is True  # a bare switch, then a path
    cfg = compose("digikam", ["install", "m.onnx", "--digikam-version", "8.2", "--dry-run"])
    assert (list(cfg.args), cfg.digikam_version, cfg.dry_run) == (["install", "m.onnx"], "8.2", True)
    assert compose("suggest", ["--tag", "-o", "s.csv"]).output == "s.csv"
    assert compose("compat", ["--backbones"]).backbones == "all"
    cfg = compose("compat", ["--backbones=resnet50,inception_v3", "--heads=", "--images", "8"])
    assert (cfg.backbones, cfg.heads, cfg.images) == ("resnet50,inception_v3", None, 8)
    cfg = compose("relocate", ["/tmp/a b/mlflow.db", "--artifact-root", "/big disk"])
    assert (cfg.db, cfg.artifact_root) == ("/tmp/a b/mlflow.db", "/big disk")
    with pytest.raises(ValueError, match="expected one db"):
        compose("relocate", ["a.db", "b.db"])
    assert compose("compat_lock", ["/x/pip-compile", "--upgrade"]).upgrade is True
    for words, cmd in cli.COMMANDS.items():
        if cmd.config in ALIASES:
            assert cli.main([*words, "--help"]) == 0
            out = capsys.readouterr().out
            flags = ALIASES[cmd.config]
            assert all(flag in out for flag in [*flags.switches, *flags.options]), words


def test_unknown_command_suggests_the_closest(capsys) -> None:
    from iqs import cli

    assert cli.main(["comapre"]) == 2
    assert "did you mean 'iqs compare'?" in capsys.readouterr().err


def test_no_module_reads_the_command_line_itself() -> None:
    """One reader of the command line (iqs.cli, through iqs.core.config); the tool-venv workers read JSON."""
    import re
    from pathlib import Path

    import iqs

    root = Path(iqs.__file__).parent
    allowed = {"cli.py", "core/config.py", "deploy/compat/opencv_worker.py"}
    readers = re.compile(r"\bimport argparse\b|\bimport getopt\b|sys\.argv")
    found = [
        str(path.relative_to(root))
        for path in root.rglob("*.py")
        if str(path.relative_to(root)) not in allowed and readers.search(path.read_text())
    ]
    assert found == []


def test_a_required_key_left_out_is_one_line(capsys, tmp_path) -> None:
    from iqs import cli

    assert cli.main(["store", "relocate"]) == 2
    assert (
        capsys.readouterr().err.strip()
        == "iqs store relocate: db is required (see `iqs store relocate --help`)"
    )
    assert cli.main(["store", "relocate", str(tmp_path / "none.db")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"iqs store relocate: no MLflow SQLite store at {tmp_path / 'none.db'}"


@pytest.mark.slow
def test_train_keys_get_a_did_you_mean_before_hydra_runs() -> None:
    from iqs.core.config import check_app_keys

    with pytest.raises(CommandLineError, match="unknown key 'optimizer.lre'.*did you mean 'optimizer.lr'"):
        check_app_keys(
            "train", ["-m", "experiment=demo", "head=regression,classification", "optimizer.lre=1,2"]
        )
    # valid lines pass: a sweep (its first values), a preset's keys, Hydra's add/delete and its own keys
    check_app_keys("train", ["-m", "experiment=lodo_demo", "data.held_out=demo_ava,demo_koniq", "seed=1,2"])
    check_app_keys("train", ["+extra=1", "~data.sources.demo_ava", "hydra.job.chdir=false"])
    check_app_keys("train", ["lre=1", "--cfg", "job"])  # other flags: Hydra answers itself


def test_cfg_with_a_sweep_is_one_line_before_hydra(capsys) -> None:
    """Hydra refuses `--cfg` with `-m` in a traceback; `iqs train` says it in one line with the way out."""
    from iqs import cli

    assert cli.main(["train", "-m", "head=regression,ordinal", "--cfg", "job"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert err.startswith("iqs train: --cfg shows one job's config") and "drop -m" in err
    assert err.count("--help") == 1


def test_an_unknown_flag_points_to_help_once(capsys) -> None:
    from iqs import cli

    assert cli.main(["compare", "--colour"]) == 2
    err = capsys.readouterr().err.strip()
    assert "unknown flag '--colour'" in err and err.count("--help") == 1, err


def test_only_the_program_itself_freezes_the_collector_before_it_exits(monkeypatch, capsys) -> None:
    """`iqs` run as a program freezes the objects it has before exiting (Python's finalisation skips them);
    a caller that passes argv (tests, scripts) goes on afterwards and keeps a working collector."""
    import gc

    from iqs import cli

    frozen = []
    monkeypatch.setattr(gc, "freeze", lambda: frozen.append(1))
    assert cli.main(["--help"]) == 0 and frozen == []
    monkeypatch.setattr(sys, "argv", ["iqs", "--help"])
    assert cli.main() == 0 and frozen == [1]
    assert "iqs" in capsys.readouterr().out
