// The Quiver console: polls the broker's JSON API every second and redraws the open tab. Plain
// JavaScript, no framework, no network but this broker. Rates are computed here from the offsets
// and counters between two polls; charts are small SVG polylines drawn below (sparkline).
// Everything a broker sends is inserted as text (textContent), never as HTML.
"use strict";

const POLL_MS = 1000;
const HISTORY = 60; // samples kept per chart: the last minute
const TABS = ["topics", "groups", "queues", "plugins", "exchanges", "delayed"];

const state = {
  session: null,
  data: { topics: null, groups: null, plugins: null, exchanges: null },
  // name -> {t, in, out} of the previous poll, and name -> [numbers] of the charts.
  last: new Map(),
  inRate: new Map(),
  outRate: new Map(),
  lag: new Map(),
  delayed: new Map(),
};

// ---- small DOM helpers ----

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") node.className = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else if (v !== undefined && v !== null) node.setAttribute(k, String(v));
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}

function table(headers, rows, empty) {
  if (rows.length === 0) return el("p", { class: "empty" }, empty);
  return el("table", {}, el("thead", {}, el("tr", {}, headers.map((h) => el("th", {}, h)))), el("tbody", {}, rows));
}

function num(v, attrs) {
  return el("td", Object.assign({ class: "num" }, attrs || {}), v);
}

function fmtBytes(n) {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return (i === 0 ? n : n.toFixed(1)) + " " + units[i];
}

function fmtRate(r) {
  if (r === undefined || r === null) return "–";
  return (r >= 100 ? r.toFixed(0) : r.toFixed(1)) + "/s";
}

function fmtTime(ms) {
  return ms ? new Date(ms).toISOString().replace("T", " ").slice(0, 19) : "";
}

// ---- charts ----

const SVG = "http://www.w3.org/2000/svg";

function sparkline(values, cls) {
  const w = 120, h = 24;
  const svg = document.createElementNS(SVG, "svg");
  svg.setAttribute("class", "spark");
  svg.setAttribute("width", w);
  svg.setAttribute("height", h);
  svg.setAttribute("viewBox", `0 0 ${w} ${h}`);
  const vs = values || [];
  if (vs.length > 1) {
    const max = Math.max(1, ...vs);
    const step = w / (HISTORY - 1);
    const x0 = w - step * (vs.length - 1);
    const pts = vs.map((v, i) => `${(x0 + i * step).toFixed(1)},${(h - 1 - (v / max) * (h - 2)).toFixed(1)}`);
    const line = document.createElementNS(SVG, "polyline");
    line.setAttribute("class", cls);
    line.setAttribute("points", pts.join(" "));
    svg.append(line);
  }
  return svg;
}

function push(map, key, value) {
  const series = map.get(key) || [];
  series.push(value);
  if (series.length > HISTORY) series.shift();
  map.set(key, series);
}

function latest(map, key) {
  const s = map.get(key);
  return s && s.length ? s[s.length - 1] : undefined;
}

// ---- polling ----

async function getJson(path) {
  const r = await fetch(path, { credentials: "same-origin", cache: "no-store" });
  if (r.status === 401) {
    window.location.assign("/login");
    throw new Error("signed out");
  }
  const body = await r.json();
  if (!r.ok) throw new Error(body.error || r.statusText);
  return body;
}

function record(now) {
  for (const t of state.data.topics.items) {
    const prev = state.last.get(t.name);
    const out = t.records_out_total;
    if (prev) {
      const dt = (now - prev.t) / 1000;
      push(state.inRate, t.name, Math.max(0, (t.log_end_total - prev.in) / dt));
      push(state.outRate, t.name, Math.max(0, (out - prev.out) / dt));
    }
    state.last.set(t.name, { t: now, in: t.log_end_total, out });
    push(state.delayed, t.name, t.pending_delayed);
  }
  for (const g of state.data.groups.items) push(state.lag, g.name, g.lag_total);
}

async function poll() {
  try {
    if (!state.session) state.session = await getJson("/api/session");
    const [topics, groups, plugins, exchanges] = await Promise.all(
      ["/api/topics", "/api/groups", "/api/plugins", "/api/exchanges"].map(getJson)
    );
    Object.assign(state.data, { topics, groups, plugins, exchanges });
    record(Date.now());
    document.getElementById("status").textContent = "";
    render();
    // How many polls the page has drawn: the browser test waits on it.
    document.body.dataset.polls = String(Number(document.body.dataset.polls || 0) + 1);
  } catch (e) {
    document.getElementById("status").textContent = "Cannot reach the broker: " + e.message;
  }
  setTimeout(poll, POLL_MS);
}

// ---- actions (shown to admins only; the API checks them anyway) ----

async function action(method, path, body) {
  const r = await fetch(path, {
    method,
    credentials: "same-origin",
    headers: { "X-Quiver-Console": "1", "Content-Type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const answer = await r.json();
  if (!r.ok) throw new Error(answer.error || r.statusText);
  return answer;
}

async function createTopic(ev) {
  ev.preventDefault();
  const name = document.getElementById("new-topic-name");
  const parts = document.getElementById("new-topic-partitions");
  try {
    await action("POST", "/api/topics", { name: name.value.trim(), partitions: Number(parts.value) || 0 });
    name.value = "";
    document.getElementById("status").textContent = "";
  } catch (e) {
    document.getElementById("status").textContent = "Create failed: " + e.message;
  }
}

async function deleteTopic(name) {
  if (!window.confirm(`Delete topic "${name}" and all its records?`)) return;
  try {
    await action("DELETE", "/api/topics/" + encodeURIComponent(name));
  } catch (e) {
    document.getElementById("status").textContent = "Delete failed: " + e.message;
  }
}

// ---- pages ----

function more(list, what) {
  return list.total > list.items.length
    ? el("p", { class: "sub" }, `Showing ${list.items.length} of ${list.total} ${what} (the API pages with ?offset=&limit=).`)
    : null;
}

function topicsPage() {
  const list = state.data.topics;
  const admin = state.session && state.session.admin;
  const rows = list.items.map((t) =>
    el("tr", { "data-topic": t.name },
      el("td", {}, t.name),
      num(t.partition_count),
      num(t.log_end_total, { "data-log-end": t.log_end_total }),
      num(fmtBytes(t.size_bytes_total)),
      el("td", {}, sparkline(state.inRate.get(t.name), "in"), " ",
        el("span", { class: "rate-in", "data-rate-in": latest(state.inRate, t.name) ?? "" }, fmtRate(latest(state.inRate, t.name)))),
      el("td", {}, sparkline(state.outRate.get(t.name), "out"), " ",
        el("span", { class: "rate-out", "data-rate-out": latest(state.outRate, t.name) ?? "" }, fmtRate(latest(state.outRate, t.name)))),
      num(t.pending_delayed),
      admin ? el("td", {}, el("button", { class: "danger delete-topic", "data-delete": t.name, onclick: () => deleteTopic(t.name) }, "Delete")) : null));
  const headers = ["Topic", "Partitions", "Records", "Size", "In (records/s)", "Out (records/s)", "Delayed"];
  if (admin) headers.push("");
  const parts = list.items.flatMap((t) => t.partitions.map((p) =>
    el("tr", {}, el("td", {}, t.name), num(p.partition), num(p.log_start), num(p.log_end), num(fmtBytes(p.size_bytes)), num(p.segments))));
  return [
    el("h2", {}, "Topics"), table(headers, rows, "No topics yet."), more(list, "topics"),
    el("h2", {}, "Partitions"),
    table(["Topic", "Partition", "Log start", "Log end", "Size", "Segments"], parts, "No partitions."),
  ];
}

function groupsPage() {
  const list = state.data.groups;
  const groups = list.items.filter((g) => g.partition_count > 0 || g.member_count > 0);
  const rows = groups.map((g) =>
    el("tr", { "data-group": g.name },
      el("td", {}, g.name), num(g.member_count), num(g.partition_count),
      num(g.lag_total, { class: "num lag", "data-lag": g.lag_total }),
      el("td", {}, sparkline(state.lag.get(g.name), "lag"))));
  const details = groups.map((g) => [
    el("h2", {}, `Group ${g.name}`, el("span", { class: "sub" }, ` epoch ${g.epoch}`)),
    table(["Member", "Client", "Topics", "Assigned"], g.members.map((m) =>
      el("tr", {}, el("td", {}, m.member_id), el("td", {}, m.client_id), el("td", {}, m.topics.join(", ")),
        el("td", {}, m.assigned.map((a) => `${a.topic}/${a.partition}`).join(", ")))), "No live members."),
    table(["Topic", "Partition", "Owner", "Committed", "Log end", "Lag"], g.partitions.map((p) =>
      el("tr", { "data-group-partition": `${g.name}/${p.topic}/${p.partition}` },
        el("td", {}, p.topic), num(p.partition), el("td", {}, p.owner ?? ""), num(p.committed ?? "–"), num(p.log_end), num(p.lag))),
      "Nothing committed yet."),
  ]);
  return [el("h2", {}, "Consumer groups"),
    table(["Group", "Members", "Partitions", "Lag", "Lag (last minute)"], rows, "No consumer groups yet."),
    more(list, "groups"), details];
}

function queuesPage() {
  const rows = state.data.groups.items.flatMap((g) => g.queues.map((q) =>
    el("tr", { "data-queue": `${g.name}/${q.topic}/${q.partition}` },
      el("td", {}, g.name), el("td", {}, q.topic), num(q.partition), num(q.leased), num(q.available),
      num(q.dead_lettered), num(q.next), num(q.log_end))));
  return [el("h2", {}, "Queues"), table(["Group", "Topic", "Partition", "Leased (in flight)", "Available", "Dead-lettered", "Next", "Log end"], rows,
    "No queue-mode groups yet (quiver consume TOPIC --queue NAME).")];
}

function pluginsPage() {
  const list = state.data.plugins;
  if (list.items.length === 0) return [el("h2", {}, "Plugins"), el("p", { class: "empty" }, "No plugins deployed.")];
  return [el("h2", {}, "Plugins"), more(list, "plugins"), list.items.map((p) => el("div", { "data-plugin": p.name },
    el("h2", {}, p.name),
    table(["Version", "World", "Size", "SHA-256", "Deployed"], p.versions.map((v) =>
      el("tr", {}, el("td", {}, v.version), el("td", {}, v.world), num(fmtBytes(v.size_bytes)), el("td", {}, v.sha256.slice(0, 12)), el("td", {}, fmtTime(v.deployed_ms)))), ""),
    table(["Attached to", "Version", "Health", "Calls", "Failures", "Memory", "Last error"], p.attachments.map((a) =>
      el("tr", {}, el("td", {}, a.exchange ? `exchange ${a.topic}` : a.topic), el("td", {}, a.version),
        el("td", { class: a.healthy ? "healthy" : "unhealthy" }, a.healthy ? "healthy" : "cooling down"),
        num(a.calls), num(a.failures), num(fmtBytes(a.memory_in_use_bytes)), el("td", {}, a.last_error ?? ""))), "Not attached."),
    el("pre", { class: "logs" }, p.logs.length ? p.logs.join("\n") : "(no log lines)")))];
}

function exchangesPage() {
  const list = state.data.exchanges;
  const rows = list.items.map((e) => el("tr", { "data-exchange": e.name },
    el("td", {}, e.name), el("td", {}, e.kind), el("td", {}, e.alternate ?? ""),
    el("td", {}, e.router ? `${e.router.plugin}@${e.router.version}` : ""),
    el("td", {}, e.bindings.map((b) => b.topic + (b.key ? ` (${b.key})` : "") +
      (b.headers.length ? ` [${b.headers.map(([k, v]) => `${k}=${v}`).join(", ")}]` : "")).join("; "))));
  return [el("h2", {}, "Exchanges and bindings"),
    table(["Exchange", "Kind", "Alternate", "Router", "Bindings"], rows, "No exchanges yet."), more(list, "exchanges")];
}

function delayedPage() {
  const rows = state.data.topics.items.filter((t) => t.pending_delayed > 0 || (state.delayed.get(t.name) || []).some((v) => v > 0))
    .map((t) => el("tr", { "data-delayed": t.name }, el("td", {}, t.name), num(t.pending_delayed),
      el("td", {}, sparkline(state.delayed.get(t.name), "in"))));
  return [el("h2", {}, "Delayed records pending"), table(["Topic", "Pending", "Last minute"], rows, "No delayed records held.")];
}

const PAGES = { topics: topicsPage, groups: groupsPage, queues: queuesPage, plugins: pluginsPage, exchanges: exchangesPage, delayed: delayedPage };

function currentTab() {
  const tab = window.location.hash.slice(1);
  return TABS.includes(tab) ? tab : "topics";
}

function render() {
  const tab = currentTab();
  for (const a of document.querySelectorAll("#tabs a")) a.classList.toggle("active", a.dataset.tab === tab);
  const s = state.session;
  if (s) {
    document.getElementById("who").textContent = s.auth
      ? `${s.principal}${s.admin ? " (admin)" : " (read-only)"} · broker ${s.broker_id} · v${s.version}`
      : `authentication off (read-only) · broker ${s.broker_id} · v${s.version}`;
    document.getElementById("logout").hidden = !s.auth;
    document.getElementById("topics-actions").hidden = !(s.admin && tab === "topics");
  }
  if (!state.data.topics) return;
  document.getElementById("view").replaceChildren(...PAGES[tab]().flat(2).filter((n) => n));
  document.body.dataset.tab = tab;
}

window.addEventListener("hashchange", render);
document.getElementById("create-topic").addEventListener("submit", createTopic);
poll();
