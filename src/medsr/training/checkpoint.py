"""The cheap checks of a training checkpoint's path, before anything heavy is imported.

:func:`medsr.training.tasks.load_medsr_checkpoint` unpickles a checkpoint with torch, in a module
that imports Lightning (seconds); ``medsr export`` of a folder, a missing file or a file that is
no PyTorch archive is refused here first, at once (:func:`check_checkpoint_file`).
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

from medsr.errors import InvalidParameterError


def check_checkpoint_file(path: str | os.PathLike[str]) -> Path:
    """``path`` as a :class:`~pathlib.Path` when it is a file in torch's checkpoint format (a
    zip archive), else an :class:`~medsr.errors.InvalidParameterError` that says what it is: a
    folder (and which checkpoint file in it to name), missing, or not a PyTorch checkpoint."""
    p = Path(path)
    if p.is_dir():
        # a run folder or its checkpoints/ folder: say which file to name
        found = sorted(p.glob("*.ckpt")) or sorted(p.glob("checkpoints/*.ckpt"))
        last = [f for f in found if f.name == "last.ckpt"]
        hint = (
            f": name one of its checkpoint files, e.g. '{(last or found)[0]}'"
            if found
            else " and holds no .ckpt file: name a checkpoint file (runs/NAME/checkpoints/last.ckpt)"
        )
        raise InvalidParameterError(f"checkpoint '{p}' is a folder, not a checkpoint file{hint}")
    if not p.is_file():
        raise InvalidParameterError(f"checkpoint '{p}' does not exist")
    if not zipfile.is_zipfile(p):  # torch.save writes a zip archive; anything else is not ours
        raise InvalidParameterError(
            f"'{p.name}' is not a medsr training checkpoint (not a PyTorch checkpoint archive)"
        )
    return p
