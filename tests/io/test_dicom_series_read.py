"""Reading a DICOM series folder: each distinct header value is converted once per read, the
slices go straight into one volume (medsr.io.dicom.read).

Seen: ``medsr info`` on 2000 copies of CT_small took 38 s and 780 MB (one file: 2 s, 76 MB), most
of it converting and holding every element of every slice's header, which the slices share
byte for byte; 300 slices of 512² held 860 MB for a 300 MB volume (a list of slices, then their
concatenation, with every slice's pixel data kept until the end).
"""

from __future__ import annotations

import copy
import gc
import itertools
import tracemalloc
import warnings
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.tag import Tag
from pydicom.uid import ImplicitVRLittleEndian, generate_uid

import medsr.io.dicom.derived as derived_module
import medsr.io.dicom.write as write_module
from medsr.errors import CorruptInputError
from medsr.io.dicom import read_dicom, write_dicom
from tests.io.conftest import make_ct_slice, write_series

#: Acquisition Matrix (US, 4 values): nothing reads it while a series is read
ACQUISITION_MATRIX = Tag(0x00181310)


def _slices(template: Dataset, n: int = 4, size: int = 16, implicit: bool = False) -> list[Dataset]:
    uid = generate_uid()
    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        ds = make_ct_slice(
            template,
            pixels=rng.integers(-100, 100, (size, size)),
            ipp=(0.0, 0.0, 2.0 * i),
            series_uid=uid,
            instance=i + 1,
        )
        ds.AcquisitionMatrix = [0, size, size, 0]
        # UIDs of one length in every file, so that the values after the file meta lie at the
        # same offsets (generate_uid's length varies: 1 in 90 is 2 bytes shorter)
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = f"{uid[:50]}.{i + 101}"
        if implicit:
            ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
        out.append(ds)
    return out


def _malformed(ds: Dataset) -> None:
    """Acquisition Matrix of 7 bytes: no whole number of 2-byte values, which pydicom refuses."""
    ds[ACQUISITION_MATRIX] = RawDataElement(
        ACQUISITION_MATRIX, "US", 7, b"\x00\x01\x02\x03\x04\x05\x06", 0, False, True
    )


@pytest.mark.parametrize("which", [1, -1], ids=["second", "last"])
def test_malformed_value_in_a_later_slice_fails_the_read(tmp_path, ct_template, which):
    """The value the other slices hold fine (converted once for them) is malformed in one
    slice: the read fails on that file with the error reading it alone gives."""
    slices = _slices(ct_template)
    _malformed(slices[which])
    folder = write_series(tmp_path / "series", slices)
    bad = sorted(folder.iterdir())[which]
    with pytest.raises(CorruptInputError) as alone:
        read_dicom(bad)
    with pytest.raises(CorruptInputError) as whole:
        read_dicom(folder)
    assert str(whole.value) == str(alone.value)
    assert f"'{bad.name}'" in str(whole.value) and "BytesLengthException" in str(whole.value)
    assert "\n" not in str(whole.value)


@pytest.mark.parametrize("implicit", [False, True], ids=["explicit", "implicit"])
def test_shared_header_elements_stay_raw_and_shared(tmp_path, ct_template, implicit):
    """Elements the slices share byte for byte are converted once (for the first slice) and
    then left raw in every slice: one object where the slices hold them at the same offset."""
    folder = write_series(tmp_path / "series", _slices(ct_template, implicit=implicit))
    datasets = read_dicom(folder).meta["datasets"]
    for ds in datasets:
        raw = [t for t, e in ds._dict.items() if isinstance(e, RawDataElement)]
        assert len(raw) > 0.75 * len(ds._dict)
        assert ACQUISITION_MATRIX in raw
    # (0008,0012) lies before the first value whose length differs (SOP Instance UID)
    date = Tag(0x00080012)
    assert all(ds.get_item(date) is datasets[0].get_item(date) for ds in datasets[1:])
    # a raw element converts when used
    assert [int(v) for v in datasets[-1].AcquisitionMatrix] == [0, 16, 16, 0]
    assert str(datasets[-1].Manufacturer) == str(ct_template.Manufacturer)


def test_a_value_pydicom_warns_about_is_said_and_kept_converted(tmp_path, ct_template):
    """Whether a conversion said something is kept per slice, as before: such a value is
    converted (and said) in every slice, never skipped as already seen."""
    slices = _slices(ct_template)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for ds in slices:
            ds.AcquisitionNumber = "1.5"  # IS: pydicom warns, keeps the value
    folder = write_series(tmp_path / "series", slices)
    image = read_dicom(folder)
    assert any("IS" in m for m in image.meta.get("reader_messages") or [])
    for ds in image.meta["datasets"]:
        assert not isinstance(ds._dict[Tag("AcquisitionNumber")], RawDataElement)


@pytest.fixture
def fixed_uids(monkeypatch):
    """UIDs and times of a written series made the same from write to write."""

    def restart():
        counter = itertools.count(1)
        uid = lambda *_a, **_k: f"1.2.826.0.1.3680043.8.498.99.{next(counter)}"  # noqa: E731
        for module in (write_module, derived_module):
            monkeypatch.setattr(module, "generate_uid", uid)
            monkeypatch.setattr(module, "_now", lambda: ("20260101", "120000"))

    return restart


@pytest.mark.parametrize("implicit", [False, True], ids=["explicit", "implicit"])
def test_derived_series_is_the_same_from_raw_headers(tmp_path, ct_template, fixed_uids, implicit):
    """The derived series written from headers left raw is byte for byte the one written from
    the same headers with every element converted (as the reader kept them before)."""
    folder = write_series(tmp_path / "series", _slices(ct_template, implicit=implicit))
    image = read_dicom(folder)
    converted = [copy.deepcopy(ds) for ds in image.meta["datasets"]]
    for ds in converted:
        for _ in ds:  # iterating converts every top-level element
            pass
    assert not any(isinstance(e, RawDataElement) for e in converted[1]._dict.values())
    fixed_uids()
    write_dicom(image, tmp_path / "from_raw")
    fixed_uids()
    write_dicom(
        image.replace(meta={**image.meta, "datasets": converted}), tmp_path / "from_converted"
    )
    raw_files = sorted((tmp_path / "from_raw").iterdir())
    conv_files = sorted((tmp_path / "from_converted").iterdir())
    assert len(raw_files) == 4
    assert [f.name for f in raw_files] == [f.name for f in conv_files]
    for a, b in zip(raw_files, conv_files, strict=True):
        assert a.read_bytes() == b.read_bytes()
    assert pydicom.dcmread(raw_files[2]).AcquisitionMatrix == [0, 16, 16, 0]


def test_shared_header_elements_are_converted_once_per_write(tmp_path, ct_template, monkeypatch):
    """Writing a series converts each header element the slices share (one raw element:
    test_shared_header_elements_stay_raw_and_shared) once (a sequence's items: each its own), not once per slice: every slice's header was
    deep-copied and then all its elements converted (remove_private_tags converts each), most
    of a series' write (300 slices of 512²: 14 of 21 s)."""
    folder = write_series(tmp_path / "series", _slices(ct_template, n=8))
    image = read_dicom(folder)
    first, *others = image.meta["datasets"]
    shared = {
        tag
        for tag, e in first._dict.items()
        if isinstance(e, RawDataElement) and all(ds._dict.get(tag) is e for ds in others)
    }
    assert len(shared) > 40  # CT_small's header, but for the few values of each slice's own
    conversions: list[int] = []
    convert = pydicom.dataset.convert_raw_data_element

    def counted(raw, *args, **kwargs):
        if isinstance(kwargs.get("ds"), pydicom.FileDataset):  # a header, not a sequence item
            conversions.append(raw.tag)
        return convert(raw, *args, **kwargs)

    monkeypatch.setattr(pydicom.dataset, "convert_raw_data_element", counted)
    write_dicom(image, tmp_path / "out")
    counts = {Tag(t): conversions.count(t) for t in shared if not Tag(t).is_private}
    sequences = {t for t in counts if image.meta["datasets"][0][t].VR == "SQ"}
    assert {t: c for t, c in counts.items() if t not in sequences and c != 1} == {}
    assert not any(Tag(tag).is_private for tag in conversions)  # dropped, never converted
    assert len(list((tmp_path / "out").iterdir())) == 8


def test_series_volume_is_built_in_place(tmp_path, ct_template):
    """Reading a series holds its volume about once: slices go straight into it and drop their
    pixel data once decoded (a list of slices, then their concatenation, held it twice)."""
    folder = write_series(tmp_path / "series", _slices(ct_template, n=16, size=256))
    read_dicom(folder)  # imports and caches out of the measure
    tracemalloc.start()
    try:
        image = read_dicom(folder)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert image.array.shape == (16, 256, 256)
    # the volume, the headers and one slice being decoded (before: 3 times the volume)
    assert peak < 2.0 * image.array.nbytes, (peak, image.array.nbytes)


def test_each_slice_pixel_module_is_read_once_per_read(tmp_path, ct_template, monkeypatch):
    """Each slice's Image Pixel module (Rows, Columns, bit depths, frames...) is read and checked
    once, as when its file is read alone: its header before any pixels are read, its data when
    they are. Seen: a series' read checked every slice's module twice (for multi-frame members
    before the pixels, then again with its data)."""
    import medsr.io.dicom.pixels as pixels

    folder = write_series(tmp_path / "series", _slices(ct_template, n=4))
    asked: list[tuple[int, str]] = []
    real = pixels._int_attr

    def spy(ds, key, *args, **kwargs):
        asked.append((id(ds), key))
        return real(ds, key, *args, **kwargs)

    monkeypatch.setattr(pixels, "_int_attr", spy)
    alone = read_dicom(sorted(folder.iterdir())[0]).meta["datasets"][0]
    once = sorted(key for who, key in asked if who == id(alone))
    assert "Rows" in once and "NumberOfFrames" in once
    asked.clear()
    datasets = read_dicom(folder).meta["datasets"]
    for ds in datasets:
        assert sorted(key for who, key in asked if who == id(ds)) == once


def test_series_headers_are_held_once_wherever_their_values_lie(tmp_path, ct_template):
    """The header values a series' slices share are held once also where an earlier value of
    another length put them at other offsets in the files. Seen: ``medsr info`` on 2000 copies
    of CT_small (each SOP Instance UID as long as its number) held 87 KB per slice of their
    7 KB header once read, each slice its own copy of every element after its UID."""
    slices = _slices(ct_template, n=8)
    # the first UID 2 bytes shorter (1 in 90 of generate_uid's is): every later value moves
    slices[0].SOPInstanceUID = slices[0].file_meta.MediaStorageSOPInstanceUID = (
        f"{slices[1].SOPInstanceUID[:-4]}.1"
    )
    assert len(slices[0].SOPInstanceUID) == len(slices[1].SOPInstanceUID) - 2
    folder = write_series(tmp_path / "series", slices)
    read_dicom(folder)  # imports and caches out of the measure
    gc.collect()
    tracemalloc.start()
    try:
        image = read_dicom(folder)
        gc.collect()
        held, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    datasets = image.meta["datasets"]
    assert [float(ds.ImagePositionPatient[2]) for ds in datasets] == [2.0 * i for i in range(8)]
    assert str(datasets[-1].Manufacturer) == str(ct_template.Manufacturer)
    per_slice = (held - image.array.nbytes) / len(datasets)
    # before: 100 KB per slice; now 40 KB (each slice's own dictionary of elements and the
    # values it alone holds; the read's fixed costs over 8 slices)
    assert per_slice < 60_000, per_slice


def test_folder_and_files_read_alike(tmp_path, ct_template):
    """The volume of a series is its slices' values in order, as each reads alone."""
    folder = write_series(tmp_path / "series", _slices(ct_template, n=5))
    volume = read_dicom(folder).array
    alone = [read_dicom(f).array[0] for f in sorted(Path(folder).iterdir())]
    np.testing.assert_array_equal(volume, np.stack(alone))


def test_each_slice_header_is_interpreted_once_per_read(tmp_path, ct_template, monkeypatch):
    """Each slice's plane (ImageOrientation/Position) is worked out once per read, and its
    Rescale Slope/Intercept once (for its pixels and its padding value together). Seen: a
    cProfile of ``medsr info`` on 2000 copies of CT_small had each slice's plane worked out 5
    times (cutting stacks, finding repeated positions, checking orientations twice, placing
    the slices) and its rescale values 4 times."""
    import medsr.io.dicom.geometry as geometry
    import medsr.io.dicom.header as header
    import medsr.io.dicom.pixels as pixels
    import medsr.io.dicom.read as read
    import medsr.io.dicom.stacks as stacks

    slices = _slices(ct_template, n=5)
    assert all("PixelPaddingValue" in ds for ds in slices)  # its value is rescaled too
    folder = write_series(tmp_path / "series", slices)
    calls: dict[str, list[int]] = {"_plane": [], "_rescale": []}

    def counting(name, real):
        def spy(ds, *args, **kwargs):
            calls[name].append(id(ds))
            return real(ds, *args, **kwargs)

        return spy

    for name, source in (("_plane", geometry), ("_rescale", header)):
        spy = counting(name, getattr(source, name))
        for module in (geometry, header, pixels, read, stacks):
            if hasattr(module, name):
                monkeypatch.setattr(module, name, spy)
    image = read_dicom(folder)
    datasets = image.meta["datasets"]
    assert len(datasets) == 5
    # the first slice's rescale is asked once more, for the image's meta["rescale"]
    expected = {"_plane": [1, 1, 1, 1, 1], "_rescale": [2, 1, 1, 1, 1]}
    for name, counts in expected.items():
        assert [calls[name].count(id(ds)) for ds in datasets] == counts, name
    calls["_plane"].clear()
    again = read_dicom(folder)  # a second read works its planes out again: nothing outlives one
    assert len(calls["_plane"]) == 5 and np.array_equal(again.array, image.array)
