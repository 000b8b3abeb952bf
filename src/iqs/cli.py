"""`iqs` console script: subcommands, each taking Hydra overrides (`key=value`).

The table maps a subcommand to `module:function(argv)`; modules are imported lazily so that
`iqs --help` and `iqs data stats` do not pay for importing torch.
"""

from __future__ import annotations

import importlib
import sys

COMMANDS: dict[tuple[str, ...], tuple[str, str]] = {
    ("data", "stats"): ("iqs.data.stats", "Per-source and mixture statistics (table, JSON, histograms)"),
    ("data", "build-demo"): ("iqs.data.demo", "Build the embedded demo dataset"),
    ("data", "build-library"): (
        "iqs.data.demo.library",
        "Build a test digiKam library (albums, XMP, digikam4.db)",
    ),
    ("data", "check"): ("iqs.data.check", "Decode every image of a mixture once; list the unreadable ones"),
    ("data", "prepare"): ("iqs.data.prepare", "Decode and resize a mixture's images once into shards"),
    ("train",): ("iqs.train.run", "Train and evaluate one run (or a sweep with -m), tracked in MLflow"),
    ("compare",): ("iqs.tracking.compare", "Compare tracked runs side by side"),
    ("ui",): ("iqs.tracking.ui", "MLflow UI on the tracked runs' store (as train/export/compare see it)"),
    ("export",): ("iqs.deploy.export", "Export a run to ONNX in digiKam's contract"),
    ("predict",): ("iqs.deploy.predict", "Score photo folders, optionally write XMP pick labels"),
    ("digikam",): (
        "iqs.deploy.digikam_install",
        "Install an exported model into digiKam, or restore its own",
    ),
}


def usage() -> str:
    lines = ["usage: iqs <command> [key=value ...]", "", "commands:"]
    for words, (_, help_) in COMMANDS.items():
        lines.append(f"  {' '.join(words):<18} {help_}")
    lines.append("")
    lines.append("Every command accepts Hydra overrides, e.g. `iqs data stats data=demo thresholds=t5_6`.")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    for words, (module, _) in sorted(COMMANDS.items(), key=lambda kv: -len(kv[0])):
        if tuple(argv[: len(words)]) == words:
            try:
                mod = importlib.import_module(module)
            except ModuleNotFoundError as exc:
                if exc.name == module:
                    print(f"iqs: '{' '.join(words)}' is not available in this version", file=sys.stderr)
                    return 2
                raise
            rc = mod.main(argv[len(words) :])
            return int(rc or 0)
    print(f"iqs: unknown command '{' '.join(argv[:2])}'\n\n{usage()}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
