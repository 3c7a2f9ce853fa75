"""A thin, robust wrapper over dicomweb-client's :class:`~dicomweb_client.api.DICOMwebClient`.

What it adds to the plain client:

* **authentication**: HTTP basic (``user``/``password``) or a bearer token (``token``), on a
  :class:`requests.Session` shared by every request;
* **timeouts** on every request, and **retries with exponential backoff** on connection errors,
  read timeouts and HTTP 429/500/502/503/504 (urllib3 ``Retry`` mounted on the session; the
  client's own ``retrying`` loop is switched off so that the two do not multiply);
* **clear errors**: every failure becomes a :mod:`medsr.pacs.errors` exception whose message
  names the server (without credentials) and the study/series by the key of its UID
  (:func:`uid_key`), never a traceback from ``requests``;
* **STOW-RS outcome parsing**: :meth:`PacsClient.store` returns which SOP instances were
  stored and which failed (with the reason), whether the server answered 200, 202 or 409;
* **cleanup**: :meth:`PacsClient.delete_series` removes a (partial) series through DICOMweb
  DELETE or, for Orthanc, its REST API (``/tools/lookup`` then ``DELETE /series/{id}``).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import SplitResult, unquote, urlsplit, urlunsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from medsr.errors import InvalidParameterError, OutputWriteError, is_fatal, scrub
from medsr.pacs.errors import (
    PacsAuthError,
    PacsError,
    PacsInvalidUIDError,
    PacsNotFoundError,
    PacsUnreachableError,
)

__all__ = [
    "RETRY_STATUSES",
    "PacsClient",
    "StoreOutcome",
    "check_uid",
    "connect",
    "safe_url",
    "uid_key",
]

T = TypeVar("T")

#: HTTP statuses retried with backoff (rate limiting and transient server errors).
RETRY_STATUSES = (429, 500, 502, 503, 504)
#: HTTP statuses a wrong ``--url`` answers (no such path, a query it does not take)
_NOT_A_ROOT_STATUSES = (400, 404, 405)

_READ_CHUNK = 4 << 20  # bytes per read when streaming WADO-RS answers
# digits and dots in the standard; real archives also hold hex or dashed UIDs, so only what
# would break a URL path (and over-long values) is refused
_UID_RE = re.compile(r"^[0-9A-Za-z._-]+$")

#: QIDO-RS fields requested for every series (all series-level; no patient attributes).
SERIES_FIELDS = (
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "Modality",
    "SeriesDescription",
    "SeriesNumber",
    "NumberOfSeriesRelatedInstances",
)


def check_uid(uid: str, what: str = "UID") -> str:
    """Return ``uid`` stripped, or raise :class:`PacsInvalidUIDError` if it is not a DICOM UID."""
    value = str(uid).strip()
    if not value or len(value) > 64 or not _UID_RE.match(value):
        shown = value if len(value) <= 80 else value[:80] + "…"
        raise PacsInvalidUIDError(
            f"{what} {shown!r} is not a DICOM UID (digits and dots, at most 64 characters)"
        )
    return value


def uid_key(uid: str) -> str:
    """How messages, progress lines and logs name a study, series or instance: the 8-character
    key of its UID (:func:`medsr.io.dicom.series_key`, also accepted by ``--series``), never the
    UID itself (house rule: no patient data in logs, hashed UIDs only)."""
    from medsr.io.dicom.header import series_key

    return series_key(uid)


def _split(url: str) -> tuple[SplitResult, str]:
    """``(parts, host[:port])`` of ``url`` (an IPv6 address in brackets), or
    :class:`InvalidParameterError` for a URL that cannot be parsed (an unclosed ``[``, a port
    that is not a number or beyond 65535): urllib raised a bare ValueError, a traceback."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:  # the message names the part, never the credentials
        raise InvalidParameterError(
            f"--url is not a valid URL ({exc}): give the DICOMweb root, e.g. "
            "http://localhost:8042/dicom-web"
        ) from None
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    return parts, (f"{host}:{port}" if port is not None else host)


def safe_url(url: str) -> str:
    """``url`` without user:password and query string, for messages and logs."""
    parts, host = _split(url)
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


class _Session(requests.Session):
    """A session whose own ``verify`` (``False``, or a CA bundle) wins over the environment.

    requests lets ``REQUESTS_CA_BUNDLE``/``CURL_CA_BUNDLE`` replace a session's ``verify`` for
    every request that does not pass one (psf/requests#3829), and dicomweb-client passes none:
    where those variables are set (many servers and containers), ``--insecure`` still verified
    and a CA bundle given to medsr was ignored. With ``verify=True`` the environment still
    chooses the bundle, as requests documents.
    """

    def merge_environment_settings(
        self, url: Any, proxies: Any, stream: Any, verify: Any, cert: Any
    ) -> dict[str, Any]:
        settings = super().merge_environment_settings(url, proxies, stream, verify, cert)
        if verify is None and self.verify is not True:
            settings["verify"] = self.verify
        return settings


def _check_verify(verify: bool | str | Path) -> bool | str:
    """``verify`` as requests takes it, a CA bundle checked first: a missing or unreadable file
    raised deep inside requests ("Could not find a suitable TLS CA certificate bundle") as a
    traceback, a file without certificates as a TLS error blaming the server. With ``True``,
    a ``REQUESTS_CA_BUNDLE``/``CURL_CA_BUNDLE`` that names no file is said the same way."""
    import os

    if verify is False:
        return False
    if verify is True:
        for name in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):
            env = os.environ.get(name)
            if env:
                _check_ca_path(Path(env), f"{name}={env!r}")
                return True
        return True
    path = Path(verify).expanduser()
    _check_ca_path(path, f"--ca-bundle '{path}'")
    return str(path)


def _check_ca_path(path: Path, what: str) -> None:
    if path.is_dir():  # a folder of hashed certificates (c_rehash), as requests accepts
        return
    try:
        head = path.read_bytes()[: 1 << 22]
    except FileNotFoundError:
        raise InvalidParameterError(
            f"{what}: no such file (give a PEM file of CA certificates)"
        ) from None
    except OSError as exc:
        raise InvalidParameterError(
            f"{what} cannot be read ({type(exc).__name__}): give a PEM file of CA certificates"
        ) from None
    if b"-----BEGIN CERTIFICATE-----" not in head:
        raise InvalidParameterError(
            f"{what} holds no PEM certificate ('-----BEGIN CERTIFICATE-----'): give a PEM file "
            "of CA certificates"
        )


class _BearerAuth(requests.auth.AuthBase):
    def __init__(self, token: str) -> None:
        self.token = token

    def __call__(self, r: requests.PreparedRequest) -> requests.PreparedRequest:
        r.headers["Authorization"] = f"Bearer {self.token}"
        return r


def _check_token(token: str) -> str:
    """``token`` as a bearer credential, or a clear error that never shows the token: an HTTP
    header carries visible ASCII only (RFC 6750's tokens are letters, digits and ``-._~+/=``);
    a character beyond Latin-1 failed as "an answer medsr cannot read" from the server."""
    token = token.strip()
    if not token or not all("!" <= c <= "~" for c in token):
        raise InvalidParameterError(
            "the bearer token holds characters an HTTP header cannot carry (only visible ASCII: "
            "no accents, ellipses, spaces or control characters): pass the token itself, e.g. "
            '--token "$(gcloud auth print-access-token)"'
        )
    return token


def _basic_auth(user: str, password: str) -> tuple[bytes, bytes]:
    """HTTP basic credentials as UTF-8 bytes (RFC 7617's charset, what Orthanc compares): given
    as text, requests encodes them as Latin-1, so a right password such as 'pässwörd' was refused
    (HTTP 401) and one with a character beyond Latin-1 failed as "an answer medsr cannot read"."""
    if ":" in user:
        raise InvalidParameterError(
            "a user name for HTTP basic authentication cannot contain ':' (RFC 7617)"
        )
    return user.encode("utf-8"), password.encode("utf-8")


@dataclass
class StoreOutcome:
    """What a STOW-RS request did: SOP Instance UIDs stored, and the failed ones with a reason."""

    stored: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)


def _value(item: dict[str, Any], tag: str) -> Any:
    """First value of ``tag`` (8 hex digits) in a DICOM JSON object, or None."""
    elem = item.get(tag) or {}
    values = elem.get("Value") or []
    if not values:
        return None
    v = values[0]
    if isinstance(v, dict):  # person name
        return v.get("Alphabetic")
    return v


class PacsClient:
    """A DICOMweb connection: QIDO-RS search, WADO-RS retrieve, STOW-RS store, cleanup.

    Args:
        url: the DICOMweb root, e.g. ``http://localhost:8042/dicom-web`` (Orthanc),
            ``https://pacs.example.org/dcm4chee-arc/aets/DCM4CHEE/rs`` (dcm4chee),
            ``https://healthcare.googleapis.com/v1/projects/P/locations/L/datasets/D/dicomStores/S/dicomWeb``.
        user, password: HTTP basic authentication.
        token: bearer token (OAuth2 access token), instead of user/password.
        timeout: seconds to wait for the server to connect and for each read.
        retries: how many times a request is retried after a connection error, a read timeout
            or HTTP 429/5xx (exponential backoff: ``backoff × 2^(n-1)`` seconds between tries).
        backoff: backoff factor in seconds (0 retries at once).
        verify: check TLS certificates (``False`` only for a test server), or the path of a PEM
            CA bundle (a hospital's private CA; checked at once). ``True``: the system's CAs, or
            ``REQUESTS_CA_BUNDLE``/``CURL_CA_BUNDLE`` when set. ``False`` and a path win over
            those variables.
        rest_url: Orthanc REST root used to delete a partial series (Orthanc's DICOMweb plugin
            has no DELETE); by default the URL without a trailing ``/dicom-web``.
        session: a ready :class:`requests.Session` (auth arguments are then applied to it).
    """

    def __init__(
        self,
        url: str,
        *,
        user: str | None = None,
        password: str | None = None,
        token: str | None = None,
        timeout: float = 30.0,
        retries: int = 3,
        backoff: float = 0.5,
        verify: bool | str | Path = True,
        rest_url: str | None = None,
        session: requests.Session | None = None,
    ) -> None:
        url = str(url).strip().rstrip("/")
        parts, netloc = _split(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise InvalidParameterError(
                f"--url must be an http:// or https:// DICOMweb root, got {safe_url(url)!r} "
                "(e.g. http://localhost:8042/dicom-web)"
            )
        if token and (user or password):
            raise InvalidParameterError(
                "give either a bearer token or a user and password, not both"
            )
        if (user is None) != (password is None):
            raise InvalidParameterError("basic authentication needs both a user and a password")
        if timeout <= 0:
            raise InvalidParameterError(f"timeout must be positive, got {timeout}")
        if retries < 0:
            raise InvalidParameterError(f"retries must be zero or more, got {retries}")
        self.url = url
        self.display_url = safe_url(url)
        self.timeout = float(timeout)
        self.retries = int(retries)
        self.backoff = float(backoff)
        if parts.username and not (user or token):  # credentials inside the URL
            # percent-encoded there (RFC 3986: a password with '@', ':' or 'ä' can only be
            # written so); they were sent encoded, and the right password was refused (HTTP 401)
            user, password = unquote(parts.username), unquote(parts.password or "")
            url = urlunsplit((parts.scheme, netloc, parts.path, parts.query, ""))
            self.url = url
        verify = _check_verify(verify)
        self.session = session or _Session()
        if token:
            self.session.auth = _BearerAuth(_check_token(token))
        elif user:
            self.session.auth = _basic_auth(user, password or "")
        self.session.verify = verify
        self.session.headers.setdefault("User-Agent", f"medsr-pacs/{_version()}")
        retry = Retry(
            total=self.retries,
            connect=self.retries,
            read=self.retries,
            status=self.retries,
            other=0,
            backoff_factor=self.backoff,
            status_forcelist=RETRY_STATUSES,
            allowed_methods=None,  # STOW is safe to repeat: the SOP Instance UIDs are fixed
            raise_on_status=False,
            respect_retry_after_header=True,
        )
        adapter = HTTPAdapter(max_retries=retry)
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)
        if rest_url is None and parts.path.rstrip("/").endswith("/dicom-web"):
            rest_url = self.url[: self.url.rstrip("/").rfind("/dicom-web")]
        self.rest_url = rest_url.rstrip("/") if rest_url else None

        from dicomweb_client.api import DICOMwebClient

        try:
            self._dw = DICOMwebClient(
                self.url, session=self.session, timeout=self.timeout, permissive_uid=True
            )
        except ValueError as exc:
            raise InvalidParameterError(
                f"--url {self.display_url!r} is not usable: {exc}"
            ) from None
        self._dw.set_http_retry_params(retry=False)  # urllib3 retries instead (5xx + connection)
        self._dw.set_chunk_size(_READ_CHUNK)

    # ------------------------------------------------------------------ error translation
    @contextmanager
    def _errors(self, action: str, not_found: str | None = None) -> Iterator[None]:
        """Turn requests/dicomweb-client failures into clear :mod:`medsr.pacs.errors`."""
        try:
            yield
        except PacsError:
            raise
        except requests.exceptions.SSLError as exc:
            raise PacsUnreachableError(
                f"TLS error talking to the DICOMweb server at {self.display_url} while {action}: "
                f"{_tls_reason(exc)} (a private CA: --ca-bundle PATH or REQUESTS_CA_BUNDLE; "
                "or check the https/http scheme)"
            ) from None
        except (requests.exceptions.ConnectionError, requests.exceptions.Timeout) as exc:
            kind = "timed out" if _is_timeout(exc) else "no connection"
            raise PacsUnreachableError(
                f"cannot reach the DICOMweb server at {self.display_url} while {action} "
                f"({kind} after {self.retries + 1} attempt{'s' if self.retries else ''}); "
                "check the URL, that the server is running and that the network allows it"
            ) from None
        except requests.exceptions.HTTPError as exc:
            status = exc.response.status_code if exc.response is not None else 0
            if status in _NOT_A_ROOT_STATUSES:
                self.check_root()
            raise self._http_error(exc.response, action, not_found) from None
        except requests.exceptions.RequestException as exc:  # an undecodable answer, too
            self.check_root()
            raise PacsError(
                f"request to the DICOMweb server at {self.display_url} failed while {action}: "
                f"{_short(exc)}"
            ) from None
        except ValueError as exc:  # malformed multipart/JSON answers
            self.check_root()
            raise PacsError(
                f"the DICOMweb server at {self.display_url} sent an answer medsr cannot read "
                f"while {action}: {_short(exc)}"
            ) from None

    def check_root(self) -> None:
        """Raise :class:`PacsNotFoundError` saying that ``--url`` is wrong when the URL does not
        answer a QIDO-RS search as a DICOMweb root does (HTTP 400/404/405, or an answer that is
        not DICOM JSON: a web page, Orthanc's REST API); return when it does, or when the probe
        tells nothing (no answer, credentials refused, HTTP 5xx).

        Called once a request failed in a way a wrong URL explains: Orthanc's REST root (the
        URL without ``/dicom-web``) answered a search in a study that is there with HTTP 404,
        which read "study … was not found", and a login page read "Expecting value: line 1".
        """
        try:
            r = self.session.get(
                f"{self.url}/studies",
                params={"limit": "1"},
                headers={"Accept": "application/dicom+json"},
                timeout=self.timeout,
            )
        except requests.exceptions.RequestException:
            return
        why = None
        if r.status_code in _NOT_A_ROOT_STATUSES:
            why = f"it answers a QIDO-RS search for studies with HTTP {r.status_code}"
        elif r.status_code == 200 and r.content:
            try:
                body = r.json()
            except ValueError:
                kind = r.headers.get("Content-Type", "").split(";")[0].strip() or "not JSON"
                why = f"it answers a QIDO-RS search for studies with {kind}"
            else:
                if not isinstance(body, list) or not all(isinstance(i, dict) for i in body):
                    why = "it answers a QIDO-RS search for studies with JSON that is not DICOM JSON"
        if why is not None:
            raise PacsNotFoundError(
                f"{self.display_url} is not a DICOMweb root ({why}): check that --url is the "
                "DICOMweb root (for Orthanc: http://HOST:8042/dicom-web)"
            )

    def _http_error(
        self, response: requests.Response | None, action: str, not_found: str | None
    ) -> PacsError:
        status = response.status_code if response is not None else 0
        if status in (401, 403):
            if self.session.auth is None:
                return PacsAuthError(
                    f"the DICOMweb server at {self.display_url} requires authentication "
                    f"(HTTP {status}) while {action}: give --user/--password or --token"
                )
            what = "refused the credentials" if status == 401 else "denied access"
            return PacsAuthError(
                f"the DICOMweb server at {self.display_url} {what} (HTTP {status}) while "
                f"{action}: check --user/--password or --token"
            )
        if status == 404:
            return PacsNotFoundError(
                not_found
                or f"nothing found at {self.display_url} while {action} (HTTP 404): check that "
                "--url is the DICOMweb root (for Orthanc: http://HOST:8042/dicom-web)"
            )
        return PacsError(
            f"the DICOMweb server at {self.display_url} answered HTTP {status} while {action}"
            + (" (after retries)" if status in RETRY_STATUSES and self.retries else "")
        )

    def call(self, action: str, fn: Callable[[], T], not_found: str | None = None) -> T:
        """Run ``fn()`` with medsr error translation (``action`` reads "while <action>")."""
        with self._errors(action, not_found):
            return fn()

    # ------------------------------------------------------------------ QIDO-RS
    def search_series(
        self,
        study: str | None = None,
        filters: dict[str, str] | None = None,
        fields: Sequence[str] = SERIES_FIELDS,
        page: int = 500,
    ) -> list[dict[str, Any]]:
        """QIDO-RS series search (all pages) as plain dicts keyed by DICOM keyword.

        Only the series-level ``fields`` are kept (values are plain Python values), so patient
        attributes a server adds on its own (Orthanc returns PatientName) are dropped here.
        """
        if study is not None:
            study = check_uid(study, "StudyInstanceUID")
        missing = f"study {uid_key(study)} was not found on {self.display_url}" if study else None
        return self._pages(
            "searching for series (QIDO-RS)",
            lambda limit, offset: self._dw.search_for_series(
                study_instance_uid=study,
                fields=list(fields),
                search_filters=dict(filters or {}),
                limit=limit,
                offset=offset or None,
            ),
            fields,
            "SeriesInstanceUID",
            page,
            missing,
        )

    def count_instances(self, study: str, series: str, page: int = 1000) -> int:
        """Number of instances QIDO-RS lists in a series (for servers that do not report
        NumberOfSeriesRelatedInstances)."""
        study = check_uid(study, "StudyInstanceUID")
        series = check_uid(series, "SeriesInstanceUID")
        rows = self._pages(
            f"searching for instances of series {uid_key(series)} (QIDO-RS)",
            lambda limit, offset: self._dw.search_for_instances(
                study_instance_uid=study,
                series_instance_uid=series,
                fields=["SOPInstanceUID"],
                limit=limit,
                offset=offset or None,
            ),
            ("SOPInstanceUID",),
            "SOPInstanceUID",
            page,
            None,
        )
        return len(rows)

    def _pages(
        self,
        action: str,
        query: Callable[[int, int], list[dict[str, Any]]],
        fields: Sequence[str],
        key: str,
        page: int,
        not_found: str | None,
    ) -> list[dict[str, Any]]:
        """All pages of a QIDO-RS query (limit/offset), de-duplicated on ``key``."""
        from pydicom.datadict import tag_for_keyword

        tags = {kw: f"{tag_for_keyword(kw):08X}" for kw in dict.fromkeys([*fields, key])}
        results: list[dict[str, Any]] = []
        seen: set[str] = set()
        offset = 0
        while True:
            batch = self.call(action, lambda offset=offset: query(page, offset), not_found)
            new = 0
            for item in batch:
                if not _is_dicom_json(item):
                    raise PacsError(
                        f"the DICOMweb server at {self.display_url} sent JSON that is not a "
                        f"DICOMweb list of DICOM JSON objects ({_json_kind(item)}) while "
                        f"{action}: check that --url is the DICOMweb root"
                    )
                row = {kw: _value(item, tag) for kw, tag in tags.items()}
                uid = str(row.get(key) or "")
                if not uid or uid in seen:
                    continue
                seen.add(uid)
                results.append(row)
                new += 1
            if len(batch) < page or new == 0:  # last page, or a server that ignores offset
                return results
            offset += len(batch)

    # ------------------------------------------------------------------ WADO-RS
    def retrieve_series(self, study: str, series: str, folder: Path) -> list[Path]:
        """Download every instance of a series into ``folder`` (one file per instance).

        Command-set (group 0000) elements are dropped before writing, as the local reader drops
        them: archived files can carry a (0000,0000) Command Group Length, the server sends it
        back as stored, and pydicom refuses to write it. Only the download is translated into
        a server error; a failure to save an instance here is medsr's (or the disk's) and is
        raised as :class:`~medsr.errors.OutputWriteError` naming the work folder.
        """
        study = check_uid(study, "StudyInstanceUID")
        series = check_uid(series, "SeriesInstanceUID")
        folder.mkdir(parents=True, exist_ok=True)
        import pydicom

        from medsr.io.dicom import strip_command_set

        missing = _series_missing(study, series, self.display_url)
        action = f"retrieving series {uid_key(series)} (WADO-RS)"
        paths: list[Path] = []
        with self._errors(action, missing):
            instances = self._dw.iter_series(study, series)
        while True:
            with self._errors(action, missing):  # each instance is read as the loop asks
                ds = next(instances, None)
            if ds is None:
                break
            path = folder / f"{len(paths) + 1:06d}.dcm"
            strip_command_set(ds)
            try:
                pydicom.dcmwrite(path, ds, enforce_file_format=False)
            except Exception as exc:
                if is_fatal(exc):
                    raise
                raise OutputWriteError(
                    f"cannot save instance {len(paths) + 1} of series {uid_key(series)}, retrieved from "
                    f"{self.display_url}, into the work folder {folder}: {scrub(exc)}"
                ) from None
            paths.append(path)
        if not paths:
            raise PacsNotFoundError(missing + " (the server returned no instances)")
        return paths

    def retrieve_series_datasets(self, study: str, series: str) -> list[Any]:
        """Every instance of a series as pydicom Datasets (small series; tests, inspection)."""
        study = check_uid(study, "StudyInstanceUID")
        series = check_uid(series, "SeriesInstanceUID")
        return self.call(
            f"retrieving series {uid_key(series)} (WADO-RS)",
            lambda: self._dw.retrieve_series(study, series),
            _series_missing(study, series, self.display_url),
        )

    def series_metadata(self, study: str, series: str) -> list[Any]:
        """WADO-RS metadata of every instance of a series, as pydicom Datasets."""
        from pydicom import Dataset

        study = check_uid(study, "StudyInstanceUID")
        series = check_uid(series, "SeriesInstanceUID")
        items = self.call(
            f"retrieving metadata of series {uid_key(series)} (WADO-RS)",
            lambda: self._dw.retrieve_series_metadata(study, series),
            _series_missing(study, series, self.display_url),
        )
        # bulk data (pixels, big private elements) stays on the server: only the header is wanted
        return [Dataset.from_json(item, bulk_data_uri_handler=_no_bulk_data) for item in items]

    # ------------------------------------------------------------------ STOW-RS
    def store(self, datasets: Sequence[Any], study: str | None = None) -> StoreOutcome:
        """STOW-RS ``datasets`` in one request; report which were stored and which failed.

        A transport failure (server gone after the retries, HTTP 5xx) marks the whole request as
        failed instead of raising, so the caller can retry the failed instances; refused
        credentials raise :class:`PacsAuthError` at once.
        """
        uids = [str(ds.SOPInstanceUID) for ds in datasets]
        outcome = StoreOutcome()
        if not datasets:
            return outcome
        # one plain body (no chunked transfer encoding), so that a retry can send it again
        self._dw.set_chunk_size(
            max(_READ_CHUNK, 2 * sum(_approx_size(ds) for ds in datasets) + (1 << 20))
        )
        try:
            answer = self._dw.store_instances(list(datasets), study_instance_uid=study)
        except requests.exceptions.HTTPError as exc:
            response = exc.response
            status = response.status_code if response is not None else 0
            if status in (401, 403):
                raise self._http_error(response, "storing instances (STOW-RS)", None) from None
            answer = _json_dataset(response)
            if answer is None:
                reason = f"HTTP {status}"
                outcome.failed = dict.fromkeys(uids, reason)
                return outcome
        except (requests.exceptions.RequestException, ValueError) as exc:
            reason = (
                "no answer from the server"
                if isinstance(
                    exc, requests.exceptions.ConnectionError | requests.exceptions.Timeout
                )
                else _short(exc)
            )
            outcome.failed = dict.fromkeys(uids, reason)
            return outcome
        finally:
            self._dw.set_chunk_size(_READ_CHUNK)
        failed: dict[str, str] = {}
        for item in answer.get("FailedSOPSequence") or []:
            uid = str(item.get("ReferencedSOPInstanceUID", ""))
            code = item.get("FailureReason")
            failed[uid] = _failure_text(code)
        ok = {
            str(item.get("ReferencedSOPInstanceUID", ""))
            for item in answer.get("ReferencedSOPSequence") or []
        }
        for uid in uids:
            if uid in failed:
                outcome.failed[uid] = failed[uid]
            elif uid in ok or not ok:
                # servers that answer 200 with an empty body stored everything
                outcome.stored.append(uid)
            else:
                outcome.failed[uid] = "not acknowledged by the server"
        return outcome

    def store_all(
        self,
        items: Sequence[Any],
        study: str | None = None,
        *,
        attempts: int = 3,
        batch_bytes: int = 32 << 20,
        sleep: Callable[[float], None] = time.sleep,
    ) -> StoreOutcome:
        """Store every item in bounded batches, retrying the failed ones ``attempts`` times.

        ``items`` are pydicom Datasets or paths of DICOM files (read one batch at a time, so a
        long series is never held in memory twice). Returns the final outcome (``failed`` empty
        when everything was stored; ``stored`` lists the SOP Instance UIDs the server took).
        """
        import pydicom

        by_uid: dict[str, Any] = {}
        for item in items:
            if isinstance(item, str | Path):
                head = pydicom.dcmread(
                    item, stop_before_pixels=True, specific_tags=["SOPInstanceUID"]
                )
                by_uid[str(head.SOPInstanceUID)] = Path(item)
            else:
                by_uid[str(item.SOPInstanceUID)] = item
        pending = list(by_uid)
        final = StoreOutcome()
        for attempt in range(max(1, attempts)):
            if attempt:
                sleep(self.backoff * 2 ** (attempt - 1))
            round_failed: dict[str, str] = {}
            for batch in _batches([by_uid[u] for u in pending], batch_bytes):
                datasets = [pydicom.dcmread(b) if isinstance(b, Path) else b for b in batch]
                out = self.store(datasets, study)
                final.stored.extend(out.stored)
                round_failed.update(out.failed)
            pending = list(round_failed)
            final.failed = round_failed
            if not pending:
                break
        return final

    # ------------------------------------------------------------------ cleanup
    def delete_series(self, study: str, series: str) -> bool:
        """Delete a series; True when the server no longer lists it, False when it still does.

        Tries Orthanc's REST API first when known (``rest_url``), then DICOMweb DELETE
        (dcm4chee, Google, Azure). Errors of the deletion itself are swallowed: the answer is
        the final check.

        Raises:
            PacsUnreachableError: the server cannot be reached to check (connection refused or
                reset, timeout): whether the series is still there is unknown.
        """
        if self.rest_url:
            try:
                r = self.session.post(
                    f"{self.rest_url}/tools/lookup", data=series, timeout=self.timeout
                )
                if r.ok:
                    for hit in r.json():
                        if hit.get("Type") == "Series" and hit.get("ID"):
                            self.session.delete(
                                f"{self.rest_url}/series/{hit['ID']}", timeout=self.timeout
                            )
            except (requests.exceptions.RequestException, ValueError):
                pass
        if self.series_exists(study, series):
            try:
                self._dw.delete_series(study, series)
            except (requests.exceptions.RequestException, ValueError):
                pass
        return not self.series_exists(study, series)

    def series_exists(self, study: str, series: str) -> bool:
        """The series is listed by QIDO-RS in that study (True when the answer is unusable).

        Raises:
            PacsUnreachableError: no answer from the server.
        """
        try:
            rows = self.search_series(study, {"SeriesInstanceUID": series})
        except PacsNotFoundError:
            return False
        except PacsUnreachableError:
            raise
        except PacsError:
            return True  # unknown: assume it is still there
        return any(r.get("SeriesInstanceUID") == series for r in rows)

    def close(self) -> None:
        self.session.close()

    def __enter__(self) -> PacsClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"PacsClient({self.display_url!r})"


def connect(url: str | PacsClient, **options: Any) -> PacsClient:
    """A :class:`PacsClient` for ``url`` (a ready client is returned as it is)."""
    if isinstance(url, PacsClient):
        if options:
            raise InvalidParameterError(
                "connection options cannot be given with a ready PacsClient"
            )
        return url
    return PacsClient(url, **options)


# ---------------------------------------------------------------------- helpers
def _version() -> str:
    try:
        from medsr import __version__

        return __version__
    except ImportError:  # pragma: no cover
        return "0"


def _series_missing(study: str, series: str, where: str) -> str:
    return f"series {uid_key(series)} of study {uid_key(study)} was not found on {where}"


def _tls_reason(exc: BaseException) -> str:
    """What a TLS failure was, without urllib3's wrapping (``HTTPSConnectionPool(host=…):
    Max retries exceeded with url: /dicom-web/series?includefield=…&limit=500 (Caused by
    SSLError(SSLCertVerificationError(1, '[SSL: CERTIFICATE_VERIFY_FAILED] …')))``): e.g.
    ``certificate verify failed: self-signed certificate``."""
    text = str(exc)
    match = re.search(r"\[SSL: [A-Z0-9_]+\] ([^'\"]*?)\s*(?:\(_ssl\.c:\d+\))?['\")]", text)
    if match and match.group(1).strip():
        return match.group(1).strip()
    match = re.search(r"\[SSL: ([A-Z0-9_]+)\]", text)
    if match:
        return match.group(1).lower().replace("_", " ")
    return "the TLS handshake failed"


_TAG_RE = re.compile(r"^[0-9A-Fa-f]{8}$")


def _is_dicom_json(item: Any) -> bool:
    """A DICOM JSON object: tags (8 hex digits) as keys, each an object (``{"vr": …}``).

    dicomweb-client turns an answer that is one object into a list of it (some servers send a
    lone data set so); an object that is no data set (``{"error": …}``, ``{"results": […]}``)
    used to read as a series without UID, skipped: "no series found"."""
    return (
        isinstance(item, dict)
        and bool(item)
        and all(
            isinstance(k, str) and _TAG_RE.match(k) and isinstance(v, dict) for k, v in item.items()
        )
    )


def _json_kind(item: Any) -> str:
    if isinstance(item, dict):
        keys = [str(k)[:24] for k in list(item)[:3]]
        more = ", …" if len(item) > 3 else ""
        return (
            f"an object with keys {', '.join(map(repr, keys))}{more}" if keys else "an empty object"
        )
    return f"a list of {type(item).__name__} values"


def _short(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text if len(text) <= 200 else text[:200] + "…"


def _is_timeout(exc: BaseException) -> bool:
    if isinstance(exc, requests.exceptions.Timeout):
        return True
    return "timed out" in str(exc).lower() or "timeout" in type(exc).__name__.lower()


def _no_bulk_data(tag: str, vr: str, uri: str) -> Any:
    return None


def _json_dataset(response: requests.Response | None) -> Any:
    """The DICOM JSON body of a STOW answer (e.g. Orthanc's 409 with FailedSOPSequence)."""
    if response is None or not response.content:
        return None
    try:
        from pydicom import Dataset

        return Dataset.from_json(response.json())
    except Exception:  # not DICOM JSON: a plain error page
        return None


_FAILURE_REASONS = {
    0x0110: "processing failure",
    0x0122: "SOP class not supported",
    0x0124: "not authorised",
    0xA700: "out of resources",
    0xA900: "data set does not match SOP class",
    0xC000: "cannot understand",
    0xC122: "referenced transfer syntax not supported",
    0xA770: "transfer syntax not supported",
    0xC123: "SOP class not supported",
}


def _failure_text(code: Any) -> str:
    try:
        value = int(code)
    except (TypeError, ValueError):
        return "refused by the server"
    return f"{_FAILURE_REASONS.get(value, 'refused by the server')} (status 0x{value:04X})"


def _batches(datasets: Iterable[Any], limit: int) -> Iterator[list[Any]]:
    batch: list[Any] = []
    size = 0
    for ds in datasets:
        n = _approx_size(ds)
        if batch and size + n > limit:
            yield batch
            batch, size = [], 0
        batch.append(ds)
        size += n
    if batch:
        yield batch


def _approx_size(ds: Any) -> int:
    if isinstance(ds, Path):
        return ds.stat().st_size
    pixels = ds.get("PixelData") if hasattr(ds, "get") else None
    return (len(pixels) if pixels else 0) + 16384
