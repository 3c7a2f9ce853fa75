"""Functions that tests hand to :class:`medsr.io.isolated.IsolatedReader`: they run in its
child process, which imports them by reference, so they live in a small module of their own."""

from __future__ import annotations

import os
from pathlib import Path


def spin(path):
    """A loader spinning like a decoder on a malformed file (after writing its process id)."""
    Path(f"{path}.pid").write_text(str(os.getpid()))
    while True:
        sum(range(10**5))  # busy in Python


def array_shape(image):
    """A ``describe`` function: computed in the child, sent back with the image."""
    return image.array.shape
