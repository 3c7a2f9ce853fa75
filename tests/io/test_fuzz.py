"""Fuzzing ``medsr.io.load_image``: mutated DICOM / NIfTI / PNG / TIFF / .npy files.

Property: whatever the bytes, ``load_image`` returns a :class:`MedImage` (whose summary can be
printed) or raises a :class:`MedSRError` subclass, and prints nothing. The seeds are generated
(:mod:`tests.io.fuzz_corpus`); hypothesis picks a seed and a list of byte edits.

A handful of examples run in ``make test``; set ``MEDSR_FUZZ_EXAMPLES=5000`` for a real run::

    MEDSR_FUZZ_EXAMPLES=5000 .venv/bin/python -m pytest tests/io/test_fuzz.py -p no:cacheprovider
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from medsr.errors import MedSRError
from medsr.image import MedImage
from medsr.io import load_image
from tests.io.fuzz_corpus import SUFFIX, make_seeds, mutate

EXAMPLES = int(os.environ.get("MEDSR_FUZZ_EXAMPLES", "40"))


@lru_cache(maxsize=1)
def _seeds() -> dict[str, bytes]:
    return make_seeds()


def _seed_names() -> list[str]:
    try:
        return sorted(_seeds())
    except Exception:  # pragma: no cover - corpus packages missing
        return []


@pytest.fixture(scope="module")
def fuzz_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


edits = st.lists(
    st.tuples(
        st.integers(0, 5),  # kind (see fuzz_corpus.mutate)
        st.integers(0, 1 << 16),  # position (modulo the length)
        st.integers(0, 255),  # value
    ),
    min_size=1,
    max_size=8,
)


def _check(folder: Path, data: bytes, suffix: str) -> None:
    path = folder / f"input{suffix}"
    path.write_bytes(data)
    try:
        image = load_image(path)
    except MedSRError as exc:
        assert str(exc), "a medsr error needs a message"
        return
    assert isinstance(image, MedImage)
    assert image.array.size > 0
    image.summary()  # what `medsr info` prints must not fail either


@pytest.mark.skipif(not _seed_names(), reason="corpus packages for the seeds are not installed")
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=EXAMPLES <= 50,  # the short run in `make test` is the same every time
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    database=None,
)
@given(name=st.sampled_from(_seed_names() or ["none"]), changes=edits)
def test_load_image_never_leaks_a_library_exception(name, changes, capfd, fuzz_dir):
    _check(fuzz_dir, mutate(_seeds()[name], changes), SUFFIX[name])
    out = capfd.readouterr()
    assert out.err == "", out.err  # library messages never reach the console


@pytest.mark.parametrize("name", _seed_names())
def test_every_seed_reads(name, fuzz_dir):
    """The unmutated seeds are valid images (so mutations start from something real)."""
    path = fuzz_dir / f"seed{SUFFIX[name]}"
    path.write_bytes(_seeds()[name])
    assert load_image(path).array.size > 0
