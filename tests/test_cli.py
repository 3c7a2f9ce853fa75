"""CLI: thin commands, clear errors with exit status 2, nothing written on failure."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from typer.testing import CliRunner

import medsr as medsr_api
from medsr.cli import app
from medsr.errors import OutputExistsError
from tests._entry import run_medsr
from tests.conftest import corpus_path, file_digest, short_cine

runner = CliRunner()


def medsr(*args: str) -> subprocess.CompletedProcess[str]:
    """Run the real entry point in a process of its own (exit codes and stderr as a user sees
    them; :func:`tests._entry.run_medsr`)."""
    return run_medsr(*args)


def test_help_lists_every_command_with_examples():
    res = runner.invoke(app, ["--help"])
    assert res.exit_code == 0
    for cmd in ("info", "upscale", "models", "demo"):
        assert cmd in res.output
    assert "Example" in res.output


def test_help_does_not_import_torch():
    code = (
        "import sys; from medsr.cli import app; assert 'torch' not in sys.modules, 'torch imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_info_json(corpus):
    res = runner.invoke(app, ["info", str(corpus("anatomical.nii")), "--json"])
    assert res.exit_code == 0, res.output
    info = json.loads(res.output)
    assert info["format"] == "nifti" and len(info["spacing_mm_zyx"]) == 3


def test_upscale_nifti(tmp_path, corpus):
    src = corpus("aniso_vox.nii.gz")
    before = file_digest(src)
    out = tmp_path / "o.nii.gz"
    res = runner.invoke(app, ["upscale", str(src), str(out), "--scale", "2", "--model", "kspace"])
    assert res.exit_code == 0, res.output
    a, b = nib.load(str(src)), nib.load(str(out))
    assert b.shape[:2] == (a.shape[0] * 2, a.shape[1] * 2) and b.shape[2] == a.shape[2]
    assert file_digest(src) == before


def test_upscale_nifti_keeps_its_integer_storage_unless_float32_asked(tmp_path, corpus):
    """An int16 NIfTI comes back int16 (values rounded onto its grid); --output-dtype float32
    writes float32; the option on a format that stores integers, or a bad value, is one error."""
    src = corpus("anatomical.nii")  # big-endian int16
    kept, floats = tmp_path / "kept.nii.gz", tmp_path / "float.nii.gz"
    assert runner.invoke(app, ["upscale", str(src), str(kept), "-m", "bicubic"]).exit_code == 0
    res = runner.invoke(
        app, ["upscale", str(src), str(floats), "-m", "bicubic", "--output-dtype", "float32"]
    )
    assert res.exit_code == 0, res.output
    a, b = nib.load(str(kept)), nib.load(str(floats))
    assert a.get_data_dtype() == np.dtype(np.int16) and b.get_data_dtype() == np.dtype(np.float32)
    np.testing.assert_array_equal(np.asarray(a.dataobj), np.rint(np.asarray(b.dataobj)))
    for out, value, message in (
        ("o.png", "float32", "applies to NIfTI"),
        ("o.nii.gz", "float64", "--output-dtype must be one of input, float32"),
    ):
        bad = medsr(
            "upscale", str(src), str(tmp_path / out), "-m", "bicubic", "--output-dtype", value
        )
        lines = [line for line in bad.stderr.splitlines() if line.strip()]
        assert bad.returncode == 2 and len(lines) == 1 and message in lines[0], bad.stderr
        assert not (tmp_path / out).exists()


def test_upscale_into_folder_keeps_format(tmp_path, corpus):
    res = runner.invoke(
        app,
        ["upscale", str(corpus("camera.png")), str(tmp_path / "out"), "-s", "3", "-m", "lanczos"],
    )
    assert res.exit_code == 0, res.output
    assert (tmp_path / "out" / "camera.png").is_file()


@pytest.mark.parametrize(
    "args,message",
    [
        (["upscale", "{missing}", "{out}"], "does not exist"),
        (["upscale", "{empty}", "{out}"], "empty"),
        (["upscale", "{nii}", "{out}", "--scale", "5"], "scale must be one of"),
        (["upscale", "{nii}", "{out}", "--model", "nope"], "unknown model"),
        (["upscale", "{nii}", "{existing}"], "already exists"),
        (["upscale", "{garbage}", "{out}"], "not a format medsr reads"),
        (["info", "{garbage}"], "not a format medsr reads"),
        (
            ["upscale", "{nii}", "{out}", "--device", "cuda"]
            if not __import__("torch").cuda.is_available()
            else ["info", "{missing}"],
            "",
        ),
    ],
)
def test_bad_input_exit_2_and_nothing_written(tmp_path, corpus, args, message):
    (tmp_path / "empty.nii").write_bytes(b"")
    (tmp_path / "garbage.bin").write_bytes(b"\x00garbage" * 100)
    existing = tmp_path / "exists.nii.gz"
    existing.write_bytes(b"keep me")
    nii = tmp_path / "in.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((8, 8, 2), np.float32), np.eye(4)), str(nii))
    paths = {
        "missing": tmp_path / "missing.nii",
        "empty": tmp_path / "empty.nii",
        "garbage": tmp_path / "garbage.bin",
        "nii": nii,
        "out": tmp_path / "out.nii.gz",
        "existing": existing,
    }
    res = medsr(*[a.format(**paths) for a in args])
    assert res.returncode == 2, res.stderr
    assert res.stderr.startswith("error: ") and message in res.stderr
    assert "Traceback" not in res.stderr
    assert not (tmp_path / "out.nii.gz").exists()
    assert existing.read_bytes() == b"keep me"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp leftovers


@pytest.mark.parametrize("first, second", [(".png", ".nii.gz"), (".nii.gz", ".png")])
def test_upscale_never_replaces_another_outputs_sidecar(tmp_path, corpus, first, second):
    """``sc.png`` and ``sc.nii.gz`` share ``sc.json``: the second is one error line (exit 2),
    with ``--overwrite`` too, found before the model is resolved (an unknown model is not what
    it reports); the first output's sidecar is intact and it reads back in HU. Replacing one's
    own output still works, and an unrelated JSON file is never replaced."""
    src = str(corpus("CT_small.dcm"))
    res = runner.invoke(app, ["upscale", src, str(tmp_path / f"sc{first}"), "-m", "bicubic"])
    assert res.exit_code == 0, res.output
    side = (tmp_path / "sc.json").read_bytes()
    before = medsr_api.load_image(tmp_path / f"sc{first}")
    assert before.units == "HU" and before.array.min() < -800
    for extra in ([], ["--overwrite"], ["--overwrite", "-m", "nope"]):
        bad = medsr("upscale", src, str(tmp_path / f"sc{second}"), *extra)
        lines = [line for line in bad.stderr.splitlines() if line.strip()]
        assert bad.returncode == 2 and len(lines) == 1, bad.stderr
        assert lines[0].startswith("error: ") and f"is the sidecar of 'sc{first}'" in lines[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([f"sc{first}", "sc.json"])
    assert (tmp_path / "sc.json").read_bytes() == side
    after = medsr_api.load_image(tmp_path / f"sc{first}")
    assert after.units == "HU" and np.array_equal(after.array, before.array)
    res = runner.invoke(
        app, ["upscale", src, str(tmp_path / f"sc{first}"), "-m", "bicubic", "--overwrite"]
    )
    assert res.exit_code == 0, res.output
    (tmp_path / "other.json").write_text('{"mine": true}')
    for extra in ([], ["--overwrite"]):
        res = runner.invoke(
            app, ["upscale", src, str(tmp_path / "other.png"), "-m", "bicubic", *extra]
        )
        assert isinstance(res.exception, OutputExistsError), res.output  # main() prints it
        assert "not written by medsr" in str(res.exception)
    assert (tmp_path / "other.json").read_text() == '{"mine": true}'
    assert not (tmp_path / "other.png").exists()


def test_debug_shows_traceback(tmp_path):
    res = medsr("--debug", "info", str(tmp_path / "missing.dcm"))
    assert res.returncode != 0 and "Traceback" in res.stderr


def test_models_lists_classical():
    res = runner.invoke(app, ["models", "--json"])
    names = {m["name"] for m in json.loads(res.output)}
    assert {"bicubic", "lanczos", "kspace", "nearest", "linear"} <= names


def test_models_table_columns_line_up_whatever_the_name():
    """`default-x2-kspace` (17 characters) pushed its row's columns out of line."""
    rows = [r for r in runner.invoke(app, ["models"]).output.splitlines() if r.strip()]
    kinds = {"classical", "architecture", "in-plane", "through-plane", "slice-interpolator"}
    starts = {next(r.index(f" {k} ") + 1 for k in kinds if f" {k} " in r) for r in rows}
    assert len(starts) == 1, rows


def test_upscale_dicom_to_derived_series(tmp_path, corpus):
    import shutil

    src = corpus("CT_small.dcm")
    before = file_digest(src)
    res = medsr("upscale", str(src), str(tmp_path / "ct_x2"), "--scale", "2", "--model", "lanczos")
    assert res.returncode == 0, res.stderr
    files = list((tmp_path / "ct_x2").glob("*.dcm"))
    assert len(files) == 1
    import pydicom

    ds, orig = pydicom.dcmread(files[0]), pydicom.dcmread(src)
    assert (ds.Rows, ds.Columns) == (orig.Rows * 2, orig.Columns * 2)
    assert (
        ds.StudyInstanceUID == orig.StudyInstanceUID
        and ds.SeriesInstanceUID != orig.SeriesInstanceUID
    )
    assert "lanczos" in ds.DerivationDescription and "2" in ds.DerivationDescription
    assert file_digest(src) == before
    if shutil.which("dciodvfy"):
        out = subprocess.run(
            ["dciodvfy", str(files[0])], capture_output=True, text=True, timeout=60
        )
        errors = [
            line for line in (out.stdout + out.stderr).splitlines() if line.startswith("Error")
        ]
        assert errors == []


@pytest.mark.parametrize(
    "case,message", [("seg", "segmentation"), ("truncated", "corrupt"), ("nopixels", "pixel data")]
)
def test_bad_dicom_inputs(tmp_path, corpus, case, message):
    import pydicom

    if case == "seg":
        path = corpus("liver.dcm")
    elif case == "truncated":
        path = tmp_path / "t.dcm"
        data = corpus("CT_small.dcm").read_bytes()
        path.write_bytes(data[: len(data) // 2])
    else:
        ds = pydicom.dcmread(corpus("CT_small.dcm"))
        del ds.PixelData
        path = tmp_path / "np.dcm"
        ds.save_as(path)
    res = medsr("upscale", str(path), str(tmp_path / "out"))
    assert res.returncode == 2 and message in res.stderr.lower(), res.stderr
    assert "Traceback" not in res.stderr and not (tmp_path / "out").exists()


def test_train_and_export_bad_input(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nscale: 7\nmodel: {name: residual5}\n")
    res = medsr("train", str(bad))
    assert (
        res.returncode == 2 and res.stderr.startswith("error: ") and "Traceback" not in res.stderr
    )
    res = medsr("train", str(tmp_path / "missing.yaml"))
    assert res.returncode == 2
    fake = tmp_path / "foreign.ckpt"
    fake.write_bytes(b"not a checkpoint")
    res = medsr("export", str(fake), str(tmp_path / "m.safetensors"))
    assert res.returncode == 2 and not (tmp_path / "m.safetensors").exists()


def test_export_refuses_what_is_no_checkpoint_before_importing_lightning(tmp_path):
    """``medsr export`` of a file that is no checkpoint, of a missing file and of a folder: one
    ``error:`` line and exit 2 each, at once; it imported torch and Lightning (4-10 s) before
    the refusal. Its own process (:mod:`tests._entry`'s calls have torch preloaded)."""
    fake = tmp_path / "foreign.ckpt"
    fake.write_bytes(b"not a checkpoint")
    out = tmp_path / "m.safetensors"
    code = f"""
import sys
from medsr.cli import main
for ckpt in (r"{fake}", r"{tmp_path / "missing.ckpt"}", r"{tmp_path}"):
    sys.argv = ["medsr", "export", ckpt, r"{out}"]
    try:
        main()
    except SystemExit as exc:
        print(exc.code)
print(sorted(m for m in ("lightning", "torch") if m in sys.modules))
"""
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert res.stdout.split() == ["2", "2", "2", "[]"], (res.stdout, res.stderr)
    lines = res.stderr.splitlines()
    assert len(lines) == 3 and all(x.startswith("error: ") for x in lines), res.stderr
    assert "not a PyTorch checkpoint" in lines[0] and "does not exist" in lines[1]
    assert "is a folder" in lines[2] and not out.exists()


def test_upscale_consistency_and_maps(tmp_path, corpus):
    res = medsr(
        "upscale",
        str(corpus("CT_small.dcm")),
        str(tmp_path / "out"),
        "--model",
        "lanczos",
        "--consistency",
        "on",
        "--maps",
        str(tmp_path / "maps"),
    )
    assert res.returncode == 0, res.stderr
    summary = json.loads((tmp_path / "maps" / "summary.json").read_text())
    assert summary["consistency"]["setting"] == "on" and summary["model"] == "lanczos"
    # the projection makes degrade(SR) closer to the measured input than before
    assert summary["consistency"]["error"]["mean"] < summary["consistency"]["error_before"]["mean"]
    assert (tmp_path / "maps" / "consistency.png").is_file() and (
        tmp_path / "maps" / "uncertainty.png"
    ).is_file()
    import pydicom

    ds = pydicom.dcmread(next((tmp_path / "out").glob("*.dcm")))
    assert (
        "consistency on" in ds.DerivationDescription and "sha256" not in ds.DerivationDescription
    )  # classical
    res = medsr(
        "upscale", str(corpus("CT_small.dcm")), str(tmp_path / "o2"), "--consistency", "maybe"
    )
    assert res.returncode == 2 and "consistency" in res.stderr and not (tmp_path / "o2").exists()


def test_upscale_precision_bf16_is_recorded(tmp_path, corpus):
    src = corpus("CT_small.dcm")
    out = tmp_path / "ct_bf16.nii.gz"
    res = runner.invoke(
        app, ["upscale", str(src), str(out), "-m", "fast-x2", "--precision", "bf16"]
    )
    assert res.exit_code == 0, res.output
    assert nib.load(out).shape[:2] == (256, 256)
    bad = medsr(
        "upscale",
        str(src),
        str(tmp_path / "z.nii.gz"),
        "--method",
        "zero-shot",
        "--precision",
        "bf16",
    )
    assert bad.returncode == 2 and "precision applies to trained models" in bad.stderr
    assert not (tmp_path / "z.nii.gz").exists()
    bad = medsr("upscale", str(src), str(tmp_path / "p.nii.gz"), "--precision", "half")
    assert bad.returncode == 2 and "precision must be one of" in bad.stderr


def test_upscale_ensemble_is_recorded_and_refused_where_it_means_nothing(tmp_path):
    """``--ensemble``: the mean over the 8 flips/rotations, named in the provenance; with
    zero-shot or through-plane it is one error line and nothing is written."""
    src = corpus_path("MR_small.dcm")
    out = tmp_path / "ens.nii.gz"
    res = medsr("upscale", str(src), str(out), "-m", "fast-x2", "--ensemble")
    assert res.returncode == 0, res.stderr
    sidecar = json.loads(out.with_name("ens.json").read_text())
    assert "mean of 8 flips/90-degree rotations" in json.dumps(sidecar)
    for extra in (["--method", "zero-shot"], ["--through-plane"]):
        bad = medsr("upscale", str(src), str(tmp_path / "z.nii.gz"), "--ensemble", *extra)
        lines = [line for line in bad.stderr.splitlines() if line.strip()]
        assert bad.returncode == 2 and len(lines) == 1 and "ensemble" in lines[0], bad.stderr
        assert not (tmp_path / "z.nii.gz").exists()


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("--degradation", "foo", "unknown degradation 'foo'"),
        ("--modality", "XYZ", "modality must be one of"),
        ("--consistency", "maybe", "'auto', 'on' or 'off'"),
        ("--degradation", "thick-slice", "through-plane"),
    ],
)
def test_bad_physics_options_give_one_error_line(tmp_path, option, value, message):
    src = corpus_path("MR_small.dcm")
    res = medsr("upscale", str(src), str(tmp_path / "out.nii.gz"), option, value)
    assert res.returncode == 2, res.stderr
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0], res.stderr
    assert not (tmp_path / "out.nii.gz").exists()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--through-plane"], "models the slice profile instead"),
        (["--method", "zero-shot"], "does not use it"),
    ],
)
def test_stated_physics_that_nothing_uses_is_an_error(tmp_path, extra, message):
    """--degradation states in-plane physics for trained models; through-plane and zero-shot
    would ignore it silently, so it is one error line (``auto`` and ``none`` still pass)."""
    src = corpus_path("MR_small.dcm")
    res = medsr(
        "upscale", str(src), str(tmp_path / "out.nii.gz"), "--degradation", "kspace", *extra
    )
    assert res.returncode == 2, res.stderr
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0], res.stderr
    assert not (tmp_path / "out.nii.gz").exists()


def test_physics_and_modality_reach_the_provenance(tmp_path):
    """--degradation kspace makes zero-filled k-space the base and (consistency auto) projects;
    --modality labels a NIfTI; both are recorded in the sidecar."""
    nii = tmp_path / "in.nii.gz"
    arr = np.random.default_rng(0).uniform(0, 100, (2, 24, 24)).astype(np.float32)
    medsr_api.save_image(medsr_api.MedImage(arr, spacing=(3.0, 1.0, 1.0)), nii)
    out = tmp_path / "out.nii.gz"
    res = medsr("upscale", str(nii), str(out), "--degradation", "kspace", "--modality", "MR")
    assert res.returncode == 0, res.stderr
    side = (
        json.loads(out.with_name("out.json").read_text())
        if out.with_name("out.json").exists()
        else None
    )
    if side is None:
        from medsr.io.sidecar import sidecar_path

        side = json.loads(sidecar_path(out).read_text())
    text = json.dumps(side)
    assert '"physics": "kspace"' in text and '"base_interpolator": "kspace"' in text
    assert '"applied": true' in text and '"consistency": "auto (projected)"' in text
    assert medsr_api.load_image(out).modality == "MR"


def test_medsr_warnings_are_one_plain_line(tmp_path):
    """A questionable header value warns as `warning: …`, not Python's file:line form."""
    import pydicom

    ds = pydicom.dcmread(corpus_path("CT_small.dcm"))
    ds.SliceThickness = -5
    path = tmp_path / "neg.dcm"
    ds.save_as(path)
    res = medsr("info", str(path))
    assert res.returncode == 0, res.stderr
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert lines and all(line.startswith("warning: ") for line in lines), res.stderr
    assert "SliceThickness" in lines[0] and ".py:" not in res.stderr


@pytest.mark.parametrize(
    "args, says",
    [
        (["upscale", "in.dcm", "x.dcm", "--scale", "abc"], "--scale"),
        (["upscale", "in.dcm", "x.dcm", "--bogus"], "No such option: --bogus"),
        (["upscale", "in.dcm"], "Missing argument"),
        (["frobnicate"], "No such command"),
    ],
)
def test_usage_errors_are_one_error_line(args, says):
    """Typer's own usage errors (an unknown option or command, a value of the wrong type, a
    missing argument) as one ``error:`` line and exit status 2, like medsr's errors."""
    res = medsr(*args)
    assert res.returncode == 2
    assert res.stderr.startswith("error: ") and res.stderr.count("\n") == 1, res.stderr
    assert says in res.stderr and "--help" in res.stderr


@pytest.mark.parametrize(
    ("name", "output", "says"),
    [
        (
            "anatomical.nii",
            "anat.dcm",
            "a DICOM series is written from a DICOM input only: write .nii.gz",
        ),
        ("anatomical.nii", "anat.png", "write .nii.gz or .tif"),
        ("example4d.nii.gz", "x.png", "not channels='time'; write .nii.gz"),
        ("example4d.nii.gz", "x.tif", "not channels='time'; write .nii.gz"),
        ("example4d.nii.gz", "x.dcm", "not channels='time'; write .nii.gz"),
    ],
)
def test_an_output_format_that_cannot_hold_the_image_is_refused_first(tmp_path, name, output, says):
    """Refused once the image is read, before the model runs, with advice that works: a NIfTI
    volume has no route to a DICOM series (a folder output keeps the input's format), and a 4-D
    image only to NIfTI (the writers' own messages named .tif and DICOM for it)."""
    res = medsr("upscale", str(corpus_path(name)), str(tmp_path / output), "--model", "fast-x2")
    assert res.returncode == 2 and res.stderr.count("\n") == 1 and says in res.stderr, res.stderr
    assert list(tmp_path.iterdir()) == []


def test_info_says_when_the_spacing_is_assumed():
    """RG3_UNCR.dcm states no pixel spacing: `info` printed 1 mm (and a world centre from it) as
    if measured; it now says the spacing is assumed. CT_small's is measured."""
    bare = json.loads(
        runner.invoke(app, ["info", str(corpus_path("RG3_UNCR.dcm")), "--json"]).output
    )
    ct = json.loads(runner.invoke(app, ["info", str(corpus_path("CT_small.dcm")), "--json"]).output)
    assert bare["spacing_assumed"] is True and ct["spacing_assumed"] is False


def test_python_dash_m_medsr_is_the_medsr_command_and_says_its_version():
    """``python -m medsr`` runs the same command (a user without the entry point on PATH), and
    ``--version`` names medsr's version with torch's."""
    from medsr._version import __version__

    run = subprocess.run(
        [sys.executable, "-m", "medsr", "--version"], capture_output=True, text=True, timeout=120
    )
    assert run.returncode == 0 and run.stdout.startswith(f"medsr {__version__} (torch ")
    bad = subprocess.run(
        [sys.executable, "-m", "medsr", "upscale", "/nonexistent/in.png", "/tmp/never.png"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert bad.returncode == 2 and bad.stderr.strip().splitlines() == [
        "error: input '/nonexistent/in.png' does not exist"
    ]


def test_info_says_the_stored_type_and_what_frames_are(tmp_path):
    """A 16-bit palette-colour ultrasound was called uint8 (the RGB it is read as), and a cine's
    time frames read as slices 1 mm apart: `info` gives the stored type, how it was read, and
    what the header's Frame Increment Pointer says the frames are."""

    def info(name: str | Path) -> dict:
        path = name if isinstance(name, Path) else corpus_path(name)
        res = runner.invoke(app, ["info", str(path), "--json"])
        assert res.exit_code == 0, res.output
        return json.loads(res.output)

    palette = info("gdcm-US-ALOKA-16.dcm")
    assert palette["stored_dtype"] == "uint16" and palette["channels"] == "RGB"
    assert palette["read_as"].startswith("RGB uint8 (palette colour")
    cine = info(short_cine(tmp_path))  # the corpus cine's header, 4 of its 120 frames
    assert cine["shape_zyx"][0] == 4
    assert cine["z_axis"].startswith(
        "4 time frames, 33.333 ms apart (Frame Increment Pointer: FrameTime), not slices"
    )
    assert "placeholder" in cine["z_axis"]
    assert (
        info("emri_small.dcm")["z_axis"]
        == "10 slices, 1.2 mm apart (SpacingBetweenSlices; no positions in the header)"
    )
    assert "placeholder" in info("OBXXXX1A_2frame.dcm")["z_axis"]
    for single in ("CT_small.dcm", "OBXXXX1A.dcm"):  # one frame: nothing to say
        assert "z_axis" not in info(single)
    assert (
        info("OBXXXX1A.dcm")["stored_dtype"] == "uint8"
        and info("CT_small.dcm")["stored_dtype"] == "int16"
    )


def test_info_shows_a_weights_files_card_without_loading_it(tmp_path):
    """`medsr info FILE.safetensors` said "not a format medsr reads": no command showed a
    weights file's card. It prints the essentials; --json the whole card (header only)."""
    from medsr.models.resolver import shipped_weights
    from medsr.models.weights import read_card

    path = shipped_weights()["srcnn-x2"]
    res = medsr("info", str(path))
    assert res.returncode == 0, res.stderr
    for label in ("summary", "intended use", "trained on", "validated on", "validation",
                  "degradation", "limitations"):  # fmt: skip
        assert label in res.stdout, label
    assert "vs bicubic" in res.stdout and "srcnn" in res.stdout
    res = medsr("info", str(path), "--json")
    assert res.returncode == 0 and json.loads(res.stdout) == read_card(path)
    res = medsr("info", str(path), "--series", "1.2.3")
    assert res.returncode == 2 and res.stderr.startswith("error: ") and "series" in res.stderr
    res = medsr("info", str(tmp_path / "missing.safetensors"))
    assert res.returncode == 2 and "does not exist" in res.stderr
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x00" * 16)
    res = medsr("info", str(bad))
    assert res.returncode == 2 and "Traceback" not in res.stderr


def test_models_says_why_a_name_is_listed_twice():
    """`interp-cnn` is an architecture (a recipe's model.name) and shipped weights (what
    --model interp-cnn runs): the listing says so instead of a bare duplicate."""
    from medsr.models.resolver import shipped_weights

    rows = json.loads(runner.invoke(app, ["models", "--json"]).output)
    names = [r["name"] for r in rows]
    twice = {n for n in names if names.count(n) > 1}
    assert twice and twice <= set(shipped_weights())
    for row in rows:
        if row["name"] in twice and row["kind"] == "architecture":
            assert "runs the shipped weights" in row["description"], row


def test_upscale_of_no_data_to_png_and_dicom_says_what_stands_there(tmp_path):
    """``medsr upscale nan.nii.gz out.png`` wrote 0 where the input held NaN (no data) without a
    word, as did ``out.dcm``: a measured value to anyone reading the file. Now the PNG holds a
    value no measured pixel holds, its sidecar and one warning line say how many pixels and
    which value, its PNG maps one line more; the DICOM states it as Pixel Padding Value (no
    warning: the file says it)."""
    import warnings

    import pydicom

    from medsr.errors import NoDataStoredWarning

    src = tmp_path / "nan.nii.gz"
    yy, xx = np.mgrid[:20, :18]
    arr = (100 + 20 * np.sin(yy / 3.0) * np.cos(xx / 4.0)).astype(np.float32)[None]
    arr[:, :, :5] = np.nan
    arr[0, 12, 12] = np.inf
    nonfinite = ~np.isfinite(arr)
    nib.save(nib.Nifti1Image(arr.transpose(2, 1, 0), np.eye(4)), src)
    res = medsr("upscale", str(src), str(tmp_path / "out.png"), "--model", "bicubic",
                "--maps", str(tmp_path / "maps"))  # fmt: skip
    assert res.returncode == 0, res.stderr
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(lines) == 2 and all(line.startswith("warning: ") for line in lines), res.stderr
    assert f"its {int(nonfinite.sum()) * 4} pixels where the source held none" in lines[0]
    assert "out.png" in lines[0] and "stored as 0" in lines[0]
    assert "maps in" in lines[1] and "consistency.png, uncertainty.png" in lines[1]
    record = json.loads((tmp_path / "out.json").read_text())["stored_as"]["no_data"]
    assert record["pixels"] == int(nonfinite.sum()) * 4 and record["reserved"] is True
    with warnings.catch_warnings():
        warnings.simplefilter("error", NoDataStoredWarning)
        res = runner.invoke(
            app, ["upscale", str(src), str(tmp_path / "out.dcm"), "--model", "bicubic"]
        )
    assert res.exit_code == 0, res.output
    ds = pydicom.dcmread(tmp_path / "out.dcm")
    padded = ds.pixel_array == ds.PixelPaddingValue
    np.testing.assert_array_equal(padded, np.kron(nonfinite[0], np.ones((2, 2))).astype(bool))


def _thick_volume(path, z: int = 7, gap: float = 2.0):
    """A NIfTI volume of ``z`` slices ``gap`` mm apart, 0.8 mm pixels (NIfTI order x, y, z)."""
    zz, yy, xx = np.mgrid[:z, :24, :24]
    data = (100 + 40 * np.sin(yy / 3.0 + zz / 1.3) * np.cos(xx / 4.0)).astype(np.float32)
    nib.save(nib.Nifti1Image(data.transpose(2, 1, 0), np.diag([0.8, 0.8, gap, 1.0])), str(path))
    return path


def test_upscale_through_plane_says_the_slice_spacing_it_achieved(tmp_path):
    """A target spacing is met as far as a whole number of slices fills the same field of view:
    1.3 mm asked of 7 slices 2 mm apart (14 mm) gives 11 slices 1.2727 mm apart. `medsr upscale
    --through-plane` said only "wrote …" (the spacing was in the sidecar alone, while `medsr
    interpolate` prints it); now it prints the shape and spacing, and the spacing achieved where
    it is not the one asked. ``upscale_file(grid_out=...)`` gives the same grid to Python."""
    src = _thick_volume(tmp_path / "thick.nii.gz")
    out = tmp_path / "thin.nii.gz"
    res = runner.invoke(
        app, ["upscale", str(src), str(out), "--through-plane", "--target-spacing", "1.3"]
    )
    assert res.exit_code == 0, res.output
    line = res.output.strip()
    assert line.startswith(f"wrote {out} (11x24x24, spacing (1.2727, 0.8, 0.8) mm"), line
    assert "slice spacing 1.2727 mm, not the 1.3 mm asked: 11 slices fill the same 14 mm" in line
    assert json.loads((tmp_path / "thin.json").read_text())["spacing_mm_zyx"][0] == pytest.approx(
        14 / 11
    )
    # a target met exactly: the grid alone
    res = runner.invoke(
        app, ["upscale", str(src), str(tmp_path / "one.nii.gz"), "--through-plane", "--scale", "2"]
    )
    assert res.exit_code == 0, res.output
    assert (
        res.output.strip()
        == f"wrote {tmp_path / 'one.nii.gz'} (14x24x24, spacing (1.0, 0.8, 0.8) mm)"
    )
    grid: dict = {}
    written = medsr_api.upscale_file(
        src, tmp_path / "api.nii.gz", through_plane=True, target_spacing=1.3, grid_out=grid
    )
    assert written == tmp_path / "api.nii.gz"  # still the path written
    assert grid["shape_zyx"] == [11, 24, 24]
    assert grid["slice_spacing_mm"] == pytest.approx(14 / 11)
    assert grid["spacing_mm_zyx"] == pytest.approx([14 / 11, 0.8, 0.8])


def test_info_gives_a_tilted_stack_s_slice_spacing_between_its_planes(tmp_path):
    """A gantry-tilted CT, slices 2.5 mm apart along their normal (SpacingBetweenSlices 2.5),
    positions 2.66 mm apart along the table: `medsr info` gave spacing_mm_zyx[0] 2.660444 (the
    step), for a classic series and an enhanced object ("4 slices, 2.66044 mm apart"); now the
    distance between the planes, with the step beside it as slice_step_mm."""
    from tests.conftest import make_tilted_ct_series
    from tests.io.enhanced import enhanced_ct, save

    def info(path) -> dict:
        res = runner.invoke(app, ["info", str(path), "--json"])
        assert res.exit_code == 0, res.output
        return json.loads(res.output)

    classic = info(make_tilted_ct_series(tmp_path / "tilted", gap=2.5, tilt_deg=20.0))
    assert classic["spacing_mm_zyx"] == pytest.approx([2.5, 0.661468, 0.661468])
    assert classic["slice_step_mm"] == pytest.approx(2.5 / np.cos(np.deg2rad(20.0)), abs=1e-6)
    straight = info(corpus_path("CT_small.dcm"))
    assert "slice_step_mm" not in straight

    ds = enhanced_ct(frames=4)  # 2.5 mm apart; tilted by 20° about x, stepping along z
    tilt = np.deg2rad(20.0)
    shared = ds.SharedFunctionalGroupsSequence[0]
    shared.PlaneOrientationSequence[0].ImageOrientationPatient = [
        1, 0, 0, 0, float(np.cos(tilt)), float(-np.sin(tilt))
    ]  # fmt: skip
    for k, frame in enumerate(ds.PerFrameFunctionalGroupsSequence):
        frame.PlanePositionSequence[0].ImagePositionPatient = [
            -32.0, -32.0, float(k * 2.5 / np.cos(tilt))
        ]  # fmt: skip
    enhanced = info(save(ds, tmp_path / "enhanced.dcm"))
    assert enhanced["spacing_mm_zyx"][0] == pytest.approx(2.5)
    assert enhanced["z_axis"] == "4 slices, 2.5 mm apart (positions in the header)"


def test_running_out_of_memory_is_one_error_line(tmp_path):
    """An input within the pixel ceiling can need more memory than is free: a .nii declaring
    1024×1024×600 int16 (sparse here, 1.2 GB; 2.4 GB once read as float32) read by a process
    limited to 1.5 GB of address space. ``medsr info`` ended in a MemoryError traceback, exit
    status 1; now one ``error:`` line that says what to do, exit status 2."""
    import resource

    import nibabel as nib

    hdr = nib.Nifti1Header()
    hdr.set_data_shape((1024, 1024, 600))
    hdr.set_data_dtype(np.int16)
    hdr.set_sform(np.eye(4), 1)
    big = tmp_path / "big.nii"
    with big.open("wb") as f:
        f.write(hdr.binaryblock.ljust(352, b"\0"))
        f.truncate(352 + 1024 * 1024 * 600 * 2)

    def limited() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (1536 << 20, 1536 << 20))

    res = subprocess.run(
        [sys.executable, "-c", "from medsr.cli import main; main()", "info", str(big)],
        capture_output=True, text=True, timeout=120, preexec_fn=limited,
    )  # fmt: skip
    lines = res.stderr.strip().splitlines()
    assert res.returncode == 2 and len(lines) == 1, res.stderr[-2000:]
    assert lines[0].startswith("error: out of memory") and "MEDSR_MAX_PIXELS" in lines[0]


@pytest.mark.parametrize(
    "args",
    [
        ["upscale", "{series}", "{series}/x2", "--model", "bicubic"],
        ["upscale", "{series}", "{out}", "--model", "bicubic", "--maps", "{series}/maps"],
        ["degrade", "{series}", "{series}/lr", "--kind", "kspace"],
        ["interpolate", "{series}", "{series}/ip"],
    ],
)
def test_output_inside_the_input_series_folder_is_refused(tmp_path, corpus, args):
    """``medsr upscale series/ series/x2`` wrote the derived series into the input folder, which
    then held two series: ``medsr info series/`` and the same command again failed with "holds
    2 series". An output (or maps folder) inside a folder input is one error line, exit 2, and
    the folder is left as it was."""
    series = tmp_path / "series"
    series.mkdir()
    (series / "MR_small.dcm").write_bytes(corpus("MR_small.dcm").read_bytes())
    before = sorted(p.name for p in series.iterdir())
    paths = {"series": series, "out": tmp_path / "out"}
    res = medsr(*[a.format(**paths) for a in args])
    assert res.returncode == 2, res.stderr
    assert res.stderr.startswith("error: the output ") and "inside the input folder" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1
    assert sorted(p.name for p in series.iterdir()) == before
    assert not (tmp_path / "out").exists()


def test_degrade_series_picks_one_of_two_series(tmp_path):
    """A folder of two series: `medsr degrade` refused it with "Choose one with --series KEY",
    an option it did not have ("No such option: --series"): a dead end. `--series` reads the
    one named, as `medsr upscale --series` does (``degrade_file(series_uid=)`` in Python)."""
    import pydicom

    from medsr.api import degrade_file
    from medsr.errors import SeriesMismatchError
    from medsr.io.dicom import series_key
    from tests.conftest import make_ct_series

    folder = tmp_path / "two"
    sizes = (2, 3)
    keys = [
        series_key(pydicom.dcmread(make_ct_series(folder, n, tag=t)[0]).SeriesInstanceUID)
        for n, t in zip(sizes, "ab", strict=True)
    ]
    res = medsr("degrade", str(folder), str(tmp_path / "lr.nii.gz"), "--kind", "bicubic")
    assert res.returncode == 2 and "Choose one with --series KEY" in res.stderr, res.stderr
    for key, n in zip(keys, sizes, strict=True):
        out = tmp_path / f"lr_{key}.nii.gz"
        res = runner.invoke(
            app, ["degrade", str(folder), str(out), "--kind", "bicubic", "--series", key]
        )
        assert res.exit_code == 0, res.output
        assert medsr_api.load_image(out).spatial_shape == (n, 64, 64)  # the series named
    with pytest.raises(SeriesMismatchError, match="series '0badc0de' is not in 'two'"):
        degrade_file(folder, tmp_path / "x.nii.gz", kind="bicubic", series_uid="0badc0de")
    assert not (tmp_path / "lr.nii.gz").exists() and not (tmp_path / "x.nii.gz").exists()


@pytest.mark.parametrize("command", ["info", "upscale", "degrade", "interpolate"])
def test_a_series_choice_on_a_file_that_holds_no_series_is_refused(tmp_path, command):
    """`--series KEY:2` on a 4-D NIfTI (or a PNG) was ignored without a word: the user who
    asked for one time point got all of them. A series choice picks among a DICOM folder's
    series and stacks; on any other file it is one `error:` line, nothing written."""
    from tests.conftest import corpus_path

    src = corpus_path("example4d.nii.gz")
    out = tmp_path / "out.nii.gz"
    args = [command, str(src)] + ([] if command == "info" else [str(out)])
    res = medsr(*args, "--series", ":2")
    lines = res.stderr.strip().splitlines()
    assert res.returncode == 2 and len(lines) == 1, res.stderr
    assert lines[0] == (
        "error: a series choice (--series) picks a series, a stack or every time point of a "
        "DICOM folder; 'example4d.nii.gz' is a NIfTI file, one image: leave the choice out"
    )
    assert not out.exists()
