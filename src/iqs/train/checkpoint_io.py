"""Checkpoints written atomically next to their final name: a crash or a full disk never leaves a torn `.ckpt`.

Lightning's `TorchCheckpointIO` already serialises into memory and writes through an fsspec transaction,
but for a local path fsspec puts the temporary file in $TMPDIR and then `shutil.move`s it. When $TMPDIR
is another file system (a cluster node's /tmp vs. the shared checkpoint folder), that move is a copy,
which a kill or a full disk can cut short, leaving a truncated file under the final name, the very file
resume would pick. Here the temporary file sits in the checkpoint's own folder, is fsynced, and then
`os.replace`d onto the name (atomic on POSIX within one file system). Remote URLs keep Lightning's path.
"""

from __future__ import annotations

import contextlib
import io
import os
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO


def atomic_torch_save(obj: Any, path: str | Path) -> None:
    """`torch.save(obj, path)` that either leaves the complete file at `path` or leaves `path` untouched."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    torch.save(obj, buffer)  # serialise first: a pickling error never touches the disk
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            f.write(buffer.getbuffer())
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint IO with `atomic_torch_save` for local paths."""

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None
    ) -> None:
        scheme = urlparse(str(path)).scheme
        if storage_options is not None or (scheme and scheme != "file" and len(scheme) > 1):
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        atomic_torch_save(checkpoint, str(path).removeprefix("file://"))


def last_checkpoint(dirpath: Path) -> Any:
    """`last.ckpt` at the end of every epoch, what `resume=` continues from.

    Not the best checkpoint's `save_last=True`: Lightning 2.6 writes that one only when the best improves
    (ModelCheckpoint.on_validation_end), so a kill lost every epoch since. This second ModelCheckpoint
    (no monitor, one file under one name) saves each epoch; Lightning runs checkpoint callbacks last and in
    list order, so the file holds the best callback's state of the same epoch. Writes are atomic
    (AtomicCheckpointIO)."""
    from pytorch_lightning.callbacks import ModelCheckpoint

    from iqs.train.resume import LAST

    return ModelCheckpoint(
        dirpath=dirpath,
        filename=LAST.removesuffix(".ckpt"),
        monitor=None,
        save_top_k=1,
        every_n_epochs=1,
        enable_version_counter=False,
    )
