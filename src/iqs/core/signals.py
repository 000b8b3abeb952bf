"""SIGTERM/SIGINT end a run KILLED and the process 128+signal; SLURM pre-emption requeues (Lightning).

Python's default turns Ctrl-C into KeyboardInterrupt, which Lightning's `trainer.fit` converts into
`sys.exit(1)`, and Lightning turns SIGTERM into `SIGTERMException`, a `SystemExit` with code None, so a
scheduler saw exit 0. Instead, `signals_raise()` makes both signals raise `Interrupted`: a BaseException
(so no `except Exception` swallows it, and Lightning re-raises it after its own clean-up), which
`tracked_run` records as KILLED and `iqs train` turns into the exit status 128 + signal number.

Lightning's SIGTERM handler stays in charge during `fit` (it chains ours after its own), so SLURM's
auto-requeue keeps working: `cluster_plugins()` adds `SLURMEnvironment(auto_requeue=True,
requeue_signal=SIGUSR1)` when the job runs under SLURM, and Lightning then saves an HPC checkpoint and
calls `scontrol requeue` on SIGUSR1 (`#SBATCH --signal=SIGUSR1@90`).
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

HANDLED = (signal.SIGTERM, signal.SIGINT)


class Interrupted(BaseException):
    """The process was asked to stop by a signal; `exit_code` is the shell's 128 + signal number."""

    def __init__(self, signum: int) -> None:
        self.signum = int(signum)
        super().__init__(f"interrupted by {signal.Signals(self.signum).name}")

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


_OWNER_PID: list[int] = []  # the process that installed the handlers (forked loader workers inherit them)


def _raise_interrupted(signum: int, _frame: Any) -> None:
    if _OWNER_PID and os.getpid() != _OWNER_PID[-1]:
        # a DataLoader worker: behave as Python's default, which torch's worker loop expects
        if signum == signal.SIGINT:
            raise KeyboardInterrupt
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
        return
    raise Interrupted(signum)


@contextmanager
def signals_raise() -> Iterator[None]:
    """SIGTERM and SIGINT raise `Interrupted` inside the block (main thread only; elsewhere a no-op)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.getsignal(sig) for sig in HANDLED}
    _OWNER_PID.append(os.getpid())
    for sig in HANDLED:
        signal.signal(sig, _raise_interrupted)
    try:
        yield
    finally:
        _OWNER_PID.pop()
        for sig, handler in previous.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)


def is_interruption(exc: BaseException) -> bool:
    """A stop the user or scheduler asked for (the run ends KILLED), not a failure of the run."""
    if isinstance(exc, Interrupted | KeyboardInterrupt):
        return True
    try:
        from pytorch_lightning.utilities.exceptions import SIGTERMException
    except ImportError:  # pragma: no cover - Lightning is a dependency
        return False
    return isinstance(exc, SIGTERMException)


def cluster_plugins() -> list[Any]:
    """Lightning's SLURM environment with auto-requeue on SIGUSR1 when the job runs under SLURM.

    Lightning would detect SLURM itself; it is passed explicitly so the requeue signal is fixed and visible
    (a job must ask for it: `#SBATCH --signal=SIGUSR1@90`).
    """
    from lightning_fabric.plugins.environments import SLURMEnvironment

    if not SLURMEnvironment.detect():
        return []
    return [SLURMEnvironment(auto_requeue=True, requeue_signal=signal.SIGUSR1)]
