/* medsr web page: upload → job → before/after viewer → download. No dependencies. */
"use strict";

(() => {
  const $ = (sel) => document.querySelector(sel);
  const $$ = (sel) => Array.from(document.querySelectorAll(sel));

  const el = {
    status: $("#server-status"), fileInput: $("#file-input"), dropzone: $("#dropzone"), dzTitle: $("#dz-title"),
    dzHint: $("#dz-hint"), mode: $("#mode"), model: $("#model"), modelField: $("#model-field"), scale: $("#scale"),
    consistency: $("#consistency"), consistencyField: $("#consistency-field"),
    degradation: $("#degradation"), degradationField: $("#degradation-field"), modality: $("#modality"),
    adapt: $("#adapt"), adaptField: $("#adapt-field"), budget: $("#budget"), budgetField: $("#budget-field"),
    ensemble: $("#ensemble"), ensembleField: $("#ensemble-field"),
    precision: $("#precision"), precisionField: $("#precision-field"),
    series: $("#series"), seriesField: $("#series-field"), seriesNote: $("#series-note"), seriesChosen: $("#series-chosen"),
    run: $("#run"), progress: $("#progress"), progressBar: $("#progress-bar"), progressLabel: $("#progress-label"),
    progressPct: $("#progress-pct"), error: $("#error"), views: $("#views"), presets: $("#presets"), wlRow: $("#wl-row"),
    wlLevel: $("#wl-level"), wlWidth: $("#wl-width"), wlLevelVal: $("#wl-level-val"), wlWidthVal: $("#wl-width-val"),
    viewport: $("#viewport"), layerBefore: $("#layer-before"), layerAfter: $("#layer-after"),
    stageBefore: $("#stage-before"), stageAfter: $("#stage-after"), imgBefore: $("#img-before"), imgAfter: $("#img-after"),
    divider: $("#divider"), handle: $("#divider-handle"), split: $("#split"), tagLeft: $("#tag-left"), tagRight: $("#tag-right"),
    legend: $("#legend"), legendLo: $("#legend-lo"), legendHi: $("#legend-hi"), busy: $("#busy"), busyText: $("#busy-text"),
    mapValue: $("#map-value"), mapValueText: $("#map-value-text"), mapValueHint: $("#map-value-hint"),
    timebar: $("#timebar"), timePrev: $("#time-prev"), timeNext: $("#time-next"), timeVal: $("#time-val"),
    empty: $("#empty"), slice: $("#slice"), slicePrev: $("#slice-prev"), sliceNext: $("#slice-next"), sliceVal: $("#slice-val"),
    zoomIn: $("#zoom-in"), zoomOut: $("#zoom-out"), zoomFit: $("#zoom-fit"), zoomVal: $("#zoom-val"),
    resultCard: $("#result-card"), resultKv: $("#result-kv"), resultState: $("#result-state"), download: $("#download"),
    downloadLabel: $("#download-label"), metricsCard: $("#metrics-card"), metricsKv: $("#metrics-kv"),
    consistencyBadge: $("#consistency-badge"), modelKind: $("#model-kind"), modelName: $("#model-name"),
    modelDesc: $("#model-desc"), modelRef: $("#model-ref"), modelKv: $("#model-kv"), privacy: $("#privacy"),
    overlay: $("#drop-overlay"), tokenDialog: $("#token-dialog"), tokenInput: $("#token-input"),
  };

  const state = {
    token: sessionStorage.getItem("medsr-token") || "",
    info: null, models: [], file: null, scale: 2, job: null, polling: null,
    view: "compare", windowName: "auto", custom: null, slice: 0, time: 0, timeKind: "time points",
    split: 0.5, zoom: 1, tx: 0, ty: 0, fit: { w: 0, h: 0, x: 0, y: 0 },
    urls: new Map(), tops: new Map(), ones: new Map(), loadSeq: 0,
  };

  // ------------------------------------------------------------------ API
  class ApiError extends Error {
    constructor(status, message, body = null) { super(message); this.status = status; this.body = body; }
  }

  function authHeaders() {
    return state.token ? { Authorization: `Bearer ${state.token}` } : {};
  }

  async function api(path, options = {}) {
    const res = await fetch(path, { ...options, headers: { ...authHeaders(), ...(options.headers || {}) } });
    if (res.status === 401) {
      await askToken();
      return api(path, options);
    }
    if (!res.ok) throw new ApiError(res.status, await errorText(res));
    return res;
  }

  async function errorText(res) {
    try {
      const body = await res.json();
      if (body && body.detail) return typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail);
    } catch (_) { /* not JSON */ }
    return `${res.status} ${res.statusText || "error"}`;
  }

  function askToken() {
    return new Promise((resolve) => {
      el.tokenInput.value = "";
      el.tokenDialog.addEventListener("close", () => {
        state.token = el.tokenInput.value.trim();
        sessionStorage.setItem("medsr-token", state.token);
        resolve();
      }, { once: true });
      el.tokenDialog.showModal();
    });
  }

  // ------------------------------------------------------------------ formatting
  const fmt = {
    num(v, digits = 2) {
      if (v === null || v === undefined || Number.isNaN(v)) return "—";
      if (typeof v !== "number") return String(v);
      const a = Math.abs(v);
      if (a !== 0 && (a >= 1e5 || a < 1e-3)) return v.toExponential(2);
      return Number.isInteger(v) ? String(v) : v.toFixed(digits);
    },
    shape(info) {
      const [z, y, x] = info.shape_zyx;
      const each = z > 1 ? `${x} × ${y} × ${z}` : `${x} × ${y}`;
      // an image over time (a cine or dynamic series read whole): its time points, each a volume
      return info.time_points ? `${info.time_points} ${state.timeKind} of ${each}` : each;
    },
    spacing(info) {
      const [sz, sy, sx] = info.spacing_mm_zyx.map((v) => String(parseFloat(v.toFixed(3))));
      if (info.shape_zyx[0] > 1) return `${sx} × ${sy} × ${sz} mm`;
      return sx === sy ? `${sx} mm` : `${sx} × ${sy} mm`;
    },
    bytes(n) {
      if (!n && n !== 0) return "—";
      if (n < 1024) return `${n} B`;
      if (n < 1024 ** 2) return `${(n / 1024).toFixed(1)} KB`;
      return `${(n / 1024 ** 2).toFixed(1)} MB`;
    },
    duration(s) {
      if (s >= 86400) return `${Math.round(s / 86400)} day${s >= 172800 ? "s" : ""}`;
      if (s >= 3600) return `${Math.round(s / 3600)} h`;
      if (s >= 60) return `${Math.round(s / 60)} min`;
      return `${Math.round(s)} s`;
    },
    label(key) {
      return key.replace(/_/g, " ").replace(/\bpsnr\b/i, "PSNR").replace(/\bssim\b/i, "SSIM").replace(/^val /, "validation ");
    },
  };

  function fillKv(dl, rows) {
    dl.replaceChildren();
    for (const [k, v] of rows) {
      if (v === undefined || v === null || v === "") continue;
      const dt = document.createElement("dt");
      dt.textContent = k;
      const dd = document.createElement("dd");
      dd.textContent = v;
      dl.append(dt, dd);
    }
  }

  // ------------------------------------------------------------------ start-up
  async function init() {
    bindUpload();
    bindViewer();
    try {
      state.info = await (await api("/api/v1/info")).json();
      state.models = await (await api("/api/v1/models")).json();
      setStatus(true, `v${state.info.version}`);
      el.privacy.textContent = `Images are processed on this server only; a finished job's files are deleted after ${fmt.duration(state.info.retention_s)}. Uploads up to ${fmt.num(state.info.max_upload_mb, 0)} MB. Research use; not a medical device.`;
    } catch (err) {
      setStatus(false, "offline");
      showError(`Cannot reach the server: ${err.message}`);
      return;
    }
    for (const opt of el.mode.options) {
      const ok = state.info.modes[opt.value] !== false;
      opt.disabled = !ok;
      if (!ok) opt.textContent += " — not available";
    }
    el.model.replaceChildren();
    for (const card of state.models.filter((m) => m.kind !== "self-supervised")) {
      const opt = document.createElement("option");
      opt.value = card.name;
      opt.textContent = card.learned ? `${card.name} (network)` : card.name;
      el.model.append(opt);
    }
    // the same default as the command line: the shipped default-x{scale} when there is one
    const shipped = `default-x${state.scale}`;
    if ([...el.model.options].some((o) => o.value === shipped)) el.model.value = shipped;
    else if ([...el.model.options].some((o) => o.value === "bicubic")) el.model.value = "bicubic";
    onOptionsChanged();
    titleSelects();
  }

  /** Each select's tooltip: the whole label of its chosen option. */
  function titleSelects() {
    for (const select of document.querySelectorAll("select")) {
      const chosen = select.selectedOptions[0];
      select.title = chosen ? chosen.textContent : "";
    }
  }

  function setStatus(ok, text) {
    el.status.classList.toggle("ok", ok);
    el.status.classList.toggle("bad", !ok);
    el.status.querySelector(".txt").textContent = ok ? `ready · ${text}` : text;
  }

  // ------------------------------------------------------------------ upload form
  function bindUpload() {
    el.fileInput.addEventListener("change", () => el.fileInput.files[0] && chooseFile(el.fileInput.files[0]));
    el.dropzone.addEventListener("keydown", (e) => {
      if (e.key === "Enter" || e.key === " ") { e.preventDefault(); el.fileInput.click(); }
    });
    let depth = 0;
    window.addEventListener("dragenter", (e) => {
      if (!hasFiles(e)) return;
      e.preventDefault();
      depth += 1;
      el.overlay.hidden = false;
      el.dropzone.classList.add("over");
    });
    window.addEventListener("dragleave", () => {
      depth = Math.max(0, depth - 1);
      if (depth === 0) { el.overlay.hidden = true; el.dropzone.classList.remove("over"); }
    });
    window.addEventListener("dragover", (e) => { if (hasFiles(e)) e.preventDefault(); });
    window.addEventListener("drop", (e) => {
      if (!hasFiles(e)) return;
      e.preventDefault();
      depth = 0;
      el.overlay.hidden = true;
      el.dropzone.classList.remove("over");
      const f = e.dataTransfer.files[0];
      if (f) { chooseFile(f); start(); }
    });
    el.series.addEventListener("change", showChosen);
    window.addEventListener("resize", showChosen);
    // every select's tooltip is its chosen label (a closed select cuts a long one: "Auto (fas…")
    document.addEventListener("change", (e) => { if (e.target instanceof HTMLSelectElement) titleSelects(); });
    el.mode.addEventListener("change", onOptionsChanged);
    el.model.addEventListener("change", onOptionsChanged);
    el.scale.addEventListener("click", (e) => {
      const b = e.target.closest("button[data-scale]");
      if (!b || b.disabled) return;
      state.scale = Number(b.dataset.scale);
      const shipped = `default-x${state.scale}`;  // keep "the default" the default at every scale
      if (/^default-x\d$/.test(el.model.value) && [...el.model.options].some((o) => o.value === shipped)) {
        el.model.value = shipped;
      }
      onOptionsChanged();
    });
    el.run.addEventListener("click", start);
    el.download.addEventListener("click", download);
  }

  function hasFiles(e) {
    return e.dataTransfer && Array.from(e.dataTransfer.types || []).includes("Files");
  }

  function chooseFile(file) {
    state.file = file;
    el.dropzone.classList.add("has-file");
    el.dzTitle.textContent = file.name;
    el.dzHint.textContent = `${fmt.bytes(file.size)} · drop another file to replace`;
    hideError();
    offerStacks(null);
    onOptionsChanged();
  }

  function selectedCard() {
    const mode = el.mode.value;
    if (mode !== "in-plane") return state.models.find((m) => m.name === mode) || null;
    return state.models.find((m) => m.name === el.model.value) || null;
  }

  function onOptionsChanged() {
    const mode = el.mode.value;
    el.modelField.hidden = mode !== "in-plane";
    el.consistencyField.hidden = mode !== "in-plane";
    el.degradationField.hidden = mode !== "in-plane";
    el.ensembleField.hidden = mode !== "in-plane";
    el.precisionField.hidden = mode !== "in-plane";
    el.adaptField.hidden = mode !== "through-plane";
    el.budgetField.hidden = mode !== "zero-shot";
    const card = selectedCard();
    const allowed = card ? card.scales : [2, 3, 4];
    if (!allowed.includes(state.scale)) state.scale = allowed[0];
    for (const b of el.scale.querySelectorAll("button")) {
      const s = Number(b.dataset.scale);
      b.disabled = !allowed.includes(s);
      b.setAttribute("aria-checked", String(s === state.scale));
    }
    el.run.disabled = !state.file || !state.info;
    el.run.textContent = state.file ? `Upscale ×${state.scale}` : "Upscale";
    if (!state.job) showModelCard(card, null);
  }

  // A DICOM series of several stacks (echoes, cardiac phases, time points, a localizer): the
  // server lists them (the error's `stacks`); the page offers them, and "all phases / time
  // points" where they form one image over time, and sends the choice as `series`.
  // An upload of several series: the same list, one entry per series (`number` null, `series`
  // its key); a chosen series that holds several stacks is refused again with its stacks.
  function offerStacks(stacks) {
    el.series.replaceChildren();
    el.seriesField.hidden = !stacks;
    state.timeKind = "time points";
    if (!stacks) return;
    const whole = stacks.every((s) => s.number === null || s.number === undefined);
    for (const s of stacks) {
      const head = whole ? s.key : s.number;
      el.series.append(new Option(`${head}: ${s.label} · ${s.images} image${s.images === 1 ? "" : "s"}`, s.series));
    }
    const all = stacks[0].over_time;
    const kind = stacks.some((s) => /cardiac phase/.test(s.label)) ? "cardiac phases" : "time points";
    const count = stacks[0].over_time_points || stacks.length;
    if (all) el.series.append(new Option(`All ${count} ${kind} together (one series over time)`, all));
    state.timeKind = kind;
    const name = state.file ? `'${state.file.name}'` : "This upload";
    el.seriesNote.textContent = whole
      ? `${name} holds ${stacks.length} series. Choose which to upscale, then press Upscale.`
      : `${name} holds ${stacks.length} stacks of images under one series, not one volume. `
        + `Choose which to upscale${all ? ` (or all ${kind} together)` : ""}, then press Upscale.`;
    showChosen();
    el.series.focus();
  }

  // A closed select shows its label on one line, cut at the panel's width ("13: cardiac phase
  // 13 (trig…"): the chosen label is its tooltip, and is written out whole below it when cut.
  function showChosen() {
    const chosen = el.series.selectedOptions[0];
    const text = chosen ? chosen.textContent : "";
    el.series.title = text;
    el.seriesChosen.textContent = text;
    el.seriesChosen.hidden = !text || el.seriesField.hidden || fitsIn(el.series, text);
  }

  /** Whether ``text`` fits on one line in the closed ``select`` (its width less its padding). */
  function fitsIn(select, text) {
    const cs = getComputedStyle(select);
    fitsIn.canvas = fitsIn.canvas || document.createElement("canvas");
    const ctx = fitsIn.canvas.getContext("2d");
    ctx.font = `${cs.fontStyle} ${cs.fontWeight} ${cs.fontSize} ${cs.fontFamily}`;
    const room = select.clientWidth - parseFloat(cs.paddingLeft) - parseFloat(cs.paddingRight);
    return ctx.measureText(text).width <= room;
  }

  /** Whether ``stacks`` (a refusal's list) is another list than the one the select offers. */
  function newChoices(stacks) {
    const offered = new Set([...el.series.options].map((o) => o.value));
    return el.seriesField.hidden || stacks.some((s) => !offered.has(s.series));
  }

  function showError(msg) { el.error.textContent = msg; el.error.hidden = false; }
  function hideError() { el.error.hidden = true; }

  function setProgress(frac, label) {
    el.progress.hidden = false;
    const pct = Math.round(Math.max(0, Math.min(1, frac)) * 100);
    el.progressBar.style.width = `${pct}%`;
    el.progressPct.textContent = `${pct}%`;
    el.progressLabel.textContent = label;
  }

  function uploadFile(file, fields) {
    return new Promise((resolve, reject) => {
      const xhr = new XMLHttpRequest();
      xhr.open("POST", "/api/v1/jobs");
      for (const [k, v] of Object.entries(authHeaders())) xhr.setRequestHeader(k, v);
      xhr.upload.onprogress = (e) => {
        if (e.lengthComputable) setProgress(0.3 * (e.loaded / e.total), `Uploading ${fmt.bytes(e.loaded)} of ${fmt.bytes(e.total)}`);
      };
      xhr.upload.onload = () => setProgress(0.3, "Checking the file…");
      xhr.onload = () => {
        let body = null;
        try { body = JSON.parse(xhr.responseText); } catch (_) { /* not JSON */ }
        if (xhr.status === 202) resolve(body);
        else reject(new ApiError(xhr.status, (body && body.detail) || `upload failed (${xhr.status})`, body));
      };
      xhr.onerror = () => reject(new ApiError(0, "the connection to the server was lost"));
      const fd = new FormData();
      fd.append("file", file, file.name);
      for (const [k, v] of Object.entries(fields)) fd.append(k, String(v));
      xhr.send(fd);
    });
  }

  async function start() {
    if (!state.file || el.run.disabled) return;
    hideError();
    stopPolling();
    el.run.disabled = true;
    setProgress(0, "Uploading…");
    const fields = { mode: el.mode.value, scale: state.scale, model: el.model.value || "default" };
    if (el.mode.value === "in-plane") {
      fields.consistency = el.consistency.value;
      if (el.degradation.value) fields.degradation = el.degradation.value;
      if (el.ensemble.value) fields.ensemble = el.ensemble.value;
      if (el.precision.value !== "fp32") fields.precision = el.precision.value;
    }
    if (el.mode.value === "through-plane") fields.adapt_steps = el.adapt.value;
    if (el.mode.value === "zero-shot") fields.budget = el.budget.value;
    if (el.modality.value) fields.modality = el.modality.value;
    if (!el.seriesField.hidden && el.series.value) fields.series = el.series.value;
    let job;
    try {
      job = await uploadFile(state.file, fields);
    } catch (err) {
      if (err.status === 401) { await askToken(); el.run.disabled = false; return start(); }
      el.progress.hidden = true;
      const stacks = err.body && Array.isArray(err.body.stacks) ? err.body.stacks : [];
      if (stacks.length > 1 && newChoices(stacks)) offerStacks(stacks);
      else showError(err.message);
      el.run.disabled = false;
      return;
    }
    newJob(job);
    poll();
  }

  function stopPolling() {
    if (state.polling) clearTimeout(state.polling);
    state.polling = null;
  }

  async function poll() {
    const job = state.job;
    if (!job) return;
    try {
      const fresh = await (await api(`/api/v1/jobs/${job.id}`)).json();
      if (!state.job || state.job.id !== fresh.id) return;
      updateJob(fresh);
      if (fresh.state === "queued" || fresh.state === "running") state.polling = setTimeout(poll, 400);
    } catch (err) {
      showError(err.message);
      el.run.disabled = false;
    }
  }

  // ------------------------------------------------------------------ jobs
  function newJob(job) {
    clearUrls();
    state.job = job;
    state.time = 0;
    state.windowName = "auto";
    state.custom = null;
    state.view = "input";
    resetZoom(false);
    el.empty.hidden = true;
    $("#viewer").classList.remove("idle");
    setupWindowControls(job);
    setupSlices(job);
    updateJob(job);
    layout();
    refresh();
  }

  function updateJob(job) {
    const prev = state.job && state.job.state;
    state.job = job;
    const stage = job.stage ? job.stage.charAt(0).toUpperCase() + job.stage.slice(1) : "";
    if (job.state === "queued") { setProgress(0.32, "Waiting in the queue…"); setBusy("Waiting in the queue…"); }
    if (job.state === "running") { setProgress(0.3 + 0.7 * job.progress, `${stage}…`); setBusy(`${stage}…`); }
    if (job.state === "failed") {
      setBusy(null);
      el.progress.hidden = true;
      showError(job.error ? job.error.message : "the job failed");
      el.run.disabled = !state.file;
    }
    if (job.state === "done") {
      setBusy(null);
      setProgress(1, "Done");
      el.run.disabled = !state.file;
      if (prev !== "done") {
        setupSlices(job);
        state.view = "compare";
        state.split = 0.5;
        layout();
        refresh();
      }
    }
    renderViews(job);
    renderDetails(job);
  }

  function setBusy(text) {
    el.busy.hidden = !text;
    if (text) el.busyText.textContent = text;
  }

  //: the job metrics that are values of a map, in the image's units
  const IN_UNITS = new Set(["uncertainty_p99", "error_bound_p99"]);

  function renderDetails(job) {
    el.resultCard.hidden = false;
    el.resultState.textContent = job.state;
    el.resultState.className = `badge ${job.state === "done" ? "ok" : job.state === "failed" ? "bad" : "info"}`;
    const inp = job.input;
    const out = job.output;
    const rows = [
      ["Modality", `${inp.modality}${inp.units && inp.units !== "a.u." ? ` · ${inp.units}` : ""}`],
      ["Method", job.mode === "in-plane" ? `${job.model} ×${job.scale}` : `${job.mode} ×${job.scale}`],
      ["Input", fmt.shape(inp)],
      ["Input voxel", fmt.spacing(inp)],
      ["Output", out ? fmt.shape(out) : "—"],
      ["Output voxel", out ? fmt.spacing(out) : "—"],
    ];
    if (inp.series) {  // the stack of a series the user chose (or all its phases / time points)
      const chosen = [...el.series.options].find((o) => o.value === inp.series);
      rows.splice(3, 0, ["Stack", chosen ? chosen.textContent : inp.series]);
    }
    if (job.metrics && job.metrics.runtime_s !== undefined) rows.push(["Runtime", `${fmt.num(job.metrics.runtime_s, 2)} s`]);
    if (job.provenance && job.provenance.precision) {
      // what ran, and why when it is not what was asked (auto's choice, a classical interpolator)
      const why = String(job.provenance.precision_auto || "").split(";")[0];
      rows.push(["Arithmetic", why ? `${job.provenance.precision} (${why})` : job.provenance.precision]);
    }
    if (out) rows.push(["Result file", out.filename]);
    for (const note of inp.warnings || []) rows.push(["Reader note", note]);  // e.g. a localizer left out
    fillKv(el.resultKv, rows);
    el.download.hidden = job.state !== "done";
    if (out) {
      el.download.title = `Download ${out.filename}`;
      $("#download-size").textContent = fmt.bytes(out.size_bytes);
    }

    const m = job.metrics || {};
    if (m.consistency_psnr_db !== undefined) {
      el.metricsCard.hidden = false;
      $("#consistency-what").textContent = job.mode === "through-plane"
        ? "The result, made thick again with the slice profile, compared with the measured slices: a faithful result reproduces what was measured."
        : "The result, downsampled back to the input grid, compared with the input: a faithful result reproduces what was measured.";
      const psnr = m.consistency_psnr_db;
      const grade = psnr >= 40 ? ["ok", "consistent"] : psnr >= 30 ? ["warn", "moderate"] : ["bad", "inconsistent"];
      el.consistencyBadge.className = `badge ${grade[0]}`;
      el.consistencyBadge.textContent = grade[1];
      const units = inp.units && inp.units !== "a.u." ? ` ${inp.units}` : "";
      fillKv(el.metricsKv, [
        ["PSNR vs input", `${fmt.num(psnr, 1)} dB`],
        ["Mean |difference|", `${fmt.num(m.consistency_mae, 2)}${units}`],
        ["99th percentile", `${fmt.num(m.consistency_p99, 2)}${units}`],
        ...Object.entries(m)
          .filter(([k]) => !k.startsWith("consistency_") && k !== "runtime_s")
          // a map's statistics are in the image's units, as its colour bar (X-Map-Max)
          .map(([k, v]) => [fmt.label(k), `${fmt.num(v)}${IN_UNITS.has(k) ? units : ""}`]),
      ]);
    } else {
      el.metricsCard.hidden = true;
    }
    showModelCard(job.model_card, job);
  }

  function showModelCard(card, job) {
    if (!card) {
      el.modelName.textContent = "—";
      el.modelKind.textContent = "";
      el.modelDesc.textContent = "";
      el.modelRef.textContent = "";
      el.modelKv.replaceChildren();
      return;
    }
    el.modelName.textContent = card.name + (job ? ` · ×${job.scale}` : "");
    const kind = card.kind === "interpolator" ? "classical" : card.kind || (card.learned ? "network" : "classical");
    el.modelKind.textContent = kind;
    el.modelKind.className = `badge ${card.learned ? "info" : ""}`;
    el.modelDesc.textContent = card.description || "";
    el.modelRef.textContent = card.reference || "";
    const rows = [];
    if (card.architecture) rows.push(["Architecture", card.architecture]);
    if (card.scales) rows.push(["Scales", card.scales.map((s) => `×${s}`).join(" ")]);
    const td = card.training_data || {};
    if (td.modalities && td.modalities.length) rows.push(["Trained on", td.modalities.join(", ")]);
    if (card.degradation && typeof card.degradation === "object" && card.degradation.kind) rows.push(["Degradation", card.degradation.kind]);
    for (const [k, v] of Object.entries(card.metrics || {})) {
      if (k === "units" || v === null || typeof v === "object") continue;
      rows.push([fmt.label(k), fmt.num(v, 3)]);
    }
    if (card.version) rows.push(["Version", String(card.version)]);
    if (!card.learned) rows.push(["Weights", "none (deterministic)"]);
    fillKv(el.modelKv, rows);
  }

  async function download() {
    const job = state.job;
    if (!job || job.state !== "done") return;
    el.download.disabled = true;
    try {
      const res = await api(`/api/v1/jobs/${job.id}/result`);
      const blob = await res.blob();
      const url = URL.createObjectURL(blob);
      const a = document.createElement("a");
      a.href = url;
      a.download = job.output.filename;
      document.body.append(a);
      a.click();
      a.remove();
      setTimeout(() => URL.revokeObjectURL(url), 10000);
    } catch (err) {
      showError(`Download failed: ${err.message}`);
    } finally {
      el.download.disabled = false;
    }
  }

  // ------------------------------------------------------------------ window / level
  function isCT(job) { return job && job.input.modality === "CT" && job.input.units === "HU"; }

  function setupWindowControls(job) {
    for (const b of el.presets.querySelectorAll("button")) {
      b.disabled = b.hasAttribute("data-ct") && !isCT(job);
      b.classList.toggle("on", b.dataset.window === state.windowName);
    }
    const lo = Math.floor(job.input.min);
    const hi = Math.ceil(job.input.max);
    const span = Math.max(1, hi - lo);
    el.wlLevel.min = String(lo - span * 0.25);
    el.wlLevel.max = String(hi + span * 0.25);
    el.wlWidth.min = "1";
    el.wlWidth.max = String(Math.max(2, span * 2));
    el.wlLevel.step = el.wlWidth.step = span > 50 ? "1" : String(span / 500);
    el.wlRow.hidden = true;
  }

  function currentWindow() {
    if (state.windowName === "custom" && state.custom) return state.custom;
    if (state.windowName === "auto" || !state.info) return state.job ? state.job.window : [0, 1];
    return state.info.window_presets[state.windowName] || state.job.window;
  }

  function windowParam() {
    if (state.windowName === "custom" && state.custom) return `${Math.round(state.custom[0] * 1000) / 1000},${Math.max(1e-3, Math.round(state.custom[1] * 1000) / 1000)}`;
    return state.windowName;
  }

  function setWindow(name) {
    if (!state.job) return;
    if (name === "custom") {
      state.custom = state.custom || currentWindow().slice();
      el.wlRow.hidden = false;
      el.wlLevel.value = String(state.custom[0]);
      el.wlWidth.value = String(state.custom[1]);
      showWl();
    } else {
      el.wlRow.hidden = true;
    }
    state.windowName = name;
    for (const b of el.presets.querySelectorAll("button")) b.classList.toggle("on", b.dataset.window === name);
    refreshSoon();
  }

  function showWl() {
    el.wlLevelVal.textContent = fmt.num(state.custom[0], 1);
    el.wlWidthVal.textContent = fmt.num(state.custom[1], 1);
  }

  // ------------------------------------------------------------------ slices
  function slicesOf(info) { return info ? info.shape_zyx[0] : 1; }

  function setupSlices(job) {
    const n = slicesOf(job.output || job.input);
    const keep = Math.min(state.slice, n - 1);
    el.slice.max = String(n - 1);
    state.slice = el.slice.max === "0" ? 0 : (job.output ? Math.floor(n / 2) : keep || Math.floor(n / 2));
    el.slice.value = String(state.slice);
    el.slice.disabled = el.slicePrev.disabled = el.sliceNext.disabled = n <= 1;
    el.slice.parentElement.classList.toggle("single", n <= 1);
    showSlice();
    // an image over time: its time points (cardiac phases), one at a time
    const points = timePointsOf(job);
    state.time = Math.min(state.time, Math.max(points - 1, 0));
    el.timebar.hidden = points <= 1;
    showTime();
  }

  function timePointsOf(job) { return (job && (job.output || job.input).time_points) || 1; }

  function showTime() {
    const points = timePointsOf(state.job);
    const word = state.timeKind === "cardiac phases" ? "Phase" : "Time";
    el.timeVal.textContent = `${word} ${state.time + 1} / ${points}`;
    el.timePrev.disabled = state.time <= 0;
    el.timeNext.disabled = state.time >= points - 1;
  }

  function setTime(t) {
    const next = Math.max(0, Math.min(timePointsOf(state.job) - 1, t));
    if (next === state.time) return;
    state.time = next;
    showTime();
    refreshSoon(30);
  }

  function showSlice() {
    const n = Number(el.slice.max) + 1;
    el.sliceVal.textContent = n > 1 ? `Slice ${state.slice + 1} / ${n}` : "2-D image";
  }

  function setSlice(k) {
    const n = Number(el.slice.max) + 1;
    const next = Math.max(0, Math.min(n - 1, k));
    if (next === state.slice) return;
    state.slice = next;
    el.slice.value = String(next);
    showSlice();
    refreshSoon(30);
  }

  /** Slice index in an image with ``nTarget`` slices for the shown slice (same position in z). */
  function mapSlice(nTarget) {
    const n = Number(el.slice.max) + 1;
    if (nTarget === n) return state.slice;
    return Math.max(0, Math.min(nTarget - 1, Math.floor(((state.slice + 0.5) * nTarget) / n)));
  }

  // ------------------------------------------------------------------ views and previews
  // a trust map's button: its name and what its values say (medsr.safeguards.maps); a
  // through-plane job's maps are measured along z (medsr.pipeline.upscale_through_plane)
  const MAP_LABELS = {
    consistency: ["Consistency", "|downsampled result − input|: where the result disagrees with what was measured"],
    uncertainty: ["Uncertainty", "spread of the result over 8 flips and rotations of the input: ranks the regions to trust less; not an error bar"],
    error_bound: ["Error bound", "about 90 % of pixels' error is expected below this value (calibrated on the input one scale down)"],
  };
  const MAP_LABELS_THROUGH_PLANE = {
    consistency: ["Consistency", "|result made thick again with the slice profile − measured slices|: where the result disagrees with what was measured"],
    uncertainty: ["Uncertainty", "half the difference of the sagittal and coronal estimates: ranks the regions to trust less; not an error bar"],
    error_bound: ["Error bound", "about 90 % of voxels' error is expected below this value (calibrated on the volume one scale down along z)"],
  };
  function mapLabel(job, name) {
    const labels = job && job.mode === "through-plane" ? MAP_LABELS_THROUGH_PLANE : MAP_LABELS;
    return labels[name] || [name.charAt(0).toUpperCase() + name.slice(1).replace(/_/g, " "), `${name} map`];
  }

  function renderViews(job) {
    const done = job.state === "done";
    const wanted = ["compare", "input", "output", ...(done ? job.maps : [])];
    const existing = new Set($$("#views button").map((b) => b.dataset.view));
    for (const name of job.maps || []) {
      if (!existing.has(name) && done) {
        const b = document.createElement("button");
        b.type = "button";
        b.dataset.view = name;
        const label = mapLabel(job, name);
        b.textContent = label[0];
        b.title = label[1];
        el.views.append(b);
      }
    }
    for (const b of $$("#views button")) {
      if (!wanted.includes(b.dataset.view)) b.remove();
      else {
        b.disabled = !done && b.dataset.view !== "input";
        b.classList.toggle("on", b.dataset.view === state.view);
      }
    }
  }

  function setView(view) {
    state.view = view;
    for (const b of $$("#views button")) b.classList.toggle("on", b.dataset.view === view);
    applySplit();
    refresh();
  }

  let refreshTimer = null;
  function refreshSoon(ms = 120) {
    clearTimeout(refreshTimer);
    refreshTimer = setTimeout(refresh, ms);
  }

  function previewUrl(which, slice) {
    const image = which === "input" || which === "output";
    const win = image ? `&window=${encodeURIComponent(windowParam())}` : "";
    const time = image && timePointsOf(state.job) > 1 ? `&time=${state.time}` : "";  // maps: none
    return `/api/v1/jobs/${state.job.id}/preview?which=${encodeURIComponent(which)}&slice=${slice}${win}${time}`;
  }

  async function blobUrl(path) {
    if (state.urls.has(path)) {
      const u = state.urls.get(path);
      state.urls.delete(path);
      state.urls.set(path, u);
      return u;
    }
    const res = await api(path);
    const url = URL.createObjectURL(await res.blob());
    state.urls.set(path, url);
    const top = res.headers.get("X-Map-Max");  // a map: the value of its brightest colour
    if (top !== null) state.tops.set(path, Number(top));
    const one = res.headers.get("X-Map-Uniform");  // a map that holds one value in this slice
    if (one !== null) state.ones.set(path, Number(one));
    while (state.urls.size > 80) {
      const [oldKey, oldUrl] = state.urls.entries().next().value;
      state.urls.delete(oldKey);
      state.tops.delete(oldKey);
      state.ones.delete(oldKey);
      if (el.imgBefore.src !== oldUrl && el.imgAfter.src !== oldUrl) URL.revokeObjectURL(oldUrl);
    }
    return url;
  }

  function clearUrls() {
    for (const u of state.urls.values()) URL.revokeObjectURL(u);
    state.urls.clear();
    state.tops.clear();
    state.ones.clear();
    el.imgBefore.removeAttribute("src");
    el.imgAfter.removeAttribute("src");
  }

  // a preview that arrives after a newer refresh started (another view, slice or window asked
  // for meanwhile) is not shown: the image on screen is always the last one asked for
  async function setImage(img, path, seq) {
    const url = await blobUrl(path);
    if (seq !== state.loadSeq || img.src === url) return;
    const probe = new Image();
    probe.src = url;
    try { await probe.decode(); } catch (_) { /* show anyway */ }
    if (seq === state.loadSeq) img.src = url;
  }

  async function refresh() {
    const job = state.job;
    if (!job) return;
    const seq = ++state.loadSeq;
    const done = job.state === "done";
    const view = done ? state.view : "input";
    const nIn = slicesOf(job.input);
    const nOut = slicesOf(job.output || job.input);
    const tasks = [];
    el.legend.hidden = true;
    el.mapValue.hidden = true;
    if (view === "compare") {
      tasks.push(setImage(el.imgBefore, previewUrl("input", mapSlice(nIn)), seq));
      tasks.push(setImage(el.imgAfter, previewUrl("output", mapSlice(nOut)), seq));
    } else if (view === "input") {
      tasks.push(setImage(el.imgAfter, previewUrl("input", mapSlice(nIn)), seq));
    } else if (view === "output") {
      tasks.push(setImage(el.imgAfter, previewUrl("output", mapSlice(nOut)), seq));
    } else {
      // every map lies on the output's grid (a through-plane job's has the output's slices)
      const path = previewUrl(view, mapSlice(nOut));
      tasks.push(setImage(el.imgAfter, path, seq).then(() => {
        if (seq !== state.loadSeq) return;
        const units = job.input.units && job.input.units !== "a.u." ? ` ${job.input.units}` : "";
        const one = state.ones.get(path);
        if (one !== undefined) {
          // one value where there is data (a classical interpolator's error bound: its
          // calibrated factor × the slice's noise): a colour map of it is one flat colour at
          // the top of its scale, which reads as "high everywhere"; say the value instead
          el.mapValueText.textContent = `one value: ${fmt.num(one, 3)}${units}`;
          el.mapValueHint.textContent = view === "error_bound"
            ? "The same at every pixel of this slice that holds data: a classical interpolator has no per-pixel spread, so its bound is the calibrated factor × the image's noise."
            : "The same at every pixel of this slice that holds data.";
          el.mapValue.hidden = false;
          return;
        }
        // the colour bar in the image's units: the slice's 99.5th percentile is the brightest
        const top = state.tops.get(path);
        el.legendHi.textContent = top === undefined ? "p99.5" : `${fmt.num(top, 3)}${units} (p99.5)`;
        el.legendLo.textContent = "0";
        el.legend.hidden = false;
      }));
    }
    applySplit();
    updateTags(view);
    try {
      await Promise.all(tasks);
    } catch (err) {
      if (seq === state.loadSeq) showError(`Preview failed: ${err.message}`);
    }
  }

  function updateTags(view) {
    const job = state.job;
    const inp = job.input;
    const out = job.output;
    const method = job.mode === "in-plane" ? `${job.model} ×${job.scale}` : `${job.mode} ×${job.scale}`;
    const inTag = ["INPUT", `${fmt.shape(inp)} · ${fmt.spacing(inp)}`];
    const outTag = out ? ["MEDSR", `${method} · ${fmt.shape(out)}`] : null;
    const set = (node, tag) => {
      node.hidden = !tag;
      node.replaceChildren();
      if (!tag) return;
      const b = document.createElement("b");
      b.textContent = tag[0];
      node.append(b, document.createTextNode(tag[1]));
    };
    if (view === "compare") { set(el.tagLeft, inTag); set(el.tagRight, outTag); }
    else if (view === "input" || job.state !== "done") { set(el.tagLeft, inTag); set(el.tagRight, null); }
    else if (view === "output") { set(el.tagLeft, outTag); set(el.tagRight, null); }
    else { set(el.tagLeft, [mapLabel(job, view)[0].toUpperCase(), method]); set(el.tagRight, null); }
  }

  // ------------------------------------------------------------------ geometry: fit, zoom, pan, split
  function aspect() {
    const info = state.job.input;
    const [, y, x] = info.shape_zyx;
    const [, sy, sx] = info.spacing_mm_zyx;
    return (x * sx) / (y * sy);
  }

  function layout() {
    if (!state.job) return;
    const vw = el.viewport.clientWidth;
    const vh = el.viewport.clientHeight;
    const pad = vw < 500 ? 8 : 20;
    const a = aspect();
    let w = vw - 2 * pad;
    let h = w / a;
    if (h > vh - 2 * pad) { h = vh - 2 * pad; w = h * a; }
    state.fit = { w: Math.max(1, w), h: Math.max(1, h), x: (vw - w) / 2, y: (vh - h) / 2 };
    for (const s of [el.stageBefore, el.stageAfter]) {
      s.style.width = `${state.fit.w}px`;
      s.style.height = `${state.fit.h}px`;
    }
    applyTransform();
  }

  function applyTransform() {
    const x = state.fit.x + state.tx;
    const y = state.fit.y + state.ty;
    const t = `translate(${x}px, ${y}px) scale(${state.zoom})`;
    el.stageBefore.style.transform = t;
    el.stageAfter.style.transform = t;
    el.zoomVal.textContent = `${state.zoom < 10 ? state.zoom.toFixed(1) : Math.round(state.zoom)}×`;
  }

  function zoomAt(factor, cx, cy) {
    const z0 = state.zoom;
    const z1 = Math.max(0.5, Math.min(32, z0 * factor));
    if (z1 === z0) return;
    const px = state.fit.x + state.tx;
    const py = state.fit.y + state.ty;
    const ux = (cx - px) / z0;
    const uy = (cy - py) / z0;
    state.zoom = z1;
    state.tx = cx - z1 * ux - state.fit.x;
    state.ty = cy - z1 * uy - state.fit.y;
    applyTransform();
  }

  function resetZoom(apply = true) {
    state.zoom = 1;
    state.tx = 0;
    state.ty = 0;
    if (apply) applyTransform();
  }

  function applySplit() {
    const compare = state.job && state.job.state === "done" && state.view === "compare";
    el.layerBefore.hidden = !compare;
    el.divider.hidden = !compare;
    const pct = state.split * 100;
    el.layerBefore.style.clipPath = `inset(0 ${100 - pct}% 0 0)`;
    el.divider.style.left = `${pct}%`;
    el.split.value = String(Math.round(pct));
  }

  function bindViewer() {
    el.views.addEventListener("click", (e) => {
      const b = e.target.closest("button[data-view]");
      if (b && !b.disabled) setView(b.dataset.view);
    });
    el.presets.addEventListener("click", (e) => {
      const b = e.target.closest("button[data-window]");
      if (b && !b.disabled) setWindow(b.dataset.window);
    });
    const onWl = () => {
      state.custom = [Number(el.wlLevel.value), Math.max(Number(el.wlWidth.value), 1e-3)];
      showWl();
      refreshSoon();
    };
    el.wlLevel.addEventListener("input", onWl);
    el.wlWidth.addEventListener("input", onWl);

    el.slice.addEventListener("input", () => setSlice(Number(el.slice.value)));
    el.slicePrev.addEventListener("click", () => setSlice(state.slice - 1));
    el.sliceNext.addEventListener("click", () => setSlice(state.slice + 1));
    el.timePrev.addEventListener("click", () => setTime(state.time - 1));
    el.timeNext.addEventListener("click", () => setTime(state.time + 1));

    el.zoomIn.addEventListener("click", () => zoomAt(1.25, el.viewport.clientWidth / 2, el.viewport.clientHeight / 2));
    el.zoomOut.addEventListener("click", () => zoomAt(0.8, el.viewport.clientWidth / 2, el.viewport.clientHeight / 2));
    el.zoomFit.addEventListener("click", () => resetZoom());
    el.viewport.addEventListener("dblclick", () => resetZoom());

    el.viewport.addEventListener("wheel", (e) => {
      if (!state.job) return;
      e.preventDefault();
      if (e.shiftKey) { setSlice(state.slice + (e.deltaY > 0 ? 1 : -1)); return; }
      const r = el.viewport.getBoundingClientRect();
      zoomAt(Math.exp(-e.deltaY * (e.deltaMode === 1 ? 0.05 : 0.0015)), e.clientX - r.left, e.clientY - r.top);
    }, { passive: false });

    el.viewport.addEventListener("keydown", (e) => {
      if (!state.job) return;
      const keys = { ArrowUp: -1, ArrowDown: 1, PageUp: -10, PageDown: 10 };
      if (e.key in keys) { e.preventDefault(); setSlice(state.slice + keys[e.key]); }
      else if (e.key === "ArrowLeft" || e.key === "ArrowRight") {
        e.preventDefault();
        state.split = Math.max(0, Math.min(1, state.split + (e.key === "ArrowLeft" ? -0.05 : 0.05)));
        applySplit();
      } else if (e.key === "+" || e.key === "=") zoomAt(1.25, el.viewport.clientWidth / 2, el.viewport.clientHeight / 2);
      else if (e.key === "-") zoomAt(0.8, el.viewport.clientWidth / 2, el.viewport.clientHeight / 2);
      else if (e.key === "0") resetZoom();
    });
    el.split.addEventListener("input", () => { state.split = Number(el.split.value) / 100; applySplit(); });

    // pointers: one = pan (or drag the divider), two = pinch zoom
    const pointers = new Map();
    let mode = null;
    let last = null;
    let pinch = null;
    const local = (e) => {
      const r = el.viewport.getBoundingClientRect();
      return { x: e.clientX - r.left, y: e.clientY - r.top };
    };
    el.viewport.addEventListener("pointerdown", (e) => {
      if (!state.job || e.button > 0) return;
      el.viewport.focus({ preventScroll: true });
      el.viewport.setPointerCapture(e.pointerId);
      pointers.set(e.pointerId, local(e));
      if (pointers.size === 2) {
        const [a, b] = [...pointers.values()];
        pinch = { d: Math.hypot(a.x - b.x, a.y - b.y), zoom: state.zoom };
        mode = "pinch";
      } else {
        mode = e.target.closest("#divider-handle") ? "split" : "pan";
        last = local(e);
        if (mode === "pan") el.viewport.classList.add("panning");
        if (mode === "split") moveSplit(last.x);
      }
    });
    el.viewport.addEventListener("pointermove", (e) => {
      if (!pointers.has(e.pointerId)) return;
      const p = local(e);
      pointers.set(e.pointerId, p);
      if (mode === "pinch" && pointers.size === 2) {
        const [a, b] = [...pointers.values()];
        const d = Math.hypot(a.x - b.x, a.y - b.y);
        zoomAt((pinch.zoom * d) / Math.max(1, pinch.d) / state.zoom, (a.x + b.x) / 2, (a.y + b.y) / 2);
      } else if (mode === "split") {
        moveSplit(p.x);
      } else if (mode === "pan") {
        state.tx += p.x - last.x;
        state.ty += p.y - last.y;
        last = p;
        applyTransform();
      }
    });
    const end = (e) => {
      pointers.delete(e.pointerId);
      if (pointers.size === 0) { mode = null; el.viewport.classList.remove("panning"); }
      else if (pointers.size === 1) { mode = "pan"; last = [...pointers.values()][0]; }
    };
    el.viewport.addEventListener("pointerup", end);
    el.viewport.addEventListener("pointercancel", end);

    function moveSplit(x) {
      state.split = Math.max(0, Math.min(1, x / el.viewport.clientWidth));
      applySplit();
    }

    new ResizeObserver(() => layout()).observe(el.viewport);
  }

  // test and automation hook (read-only view of the state)
  window.medsr = { get state() { return { job: state.job, view: state.view, window: windowParam(), slice: state.slice, time: state.time, split: state.split, zoom: state.zoom }; } };

  init();
})();
