"""Stand-ins for ``medsr.io.load_image`` that misbehave like hostile files do (imported by the
decode child process, so they live in a module of their own)."""

from __future__ import annotations

import os
import time


def hang(path):  # a decoder spinning on a malformed file
    while True:
        time.sleep(0.05)


def crash(path):  # a decoder taking the interpreter down
    os._exit(70)


class PanicException(BaseException):  # what pyo3 raises on a Rust panic
    pass


def panic(path):
    raise PanicException("called `Option::unwrap()` on a `None` value")
