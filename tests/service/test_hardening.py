"""Issue 22, service items: one JSON 413 for every oversized upload, a case-insensitive bearer
scheme, slow clients disconnected, uploads decoded in a killable process under a time limit,
and a bounded shutdown that leaves no job files behind.

Servers run in a thread on a loopback port with the options ``medsr serve`` uses, and
deadlines of a fraction of a second.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

uvicorn = pytest.importorskip("uvicorn")

from medsr.service.app import Settings, create_app  # noqa: E402
from medsr.service.decode import UploadDecoder  # noqa: E402
from medsr.service.server import GuardedH11Protocol, uvicorn_options  # noqa: E402
from tests.service import _slow_readers  # noqa: E402
from tests.service.conftest import submit, wait_job  # noqa: E402

JOB = "/api/v1/jobs"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def serve(tmp_path, **settings) -> Iterator[tuple[int, object, threading.Thread]]:
    """A started uvicorn server with ``medsr serve``'s options; yields (port, server, thread)."""
    settings.setdefault("work_dir", tmp_path / "work")
    settings.setdefault("pretrained", False)
    s = Settings(port=_free_port(), **settings)
    app = create_app(s)
    config = uvicorn.Config(app, log_level="warning", **uvicorn_options(s))
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    try:
        yield s.port, server, thread
    finally:
        server.should_exit = True
        thread.join(timeout=15)


def _connect(port: int) -> socket.socket:
    c = socket.create_connection(("127.0.0.1", port), timeout=5)
    return c


def _read_all(c: socket.socket, timeout: float = 5) -> bytes:
    c.settimeout(timeout)
    data = b""
    while True:
        try:
            chunk = c.recv(65536)
        except (ConnectionResetError, TimeoutError):
            break
        if not chunk:
            break
        data += chunk
    return data


def _closed_by_server(c: socket.socket, timeout: float) -> bool:
    """True when the server closes ``c`` (EOF or reset) within ``timeout`` s without answering."""
    c.settimeout(timeout)
    try:
        return c.recv(65536) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def _response(raw: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(
        (k.strip().lower(), v.strip()) for k, v in (ln.split(":", 1) for ln in lines[1:])
    )
    return int(lines[0].split()[1]), headers, body


def _multipart(payload: bytes, name: bytes = b"a.png") -> tuple[bytes, bytes]:
    body = (
        b'--xx\r\nContent-Disposition: form-data; name="file"; filename="%s"\r\n\r\n' % name
        + payload
        + b"\r\n--xx--\r\n"
    )
    return body, b"multipart/form-data; boundary=xx"


# ====================================================================== (9) one JSON 413
def test_content_length_and_chunked_uploads_get_the_same_json_413(tmp_path):
    """Issue 22.9: a Content-Length over --max-upload-mb got text/plain; chunked got JSON."""
    body, ctype = _multipart(b"\0" * 200_000)
    with serve(tmp_path, max_upload_mb=0.05) as (port, _, _):
        answers = []
        # declared too large: answered before the body is sent
        c = _connect(port)
        c.sendall(
            b"POST /api/v1/jobs HTTP/1.1\r\nHost: x\r\nContent-Type: " + ctype
            + b"\r\nContent-Length: 99999999\r\n\r\n"
        )  # fmt: skip
        answers.append(_response(_read_all(c)))
        c.close()
        # declared too large, body sent anyway
        c = _connect(port)
        c.sendall(
            b"POST /api/v1/jobs HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: "
            + ctype + b"\r\nContent-Length: %d\r\n\r\n" % len(body) + body
        )  # fmt: skip
        answers.append(_response(_read_all(c)))
        c.close()
        # chunked: the size is only known while streaming
        c = _connect(port)
        chunks = b"".join(
            b"%x\r\n" % len(body[i : i + 8192]) + body[i : i + 8192] + b"\r\n"
            for i in range(0, len(body), 8192)
        )
        c.sendall(
            b"POST /api/v1/jobs HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: "
            + ctype + b"\r\nTransfer-Encoding: chunked\r\n\r\n" + chunks + b"0\r\n\r\n"
        )  # fmt: skip
        answers.append(_response(_read_all(c)))
        c.close()
    bodies = set()
    for status, headers, raw in answers:
        assert status == 413
        assert headers["content-type"] == "application/json", headers
        doc = json.loads(raw)
        assert doc["type"] == "UploadTooLargeError" and "0.05 MB" in doc["detail"]
        bodies.add(raw)
    assert len(bodies) == 1  # the very same answer


def test_file_part_over_limit_same_json_413(make_client, ct_small_bytes):
    """A body within the envelope whose file part is over the limit: the same 413 body."""
    client = make_client(max_upload_mb=0.02)
    r = submit(client, "CT_small.dcm", ct_small_bytes)  # 39 KB file, 20 KB limit
    assert r.status_code == 413 and r.headers["content-type"] == "application/json"
    assert r.json() == {
        "detail": "the upload is larger than this server's limit of 0.02 MB",
        "type": "UploadTooLargeError",
    }
    assert client.app.state.service.queue.pending == 0


# ====================================================================== (10) bearer, slow clients
def test_bearer_scheme_is_case_insensitive(make_client):
    client = make_client(token="s3cret")
    for value in ("Bearer s3cret", "bearer s3cret", "BEARER s3cret", "bEaReR   s3cret"):
        r = client.get("/api/v1/info", headers={"Authorization": value})
        assert r.status_code == 200, value
    for value in ("Basic s3cret", "Bearers3cret", "bearer", "bearer S3CRET", "s3cret"):
        r = client.get("/api/v1/info", headers={"Authorization": value})
        assert r.status_code == 401, value


def test_slow_clients_are_disconnected(tmp_path):
    """Slowloris (headers a byte at a time) and slow bodies are closed; others are served."""
    with serve(tmp_path, header_timeout_s=0.4, body_timeout_s=0.4, body_min_rate=1000) as (
        port,
        _,
        _,
    ):
        t0 = time.monotonic()
        idle = _connect(port)  # connects, sends nothing
        slow = _connect(port)
        slow.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # never finishes its headers
        body_conn = _connect(port)
        body_conn.sendall(
            b"POST /api/v1/jobs HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; "
            b"boundary=xx\r\nContent-Length: 100000\r\n\r\n--xx\r\n"
        )
        dribble_until = time.monotonic() + 1.5
        # a well-behaved client is served meanwhile
        ok = _connect(port)
        ok.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert _response(_read_all(ok))[0] == 200
        while time.monotonic() < dribble_until:  # a few bytes per tick: far below 1000 B/s
            try:
                slow.sendall(b"X")
                body_conn.sendall(b"a")
            except OSError:
                break
            time.sleep(0.1)
        assert _closed_by_server(idle, 3)
        assert _closed_by_server(slow, 3)
        assert _closed_by_server(body_conn, 3)
        assert time.monotonic() - t0 < 6
        for c in (idle, slow, body_conn):
            c.close()


def test_serve_sets_uvicorn_limits():
    opts = uvicorn_options(Settings(header_timeout_s=7, shutdown_grace_s=3))
    assert issubclass(opts["http"], GuardedH11Protocol) and opts["http"].header_timeout_s == 7
    assert opts["timeout_keep_alive"] == 5
    assert opts["h11_max_incomplete_event_size"] == 16 * 1024
    assert opts["timeout_graceful_shutdown"] == 3 and opts["limit_concurrency"] >= 64
    uvicorn.Config(create_app(Settings(pretrained=False)), **opts).load()  # uvicorn accepts them


# ====================================================================== (3) decoding, shutdown
@pytest.mark.parametrize(
    ("reader", "words"),
    [("hang", "within 0.5 s"), ("crash", "could not be read"), ("panic", "PanicException")],
)
def test_decoding_is_bounded_and_isolated(make_client, png_bytes, reader, words):
    """A hanging or crashing reader costs one child process, not a request thread or the
    server: the upload gets a 422 at the deadline, nothing is left behind."""
    client = make_client()
    service = client.app.state.service
    service.decoder = UploadDecoder(0.5, loader=getattr(_slow_readers, reader))
    t0 = time.monotonic()
    r = submit(client, "scan.png", png_bytes)
    assert time.monotonic() - t0 < 5
    assert r.status_code == 422, r.text
    assert words in r.json()["detail"] and "scan.png" in r.json()["detail"]
    assert service.queue.pending == 0 and list(service.storage.root.iterdir()) == []
    assert not service.decoder._children
    assert client.get("/healthz").status_code == 200


def test_queue_place_is_taken_before_decoding(make_client, png_bytes):
    """Uploads beyond max_pending are refused (503) while earlier ones are still decoding."""
    client = make_client(max_pending=1)
    service = client.app.state.service
    service.decoder = UploadDecoder(1.5, loader=_slow_readers.hang)
    first = {}
    t = threading.Thread(target=lambda: first.update(r=submit(client, "a.png", png_bytes)))
    t.start()
    deadline = time.monotonic() + 5
    while service.queue.pending == 0 and time.monotonic() < deadline:
        time.sleep(0.02)
    busy = submit(client, "b.png", png_bytes)
    assert busy.status_code == 503
    t.join(10)
    assert first["r"].status_code == 422 and service.queue.pending == 0


def test_shutdown_is_bounded_and_removes_job_files(make_client, monkeypatch, png_bytes, tmp_path):
    """Running jobs get the grace period, queued ones are cancelled, every job file goes."""
    import medsr.service.jobs as service_jobs

    release = threading.Event()
    real = service_jobs.process

    def stuck(job, image, **kwargs):
        release.wait(30)
        real(job, image, **kwargs)

    monkeypatch.setattr(service_jobs, "process", stuck)
    work = tmp_path / "w"
    client = make_client(work_dir=work, shutdown_grace_s=0.3, max_pending=4)
    running = submit(client, "a.png", png_bytes).json()
    queued = submit(client, "b.png", png_bytes).json()
    service = client.app.state.service
    assert len(list(service.storage.root.iterdir())) == 2  # in the service's folder in `work`
    t0 = time.monotonic()
    client.__exit__(None, None, None)
    assert time.monotonic() - t0 < 3
    assert list(work.iterdir()) == []
    jobs = {j.id: j for j in (service.queue.get(running["id"]), service.queue.get(queued["id"]))}
    release.set()  # the stuck job wakes up after shutdown: it must stop, not write
    deadline = time.monotonic() + 5
    while not all(j.finished for j in jobs.values()) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert all(j.state == "failed" for j in jobs.values())
    assert jobs[queued["id"]].error["type"] == "JobCancelledError"
    assert list(work.iterdir()) == []


def test_sigterm_shutdown_is_bounded(tmp_path, png_bytes, monkeypatch):
    """What SIGTERM does to `medsr serve` (uvicorn's should_exit), with a slow client connected
    and a job running: the server is gone within the grace periods and so are the job files."""
    import medsr.service.jobs as service_jobs

    release = threading.Event()
    monkeypatch.setattr(service_jobs, "process", lambda job, image, **kw: release.wait(30))
    work = tmp_path / "w"
    with serve(tmp_path, work_dir=work, shutdown_grace_s=0.5, header_timeout_s=60) as (
        port,
        server,
        thread,
    ):
        body, ctype = _multipart(png_bytes)
        c = _connect(port)
        c.sendall(
            b"POST /api/v1/jobs HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: "
            + ctype + b"\r\nContent-Length: %d\r\n\r\n" % len(body) + body
        )  # fmt: skip
        status, _, raw = _response(_read_all(c, 10))
        c.close()
        assert status == 202, raw
        assert len(list(work.iterdir())) == 1
        hold = _connect(port)
        hold.sendall(b"GET /healthz HTTP/1.1\r\n")  # half a request, held open
        t0 = time.monotonic()
        server.should_exit = True
        thread.join(timeout=10)
        assert not thread.is_alive()
        assert time.monotonic() - t0 < 4
        assert not work.exists() or list(work.iterdir()) == []
        hold.close()
    release.set()


def test_pretrained_default_model(make_client, png_bytes):
    """With the shipped models offered, 'default' is default-x{scale}; slice interpolators and
    bare architectures are not offered."""
    client = make_client(pretrained=True)
    names = {m["name"]: m for m in client.get("/api/v1/models").json()}
    assert names["default-x2"]["learned"] and names["default-x2"]["scales"] == [2]
    assert names["default-x2"]["checksum"].startswith("sha256:")
    assert "interp-cnn" not in names and "rlfn" not in names
    job = wait_job(client, submit(client, "a.png", png_bytes, scale=2).json()["id"])
    assert job["state"] == "done", job
    assert job["model"] == "default-x2" and job["provenance"]["model"] == "default-x2"
    r = submit(client, "a.png", png_bytes, model="default-x2", scale=3)
    assert r.status_code == 422 and "×2" in r.json()["detail"]
    r = submit(client, "a.png", png_bytes, model="/etc/passwd.safetensors")
    assert r.status_code == 422 and "unknown model" in r.json()["detail"]
