"""MedImage: validation and cell-centred geometry of resampling."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from medsr.image import MedImage, spacing_from_affine


def test_validation():
    with pytest.raises(ValueError):
        MedImage(np.zeros((2, 2, 2, 2)))
    with pytest.raises(ValueError):
        MedImage(np.zeros((2, 2, 2)), spacing=(1, 0, 1))
    img = MedImage(np.zeros((5, 6), dtype=np.uint16))
    assert img.array.dtype == np.float32 and img.spatial_shape == (1, 5, 6)


def test_repr_hides_meta():
    img = MedImage(np.zeros((1, 2, 2)), meta={"patient": "DOE^JOHN"})
    assert "DOE" not in repr(img)


@settings(max_examples=50, deadline=None)
@given(
    shape=st.tuples(st.integers(1, 5), st.integers(1, 9), st.integers(1, 9)),
    zoom=st.tuples(st.integers(1, 4), st.integers(1, 4), st.integers(1, 4)),
    spacing=st.tuples(*[st.floats(0.1, 10)] * 3),
    origin=st.tuples(*[st.floats(-500, 500)] * 3),
    flip=st.tuples(*[st.sampled_from([-1.0, 1.0])] * 3),
)
def test_resampled_keeps_field_of_view(shape, zoom, spacing, origin, flip):
    aff = np.diag([spacing[2] * flip[0], spacing[1] * flip[1], spacing[0] * flip[2], 1.0])
    aff[:3, 3] = origin
    img = MedImage(np.zeros(shape), spacing=spacing, affine=aff)
    new_shape = tuple(s * z for s, z in zip(shape, zoom, strict=True))
    out = img.resampled(np.zeros(new_shape))
    np.testing.assert_allclose(out.world_center(), img.world_center(), atol=1e-6)
    np.testing.assert_allclose(out.spacing, np.array(spacing) / np.array(zoom), rtol=1e-9)
    np.testing.assert_allclose(spacing_from_affine(out.affine), out.spacing, rtol=1e-9)
    # first cell's outer corner is unchanged
    np.testing.assert_allclose(
        out.world_coordinate((-0.5, -0.5, -0.5)),
        img.world_coordinate((-0.5, -0.5, -0.5)),
        atol=1e-6,
    )


def test_resampled_history_and_channels():
    img = MedImage(np.zeros((3, 1, 4, 4)), channels="RGB")
    out = img.resampled(np.zeros((3, 1, 8, 8)), step="x2")
    assert out.history == ("x2",) and out.spacing == (1.0, 0.5, 0.5)
    with pytest.raises(ValueError):
        img.resampled(np.zeros((1, 8, 8)))


def test_channels_say_what_the_leading_axis_holds():
    """``MedImage(channels="foo")`` was taken (a 4-D array then neither colour nor a series, and
    "rgb" was not colour): channels is None, 'RGB' or 'time', in any case, else a ValueError."""
    arr = np.zeros((3, 1, 4, 4), np.float32)
    assert MedImage(arr, channels="rgb").is_color
    assert MedImage(arr, channels="TIME").channels == "time"
    with pytest.raises(ValueError, match="channels must be one of"):
        MedImage(arr, channels="foo")


def test_summary_finds_the_extremes_without_a_copy():
    """``medsr info``'s summary: the finite extremes, without a copy of the image's values (it
    took one as large as the image, beside it: 300 MB more for a 512×512×300 CT)."""
    import tracemalloc

    arr = np.linspace(-5, 7, 4 * 256 * 256, dtype=np.float32).reshape(4, 256, 256)
    arr[0, 0, 0], arr[1, 0, 0], arr[2, 0, 0] = np.nan, np.inf, -np.inf
    image = MedImage(array=arr, spacing=(1.0, 1.0, 1.0))
    image.summary()  # imports out of the measure
    tracemalloc.start()
    try:
        summary = image.summary()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    finite = arr[np.isfinite(arr)]
    assert summary["min"] == float(finite.min()) and summary["max"] == float(finite.max()) == 7.0
    assert peak < 0.5 * arr.nbytes, (peak, arr.nbytes)
    empty = MedImage(array=np.full((1, 2, 2), np.nan, np.float32), spacing=(1.0, 1.0, 1.0))
    assert np.isnan(empty.summary()["min"]) and np.isnan(empty.summary()["max"])
