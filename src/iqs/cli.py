"""`iqs` console script (and `python -m iqs`): subcommands, each taking Hydra overrides (`key=value`).

This is the one reader of the command line. The table maps a subcommand to its module (`main(argv)`,
imported lazily so that `iqs --help` and `iqs data stats` do not pay for importing torch) and to the conf/
file it composes. Every command with a config composes it the same way, `iqs.core.config.compose`, where
the one alias table (`ALIASES`: `--dry-run`, `-o X`, bare paths, `experiment=`) lives, so `--help` and
`--cfg job` (print the composed config, run nothing) are answered here once for all of them.
`iqs train` hands its overrides to `hydra.main`, which answers `--help`, `--cfg job`, `-m` itself.
The scripts of the tool venvs (iqs.deploy.compat.opencv_worker) read JSON on stdin, not a command line.
"""

from __future__ import annotations

import gc
import importlib
import sys
from types import ModuleType
from typing import NamedTuple

from iqs.core.config import ALIASES, CommandLineError


class Command(NamedTuple):
    module: str
    config: str | None  # conf/<config>.yaml, composed with the command line; None: Hydra's own app
    help: str | None  # None: started by iqs itself, not listed


COMMANDS: dict[tuple[str, ...], Command] = {
    ("data", "stats"): Command(
        "iqs.data.stats", "stats", "Per-source and mixture statistics (table, JSON, histograms)"
    ),
    ("data", "build-demo"): Command("iqs.data.demo.command", "demo", "Build the embedded demo dataset"),
    ("data", "build-library"): Command(
        "iqs.data.demo.library", "library", "Build a test digiKam library (albums, XMP, digikam4.db)"
    ),
    ("data", "check"): Command(
        "iqs.data.check", "check", "Decode every image of a mixture once; list the unreadable ones"
    ),
    ("data", "prepare"): Command(
        "iqs.data.prepare", "train", "Decode and resize a mixture's images once into shards"
    ),
    ("train",): Command(
        "iqs.train.run", None, "Train and evaluate one run (or a sweep with -m), tracked in MLflow"
    ),
    ("train", "replay"): Command("iqs.train.replay", "replay", None),  # DDP ranks 1.. (iqs.train.distributed)
    ("compare",): Command("iqs.report.compare", "compare", "Compare tracked runs side by side"),
    ("upload",): Command(
        "iqs.tracking.upload",
        "upload",
        "Upload what a tracking-server outage kept in a job folder to its run",
    ),
    ("ui",): Command(
        "iqs.report.ui", "ui", "MLflow UI on the tracked runs' store (as train/export/compare see it)"
    ),
    ("export",): Command(
        "iqs.deploy.export.exporter", "export", "Export a run to ONNX in digiKam's contract"
    ),
    ("predict",): Command(
        "iqs.deploy.predict.command", "predict", "Score photo folders, optionally write XMP pick labels"
    ),
    ("suggest",): Command(
        "iqs.train.suggest", "suggest", "Which photos of a digiKam library to label next (CSV, optional tag)"
    ),
    ("digikam",): Command(
        "iqs.deploy.digikam.install", "digikam", "Install an exported model into digiKam, or restore its own"
    ),
    ("compat",): Command(
        "iqs.deploy.compat.command",
        "compat",
        "OpenCV matrix: fixed-seed exports in every OpenCV release (make compat)",
    ),
    ("compat", "lock"): Command(
        "iqs.deploy.compat.opencv_matrix",
        "compat_lock",
        "Re-resolve the OpenCV releases' venv locks (make lock)",
    ),
    ("store", "relocate"): Command(
        "iqs.tracking.store", "relocate", "Point a copied or moved SQLite store at its own artifact folder"
    ),
}


def usage() -> str:
    lines = ["usage: iqs <command> [key=value ...] [--help | --cfg job]", "", "commands:"]
    for words, cmd in COMMANDS.items():
        if cmd.help is not None:
            lines.append(f"  {' '.join(words):<18} {cmd.help}")
    lines.append("")
    lines.append("Every command accepts Hydra overrides, e.g. `iqs data stats data=demo thresholds=t5_6`;")
    lines.append("`--cfg job` prints the configuration a command line composes, and runs nothing.")
    return "\n".join(lines)


def show(words: tuple[str, ...], cmd: Command, mod: ModuleType, argv: list[str]) -> int:
    """`--help` (the command's doc, flags and defaults) or `--cfg job` (the composed config)."""
    from hydra.errors import HydraException
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    from iqs.core.config import compose

    assert cmd.config is not None
    flags = ALIASES.get(cmd.config)
    name = "iqs " + " ".join(words)
    if "--help" in argv or "-h" in argv:
        print((mod.__doc__ or cmd.help or name).strip() + "\n")
        if flags is not None:
            print("flags (aliases of config keys):")
            print("\n".join(flags.help_lines()) + "\n")
        print(f"options (key=value), defaults from conf/{cmd.config}.yaml:\n")
        print(OmegaConf.to_yaml(compose(cmd.config)))
        return 0
    at = argv.index("--cfg")
    rest = argv[:at] + argv[at + 2 :]
    try:
        print(OmegaConf.to_yaml(compose(cmd.config, rest)))
    except (ValueError, HydraException, OmegaConfBaseException) as exc:
        print(f"{name}: {exc}", file=sys.stderr)
        return 2
    return 0


def _asks_config(argv: list[str]) -> bool:
    if "--help" in argv or "-h" in argv:
        return True
    return "--cfg" in argv and argv[argv.index("--cfg") + 1 : argv.index("--cfg") + 2] == ["job"]


def main(argv: list[str] | None = None) -> int:
    """`iqs <command> ...`; without `argv`, the program's own command line (the console script)."""
    if argv is not None:
        return _dispatch(list(argv))
    rc = _dispatch(sys.argv[1:])
    # The process ends next. Python's finalisation collects every object that torch, Lightning and MLflow
    # created at import (1.3 s of a 1.6 s exit, measured); frozen objects are skipped. Nothing is lost:
    # atexit handlers (MLflow's flush) still run, and files are closed by reference counting.
    gc.freeze()
    return rc


def _dispatch(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    for words, cmd in sorted(COMMANDS.items(), key=lambda kv: -len(kv[0])):
        if tuple(argv[: len(words)]) == words:
            try:
                mod = importlib.import_module(cmd.module)
            except ModuleNotFoundError as exc:
                if exc.name == cmd.module:
                    print(f"iqs: '{' '.join(words)}' is not available in this version", file=sys.stderr)
                    return 2
                raise
            rest = argv[len(words) :]
            if cmd.config is not None and _asks_config(rest):
                return show(words, cmd, mod, rest)
            # Hydra's own command-line errors (a value its grammar cannot read, an ambiguous `a,b`, a missing
            # group option); imported here, after the command's module, so `iqs --help` stays light
            from hydra.errors import ConfigCompositionException, OverrideParseException
            from omegaconf.errors import MissingMandatoryValue

            name = "iqs " + " ".join(words)
            try:
                rc = mod.main(rest)
            except CommandLineError as exc:
                print(f"{name}: {exc} (see `{name} --help`)", file=sys.stderr)
                return 2
            except MissingMandatoryValue as exc:  # a `???` of the command's conf/ file left unset
                print(f"{name}: {exc.full_key} is required (see `{name} --help`)", file=sys.stderr)
                return 2
            except (OverrideParseException, ConfigCompositionException) as exc:
                said = "; ".join(line.strip() for line in str(exc).splitlines() if line.strip())
                print(
                    f"{name}: {said} (quote a value with spaces, commas or brackets: key='...')",
                    file=sys.stderr,
                )
                return 2
            except Exception as exc:
                # a configuration or data error, or an unreachable tracking server: one line, not a traceback
                # (HYDRA_FULL_ERROR=1 keeps it); anything else is a bug and propagates
                from iqs.train.user_errors import report, user_error

                if (told := user_error(exc)) is None:
                    raise
                report(told, name)
                return 1
            return int(rc or 0)
    import difflib

    names = [" ".join(words) for words, cmd in COMMANDS.items() if cmd.help is not None]
    close = difflib.get_close_matches(" ".join(argv[:2]), names, n=1) or difflib.get_close_matches(
        argv[0], names, n=1
    )
    hint = f"; did you mean 'iqs {close[0]}'?" if close else ""
    print(f"iqs: unknown command '{' '.join(argv[:2])}'{hint}\n\n{usage()}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
