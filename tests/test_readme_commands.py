"""Every `iqs` command line in the README's (and experiments' READMEs', the Makefile's) code blocks still
runs as written, in its dry form.

The lines are read from the files themselves, so renaming an option (say `thresholds=5_6` -> `t5_6`) without
carrying the README along fails here. Dry forms: commands with a config get `--cfg job` (compose the
configuration the line asks for, run nothing: an unknown key or group option fails); a Hydra sweep (`-m`)
composes each value of each swept key; `iqs digikam` also checks its words (`install MODEL` or
`restore`). Placeholders such as `<run id>` become a sample value.
"""

from __future__ import annotations

import functools
import os
import re
import shlex
from pathlib import Path

import pytest

from iqs import cli
from iqs.core.config import compose

ROOT = Path(__file__).resolve().parents[1]
# the README, the experiments' records of what they ran, and the Makefile's targets
DOCS = [ROOT / "README.md", *sorted(ROOT.glob("experiments/*/README.md"))]
PLACEHOLDER = re.compile(r"<[^<>\s][^<>]*>")
COMMAND = re.compile(r"^(?:[A-Z_]+=\S+\s+)*(?:\S*/)?iqs\s")


def commands_in(text: str, fenced: bool = True) -> list[tuple[int, str]]:
    """(line number, `iqs ...` command) in `text`'s fenced code blocks (or anywhere), `\\` lines joined."""
    found = []
    lines = text.splitlines()
    inside = not fenced
    i = 0
    while i < len(lines):
        start, line = i + 1, lines[i]
        if fenced and line.startswith("```"):
            inside = not inside
        while line.rstrip().endswith("\\") and i + 1 < len(lines):
            i += 1
            line = line.rstrip()[:-1] + " " + lines[i]
        i += 1
        if inside:
            for part in re.split(r"\s(?:&&|;|\|\|)\s", line.strip()):  # `iqs train ... && iqs compare`
                if COMMAND.match(part.strip()):
                    found.append((start, part.strip()))
    return found


def doc_commands() -> list:
    cases = [  # the experiments' lines are records of past runs: checked in the slow suite only
        pytest.param(
            cmd, id=f"{doc.relative_to(ROOT)}:{n}", marks=[pytest.mark.slow] if doc != DOCS[0] else []
        )
        for doc in DOCS
        for n, cmd in commands_in(doc.read_text(encoding="utf-8"))
    ]
    make = (ROOT / "Makefile").read_text(encoding="utf-8").replace("$(BIN)/iqs", "iqs").replace("$(ARGS)", "")
    cases += [pytest.param(cmd.strip(), id=f"Makefile:{n}") for n, cmd in commands_in(make, fenced=False)]
    return cases


COMMANDS = doc_commands()


def words_of(line: str) -> tuple[dict[str, str], list[str]]:
    """(environment assignments, the arguments after `iqs`), with placeholders filled in."""
    words = shlex.split(PLACEHOLDER.sub("0123abcd", line), comments=True)
    # what the shell does before iqs sees them (no word here single-quotes a `$`)
    words = [os.path.expanduser(os.path.expandvars(w)) for w in words]
    env = {}
    while "=" in words[0] and not words[0].endswith("iqs"):
        key, _, value = words.pop(0).partition("=")
        env[key] = value
    return env, words[1:]


def test_the_readme_has_commands() -> None:
    lines = [p.values[0] for p in COMMANDS]
    assert len(lines) >= 60, lines  # the parser still finds the blocks
    assert sum("thresholds=" in c and "t4.5_6.5" in c for c in lines) == 4  # README x2, Makefile, experiment


@functools.cache
def compose_once(overrides: tuple[str, ...]) -> None:
    compose("train", list(overrides))  # the README and the Makefile share sweeps


def dry_sweep(argv: list[str]) -> int:
    """`iqs train -m ...` (Hydra refuses `--cfg` with `-m`): compose one job per value of each swept key,
    the other keys at their first value; returns the number of jobs composed."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides([a for a in argv if a != "-m"])
    values = {
        o.get_key_element(): list(o.sweep_string_iterator())
        if o.is_sweep_override()
        else [o.get_value_element_as_str()]
        for o in parsed
    }
    first = {key: vals[0] for key, vals in values.items()}
    jobs = 0
    for key, vals in values.items():
        for value in vals[1:] if jobs else vals:
            compose_once(tuple(f"{k}={v}" for k, v in {**first, key: value}.items()))
            jobs += 1
    return jobs


@pytest.mark.slow
@pytest.mark.parametrize("line", COMMANDS)
def test_readme_command_runs_dry(line: str, monkeypatch, capsys) -> None:
    env, argv = words_of(line)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    words = next(w for w in sorted(cli.COMMANDS, key=len, reverse=True) if tuple(argv[: len(w)]) == w)
    rest = argv[len(words) :]
    if words == ("digikam",):
        from iqs.deploy.digikam.install import options

        assert options(rest).action in ("install", "restore")  # the flags and words, as main reads them
    elif "-m" in rest:
        assert dry_sweep(rest) >= 1
    else:
        assert cli.main([*argv, "--cfg", "job"]) == 0, capsys.readouterr().err
