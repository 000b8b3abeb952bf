"""Locating and composing the Hydra configs in `conf/` outside a `@hydra.main` app."""

from __future__ import annotations

import copy
import difflib
import os
import re
import sys
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from iqs.core.xmp import WRITE_MODES

JOB_ID_RESOLVER = "iqs.job_id"


def job_suffix() -> str:
    """8 random hex digits that tell apart jobs started in the same second, on one machine or many."""
    return uuid.uuid4().hex[:8]


# `${iqs.job_id:}` in conf/train.yaml's hydra.run.dir / sweep.dir. Cached per config like Hydra's own
# `${now:}`: one value per launch, shared by the jobs of a sweep (Hydra copies the cache into each job's config).
if not OmegaConf.has_resolver(JOB_ID_RESOLVER):
    OmegaConf.register_new_resolver(JOB_ID_RESOLVER, job_suffix, use_cache=True)


def conf_dir() -> Path:
    """`conf/` of the checkout (editable install), or $IQS_CONF_DIR."""
    env = os.environ.get("IQS_CONF_DIR")
    if env:
        return Path(env).resolve()
    here = Path(__file__).resolve().parents[3] / "conf"
    if here.is_dir():
        return here
    raise FileNotFoundError(
        "cannot find the Hydra configs: set IQS_CONF_DIR to the project's conf/ folder "
        "(or install the project with `make setup`, which installs it in editable mode)"
    )


class CommandLineError(ValueError):
    """A command line `iqs` cannot read (unknown key or flag, missing value); `iqs` prints it, exit 2."""


@dataclass(frozen=True)
class Flags:
    """How one subcommand's command line maps onto its config: the only extras over `key=value`.

    Every `iqs` subcommand reads its command line through `hydra_overrides` (then Hydra's compose, or
    `hydra.main` for `iqs train`); each command's flags are declared once, in `ALIASES` below.
    """

    switches: Mapping[str, str] = field(default_factory=dict)  # `--dry-run` -> `dry_run=true`
    options: Mapping[str, str] = field(default_factory=dict)  # `-o X`, `--output=X` -> `output='X'`
    # a switch that may take a value: `--write-xmp rating` (one of these words) or a bare `--write-xmp`
    choices: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    positional: str | None = None  # bare words (paths) -> `<positional>=['a','b']`
    one_positional: bool = False  # one bare word -> `<positional>='a'`
    renames: Mapping[str, str] = field(
        default_factory=dict
    )  # `experiment=` -> `experiment_name=`; `tag.` -> `++tags.`
    strings: tuple[str, ...] = ()  # keys (or `prefix.`) whose values are text as typed: run ids, tag values

    def help_lines(self) -> list[str]:
        """`  --flag X    key` for `--help`."""
        rows = {
            **{flag: _switch(key) for flag, key in self.switches.items()},
            **{f"{flag} X": key for flag, key in self.options.items()},
            **{f"{flag} [{'|'.join(words)}]": self.options[flag] for flag, words in self.choices.items()},
        }
        if self.positional:
            rows["PATH ..."] = self.positional
        for old, new in self.renames.items():
            key = "<key>" if old.endswith(".") else ""
            rows[f"{old}{key}=X"] = f"{new.lstrip('+')}{key}=X"
        return [f"  {flag:<32} {key}" for flag, key in rows.items()]


def _switch(key: str) -> str:
    """A switch's override: `dry_run` -> `dry_run=true`; `backbones=all` as written."""
    return key if "=" in key else f"{key}=true"


# The one table of command-line aliases, per conf/<name>.yaml: every flag an `iqs` command accepts is
# here (`iqs <command> --help` lists them), and nothing else reads a command line.
ALIASES: dict[str, Flags] = {
    "predict": Flags(
        switches={
            "--write-xmp": "write_xmp",
            "--dry-run": "dry_run",
            "--overwrite": "overwrite",
            "--strict": "strict",
            "--bursts": "bursts",
        },
        options={
            "--write-xmp": "write_xmp",  # `--write-xmp=rating`
            "-o": "output",
            "--output": "output",
            "--format": "format",
            "--workers": "workers",
            "--sidecar-style": "sidecar_style",
        },
        choices={"--write-xmp": WRITE_MODES},  # `--write-xmp rating`
        positional="inputs",
        # paths as typed: `model=/tmp/rv (1)/m.onnx`, `output=a,b.csv` (Hydra reads ( and , as grammar)
        strings=("model", "output", "inputs", "paths."),
    ),
    "digikam": Flags(  # the bare words are `args`: install|restore [model]
        switches={"--dry-run": "dry_run"},
        options={
            "--digikam-version": "digikam_version",
            "--data-dir": "data_dir",
            "--models-dir": "models_dir",
            "--conf-out": "conf_out",
        },
        positional="args",
        strings=("digikam_version", "data_dir", "models_dir", "conf_out"),
    ),
    # `experiment=` and `tag.<key>=` are short for the config keys; the filters' values are text as typed
    # (a tag value `5_6` or a run id `01234567` would otherwise be read as a number by Hydra)
    "compare": Flags(
        renames={"experiment": "experiment_name", "tag.": "++tags.", "tags.": "++tags."},
        strings=("experiment_name", "sweep", "status", "baseline", "cv", "tags."),
    ),
    "suggest": Flags(
        switches={"--tag": "tag", "--dry-run": "dry_run"},
        options={"-o": "output", "--output": "output", "--sidecar-style": "sidecar_style"},
        strings=("model", "output", "library"),
    ),
    # as typed: a temp folder may have spaces, a run id digits only
    "export": Flags(strings=("run_id", "out_dir")),
    "compat": Flags(
        switches={"--backbones": "backbones=all"},
        options={
            "--images": "images",
            "--heads": "heads",
            "--backbones": "backbones",
            "--out-dir": "out_dir",
        },
        strings=("heads", "backbones", "out_dir"),
    ),
    "compat_lock": Flags(switches={"--upgrade": "upgrade"}, positional="pip_compile", one_positional=True),
    "relocate": Flags(
        options={"--artifact-root": "artifact_root"},
        positional="db",
        one_positional=True,
        strings=("db", "artifact_root"),
    ),
    "replay": Flags(positional="config", one_positional=True, strings=("config",)),
}


def hydra_overrides(argv: Sequence[str], flags: Flags | None = None) -> list[str]:
    """The command line as Hydra overrides, with the command's flags, renames and string keys applied."""
    flags = flags or Flags()
    out: list[str] = []
    words: list[str] = []
    args = list(argv)
    while args:
        arg = args.pop(0)
        name, eq, inline = arg.partition("=")
        if arg in flags.choices and args and args[0] in flags.choices[arg] and not Path(args[0]).exists():
            out.append(f"{flags.options[arg]}={_hydra_string(args.pop(0))}")
        elif arg in flags.switches:
            out.append(_switch(flags.switches[arg]))
        elif name in flags.options:
            if not eq and not args:
                raise CommandLineError(f"{name} needs a value")
            value = inline if eq else args.pop(0)
            out.append(_rename_and_quote(flags.options[name], value or "null", flags))
        elif arg.startswith("-"):
            known = sorted({*flags.switches, *flags.options})
            hint = f"; flags: {', '.join(known)}" if known else ""
            raise CommandLineError(f"unknown flag '{arg}'{hint}; everything else is key=value")
        elif arg.startswith("~") and not eq:  # Hydra's delete: `~data.sources.demo_ava`
            out.append(arg)
        elif not eq or (flags.positional and Path(arg).exists()):  # `a=b.jpg` that exists is a photo
            if flags.positional is None:
                raise CommandLineError(f"expected key=value, got '{arg}'")
            words.append(arg)
        else:
            out.append(_rename_and_quote(name, inline, flags))
    if words and flags.one_positional:
        if len(words) > 1:
            raise CommandLineError(f"expected one {flags.positional}, got {' '.join(words)}")
        out.append(f"{flags.positional}={_hydra_string(words[0])}")
    elif words:
        out.append(f"{flags.positional}=[{','.join(_hydra_string(w) for w in words)}]")
    return out


def check_app_keys(config_name: str, argv: Sequence[str]) -> None:
    """Raise `CommandLineError` (with a did-you-mean) for a key that `conf/<config_name>.yaml` lacks, before
    a `@hydra.main` app gets `argv`; Hydra's own message names the key but suggests nothing.

    A sweep is checked on the first value of each swept key. Command lines with other flags than `-m`
    (`--cfg job`, `--help`, `-cn`) and anything this compose cannot read are left to Hydra itself."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    multirun = any(a in ("-m", "--multirun") for a in argv)
    if multirun and any(a in ("-c", "--cfg") or a.startswith("--cfg=") for a in argv):
        # Hydra's refusal is a traceback: "Cannot specify --cfg with --multirun"
        raise CommandLineError(
            "--cfg shows one job's config, and a sweep (-m) has several: drop -m and give each swept key "
            "one value (e.g. head=regression instead of head=regression,ordinal)"
        )
    if any(a.startswith("-") and a not in ("-m", "--multirun") for a in argv):
        return
    try:
        parsed = OverridesParser.create().parse_overrides([a for a in argv if not a.startswith("-")])
        first = [
            f"{o.input_line.split('=', 1)[0]}={next(iter(o.sweep_string_iterator()))}"
            if o.is_sweep_override()
            else o.input_line
            for o in parsed
        ]
    except (HydraException, StopIteration, ValueError):
        return
    try:
        compose(config_name, first)
    except CommandLineError:
        raise
    except Exception:  # noqa: BLE001 - e.g. a launcher plugin's group: Hydra's own report follows
        return


@contextmanager
def hydra_app_argv(prog: str, argv: Sequence[str]) -> Iterator[None]:
    """`argv` as the command line of a `@hydra.main` app (`iqs train`): Hydra reads only `sys.argv` and has
    no public way to be handed one, so it is set for the call and restored after."""
    saved = sys.argv
    sys.argv = [prog, *argv]
    try:
        yield
    finally:
        sys.argv = saved


def _rename_and_quote(key: str, value: str, flags: Flags) -> str:
    bare = key.lstrip("+~")
    prefix = key[: len(key) - len(bare)]
    for old, new in flags.renames.items():
        if bare == old or (old.endswith(".") and bare.startswith(old)):
            bare, prefix = new + bare[len(old) :], prefix if not new.startswith("+") else ""
            break
    key = prefix + bare
    plain = bare.lstrip("+")
    strings = [s.lstrip("+") for s in flags.strings]
    if any(plain == s or (s.endswith(".") and plain.startswith(s)) for s in strings):
        value = _hydra_string(value, lists=True)
    return f"{key}={value}"


def _hydra_string(value: str, lists: bool = False) -> str:
    """`value` as a quoted Hydra string, so `5_6` stays "5_6" (Hydra reads it as the int 56) and a run id
    `01234567` keeps its zero. `null`/empty stay null; with `lists`, `[a,b]` is quoted element-wise."""
    if value in ("", "null") or (len(value) >= 2 and value[0] == value[-1] and value[0] in "'\""):
        return value or "null"
    if lists and value.startswith("[") and value.endswith("]"):
        return "[" + ",".join(_hydra_string(v.strip()) for v in value[1:-1].split(",") if v.strip()) + "]"
    # Hydra unescapes only backslashes before a quote: double those, and escape the quotes themselves
    return "'" + re.sub(r"(\\*)('|$)", lambda m: m[1] * 2 + ("\\'" if m[2] else ""), value) + "'"


# composed configs of this process, by (conf dir, config, Hydra argv): Hydra takes ~0.2 s to compose the
# train config, a deep copy ~7 ms, and a process that composes the same command line again (the personal
# model's roles, a check before a run) gets its own copy. Interpolations stay unresolved in the copy, so
# environment variables and `${now:}` are read when used, as without the memo.
_COMPOSED: dict[tuple[str, str, tuple[str, ...]], DictConfig] = {}


def compose(config_name: str, overrides: Sequence[str] | None = None) -> DictConfig:
    """Compose `conf/<config_name>.yaml` with a command line (`key=value`, plus its `ALIASES`)."""
    argv = hydra_overrides(overrides or [], ALIASES.get(config_name))
    key = (str(conf_dir()), config_name, tuple(argv))
    if key not in _COMPOSED:
        _COMPOSED[key] = _compose(config_name, argv)
    return copy.deepcopy(_COMPOSED[key])


def _compose(config_name: str, argv: list[str]) -> DictConfig:
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import ConfigCompositionException

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        try:
            return hydra_compose(config_name=config_name, overrides=argv)
        except ConfigCompositionException as exc:
            unknown = re.search(r"Could not override '([^']+)'", str(exc))
            if unknown is None or "not in struct" not in str(exc.__cause__ or exc):
                raise
            keys = _dotted_keys(hydra_compose(config_name=config_name))
            hint = difflib.get_close_matches(unknown[1], keys, n=1)
            raise CommandLineError(
                f"unknown key '{unknown[1]}' for conf/{config_name}.yaml"
                + (f"; did you mean '{hint[0]}'?" if hint else "; add `+` to add a new key")
            ) from exc


def _dotted_keys(cfg: DictConfig | Mapping, prefix: str = "") -> list[str]:
    """Every key of `cfg`, dotted (`optimizer.lr`), interpolations unresolved."""
    tree = OmegaConf.to_container(cfg, resolve=False) if isinstance(cfg, DictConfig) else cfg
    out = []
    for key, value in tree.items():
        out.append(f"{prefix}{key}")
        if isinstance(value, Mapping):
            out += _dotted_keys(value, f"{prefix}{key}.")
    return out
