// Re-ID search page: vanilla JS, no build step, no external assets (works offline).
"use strict";

const $ = (sel, root = document) => root.querySelector(sel);
const KEY_STORE = "reid.apiKey";
const PAGE = 60;

// ---------- API helpers ----------
function apiKey() { return localStorage.getItem(KEY_STORE) || ""; }

function headers() {
  const h = {};
  const k = apiKey();
  if (k) h["X-API-Key"] = k;
  return h;
}

async function api(path, opts = {}) {
  const res = await fetch(path, { ...opts, headers: { ...headers(), ...(opts.headers || {}) } });
  let body = null;
  const text = await res.text();
  try { body = text ? JSON.parse(text) : null; } catch { body = text; }
  if (!res.ok) {
    const err = new Error(errorText(res, body));
    err.status = res.status;
    throw err;
  }
  return { status: res.status, body };
}

function errorText(res, body) {
  let detail = body && typeof body === "object" ? body.detail ?? body.error ?? body.message : body;
  if (typeof detail === "string" && (detail.trimStart().startsWith("<") || detail.length > 300)) {
    detail = res.statusText;  // an HTML error page from a proxy: not worth showing
  }
  if (Array.isArray(detail)) {
    detail = detail.map((d) => `${(d.loc || []).slice(1).join(".")}: ${d.msg}`).join("; ");
  } else if (detail && typeof detail === "object") {
    detail = JSON.stringify(detail);
  }
  if (res.status === 401 || res.status === 403) {
    return `${res.status}: ${detail || "not authorised"} — set the API key (top right).`;
  }
  return `${res.status}: ${detail || res.statusText}`;
}

// Images behind auth cannot carry a header in <img src>, so fetch them as blobs when a key is set.
function setImage(img, url) {
  if (!url) { img.alt = "no thumbnail"; return; }
  if (!apiKey()) { img.src = url; return; }
  fetch(url, { headers: headers() })
    .then((r) => (r.ok ? r.blob() : Promise.reject(new Error(r.status))))
    .then((b) => { img.src = URL.createObjectURL(b); })
    .catch(() => { img.alt = "thumbnail unavailable"; });
}

function thumbUrl(item) {
  return item.thumbnail_url || (item.id != null ? `gallery/${encodeURIComponent(item.id)}/thumbnail` : "");
}

// ---------- formatting ----------
function toDate(v) {
  if (v == null || v === "") return null;
  if (typeof v === "number") return new Date(v < 1e11 ? v * 1000 : v);
  const d = new Date(v);
  return Number.isNaN(d.getTime()) ? null : d;
}

function fmtTime(v) {
  const d = toDate(v);
  if (!d) return "";
  return d.toLocaleString(undefined, { dateStyle: "short", timeStyle: "medium" });
}

function fmtSpan(start, end) {
  const a = fmtTime(start);
  const b = fmtTime(end);
  if (!a) return "";
  if (!b || b === a) return a;
  const da = toDate(start);
  const db = toDate(end);
  const secs = (db - da) / 1000;
  return `${a} (+${secs.toFixed(secs < 10 ? 1 : 0)} s)`;
}

// Where an item came from: the uploaded file's name, plus the frame range for a tracklet.
function sourceLabel(item) {
  const s = item.source && typeof item.source === "object" ? item.source : { name: item.source };
  const name = s.name ? String(s.name).split(/[\\/]/).pop() : "";
  const origin = name || (s.footage_id ? `footage ${s.footage_id}` : "");
  if (s.frame_start != null) {
    const range = s.frame_end != null && s.frame_end !== s.frame_start
      ? `frames ${s.frame_start}–${s.frame_end}` : `frame ${s.frame_start}`;
    return origin ? `${origin} · ${range}` : range;
  }
  return origin;
}

const startOf = (it) => it.timestamp_start ?? it.start;
const endOf = (it) => it.timestamp_end ?? it.end;

// datetime-local value (local time) -> ISO 8601 with offset, or "" when empty.
function localToIso(v) {
  if (!v) return "";
  const d = new Date(v);
  return Number.isNaN(d.getTime()) ? "" : d.toISOString();
}

function csv(v) {
  return (v || "").split(",").map((s) => s.trim()).filter(Boolean);
}

function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v == null || v === false) continue;
    if (k === "class") e.className = v;
    else if (k === "text") e.textContent = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children) if (c != null) e.append(c);
  return e;
}

function setStatus(node, msg, isError = false) {
  node.textContent = msg;
  node.classList.toggle("error", isError);
}

// ---------- tabs ----------
function showTab(name) {
  const tabs = ["search", "gallery", "upload"];
  if (!tabs.includes(name)) name = "search";
  for (const t of tabs) {
    $(`[data-panel="${t}"]`).hidden = t !== name;
    const a = $(`nav [data-tab="${t}"]`);
    if (t === name) a.setAttribute("aria-current", "page"); else a.removeAttribute("aria-current");
  }
  if (name === "gallery" && !galleryLoaded) { loadGallery(true); loadCameras(); }
  if (name === "upload") refreshJobs();
}
window.addEventListener("hashchange", () => showTab(location.hash.slice(1)));

// ---------- drop zones ----------
function wireDrop(zone, input, previews) {
  const render = () => {
    previews.replaceChildren();
    for (const f of input.files) {
      if (f.type.startsWith("image/")) {
        const img = el("img", { alt: f.name, title: f.name });
        img.src = URL.createObjectURL(f);
        previews.append(img);
      } else {
        previews.append(el("span", { text: `🎞 ${f.name}` }));
      }
    }
  };
  input.addEventListener("change", render);
  zone.addEventListener("dragover", (e) => { e.preventDefault(); zone.classList.add("over"); });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (e) => {
    e.preventDefault();
    zone.classList.remove("over");
    if (e.dataTransfer && e.dataTransfer.files.length) {
      input.files = e.dataTransfer.files;
      render();
    }
  });
}

// ---------- result / gallery cards ----------
function card(item, opts = {}) {
  const img = el("img", { alt: `${item.kind || "item"} ${item.id} from camera ${item.camera ?? "?"}`,
    loading: "lazy" });
  setImage(img, thumbUrl(item));
  const thumb = el("button", { class: "thumb", type: "button", title: "Details",
    onclick: () => openDetail(item.id) }, img);
  const top = el("div", { class: "row" });
  if (opts.rank != null) top.append(el("span", { class: "rank", text: `#${opts.rank}` }));
  if (item.score != null) {
    top.append(el("span", { class: "score", title: "similarity", text: Number(item.score).toFixed(3) }));
  }
  if (item.kind) top.append(el("span", { class: "kind", text: item.kind }));
  const li = el("li", { class: "card", "data-id": String(item.id) }, thumb, top,
    el("div", { class: "meta cam", text: `camera ${item.camera ?? "—"}` }),
    el("div", { class: "meta time", text: fmtSpan(startOf(item), endOf(item)) || "time unknown" }),
    el("div", { class: "meta source", title: sourceLabel(item), text: sourceLabel(item) }));
  const actions = el("div", { class: "row" },
    el("a", { href: `gallery/${encodeURIComponent(item.id)}`, class: "link",
      onclick: (e) => { e.preventDefault(); openDetail(item.id); }, text: "details" }),
    el("button", { type: "button", class: "link", title: "Search with this item as the query",
      onclick: () => searchLike(item.id), text: "find similar" }));
  if (opts.rank != null) {  // a search hit: the investigator can confirm it as the same person
    const box = el("input", { type: "checkbox", "aria-label": `Item ${item.id} is the same person` });
    box.checked = marked.has(item.id);
    box.addEventListener("change", () => { box.checked ? marked.add(item.id) : marked.delete(item.id); showMarked(); });
    actions.append(el("label", { class: "mark", title: "Mark as the same person, then search with all marked" },
      box, " same person"));
  }
  if (opts.deletable) {
    actions.append(el("button", { type: "button", class: "danger", "aria-label": `Delete item ${item.id}`,
      onclick: () => deleteItem(item.id, li), text: "Delete" }));
  }
  li.append(actions);
  return li;
}

async function openDetail(id) {
  const dlg = $("#detail");
  const body = $("#detail-body");
  $("#detail-title").textContent = `Item ${id}`;
  body.replaceChildren(el("p", { text: "Loading…" }));
  if (!dlg.open) dlg.showModal();
  try {
    const { body: it } = await api(`gallery/${encodeURIComponent(id)}`);
    $("#detail-title").textContent = `${it.kind || "Item"} ${it.id}`;
    const big = el("img", { class: "big", alt: `item ${it.id}` });
    setImage(big, thumbUrl(it));
    const dl = el("dl");
    const add = (k, v) => { if (v != null && v !== "") dl.append(el("dt", { text: k }), el("dd", { text: v })); };
    const src = it.source && typeof it.source === "object" ? it.source : { name: it.source };
    add("Kind", it.kind);
    add("Camera", it.camera);
    add("Time", fmtSpan(startOf(it), endOf(it)));
    add("Source", src.name);
    add("Footage", src.footage_id);
    if (src.frame_start != null) add("Frames in footage", `${src.frame_start}–${src.frame_end ?? src.frame_start}`);
    if (Array.isArray(it.box)) add("Box (x, y, w, h)", it.box.map((x) => Math.round(x)).join(", "));
    add("Crops", it.n_frames);
    add("Added", fmtTime(it.created_at));
    add("Model", it.model_id);
    if (it.meta && Object.keys(it.meta).length) add("Meta", JSON.stringify(it.meta));
    body.replaceChildren(big, dl);
    if (it.scene_url) {  // footage: the frame the person was seen in, their box marked
      const scene = el("img", { class: "scene", alt: `where item ${it.id} was seen, box marked` });
      setImage(scene, it.scene_url);
      body.append(el("h3", { text: "Scene" }), scene);
    }
    const nCrops = it.n_crops ?? 0;
    if (it.kind === "tracklet" && nCrops > 0) {
      const strip = el("div", { class: "frames", role: "list", "aria-label": "Tracklet frames" });
      const shown = Math.min(nCrops, 32);
      for (let n = 0; n < shown; n++) {
        // spread the shown crops over the whole tracklet
        const k = shown === nCrops ? n : Math.round((n * (nCrops - 1)) / (shown - 1));
        const im = el("img", { alt: `crop ${k + 1} of ${nCrops}`, loading: "lazy", role: "listitem" });
        setImage(im, `gallery/${encodeURIComponent(it.id)}/crops/${k}`);
        strip.append(im);
      }
      body.append(el("h3", { text: `Frames (${nCrops})` }), strip);
    }
  } catch (err) {
    body.replaceChildren(el("p", { class: "error", text: err.message }));
  }
}

// ---------- search ----------
// The search form's options (top k, min score, re-ranking, cameras, time range) as [name, value]
// pairs: the same fields for POST /query (a photo or clip) and GET /gallery/{id}/similar (an item).
function searchOptions() {
  const f = new FormData($("#search-form"));
  const out = [];
  for (const name of ["top_k", "min_score"]) {
    const v = f.get(name);
    if (v !== null && v !== "") out.push([name, v]);
  }
  if (f.get("rerank") === "can") out.push(["rerank", "can"]);
  for (const name of ["cameras", "exclude_cameras"]) {
    const list = csv(f.get(name));
    if (list.length) out.push([name, list.join(",")]);
  }
  for (const name of ["since", "until"]) {
    const iso = localToIso(f.get(name));
    if (iso) out.push([name, iso]);
  }
  return out;
}

// Hits marked "same person" (item ids, kept across searches): searching with all of them averages
// their stored vectors — several confirmed sightings find more than one photo does.
const marked = new Set();

function showMarked() {
  $("#marked-bar").hidden = !marked.size;
  $("#search-marked").textContent = `Search with the ${marked.size} marked`;
}

function searchMarked() {
  const [first, ...also] = marked;
  const q = new URLSearchParams(searchOptions());
  for (const id of also) q.append("also", String(id));
  showResults(() => api(`gallery/${encodeURIComponent(first)}/similar?${q}`),
    ` like the ${marked.size} marked item${marked.size > 1 ? "s" : ""}`);
}

// The last search's hits, best first: re-drawn by score or by time without searching again.
let lastResults = [];

// By time, the hits read as a route (camera after camera); each keeps its rank by score.
function renderResults() {
  const ranked = lastResults.map((r, i) => [r, i + 1]);
  if ($("#results-order").value === "time") {
    const t = (r) => toDate(startOf(r))?.getTime() ?? Infinity;  // undated hits last
    ranked.sort(([a, ra], [b, rb]) => t(a) - t(b) || ra - rb);
  }
  $("#results").replaceChildren(...ranked.map(([r, rank]) => card(r, { rank })));
}

async function showResults(request, what) {
  const status = $("#search-status");
  const btn = $("#search-btn");
  const list = $("#results");
  btn.disabled = true;
  setStatus(status, "Searching…");
  try {
    const { body } = await request();
    const results = body.results || [];
    lastResults = results;
    renderResults();
    $("#order-label").hidden = !results.length;
    const took = body.took_ms != null ? ` in ${Math.round(body.took_ms)} ms` : "";
    setStatus(status, results.length ? `${results.length} result${results.length > 1 ? "s" : ""}${what}${took}.`
      : `No matches${what}${took}. Try fewer filters or a lower min score.`);
  } catch (err) {
    lastResults = [];
    list.replaceChildren();
    $("#order-label").hidden = true;
    setStatus(status, `Search failed — ${err.message}`, true);
  } finally {
    btn.disabled = false;
  }
}

function search(ev) {
  ev.preventDefault();
  const files = $("#query-files").files;
  if (!files.length) { setStatus($("#search-status"), "Pick or drop a query image first.", true); return; }
  const fd = new FormData();
  for (const f of files) fd.append("files", f);
  for (const [name, value] of searchOptions()) fd.append(name, value);
  showResults(() => api("query", { method: "POST", body: fd }), "");
}

// An item as the query (often a better one than the photo that found it): same options, same list.
function searchLike(id) {
  if (location.hash !== "#search") location.hash = "search";
  const dlg = $("#detail");
  if (dlg.open) dlg.close();
  const q = new URLSearchParams(searchOptions());
  showResults(() => api(`gallery/${encodeURIComponent(id)}/similar?${q}`), ` like item ${id}`);
}

// ---------- cameras (suggestions in every camera field, chips in the gallery) ----------
async function loadCameras() {
  let cams = [];
  try {
    const { body } = await api("cameras");
    cams = body.cameras || [];
  } catch { return; /* auth missing or old server: the fields still take free text */ }
  $("#camera-list").replaceChildren(...cams.map((c) => el("option", { value: c.camera })));
  const chips = $("#camera-chips");
  chips.replaceChildren(...cams.map((c) => el("button", {
    type: "button", class: "chip", title: [fmtTime(c.first), fmtTime(c.last)].filter(Boolean).join(" – "),
    onclick: () => { $("#gallery-form input[name=camera]").value = c.camera; loadGallery(true); },
    text: `${c.camera} (${c.items})`,
  })));
  if (cams.length > 1) {
    chips.prepend(el("button", { type: "button", class: "chip", text: "all cameras",
      onclick: () => { $("#gallery-form input[name=camera]").value = ""; loadGallery(true); } }));
  }
}

// ---------- gallery ----------
let galleryLoaded = false;
let galleryOffset = 0;

// The gallery form's filters, as GET /gallery (listing) and DELETE /gallery (erasing) both take them.
function galleryFilters() {
  const f = new FormData($("#gallery-form"));
  const q = new URLSearchParams();
  const cam = (f.get("camera") || "").trim();
  if (cam) q.set("camera", cam);
  for (const name of ["since", "until"]) {
    const iso = localToIso(f.get(name));
    if (iso) q.set(name, iso);
  }
  return q;
}

async function loadGallery(reset) {
  const status = $("#gallery-status");
  const list = $("#gallery");
  if (reset) { galleryOffset = 0; list.replaceChildren(); }
  const filters = galleryFilters();
  const q = new URLSearchParams({ limit: String(PAGE), offset: String(galleryOffset) });
  for (const [k, v] of filters) q.set(k, v);
  setStatus(status, "Loading…");
  try {
    const { body } = await api(`gallery?${q}`);
    const items = Array.isArray(body) ? body : body.items || body.results || [];
    const total = Array.isArray(body) ? null : body.total;
    for (const it of items) list.append(card(it, { deletable: true }));
    galleryOffset += items.length;
    galleryLoaded = true;
    const shown = list.children.length;
    setStatus(status, total != null ? `${shown} of ${total} items.` : `${shown} items.`);
    $("#gallery-more").hidden = !(total != null ? shown < total : items.length === PAGE);
    // erasing by filter: only with a filter (the API refuses none) and something to erase
    // (it erases what was listed, not what the fields say if they were edited since)
    $("#gallery-delete").hidden = !(filters.toString() && total);
    Object.assign($("#gallery-delete").dataset, { total: String(total), filters: filters.toString() });
  } catch (err) {
    setStatus(status, `Could not load the gallery — ${err.message}`, true);
  }
}

async function deleteItem(id, node) {
  if (!confirm(`Delete item ${id} from the gallery?`)) return;
  try {
    await api(`gallery/${encodeURIComponent(id)}`, { method: "DELETE" });
    node.remove();
    marked.delete(id);
    showMarked();
    loadCameras();
    for (const n of document.querySelectorAll(`[data-id="${CSS.escape(String(id))}"]`)) n.remove();
    setStatus($("#gallery-status"), `Deleted item ${id}.`);
  } catch (err) {
    setStatus($("#gallery-status"), `Delete failed — ${err.message}`, true);
  }
}

async function deleteMatching() {
  const { total, filters } = $("#gallery-delete").dataset;
  if (!filters) return;
  if (!confirm(`Delete all ${total} items these filters match, with their pictures? This cannot be undone.`)) return;
  try {
    const { body } = await api(`gallery?${filters}`, { method: "DELETE" });
    await loadGallery(true);
    loadCameras();
    setStatus($("#gallery-status"), `Deleted ${body.deleted} items.`);
  } catch (err) {
    setStatus($("#gallery-status"), `Delete failed — ${err.message}`, true);
  }
}

// ---------- upload + jobs ----------
const ACTIVE = new Set(["queued", "pending", "running", "started", "processing"]);
let jobTimer = null;

async function upload(ev) {
  ev.preventDefault();
  const status = $("#upload-status");
  const input = $("#upload-files");
  if (!input.files.length) { setStatus(status, "Pick files to upload first.", true); return; }
  const f = new FormData(ev.currentTarget);
  const btn = $("#upload-btn");
  btn.disabled = true;
  let images = 0;
  const jobs = [];
  const errors = [];
  // One request per file: a video starts a background job (202), images are indexed right away.
  for (const file of input.files) {
    const fd = new FormData();
    fd.append("files", file);
    const cam = (f.get("camera") || "").trim();
    if (cam) fd.append("camera", cam);
    const ts = localToIso(f.get("timestamp"));
    if (ts) fd.append("timestamp", ts);
    setStatus(status, `Uploading ${file.name}…`);
    try {
      const { status: code, body } = await api("gallery", { method: "POST", body: fd });
      if (code === 202 || (body && (body.job_id || body.job))) {
        jobs.push(body.job_id || (body.job && body.job.id));
      } else {
        const n = body && (body.added ?? (body.items ? body.items.length : (body.ids || []).length));
        images += n || 0;
      }
    } catch (err) {
      errors.push(`${file.name}: ${err.message}`);
    }
  }
  btn.disabled = false;
  const parts = [];
  if (images) parts.push(`indexed ${images} item${images > 1 ? "s" : ""}`);
  if (jobs.length) parts.push(`started ${jobs.length} footage job${jobs.length > 1 ? "s" : ""}`);
  setStatus(status, (parts.join(", ") || "nothing indexed") + (errors.length ? ` — ${errors.join("; ")}` : "."),
    errors.length > 0);
  galleryLoaded = false;
  loadCameras();
  refreshJobs();
}

function jobRow(j) {
  const state = String(j.state || j.status || "unknown").toLowerCase();
  let pct = null;
  const p = j.progress;
  if (typeof p === "number") pct = p <= 1 ? p * 100 : p;
  else if (p && typeof p === "object") {
    if (p.fraction != null) pct = p.fraction * 100;
    else if (p.done != null && p.total) pct = (100 * p.done) / p.total;
    else if (p.frames_done != null && p.frames_total) pct = (100 * p.frames_done) / p.frames_total;
    else if (p.percent != null) pct = p.percent;
  }
  if (pct == null && ["done", "succeeded", "completed", "finished"].includes(state)) pct = 100;
  const bar = el("progress", { max: "100", "aria-label": `Job ${j.id} progress` });
  if (pct != null) bar.value = Math.max(0, Math.min(100, pct));
  const params = j.params || {};
  const name = j.source || j.filename || params.filename || params.source || "";
  const li = el("li", { "data-job": String(j.id) },
    el("div", { class: "row" },
      el("strong", { text: `Job ${j.id}` }),
      el("span", { class: `state state-${state}`, text: pct != null && ACTIVE.has(state)
        ? `${state} ${Math.round(pct)}%` : state })),
    name ? el("div", { class: "meta", text: name }) : null,
    bar);
  const extra = [];
  if (j.frames_done != null) extra.push(`frames ${j.frames_done}${j.frames_total ? ` / ${j.frames_total}` : ""}`);
  if (j.fps != null) extra.push(`${j.fps} fps`);
  if (j.tracklets != null) extra.push(`${j.tracklets} tracklet${j.tracklets === 1 ? "" : "s"}`
    + (["done", "succeeded", "completed"].includes(state) ? " indexed" : " found"));
  if (j.already_indexed) extra.push("this footage was already indexed");
  if (j.camera) extra.push(`camera ${j.camera}`);
  if (extra.length) li.append(el("div", { class: "meta", text: extra.join(" · ") }));
  const errs = [].concat(j.errors || [], j.error ? [j.error] : []);
  if (errs.length) {
    li.append(el("ul", { class: "error" }, ...errs.map((e) => el("li", {
      text: typeof e === "string" ? e : e.message || JSON.stringify(e) }))));
  }
  if (ACTIVE.has(state)) {
    li.append(el("button", { type: "button", class: "danger", onclick: async () => {
      try { await api(`jobs/${encodeURIComponent(j.id)}`, { method: "DELETE" }); } catch (err) {
        setStatus($("#upload-status"), `Cancel failed — ${err.message}`, true);
      }
      refreshJobs();
    }, text: "Cancel" }));
  }
  return li;
}

async function refreshJobs() {
  clearTimeout(jobTimer);
  const list = $("#jobs");
  try {
    const { body } = await api("jobs");
    const jobs = Array.isArray(body) ? body : body.jobs || body.items || [];
    list.replaceChildren(...jobs.map(jobRow));
    if (!jobs.length) list.append(el("li", { class: "meta", text: "No footage jobs yet." }));
    const active = jobs.some((j) => ACTIVE.has(String(j.state || j.status || "").toLowerCase()));
    if (active && !$("#tab-upload").hidden) jobTimer = setTimeout(refreshJobs, 1000);
  } catch (err) {
    list.replaceChildren(el("li", { class: "error", text: `Could not list jobs — ${err.message}` }));
  }
}

// ---------- health + api key ----------
async function checkHealth() {
  const node = $("#health");
  try {
    const res = await fetch("readyz", { headers: headers() });
    let body = null;
    try { body = await res.json(); } catch { /* plain text */ }
    if (res.ok) {
      node.textContent = "ready";
      node.className = "health ok";
      $("#rerank-can").disabled = !(body && (body.rerankers || []).includes("can"));
    }
    else {
      node.textContent = "not ready";
      node.className = "health bad";
      if (body) node.title = JSON.stringify(body.checks || body.detail || body);
    }
  } catch {
    node.textContent = "offline";
    node.className = "health bad";
  }
}

function wireKey() {
  const input = $("#api-key");
  input.value = apiKey();
  $("#key-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const v = input.value.trim();
    if (v) localStorage.setItem(KEY_STORE, v); else localStorage.removeItem(KEY_STORE);
    $("#key-form").closest("details").open = false;
    checkHealth();
    loadCameras();
  });
  $("#key-clear").addEventListener("click", () => {
    localStorage.removeItem(KEY_STORE);
    input.value = "";
  });
}

// ---------- boot ----------
wireKey();
wireDrop($("#search-drop"), $("#query-files"), $("#query-previews"));
wireDrop($("#upload-drop"), $("#upload-files"), $("#upload-previews"));
$("#search-form").addEventListener("submit", search);
$("#gallery-form").addEventListener("submit", (e) => { e.preventDefault(); loadGallery(true); });
$("#gallery-more").addEventListener("click", () => loadGallery(false));
$("#gallery-delete").addEventListener("click", deleteMatching);
$("#results-order").addEventListener("change", renderResults);
$("#search-marked").addEventListener("click", searchMarked);
$("#clear-marked").addEventListener("click", () => { marked.clear(); showMarked(); renderResults(); });
$("#upload-form").addEventListener("submit", upload);
showTab(location.hash.slice(1));
loadCameras();
checkHealth();
setInterval(checkHealth, 15000);
