"""PACS helpers that need no server: durations, filters, derivation tokens, URL scrubbing."""

from __future__ import annotations

import pytest

from medsr.errors import InvalidParameterError
from medsr.io.dicom import series_key
from medsr.pacs.bridge import (
    SeriesInfo,
    derivation_token,
    describe_filters,
    parse_filters,
    parse_interval,
)
from medsr.pacs.client import PacsClient, check_uid, safe_url
from medsr.pacs.errors import PacsInvalidUIDError


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("30s", 30),
        ("5m", 300),
        ("1h", 3600),
        ("500ms", 0.5),
        ("2", 2),
        (1.5, 1.5),
        (" 10 min ", 600),
    ],
)
def test_parse_interval(text, seconds):
    assert parse_interval(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "soon", "-1s", "0", "5d"])
def test_parse_interval_rejects(text):
    with pytest.raises(InvalidParameterError):
        parse_interval(text)


def test_describe_filters_hides_uids_and_patient_attributes():
    """``pacs watch`` logged its filters as typed (``watching … (StudyInstanceUID=1.2.3…,
    PatientID=…)``): UIDs are shown by key, patient attributes not at all."""
    uid1, uid2 = "1.2.826.0.1.3680043.8.498.1", "1.2.826.0.1.3680043.8.498.2"
    filters = parse_filters(
        ["modality=CT,MR", "StudyDate=20240101-", f"StudyInstanceUID={uid1},{uid2}",
         "PatientID=4MR1", "PatientName=CompressedSamples^MR1", "PatientBirthDate=19700101",
         "AccessionNumber=A123", "00091001=private", "00080070=ACME"]
    )  # fmt: skip
    text = describe_filters(filters)
    assert text == (
        f"Modality=CT,MR, StudyDate=20240101-, StudyInstanceUID={series_key(uid1)},"
        f"{series_key(uid2)}, PatientID=…, PatientName=…, PatientBirthDate=…, "
        "AccessionNumber=…, 00091001=…, 00080070=ACME"
    )
    assert describe_filters({}) == "all series"


def test_parse_filters():
    assert parse_filters(["modality=ct", "StudyDate=20240101-", "00080070=ACME"]) == {
        "Modality": "CT",
        "StudyDate": "20240101-",
        "00080070": "ACME",
    }
    for bad in (["modality"], ["=CT"], ["NoSuchKeyword=1"], ["modality="]):
        with pytest.raises(InvalidParameterError):
            parse_filters(bad)


def test_derivation_token_is_stable_and_recognised(tmp_path):
    token, key = derivation_token("1.2.3", "bicubic", 2)
    assert token == f" [medsr bicubic x2 {key}]" and len(key) == 8
    assert derivation_token("1.2.3", "BICUBIC", 2)[1] == key
    assert derivation_token("1.2.3", "bicubic", 3)[1] != key
    assert derivation_token("1.2.4", "bicubic", 2)[1] != key
    from tests.safeguards.conftest import make_weights

    weights = make_weights(tmp_path / "my model.safetensors")
    t1, k1 = derivation_token("1.2.3", weights, 2)
    assert t1.startswith(" [medsr my-model x2 ")
    make_weights(
        weights, modalities=("CT",)
    )  # other weights under the same name: another derivation
    assert derivation_token("1.2.3", weights, 2)[1] != k1
    info = SeriesInfo("1.2", "1.2.5", "CT", "Head 1mm" + token, 1001, 3)
    assert info.derived_key == key
    plus, k_plus = derivation_token(
        "1.2.3", "bicubic", 2, ensemble=True
    )  # another output: another key
    assert plus == f" [medsr bicubic+ x2 {k_plus}]" and k_plus != key
    assert SeriesInfo("1.2", "1.2.6", "CT", "Head 1mm" + plus, 1002, 3).derived_key == k_plus
    assert SeriesInfo("1.2", "1.2.3", "CT", "Head 1mm", 1, 3).derived_key is None
    # a series derived from a derived series: its own token is the last one (the first is its
    # source's, which made `upscale` of the original report it as the existing derivation)
    again, k_again = derivation_token("1.2.6", "bicubic", 2)
    twice = SeriesInfo("1.2", "1.2.7", "CT", "Head 1mm" + plus + again, 1003, 3)
    assert twice.derived_key == k_again != k_plus


def test_uids_and_urls():
    assert check_uid(" 1.2.840.10008 ") == "1.2.840.10008"
    assert check_uid("05fa52f0e599") == "05fa52f0e599"  # non-conformant but real: accepted
    for bad in ("", "1.2/3", "1.2?x=1", "1 2", "9" * 65):
        with pytest.raises(PacsInvalidUIDError):
            check_uid(bad)
    assert safe_url("https://bob:pw@pacs.example.org:8443/dicom-web?x=1") == (
        "https://pacs.example.org:8443/dicom-web"
    )
    client = PacsClient("https://bob:pw@pacs.example.org/dicom-web")
    # credentials from the URL, sent as UTF-8 (RFC 7617; requests would send text as Latin-1)
    assert client.session.auth == (b"bob", b"pw") and "pw" not in repr(client)
    assert client.rest_url == "https://pacs.example.org"
    with pytest.raises(InvalidParameterError, match="http:// or https://"):
        PacsClient("ftp://pacs")
    with pytest.raises(InvalidParameterError, match="not both"):
        PacsClient("http://pacs/dicom-web", user="a", password="b", token="t")
    with pytest.raises(InvalidParameterError, match="both a user and a password"):
        PacsClient("http://pacs/dicom-web", user="a")


def test_malformed_urls_are_one_clear_error():
    """A URL urllib cannot parse (an unclosed IPv6 bracket, a port that is not a number or is
    beyond 65535) was a traceback from urllib's bare ValueError; the password is never shown.
    Credentials in the URL are percent-decoded (RFC 3986), and an IPv6 host keeps its brackets."""
    for url, why in (
        ("http://[::1/dicom-web", "Invalid IPv6 URL"),
        ("http://bob:hunter2@pacs:abc/dicom-web", "could not be cast to integer"),
        ("http://pacs:99999/dicom-web", "out of range"),
    ):
        with pytest.raises(InvalidParameterError, match="is not a valid URL") as info:
            PacsClient(url)
        assert why in str(info.value) and "hunter2" not in str(info.value)
    client = PacsClient("http://b%40b:p%40ss%3Aw%C3%B6rd@[::1]:8042/dicom-web")
    assert client.session.auth == (b"b@b", "p@ss:wörd".encode())
    assert client.url == client.display_url == "http://[::1]:8042/dicom-web"
