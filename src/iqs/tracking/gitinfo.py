"""The source revision a run was trained from, read from `git` (tolerant of a missing repo or binary)."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

# a diff larger than this is summarised, not stored: a run artifact is no place for vendored data
MAX_DIFF_CHARS = 2_000_000


@dataclass(frozen=True)
class GitInfo:
    commit: str | None  # full SHA of HEAD, None outside a repository
    branch: str | None  # None when detached or outside a repository
    dirty: bool | None  # uncommitted changes to tracked files or new untracked files; None when unknown
    diff: str  # `git diff HEAD` when dirty (what a commit alone does not reproduce), else ""

    def tags(self) -> dict[str, str]:
        return {
            "git_commit": self.commit or "unknown",
            "git_dirty": "unknown" if self.dirty is None else str(self.dirty).lower(),
            "git_branch": self.branch or "unknown",
        }


def _git(args: list[str], cwd: Path) -> str | None:
    try:
        done = subprocess.run(
            ["git", *args], cwd=cwd, capture_output=True, text=True, timeout=20, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout if done.returncode == 0 else None


def git_info(cwd: str | Path | None = None) -> GitInfo:
    """Commit, branch and dirty flag of the repository holding `cwd` (default: this package's checkout)."""
    where = Path(cwd) if cwd is not None else Path(__file__).resolve().parent
    if shutil.which("git") is None or not where.exists():
        return GitInfo(None, None, None, "")
    top = _git(["rev-parse", "--show-toplevel"], where)
    commit = _git(["rev-parse", "HEAD"], where)
    if top is None or commit is None:
        return GitInfo(None, None, None, "")
    where = Path(top.strip())  # diff and untracked files of the whole checkout, not of a subfolder
    branch = _git(["symbolic-ref", "--quiet", "--short", "HEAD"], where)
    status = _git(["status", "--porcelain"], where)
    dirty = None if status is None else bool(status.strip())
    diff = ""
    if dirty:
        diff = _git(["diff", "HEAD"], where) or ""
        untracked = _git(["ls-files", "--others", "--exclude-standard"], where) or ""
        if untracked.strip():
            diff += "\n# untracked files (not in the diff above):\n" + "".join(
                f"#   {line}\n" for line in untracked.splitlines()
            )
        if len(diff) > MAX_DIFF_CHARS:
            diff = diff[:MAX_DIFF_CHARS] + f"\n# ... diff truncated at {MAX_DIFF_CHARS} characters\n"
    return GitInfo(commit.strip(), branch.strip() if branch else None, dirty, diff)
