// revisit dashboard: reads /v1/places, /v1/reports/summary and /v1/reports/unique-visitors
// (session cookie auth) and draws totals, two inline-SVG charts and two tables. No libraries.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { page: 1, pageSize: 25, sort: "-total_appearances", pages: 1 };

function isoDay(d) { return d.toISOString().slice(0, 10); }

// the zone whose days and hours the figures are cut in
function zone() { return $("tz").value.trim() || "UTC"; }

function params(extra) {
  const p = new URLSearchParams();
  p.set("from", $("from").value);
  p.set("to", $("to").value);
  p.set("tz", zone());
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

const charts = {};

// A bar (or line) chart drawn by Chart.js, served from /static/vendor (scripts/setup.sh).
function chart(id, labels, values, kind) {
  if (!window.Chart) { $("no-charts").hidden = false; return; }
  const accent = getComputedStyle(document.body).getPropertyValue("--accent").trim() || "#2f6fde";
  if (charts[id]) charts[id].destroy();
  charts[id] = new Chart($(id), {
    type: kind === "line" ? "line" : "bar",
    data: { labels, datasets: [{ data: values, backgroundColor: accent, borderColor: accent }] },
    options: {
      animation: false, maintainAspectRatio: false, plugins: { legend: { display: false } },
      scales: { y: { beginAtZero: true, ticks: { precision: 0 } }, x: { ticks: { maxTicksLimit: 12 } } },
    },
  });
}

function minutes(s) {
  if (s === null || s === undefined) return "–";
  const r = Math.round(s), m = Math.floor(r / 60), sec = r % 60;
  return `${m}m${String(sec).padStart(2, "0")}s`;
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
  chart("daily-chart", s.daily.map((d) => d.day.slice(5)), s.daily.map((d) => d.unique_visitors),
        s.daily.length > 31 ? "line" : "bar");
  chart("histogram-chart", s.histogram.map((h) => h.visits), s.histogram.map((h) => h.visitors));
  const all = s.dwell.all;
  chart("dwell-chart", Object.keys(all.buckets), Object.values(all.buckets));
  $("dwell-median").textContent = `median ${minutes(all.median_s)} over ${all.visits} visits`;
  $("hour-zone").textContent = `(${zone()})`;
  chart("hour-chart", s.by_hour.map((h) => String(h.hour).padStart(2, "0")), s.by_hour.map((h) => h.visits));
  chart("weekday-chart", s.by_weekday.map((d) => d.day), s.by_weekday.map((d) => d.visits));
  const dwellOf = Object.fromEntries(s.dwell.locations.map((d) => [d.location_id, d]));
  const body = document.querySelector("#stores tbody");
  body.replaceChildren();
  for (const loc of s.locations) {
    const tr = document.createElement("tr");
    cell(tr, loc.name === loc.location_id ? loc.name : `${loc.name} (${loc.location_id})`);
    cell(tr, loc.unique_visitors, true);
    cell(tr, loc.visits, true);
    cell(tr, loc.repeat_visitors, true);
    cell(tr, loc.sightings, true);
    cell(tr, minutes((dwellOf[loc.location_id] || {}).median_s), true);
    body.append(tr);
  }
}

function loadHeatmap() {
  const cam = $("heatmap-camera").value;
  if (!cam) return;
  const q = new URLSearchParams({ from: $("from").value, to: $("to").value,
                                  tz: zone(), t: Date.now() });
  $("heatmap").src = `/v1/cameras/${encodeURIComponent(cam)}/heatmap.png?${q}`;
}

// a period that includes today is live: the heatmap is redrawn every 10 s
setInterval(() => {
  if ($("to").value >= isoDay(new Date()) && document.visibilityState === "visible") loadHeatmap();
}, 10000);

async function loadFlows() {
  const f = await getJSON("/v1/reports/flows?" + params());
  const stores = Object.keys(f.visitors_per_location);
  const share = {};
  for (const a of f.affinity) share[`${a.from}\u0000${a.to}`] = a;
  const name = (id) => f.names[id] || id;
  const head = document.createElement("tr");
  cell(head, "");
  for (const b of stores) cell(head, name(b), true);
  document.querySelector("#affinity thead").replaceChildren(head);
  const body = document.querySelector("#affinity tbody");
  body.replaceChildren();
  for (const a of stores) {
    const tr = document.createElement("tr");
    cell(tr, `${name(a)} (${f.visitors_per_location[a]})`);
    for (const b of stores) {
      const x = share[`${a}\u0000${b}`];
      cell(tr, a === b ? "–" : x ? `${Math.round(x.share * 100)}% (${x.visitors})` : "0%", true);
    }
    body.append(tr);
  }
  const moves = document.querySelector("#transitions tbody");
  moves.replaceChildren();
  for (const t of [...f.transitions].sort((x, y) => y.visits - x.visits).slice(0, 10)) {
    const tr = document.createElement("tr");
    cell(tr, name(t.from)); cell(tr, name(t.to)); cell(tr, t.visits, true);
    moves.append(tr);
  }
  const paths = document.querySelector("#paths tbody");
  paths.replaceChildren();
  for (const store of f.camera_paths) {
    for (const p of store.paths.slice(0, 3)) {
      const tr = document.createElement("tr");
      cell(tr, name(store.location_id)); cell(tr, p.path.join(" › ")); cell(tr, p.visits, true);
      paths.append(tr);
    }
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

// Occupancy: locations with a capacity (the card stays hidden without any)
let occLocations = [];
const WEEK = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];

// The card fails on its own (a period longer than the history's 366 days, say): the
// rest of the page still shows, and the card says what went wrong.
async function loadOccupancy() {
  try {
    await loadOccupancyCard();
  } catch (e) {
    $("occupancy").hidden = false;
    $("occ-now").textContent = `Occupancy: ${e.message}`;
  }
}

async function loadOccupancyCard() {
  occLocations = await getJSON("/v1/occupancy/locations");
  $("occupancy").hidden = occLocations.length === 0;
  if (!occLocations.length) return;
  const sel = $("occ-location");
  if (!sel.options.length) {
    for (const o of occLocations) {
      const opt = document.createElement("option");
      opt.value = o.location_id; opt.textContent = o.location_id;
      sel.append(opt);
    }
    sel.addEventListener("change", loadOccupancyOf);
    const cams = $("zones-camera");
    for (const cam of occLocations[0].zone_cameras) {
      const opt = document.createElement("option");
      opt.value = cam; opt.textContent = cam;
      cams.append(opt);
    }
    cams.addEventListener("change", loadZones);
  }
  loadZones();
  await loadOccupancyOf();
}

function loadZones() {
  const cam = $("zones-camera").value;
  if (cam) $("zones").src = `/v1/cameras/${encodeURIComponent(cam)}/zones.png`;
}

async function loadOccupancyOf() {
  const loc = $("occ-location").value;
  const now = occLocations.find((o) => o.location_id === loc);
  $("occ-now").textContent = now.sign === "no_data"
    ? `${loc}: no data now (no camera reporting)`
    : `${loc} now: ${now.people} of ${now.capacity} people (${Math.round(now.occupancy_pct)} %, ${now.level})`;
  const p = new URLSearchParams({ from: $("from").value, to: $("to").value, locations: loc });
  const hist = await getJSON(`/v1/occupancy/history?${p}`);
  const byHour = Array.from({ length: 24 }, () => []), byDay = Array.from({ length: 7 }, () => []);
  for (const r of hist.by_weekday_hour) {
    byHour[r.hour].push(r.people);
    byDay[WEEK.indexOf(r.weekday)].push(r.people);
  }
  const mean = (v) => (v.length ? Math.round(10 * v.reduce((a, b) => a + b, 0) / v.length) / 10 : 0);
  chart("occ-hour-chart", byHour.map((_, h) => String(h)), byHour.map(mean));
  chart("occ-weekday-chart", WEEK, byDay.map(mean));
  const alerts = await getJSON("/v1/alerts?limit=20");
  const body = $("alerts").querySelector("tbody");
  body.replaceChildren();
  for (const a of alerts) {
    const tr = document.createElement("tr");
    cell(tr, fmtTime(a.started_at));
    cell(tr, a.message);
    cell(tr, fmtTime(a.ended_at) || "ongoing");
    const ok = a.deliveries.filter((d) => d.ok).length;
    cell(tr, `${ok} of ${new Set(a.deliveries.map((d) => d.target)).size}`);
    body.append(tr);
  }
}

async function refresh() {
  $("error").hidden = true;
  try {
    await Promise.all([loadSummary(), loadVisitors(), loadFlows(), loadOccupancy()]);
    loadHeatmap();
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
  // days and hours in UTC unless asked (?tz=, or the field): UTC reads the day rollup,
  // another zone the visits rollup with the visits it cuts from sightings, a few times
  // slower on large tenants; the stores' own zones are offered in the field's list
  $("tz").value = q.get("tz") || "UTC";
  for (const zone of new Set(places.locations.map((l) => l.timezone))) {
    if (zone === "UTC") continue;
    const o = document.createElement("option");
    o.value = zone;
    $("tz-list").append(o);
  }
  for (const name of Object.keys(places.groups)) {
    const o = document.createElement("option");
    o.value = name; o.textContent = name;
    $("camera_group").append(o);
  }
  for (const c of places.cameras) {
    const o = document.createElement("option");
    o.value = c.camera_id; o.textContent = c.name && c.name !== c.camera_id ? `${c.name} (${c.camera_id})` : c.camera_id;
    $("heatmap-camera").append(o);
  }
  $("heatmap-camera").addEventListener("change", loadHeatmap);
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
