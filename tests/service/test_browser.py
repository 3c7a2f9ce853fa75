"""The web page in headless Chromium (Debian's /usr/bin/chromium driven by Playwright).

Starts uvicorn on a free loopback port, drops a corpus DICOM on the page, waits for the job,
drags the before/after divider, zooms (both layers move together), switches the window preset,
scrolls the slices of a volume, downloads the result and reads it back with ``medsr info``.
Screenshots at 1280×800 and 390×844 go to the test's tmp folder; with
``MEDSR_UPDATE_SCREENSHOTS=1`` they are also copied to ``docs/web.png`` / ``docs/web-mobile.png``.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import socket
import threading
import time
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest

CHROMIUM = Path("/usr/bin/chromium")
pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium"
    ),
]
playwright_api = pytest.importorskip("playwright.sync_api")
uvicorn = pytest.importorskip("uvicorn")

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]
DOCS = Path(__file__).resolve().parents[2] / "docs"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from medsr.service.app import Settings, create_app

    port = _free_port()
    app = create_app(
        Settings(work_dir=tmp_path_factory.mktemp("serve"), weights_dirs=(), pretrained=False)
    )
    srv = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    )
    thread = threading.Thread(target=srv.run, name="uvicorn-test", daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 20
        while not srv.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                pytest.fail("uvicorn did not start")
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        srv.should_exit = True
        thread.join(timeout=10)


@pytest.fixture(scope="module")
def browser():
    with playwright_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, timeout=30_000)
        try:
            yield b
        finally:
            b.close()


def _state(page) -> dict:
    return page.evaluate("() => window.medsr.state")


def _drop_file(page, path: Path, selector: str = "#dropzone") -> None:
    """Drag-and-drop ``path`` onto ``selector`` like a user dropping a file from the desktop."""
    payload = base64.b64encode(path.read_bytes()).decode()
    transfer = page.evaluate_handle(
        """([b64, name]) => {
            const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
            const dt = new DataTransfer();
            dt.items.add(new File([bytes], name, { type: "application/dicom" }));
            return dt;
        }""",
        [payload, path.name],
    )
    page.dispatch_event(selector, "dragenter", {"dataTransfer": transfer})
    assert page.is_visible("#drop-overlay")
    page.dispatch_event(selector, "drop", {"dataTransfer": transfer})


def _wait_done(page) -> None:
    page.wait_for_selector("#result-state.ok", timeout=30_000)
    page.wait_for_selector("#layer-before:not([hidden]) #img-before[src^='blob:']", timeout=10_000)
    page.wait_for_selector("#img-after[src^='blob:']", timeout=10_000)


def _shot(page, tmp: Path, name: str, docs_name: str | None) -> Path:
    path = tmp / name
    page.screenshot(path=str(path))
    assert path.stat().st_size > 10_000
    if docs_name and os.environ.get("MEDSR_UPDATE_SCREENSHOTS") == "1":
        DOCS.mkdir(exist_ok=True)
        shutil.copyfile(path, DOCS / docs_name)
    return path


def test_upload_compare_window_download(server, browser, tmp_path, corpus):
    ct = corpus("CT_small.dcm")
    ctx = browser.new_context(viewport={"width": 1280, "height": 800}, accept_downloads=True)
    errors: list[str] = []
    try:
        page = ctx.new_page()
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.goto(server + "/")
        page.wait_for_selector("#server-status.ok")
        assert page.locator("#model option").count() >= 3

        # ---- the arithmetic control: beside the other in-plane choices, sent with the job
        assert page.is_visible("#precision-field")
        page.select_option("#mode", "zero-shot")
        assert not page.is_visible("#precision-field")
        page.select_option("#mode", "in-plane")
        page.select_option("#precision", "bf16")

        # ---- drag and drop upload; the job starts and finishes; the result card shows the
        # arithmetic that ran and why it is not the one chosen (bicubic has no learned part)
        _drop_file(page, ct)
        _wait_done(page)
        assert (
            "Arithmetic\nfp32 (bf16: a classical interpolator has no learned part)"
            in page.inner_text("#result-kv")
        )
        page.select_option("#precision", "fp32")
        assert page.inner_text("#result-kv").count("256 × 256") == 1
        assert "CT_small_x2.dcm" in page.inner_text("#result-kv")
        assert page.is_visible("#metrics-card") and "dB" in page.inner_text("#metrics-kv")
        assert "bicubic" in page.inner_text("#model-name")
        assert _state(page)["view"] == "compare"

        # ---- the before/after divider follows the mouse
        box = page.locator("#viewport").bounding_box()
        handle = page.locator("#divider-handle").bounding_box()
        page.mouse.move(handle["x"] + handle["width"] / 2, handle["y"] + handle["height"] / 2)
        page.mouse.down()
        page.mouse.move(box["x"] + box["width"] * 0.25, box["y"] + box["height"] / 2, steps=5)
        page.mouse.up()
        assert _state(page)["split"] == pytest.approx(0.25, abs=0.02)
        assert "75" in page.get_attribute("#layer-before", "style")

        # ---- zoom and pan move both images together
        page.mouse.move(box["x"] + box["width"] * 0.6, box["y"] + box["height"] * 0.5)
        page.mouse.wheel(0, -400)
        page.wait_for_timeout(100)
        page.mouse.down()
        page.mouse.move(box["x"] + box["width"] * 0.5, box["y"] + box["height"] * 0.4, steps=4)
        page.mouse.up()
        assert _state(page)["zoom"] > 1.5
        t_before = page.eval_on_selector("#stage-before", "e => e.style.transform")
        t_after = page.eval_on_selector("#stage-after", "e => e.style.transform")
        assert t_before == t_after and "scale" in t_after

        # ---- window preset: both previews are requested again with the lung window
        with page.expect_response(
            lambda r: "which=output" in r.url and "window=lung" in r.url
        ) as resp:
            page.click("#presets button[data-window='lung']")
        assert resp.value.status == 200
        page.wait_for_timeout(300)
        assert _state(page)["window"] == "lung"
        page.click("#presets button[data-window='custom']")
        assert page.is_visible("#wl-row")
        with page.expect_response(lambda r: "window=" in r.url and "%2C" in r.url):
            page.fill("#wl-width", "800")
        page.click("#presets button[data-window='soft-tissue']")
        page.click("#zoom-fit")
        page.wait_for_timeout(400)
        shot = _shot(page, tmp_path, "web.png", "web.png")

        # ---- consistency map view
        page.click("#views button[data-view='consistency']")
        page.wait_for_selector("#legend:not([hidden])")
        # ---- the error bound: named in words, its title saying what its values mean
        bound = page.locator("#views button[data-view='error_bound']")
        assert bound.inner_text() == "Error bound"
        assert "90 %" in (bound.get_attribute("title") or "")
        with page.expect_response(lambda r: "which=error_bound" in r.url and r.ok):
            bound.click()
        page.wait_for_selector("#map-value:not([hidden])")
        page.wait_for_timeout(300)
        assert page.inner_text("#tag-left").startswith("ERROR BOUND")
        # an interpolator's bound is one value (k × the input's noise, the job's p99): said in
        # HU as text, with no colour bar; it showed one flat colour at the top of the scale,
        # which reads as "high everywhere"
        job = _state(page)["job"]
        said = page.inner_text("#map-value-text")
        assert said.startswith("one value: ") and said.endswith(" HU"), said
        assert float(said.split()[2]) == pytest.approx(job["metrics"]["error_bound_p99"], rel=2e-3)
        assert not page.is_visible("#legend")
        # the consistency row says why auto did not project
        assert "auto (measured only: physics not stated)" in " ".join(
            page.inner_text("#metrics-kv").split()
        )
        # and so does the metrics row of the same value (it showed a bare number)
        assert re.search(r"error bound p99\n[0-9.]+ HU\n", page.inner_text("#metrics-kv"))
        # what is on screen is the bound (an interpolator's: k × the input's noise, one value),
        # not the consistency map asked for just before it (whose preview, arriving later, used
        # to replace it)
        colours = page.evaluate(
            """() => { const img = document.querySelector('#img-after');
                const c = document.createElement('canvas');
                c.width = img.naturalWidth; c.height = img.naturalHeight;
                const g = c.getContext('2d'); g.drawImage(img, 0, 0);
                const d = g.getImageData(0, 0, c.width, c.height).data;
                const seen = new Set();
                for (let i = 0; i < d.length; i += 4) seen.add(d[i] + ',' + d[i + 1] + ',' + d[i + 2]);
                return seen.size; }"""
        )
        assert colours == 1
        _shot(page, tmp_path, "web-error-bound.png", None)
        page.click("#views button[data-view='compare']")

        # ---- download, then read it with `medsr info`
        with page.expect_download() as dl:
            page.click("#download")
        saved = tmp_path / dl.value.suggested_filename
        dl.value.save_as(saved)
        assert saved.name == "CT_small_x2.dcm"
        from typer.testing import CliRunner

        from medsr.cli import app as cli_app

        info = CliRunner().invoke(cli_app, ["info", str(saved), "--json"])
        assert info.exit_code == 0, info.output
        summary = json.loads(info.output)
        assert summary["shape_zyx"] == [1, 256, 256] and summary["modality"] == "CT"

        # ---- a volume: the slice scroller and keyboard move through slices
        page.set_input_files("#file-input", str(corpus("emri_small.dcm")))
        page.click("#run")
        page.wait_for_selector("#slice-val:has-text('/ 10')", timeout=30_000)
        _wait_done(page)
        start = _state(page)["slice"]
        page.focus("#viewport")
        with page.expect_response(
            lambda r: f"slice={start + 1}" in r.url and "which=output" in r.url
        ):
            page.keyboard.press("ArrowDown")
        assert _state(page)["slice"] == start + 1
        page.fill("#slice", "2")
        assert _state(page)["slice"] == 2
        assert page.inner_text("#slice-val") == "Slice 3 / 10"
        assert not errors, errors
        assert shot.exists()
    finally:
        ctx.close()


def test_small_screen_layout(server, browser, tmp_path, corpus):
    ctx = browser.new_context(
        viewport={"width": 390, "height": 844},
        device_scale_factor=2,
        is_mobile=True,
        has_touch=True,
    )
    try:
        page = ctx.new_page()
        page.goto(server + "/")
        page.wait_for_selector("#server-status.ok")
        page.set_input_files("#file-input", str(corpus("CT_small.dcm")))
        page.click("#run")
        _wait_done(page)
        # nothing wider than the screen; the viewer is as wide as the page
        width = page.evaluate("() => document.documentElement.scrollWidth")
        assert width <= 390
        viewer = page.locator(".viewer").bounding_box()
        assert viewer["width"] > 350 and viewer["height"] > 300
        for sel in ("#download", "#views", "#presets", "#divider-handle"):
            box = page.locator(sel).bounding_box()
            assert box and box["x"] >= 0 and box["x"] + box["width"] <= 391, sel
        page.locator(".viewer").scroll_into_view_if_needed()
        page.evaluate("() => window.scrollTo(0, document.querySelector('.viewer').offsetTop - 8)")
        page.wait_for_timeout(200)
        _shot(page, tmp_path, "web-mobile.png", "web-mobile.png")
    finally:
        ctx.close()


def test_through_plane_job_shows_its_consistency_with_the_slice_profile(server, browser, tmp_path):
    """A through-plane job gets the consistency panel and map of an in-plane one: its output,
    made thick again with the slice profile, against the measured slices (none before)."""
    import numpy as np

    from medsr.image import MedImage
    from medsr.io import save_image

    rng = np.random.default_rng(0)
    zz, yy, xx = np.mgrid[:10, :48, :48]
    arr = 500 + 100 * np.sin(yy / 4.0 + zz / 2.0) * np.cos(xx / 5.0) + rng.normal(0, 2, zz.shape)
    thick = save_image(
        MedImage(arr.astype(np.float32), spacing=(2.0, 1.0, 1.0), modality="MR"),
        tmp_path / "thick.nii.gz",
    )
    ctx = browser.new_context(viewport={"width": 1280, "height": 800})
    try:
        page = ctx.new_page()
        page.goto(server + "/")
        page.wait_for_selector("#server-status.ok")
        page.set_input_files("#file-input", str(thick))
        page.select_option("#mode", "through-plane")
        page.click("#run")
        _wait_done(page)
        assert page.is_visible("#metrics-card") and "dB" in page.inner_text("#metrics-kv")
        assert "made thick again with the slice profile" in page.inner_text("#consistency-what")
        assert "thick-slice" in page.inner_text("#metrics-kv")
        # the slice profile is the physics the job used, and where it came from (not "unknown")
        assert "physics\nthick-slice (estimated from the volume)" in page.inner_text("#metrics-kv")
        page.click("#views button[data-view='consistency']")
        page.wait_for_selector("#legend:not([hidden])")
        _shot(page, tmp_path, "web-through-plane.png", "web-through-plane.png")
        # the error bound of a through-plane job: named for what it is along z, and shown at the
        # slice on screen — its maps have the output's 20 slices; the page asked for the input's
        # slice index (10 → 5: another place in z)
        job = _state(page)["job"]
        assert job["maps"] == ["uncertainty", "consistency", "error_bound"]
        assert job["metrics"]["error_bound_p99"] > 0
        bound = page.locator("#views button[data-view='error_bound']")
        assert "along z" in (bound.get_attribute("title") or "")
        unc = page.locator("#views button[data-view='uncertainty']")
        assert "sagittal and coronal" in (unc.get_attribute("title") or "")
        for k in (10, 15):
            page.fill("#slice", str(k))
            with page.expect_response(lambda r: "which=error_bound" in r.url and r.ok) as resp:
                bound.click() if k == 10 else page.keyboard.press("ArrowDown")
            asked = parse_qs(urlparse(resp.value.url).query)["slice"]
            assert asked == [str(_state(page)["slice"])], (resp.value.url, k)
            assert resp.value.headers["x-slices"] == "20"
            page.wait_for_timeout(200)
            assert page.inner_text("#legend-hi").endswith("(p99.5)")
            page.focus("#viewport")
        _shot(page, tmp_path, "web-through-plane-bound.png", None)
    finally:
        ctx.close()


def test_a_series_of_several_stacks_offers_the_choice(
    server, browser, tmp_path, two_series_zip_bytes
):
    """A zipped two-echo series: the page showed the reader's "Choose one with --series KEY:N"
    (a command-line flag) and offered no way on. It offers the stacks; echo 2 is upscaled.
    Zipped with a CT series beside it, the upload was refused with text only: the page offers
    the two series first, then the echoes of the MR series chosen."""
    upload = tmp_path / "echoes.zip"
    upload.write_bytes(two_series_zip_bytes)
    ctx = browser.new_context(viewport={"width": 1280, "height": 800})
    errors: list[str] = []
    try:
        page = ctx.new_page()
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(server + "/")
        page.wait_for_selector("#server-status.ok")
        page.set_input_files("#file-input", str(upload))
        page.click("#run")
        page.wait_for_selector("#series-field:not([hidden])", timeout=20_000)
        options = page.locator("#series option").all_inner_texts()
        assert sorted(o.split(": ")[1] for o in options) == [
            "CT '[medsr]' · 3 images",  # medsr's writer describes its series so
            "MR · 6 images",
        ], options
        assert "'echoes.zip' holds 2 series" in page.inner_text("#series-note")
        page.select_option("#series", index=[o.split(": ")[1][:2] for o in options].index("MR"))
        page.click("#run")
        page.wait_for_selector(
            "#series option:has-text('echo 1')", state="attached", timeout=20_000
        )
        assert page.is_hidden("#error")
        options = page.locator("#series option").all_inner_texts()
        assert [o.split(" · ")[0] for o in options] == ["1: echo 1", "2: echo 2"], options
        note = page.inner_text("#series-note")
        assert "'echoes.zip' holds 2 stacks of images" in note, note
        assert "--series" not in page.inner_text("body")
        _shot(page, tmp_path, "web-stacks.png", None)
        page.select_option("#series", index=1)
        page.click("#run")
        _wait_done(page)
        job = _state(page)["job"]
        assert job["input"]["series"].endswith(":2") and job["input"]["min"] >= 1000
        assert "Stack\n2: echo 2" in page.inner_text("#result-kv")
        assert not errors, errors
    finally:
        ctx.close()


def test_a_long_stack_label_is_shown_whole(server, browser, tmp_path, cine_zip_bytes):
    """A cine's stacks are labelled "1: cardiac phase 1 (trigger time ~10 ms) · 4 images": the
    closed select of the upload panel (284 px then, 320 now) cut the label at its width (a 13-phase cine's last
    read "13: cardiac phase 13 (trig"), so which phase was chosen could not be read. Now the select says it is cut (an
    ellipsis), the chosen label is its tooltip, and a line below it shows the label whole
    (wrapped, not clipped) whenever the select cannot; a label that fits is not repeated."""
    upload = tmp_path / "cine.zip"
    upload.write_bytes(cine_zip_bytes)
    ctx = browser.new_context(viewport={"width": 1280, "height": 800})
    errors: list[str] = []
    try:
        page = ctx.new_page()
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(server + "/", wait_until="domcontentloaded")
        page.wait_for_selector("#server-status.ok")
        page.set_input_files("#file-input", str(upload))
        page.click("#run")
        page.wait_for_selector("#series-field:not([hidden])", timeout=20_000)
        options = page.locator("#series option").all_inner_texts()
        assert options[2] == "3: cardiac phase 3 (trigger time ~90 ms) · 4 images", options
        measure = """() => {
            const s = document.querySelector("#series"), c = document.querySelector("#series-chosen");
            const cs = getComputedStyle(s), probe = document.createElement("span");
            probe.style.cssText = `position:absolute;visibility:hidden;white-space:pre;font:${cs.font}`;
            probe.textContent = s.selectedOptions[0].textContent;
            document.body.append(probe);
            const need = probe.getBoundingClientRect().width;
            probe.remove();
            const room = s.clientWidth - parseFloat(cs.paddingLeft) - parseFloat(cs.paddingRight);
            const seen = {
                label: s.selectedOptions[0].textContent, title: s.title, cut: need > room,
                ellipsis: cs.textOverflow, shown: false, text: null, clipped: null,
            };
            if (!c) return seen;  // no line for the whole label
            const box = c.getBoundingClientRect(), field = c.parentElement.getBoundingClientRect();
            return { ...seen, shown: !c.hidden && box.height > 0, text: c.textContent,
                clipped: c.scrollWidth > c.clientWidth || c.scrollHeight > c.clientHeight + 1
                    || box.right > field.right || box.left < field.left };
        }"""
        for index in (0, len(options) - 1):  # a phase, and all phases together
            page.select_option("#series", index=index)
            seen = page.evaluate(measure)
            assert seen["label"] == options[index] and seen["cut"], seen  # longer than the panel
            assert seen["shown"] and seen["text"] == options[index] and not seen["clipped"], seen
            assert seen["title"] == options[index] and seen["ellipsis"] == "ellipsis", seen
        # a label that fits the select is not written out a second time
        page.evaluate("""() => { const s = document.querySelector("#series");
            s.selectedOptions[0].textContent = "1: phase 1";
            s.dispatchEvent(new Event("change")); }""")
        assert page.is_hidden("#series-chosen")
        assert page.evaluate("() => document.querySelector('#series').title") == "1: phase 1"
        assert not errors, errors
    finally:
        ctx.close()


def test_every_select_says_its_whole_choice(server, browser):
    """The upload panel's two-column selects cut their labels without a sign ("Auto (when",
    "fp32 (defau", "From the fil" at 1400 px) and the drop zone broke "browse" across two lines
    ("brow / se"). Now the panel is wider, a cut label ends in an ellipsis, every select's
    tooltip is its whole chosen label (also after a change), and "browse" stays whole."""
    ctx = browser.new_context(viewport={"width": 1400, "height": 1000})
    try:
        page = ctx.new_page()
        page.goto(server + "/", wait_until="domcontentloaded")
        page.wait_for_selector("#server-status.ok")
        seen = page.evaluate("""() => [...document.querySelectorAll("select")].map((s) => ({
            id: s.id, title: s.title, label: s.selectedOptions[0]?.textContent ?? "",
            ellipsis: getComputedStyle(s).textOverflow }))""")
        assert len(seen) >= 8, seen
        for one in seen:
            assert one["title"] == one["label"] and one["ellipsis"] == "ellipsis", one
        page.select_option("#precision", "auto")
        title = page.evaluate("() => document.querySelector('#precision').title")
        assert title == "Auto (faster where measured safe)"
        lines = page.evaluate("() => document.querySelector('#dz-title u').getClientRects().length")
        assert lines == 1
    finally:
        ctx.close()
