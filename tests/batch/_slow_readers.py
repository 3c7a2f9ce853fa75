"""Stand-ins for ``medsr.io.load_image`` that misbehave like hostile files do, for inputs whose
name says so; every other input is read normally. They run in the batch's decode child process,
so they live in a module of their own (imported there by reference)."""

from __future__ import annotations

import os
import time
from pathlib import Path

from medsr.io import load_image


def hostile(path, **options):
    """``options``: what the batch passes ``load_image`` (``series_uid`` of a series item)."""
    name = Path(path).name
    if name.startswith("hang"):  # a decoder spinning on a malformed file
        while True:
            time.sleep(0.05)
    if name.startswith("crash"):  # a decoder taking the interpreter down
        os._exit(70)
    return load_image(path, **options)
