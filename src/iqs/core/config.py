"""Locating and composing the Hydra configs in `conf/` outside a `@hydra.main` app."""

from __future__ import annotations

import difflib
import os
import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

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
    `hydra.main` for `iqs train`), so a flag, an alias or a string key is declared here once per command.
    """

    switches: Mapping[str, str] = field(default_factory=dict)  # `--dry-run` -> `dry_run=true`
    options: Mapping[str, str] = field(default_factory=dict)  # `-o X`, `--output=X` -> `output='X'`
    positional: str | None = None  # bare words (paths) -> `<positional>=['a','b']`
    renames: Mapping[str, str] = field(
        default_factory=dict
    )  # `experiment=` -> `experiment_name=`; `tag.` -> `++tags.`
    strings: tuple[str, ...] = ()  # keys (or `prefix.`) whose values are text as typed: run ids, tag values


def hydra_overrides(argv: Sequence[str], flags: Flags | None = None) -> list[str]:
    """The command line as Hydra overrides, with the command's flags, renames and string keys applied."""
    flags = flags or Flags()
    out: list[str] = []
    words: list[str] = []
    args = list(argv)
    while args:
        arg = args.pop(0)
        name, eq, inline = arg.partition("=")
        if arg in flags.switches:
            out.append(f"{flags.switches[arg]}=true")
        elif name in flags.options:
            if not eq and not args:
                raise CommandLineError(f"{name} needs a value")
            out.append(f"{flags.options[name]}={_hydra_string(inline if eq else args.pop(0))}")
        elif arg.startswith("-"):
            known = sorted({*flags.switches, *flags.options})
            hint = f"; flags: {', '.join(known)}" if known else ""
            raise CommandLineError(f"unknown flag '{arg}'{hint}; everything else is key=value (see --help)")
        elif arg.startswith("~") and not eq:  # Hydra's delete: `~data.sources.demo_ava`
            out.append(arg)
        elif not eq or (flags.positional and Path(arg).exists()):  # `a=b.jpg` that exists is a photo
            if flags.positional is None:
                raise CommandLineError(f"expected key=value, got '{arg}'")
            words.append(arg)
        else:
            out.append(_rename_and_quote(name, inline, flags))
    if words:
        out.append(f"{flags.positional}=[{','.join(_hydra_string(w) for w in words)}]")
    return out


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


def compose(
    config_name: str, overrides: Sequence[str] | None = None, flags: Flags | None = None
) -> DictConfig:
    """Compose `conf/<config_name>.yaml` with a command line (`key=value`, plus the command's `flags`)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import ConfigCompositionException

    argv = hydra_overrides(overrides or [], flags)
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


def _dotted_keys(cfg: DictConfig, prefix: str = "") -> list[str]:
    out = []
    for key in cfg:
        value = cfg._get_node(key)
        out.append(f"{prefix}{key}")
        if isinstance(value, DictConfig):
            out += _dotted_keys(value, f"{prefix}{key}.")
    return out
