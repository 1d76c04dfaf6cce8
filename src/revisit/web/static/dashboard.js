// revisit dashboard: reads /v1/places, /v1/reports/summary and /v1/reports/unique-visitors
// (session cookie auth) and draws totals, two inline-SVG charts and two tables. No libraries.
"use strict";

const $ = (id) => document.getElementById(id);
const SVG = "http://www.w3.org/2000/svg";
const state = { page: 1, pageSize: 25, sort: "-total_appearances", pages: 1 };

function isoDay(d) { return d.toISOString().slice(0, 10); }

function params(extra) {
  const p = new URLSearchParams();
  p.set("from", $("from").value);
  p.set("to", $("to").value);
  const group = $("camera_group").value;
  if (group) p.set("camera_group", group);
  const locs = [...document.querySelectorAll("#locations input:checked")].map((i) => i.value);
  if (locs.length) p.set("locations", locs.join(","));
  for (const [k, v] of Object.entries(extra || {})) p.set(k, v);
  return p;
}

async function getJSON(url) {
  const r = await fetch(url, { credentials: "same-origin" });
  if (r.status === 401) { window.location = "/login"; throw new Error("signed out"); }
  const body = await r.json();
  if (!r.ok) throw new Error(body.detail || r.statusText);
  return body;
}

function el(tag, attrs, text) {
  const e = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  return e;
}

function niceMax(v) {
  if (v <= 5) return 5;
  const mag = Math.pow(10, Math.floor(Math.log10(v)));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * mag >= v) return m * mag;
  return 10 * mag;
}

// A bar chart (or line chart) with a y axis; points = [{label, value}].
function chart(container, points, kind) {
  const W = Math.max(240, container.clientWidth || 600), H = 220, L = 36, B = 24, T = 8, R = 8;
  const svg = el("svg", { viewBox: `0 0 ${W} ${H}`, width: W, height: H, role: "img" });
  const max = niceMax(Math.max(1, ...points.map((p) => p.value)));
  const iw = W - L - R, ih = H - T - B;
  for (let i = 0; i <= 4; i++) {
    const y = T + ih - (ih * i) / 4;
    svg.append(el("line", { x1: L, x2: W - R, y1: y, y2: y, class: "axis" }));
    svg.append(el("text", { x: L - 4, y: y + 3, "text-anchor": "end" }, String(Math.round((max * i) / 4))));
  }
  const n = Math.max(points.length, 1), step = iw / n;
  const every = Math.ceil(n / 10);
  const xy = points.map((p, i) => [L + step * i + step / 2, T + ih - (ih * p.value) / max]);
  points.forEach((p, i) => {
    const [x, y] = xy[i];
    if (kind === "bar") {
      const bw = Math.max(2, step * 0.7);
      const bar = el("rect", { x: x - bw / 2, y, width: bw, height: T + ih - y, class: "bar" });
      bar.append(el("title", {}, `${p.label}: ${p.value}`));
      svg.append(bar);
    } else {
      const dot = el("circle", { cx: x, cy: y, r: 3, class: "dot" });
      dot.append(el("title", {}, `${p.label}: ${p.value}`));
      svg.append(dot);
    }
    if (i % every === 0) svg.append(el("text", { x, y: H - 8, "text-anchor": "middle" }, p.label));
  });
  if (kind !== "bar" && xy.length > 1) {
    svg.append(el("polyline", { points: xy.map((p) => p.join(",")).join(" "), class: "line" }));
  }
  container.replaceChildren(svg);
}

function cell(tr, text, num) {
  const td = document.createElement("td");
  td.textContent = text;
  if (num) td.className = "num";
  tr.append(td);
}

function fmtTime(s) { return s ? s.replace("T", " ").replace("Z", "").slice(0, 16) : ""; }

async function loadSummary() {
  const s = await getJSON("/v1/reports/summary?" + params());
  const t = s.totals;
  $("t-visitors").textContent = t.unique_visitors;
  $("t-visits").textContent = t.visits;
  $("t-returning").textContent = Math.round(t.returning_share * 100) + "%";
  $("t-new").textContent = t.new_visitors;
  chart($("daily-chart"), s.daily.map((d) => ({ label: d.day.slice(5), value: d.unique_visitors })),
        s.daily.length > 31 ? "line" : "bar");
  chart($("histogram-chart"), s.histogram.map((h) => ({ label: h.visits, value: h.visitors })), "bar");
  const body = document.querySelector("#stores tbody");
  body.replaceChildren();
  for (const loc of s.locations) {
    const tr = document.createElement("tr");
    cell(tr, loc.name === loc.location_id ? loc.name : `${loc.name} (${loc.location_id})`);
    cell(tr, loc.unique_visitors, true);
    cell(tr, loc.visits, true);
    cell(tr, loc.repeat_visitors, true);
    cell(tr, loc.sightings, true);
    body.append(tr);
  }
}

async function loadVisitors() {
  const r = await getJSON("/v1/reports/unique-visitors?" + params({
    format: "json", page: state.page, page_size: state.pageSize, sort: state.sort,
  }));
  state.pages = Math.max(1, r.pages);
  const body = document.querySelector("#visitors tbody");
  body.replaceChildren();
  for (const v of r.visitors) {
    const tr = document.createElement("tr");
    cell(tr, v.visitor_id);
    cell(tr, v.total_appearances, true);
    cell(tr, v.locations_visited, true);
    cell(tr, v.locations.map((l) => `${l.name}: ${l.visits}`).join(", "));
    cell(tr, fmtTime(v.first_seen));
    cell(tr, fmtTime(v.last_seen));
    body.append(tr);
  }
  $("page-info").textContent = `page ${state.page} of ${state.pages} · ${r.total} visitors`;
  $("prev").disabled = state.page <= 1;
  $("next").disabled = state.page >= state.pages;
  for (const th of document.querySelectorAll("#visitors th[data-sort]")) {
    const f = th.dataset.sort;
    th.classList.toggle("sorted", state.sort.replace("-", "") === f);
    th.classList.toggle("asc", state.sort === f);
  }
  $("csv").href = "/v1/reports/unique-visitors?" + params({ format: "csv" });
}

async function refresh() {
  $("error").hidden = true;
  try {
    await Promise.all([loadSummary(), loadVisitors()]);
    document.body.dataset.loaded = "true";
  } catch (e) {
    $("error").textContent = e.message;
    $("error").hidden = false;
  }
}

async function init() {
  const today = new Date();
  const start = new Date(today.getTime() - 29 * 86400000);
  const q = new URLSearchParams(window.location.search);
  $("from").value = q.get("from") || isoDay(start);
  $("to").value = q.get("to") || isoDay(today);
  const places = await getJSON("/v1/places");
  for (const name of Object.keys(places.groups)) {
    const o = document.createElement("option");
    o.value = name; o.textContent = name;
    $("camera_group").append(o);
  }
  for (const loc of places.locations) {
    const label = document.createElement("label");
    const box = document.createElement("input");
    box.type = "checkbox"; box.value = loc.location_id;
    label.append(box, " " + loc.name);
    $("locations").append(label);
  }
  $("filters").addEventListener("submit", (ev) => { ev.preventDefault(); state.page = 1; refresh(); });
  $("prev").addEventListener("click", () => { state.page--; loadVisitors(); });
  $("next").addEventListener("click", () => { state.page++; loadVisitors(); });
  for (const th of document.querySelectorAll("#visitors th[data-sort]")) {
    th.addEventListener("click", () => {
      const f = th.dataset.sort;
      state.sort = state.sort === "-" + f ? f : "-" + f;
      state.page = 1;
      loadVisitors();
    });
  }
  await refresh();
}

init().catch((e) => { $("error").textContent = e.message; $("error").hidden = false; });
