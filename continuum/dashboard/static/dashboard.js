// mlsysops dashboard: reads the northbound API with the operator's token (Authorization header, never the
// URL), streams /api/v1/stream (Server-Sent Events over fetch, so the header can be sent) and draws with uPlot.
"use strict";
(() => {
  const HISTORY_S = 600;            // seconds of chart history kept in the page
  const MAX_DECISIONS = 200;
  const PALETTE = ["#2f6fdb", "#1f9d55", "#d48806", "#9254de", "#d4380d", "#13a8a8", "#eb2f96", "#597ef7",
                   "#7cb305", "#fa8c16"];
  const $ = (id) => document.getElementById(id);
  const esc = (s) => String(s ?? "").replace(/[&<>"']/g, (c) => ({"&": "&amp;", "<": "&lt;", ">": "&gt;",
                                                                   '"': "&quot;", "'": "&#39;"}[c]));
  let token = null;
  let updates = 0;
  const seenDecisions = new Set();

  // -- token ------------------------------------------------------------------------------------------
  function readToken() {
    const m = location.hash.match(/token=([^&]+)/);
    if (m) {
      sessionStorage.setItem("mlsysops-token", decodeURIComponent(m[1]));
      history.replaceState(null, "", location.pathname);   // keep the token out of the address bar
    }
    return sessionStorage.getItem("mlsysops-token");
  }
  async function api(path) {
    const r = await fetch(path, {headers: {Authorization: `Bearer ${token}`}});
    if (r.status === 401) { askToken("that token was refused"); throw new Error("401"); }
    if (!r.ok) throw new Error(`${path}: HTTP ${r.status}`);
    return r.json();
  }
  function askToken(why) {
    sessionStorage.removeItem("mlsysops-token");
    $("main").hidden = true; $("login").hidden = false;
    if (why) setBanner([{level: "error", text: why}]);
  }
  $("login").addEventListener("submit", (ev) => {
    ev.preventDefault();
    sessionStorage.setItem("mlsysops-token", $("token-input").value.trim());
    location.reload();
  });

  // -- charts -----------------------------------------------------------------------------------------
  class SeriesChart {
    constructor(el, unit, fmt) {
      this.el = el; this.fmt = fmt; this.unit = unit; this.keys = []; this.data = new Map(); this.targets = new Map();
      this.plot = null; this.points = 0;
    }
    add(key, t, v) {
      if (v === null || v === undefined || Number.isNaN(v)) return;
      if (!this.data.has(key)) { this.data.set(key, []); this.keys.push(key); this.plot?.destroy(); this.plot = null; }
      const arr = this.data.get(key);
      if (arr.length && arr[arr.length - 1][0] >= t) return;
      arr.push([t, v]);
      while (arr.length && arr[0][0] < t - HISTORY_S) arr.shift();
      this.points += 1;
    }
    target(key, v) { if (v !== null && v !== undefined) this.targets.set(key, v); }
    render() {
      const times = [...new Set([].concat(...[...this.data.values()].map((a) => a.map((p) => p[0]))))].sort((a, b) => a - b);
      if (!times.length) return;
      const idx = new Map(times.map((t, i) => [t, i]));
      const cols = [times];
      const series = [{}];
      this.keys.forEach((key, i) => {
        const col = new Array(times.length).fill(null);
        for (const [t, v] of this.data.get(key)) col[idx.get(t)] = v;
        cols.push(col);
        const stroke = PALETTE[i % PALETTE.length];
        series.push({label: key, stroke, width: 1.5, spanGaps: true, value: (u, v) => v == null ? "–" : this.fmt(v)});
        if (this.targets.has(key)) {
          cols.push(new Array(times.length).fill(this.targets.get(key)));
          series.push({label: `${key} target`, stroke, dash: [6, 4], width: 1, value: (u, v) => v == null ? "–" : this.fmt(v)});
        }
      });
      const width = Math.max(300, this.el.clientWidth);
      if (!this.plot || this.plot.series.length !== series.length) {
        this.plot?.destroy();
        this.plot = new uPlot({width, height: 180, series, legend: {live: false},
          scales: {x: {time: true}}, axes: [{}, {size: 60, values: (u, vals) => vals.map((v) => this.fmt(v))}]},
          cols, this.el);
      } else {
        this.plot.setData(cols);
      }
      this.el.dataset.points = String(this.points);
    }
  }
  const pct = (v) => `${(v * 100).toFixed(0)}%`;
  const charts = {cpu: new SeriesChart($("chart-cpu"), "1", pct), mem: new SeriesChart($("chart-mem"), "1", pct),
                  power: new SeriesChart($("chart-power"), "W", (v) => v.toFixed(1)),
                  qos: new SeriesChart($("chart-qos"), "ms", (v) => Intl.NumberFormat("en", {maximumFractionDigits: 1}).format(v)),
                  ccpu: new SeriesChart($("chart-ccpu"), "cores", (v) => v.toFixed(2)),
                  cmem: new SeriesChart($("chart-cmem"), "By", (v) => Intl.NumberFormat("en", {notation: "compact", style: "unit", unit: "byte"}).format(v))};

  // -- panels -----------------------------------------------------------------------------------------
  function setBanner(alerts) {
    const b = $("banner");
    b.innerHTML = alerts.map((a) => `<div class="${esc(a.level)}">${esc(a.text)}</div>`).join("");
    b.hidden = alerts.length === 0;
  }
  function lag(x) { return x == null ? "" : `<span class="metric" title="event-loop lag, max of 10 s">lag ${Number(x).toFixed(0)} ms</span>`; }
  function nodeState(n) { return n.alive === true ? "up" : n.alive === false ? "down" : "unknown"; }
  function renderTopology(s) {
    const comp = (c) => `<li data-component="${esc(c.app)}/${esc(c.component)}" data-status="${esc(c.status)}">
      <span class="label"><span class="dot ${esc(c.status)}"></span>${esc(c.app)}/${esc(c.component)}
      <span class="kind">${esc(c.status)}</span></span></li>`;
    const node = (n) => `<li class="${nodeState(n)}" data-node="${esc(n.name)}" data-state="${nodeState(n)}">
      <span class="label"><span class="dot ${nodeState(n)}"></span><span class="kind">node</span>
      <span class="name">${esc(n.name)}</span>
      <span class="metric">${n.cpu == null ? "" : "cpu " + pct(n.cpu)} ${n.mem == null ? "" : "mem " + pct(n.mem)}
      ${n.power == null ? "" : n.power.toFixed(1) + " W"} ${n.energy == null ? "" : (n.energy / 1000).toFixed(2) + " kJ"}</span>
      ${lag(n.loop_lag_ms)}
      ${n.alive === false ? '<span class="badge failed">down</span>' : ""}
      ${n.trust != null && n.trust < 0.995 ? `<span class="badge trust" data-trust="${n.trust}" title="${esc(n.trust_reason || "")}">trust ${n.trust.toFixed(2)}</span>` : ""}</span>
      <ul class="tree">${n.components.map(comp).join("")}</ul></li>`;
    const cluster = (c) => `<li data-cluster="${esc(c.id)}" data-state="${c.alive ? "up" : "down"}">
      <span class="label"><span class="dot ${c.alive ? "up" : "down"}"></span><span class="kind">cluster</span>
      ${esc(c.id)} ${lag(c.loop_lag_ms)}</span><ul class="tree">${c.nodes.map(node).join("")}</ul></li>`;
    $("topology").innerHTML = `<ul class="tree"><li data-continuum="${esc(s.continuum.id)}">
      <span class="label"><span class="dot ${s.continuum.connected ? "up" : "down"}"></span>
      <span class="kind">continuum</span>${esc(s.continuum.id)} ${lag(s.continuum.loop_lag_ms)}</span>
      <ul class="tree">${s.clusters.map(cluster).join("")}</ul></li></ul>`;
  }
  function qosCell(q) {
    return q.map((m) => {
      if (m.value == null) return `${esc(m.metric)}: –`;
      const bad = m.target != null && ((m.relation || "lower_or_equal").startsWith("lower") ? m.value > m.target : m.value < m.target);
      return `<span class="${bad ? "qos-bad" : ""}">${esc(m.metric)} ${m.value.toFixed(1)}` +
             `${m.target == null ? "" : " / " + m.target}</span>`;
    }).join("<br>");
  }
  // `mlsysops explain` for components not running as desired: the reason, the next step, the evidence on hover.
  function whyCell(c) {
    if (!c.why) return esc(c.reason);
    return `<span class="why" title="${esc((c.why.evidence || []).join("\n"))}">${esc(c.why.reason)}</span>` +
      (c.why.next_step ? `<div class="muted next-step">next: ${esc(c.why.next_step)}</div>` : "");
  }
  function renderApps(s) {
    const rows = [];
    for (const app of s.apps) for (const c of app.components) {
      rows.push(`<tr data-app="${esc(app.name)}" data-component="${esc(c.component)}"><td>${esc(app.name)}/${esc(c.component)}</td>
        <td><span class="badge ${esc(c.status)}">${esc(c.status)}</span></td><td>${esc(c.cluster)}</td>
        <td>${esc(c.nodes.join(", "))}</td><td class="num">${qosCell(c.qos)}</td><td>${whyCell(c)}</td></tr>`);
    }
    $("apps").tBodies[0].innerHTML = rows.join("") || '<tr><td colspan="6" class="muted">no applications (mlsysops apply -f APP.yaml)</td></tr>';
  }
  function renderBuckets(s) {
    const rows = (s.buckets || []).map((b) => {
      const sites = Object.entries(b.replicas).map(([site, st]) => st === "complete" ? esc(site) : `${esc(site)} (${esc(st)})`);
      const copy = b.copy ? `${esc(b.copy.source)} → ${esc(b.copy.target)} ${b.copy.copied}/${b.copy.total}` : "";
      const users = b.users.map((u) => `${esc(u.component)}@${esc(u.node)}` +
        (u.p95_ms == null ? "" : ` ${Number(u.p95_ms).toFixed(1)} ms`));
      return `<tr data-bucket="${esc(b.name)}"><td>${esc(b.name)}</td><td>${sites.join(", ") || "-"} <span class="muted">(${Object.values(b.replicas).filter((x) => x === "complete").length}/${esc(b.wanted ?? "-")})</span></td>
        <td>${copy}</td><td>${users.join(", ")}</td></tr>`;
    });
    $("buckets").tBodies[0].innerHTML = rows.join("") || '<tr><td colspan="4" class="muted">no buckets (slice config `storage`, apps with storage.buckets)</td></tr>';
  }
  // The policy's own explanation (strings or lists of strings), e.g. "app/comp n1 -> n2 (node lost): ...".
  function explainText(e) {
    if (!e || typeof e !== "object") return "";
    const parts = [];
    for (const [k, v] of Object.entries(e)) {
      if (k === "alternatives") continue;
      if (typeof v === "string") parts.push(v);
      else if (Array.isArray(v) && v.every((x) => typeof x === "string")) parts.push(...v);
    }
    const text = parts.join("; ");
    return text.length > 400 ? text.slice(0, 400) + "…" : text;
  }
  function renderDecisions(records) {
    const body = $("decisions").tBodies[0];
    for (const d of records) {
      if (seenDecisions.has(d.id)) continue;
      seenDecisions.add(d.id);
      const tr = document.createElement("tr");
      tr.className = "new"; tr.dataset.decision = d.id; tr.dataset.stage = d.stage; tr.dataset.outcome = d.outcome;
      const alts = Array.isArray(d.alternatives) && d.alternatives.length ? ` (alternatives: ${d.alternatives.length})` : "";
      tr.innerHTML = `<td class="num">${new Date(d.ts * 1000).toLocaleTimeString()}</td><td>${esc(d.agent)}</td>
        <td>${esc(d.stage)}</td><td>${esc(d.policy || "")}</td><td><span class="badge ${esc(d.outcome)}">${esc(d.outcome)}</span></td>
        <td>${esc(d.reason)}${esc(alts)}<div class="muted why">${esc(explainText(d.explanation))}</div></td>`;
      body.insertBefore(tr, body.firstChild);
    }
    while (body.rows.length > MAX_DECISIONS) body.deleteRow(body.rows.length - 1);
  }
  function onSnapshot(s) {
    updates += 1; $("updates").textContent = String(updates);
    $("slice").textContent = `· ${s.continuum.id}`;
    setBanner(s.alerts);
    renderTopology(s); renderApps(s); renderBuckets(s); renderDecisions(s.decisions);
    for (const c of s.clusters) for (const n of c.nodes) {
      if (n.alive === false) continue;
      charts.cpu.add(n.name, s.t, n.cpu); charts.mem.add(n.name, s.t, n.mem);
      if (n.power != null) charts.power.add(n.name, s.t, n.power);
    }
    for (const app of s.apps) for (const c of app.components) {
      const key = `${app.name}/${c.component}`;
      for (const q of c.qos) { charts.qos.add(key, s.t, q.value); charts.qos.target(key, q.target); }
      charts.ccpu.add(key, s.t, c.cpu); charts.cmem.add(key, s.t, c.memory);
    }
    Object.values(charts).forEach((ch) => ch.render());
  }

  // -- history + stream -------------------------------------------------------------------------------
  async function loadHistory() {
    const rows = await api(`/api/v1/telemetry?window=${HISTORY_S}&limit=5000`);
    for (const r of rows) {
      const ch = r.metric === "system.cpu.utilization" ? charts.cpu : r.metric === "system.memory.utilization" ? charts.mem
        : r.metric === "hw.power" ? charts.power : null;
      if (ch && r.labels.node && !r.labels.app) for (const [t, v] of r.points || []) ch.add(r.labels.node, t, v);
      if (r.metric === "response_time_ms" && r.labels.app) {
        for (const [t, v] of r.points || []) charts.qos.add(`${r.labels.app}/${r.labels.component}`, t, v);
      }
    }
  }
  function setConn(state, text) { $("conn-dot").className = `dot ${state}`; $("conn-text").textContent = text; }
  async function stream() {
    for (;;) {
      try {
        const r = await fetch("/api/v1/stream?interval=1", {headers: {Authorization: `Bearer ${token}`}});
        if (r.status === 401) { askToken("that token was refused"); return; }
        if (!r.ok || !r.body) throw new Error(`HTTP ${r.status}`);
        setConn("live", "live");
        const reader = r.body.pipeThrough(new TextDecoderStream()).getReader();
        let buf = "";
        for (;;) {
          const {value, done} = await reader.read();
          if (done) break;
          buf += value;
          let i;
          while ((i = buf.indexOf("\n\n")) >= 0) {
            const block = buf.slice(0, i); buf = buf.slice(i + 2);
            const data = block.split("\n").filter((l) => l.startsWith("data: ")).map((l) => l.slice(6)).join("\n");
            if (data) onSnapshot(JSON.parse(data));
          }
        }
      } catch (e) { /* reconnect below */ }
      setConn("reconnecting", "reconnecting…");
      setBanner([{level: "error", text: "lost the connection to the continuum agent; reconnecting"}]);
      await new Promise((res) => setTimeout(res, 2000));
    }
  }

  // -- management modes (GET /api/v1/mode/status every 5 s) -----------------------------------------------
  function renderManagement(status) {
    const rows = [];
    for (const [agent, st] of Object.entries(status || {})) {
      const apps = Object.entries(st.apps || {});
      const overrides = st.app_modes || {};
      if (!apps.length) rows.push(`<tr data-agent="${esc(agent)}"><td>${esc(agent)}</td><td class="muted">(slice)</td>
        <td>${esc(st.mode)}</td><td></td><td class="muted">${esc(Object.entries(overrides).map(([a, m]) => a + "=" + m).join(", "))}</td></tr>`);
      for (const [app, m] of apps) {
        const auto = m.auto || {};
        const why = m.why || auto.reason || "";
        rows.push(`<tr data-agent="${esc(agent)}" data-app="${esc(app)}" data-acting="${esc(m.acting)}"><td>${esc(agent)}</td>
          <td>${esc(app)}</td><td>${esc(m.mode)}${auto.state === "fallback" ? " · fallback" : ""}</td>
          <td><span class="badge ${m.acting === "ml" ? "running" : "deploying"}">${esc(m.acting)}</span></td><td>${esc(why)}</td></tr>`);
      }
    }
    $("management").tBodies[0].innerHTML = rows.join("") || '<tr><td colspan="5" class="muted">no agent in this process</td></tr>';
  }
  async function pollManagement() {
    for (;;) {
      try { renderManagement(await api("/api/v1/mode/status")); } catch (e) { /* shown on the next poll */ }
      await new Promise((res) => setTimeout(res, 5000));
    }
  }

  token = readToken();
  if (!token) { askToken(null); return; }
  $("main").hidden = false;
  pollManagement();
  loadHistory().catch(() => {}).finally(stream);
})();
