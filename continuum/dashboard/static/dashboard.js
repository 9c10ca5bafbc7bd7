// mlsysops dashboard: reads the northbound API with the operator's token (Authorization header, never the
// URL), streams /api/v1/stream (Server-Sent Events over fetch, so the header can be sent) and draws with uPlot.
"use strict";
(() => {
  const MAX_DECISIONS = 200;        // rows (groups of identical decisions) kept in the table
  const $ = (id) => document.getElementById(id);
  const esc = (s) => String(s ?? "").replace(/[&<>"']/g, (c) => ({"&": "&amp;", "<": "&lt;", ">": "&gt;",
                                                                   '"': "&quot;", "'": "&#39;"}[c]));
  let token = null;
  let updates = 0;
  let streamEvents = 0;
  const seenDecisions = new Set();
  const decisionGroups = new Map();   // agent|stage|policy|outcome|reason -> {rec, count, first, last}

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

  // -- charts (charts.js) -----------------------------------------------------------------------------
  const {SeriesChart, units, hms, HISTORY_S} = window.MlsCharts;
  const charts = {cpu: new SeriesChart($("chart-cpu"), units.pct), mem: new SeriesChart($("chart-mem"), units.pct),
                  power: new SeriesChart($("chart-power"), units.watts), qos: new SeriesChart($("chart-qos"), units.ms),
                  ccpu: new SeriesChart($("chart-ccpu"), units.cores), cmem: new SeriesChart($("chart-cmem"), units.bytes)};
  const pct = (v) => `${(v * 100).toFixed(0)}%`;
  const STREAM_INTERVAL_S = 1;
  const NODE_METRICS = {"system.cpu.utilization": "cpu", "system.memory.utilization": "mem", "hw.power": "power"};
  const COMPONENT_METRICS = {cpu_usage_cores: "ccpu", memory_usage_bytes: "cmem"};
  const nodesOf = (s) => [].concat(...s.clusters.map((c) => c.nodes));
  const compKey = (app, c) => `${app.name}/${c.component}`;

  // -- panels -----------------------------------------------------------------------------------------
  function setBanner(alerts) {
    const b = $("banner");
    b.innerHTML = alerts.map((a) => `<div class="${esc(a.level)}">${esc(a.text)}</div>`).join("");
    b.hidden = alerts.length === 0;
  }
  function lag(x) { return x == null ? "" : `<span class="metric" title="event-loop lag, max of 10 s">lag ${Number(x).toFixed(0)} ms</span>`; }
  function nodeState(n) { return n.alive === true ? "up" : n.alive === false ? "down" : "unknown"; }
  const nodeWord = (n) => n.status || (n.alive === true ? "Ready" : n.alive === false ? "NotReady" : "Unknown");
  let downNodes = new Set();          // nodes of the last snapshot that are NotReady
  function renderTopology(s) {
    // a component the continuum still places on a NotReady node (until it is relocated) says so
    const comp = (c, down) => `<li data-component="${esc(c.app)}/${esc(c.component)}" data-status="${esc(c.status)}">
      <span class="label"><span class="dot ${down ? "down" : esc(c.status)}"></span>${esc(c.app)}/${esc(c.component)}
      <span class="kind">${esc(c.status)}${down ? " · node NotReady" : ""}</span></span></li>`;
    // a NotReady node shows no numbers: its last samples are stale, not its state
    const metrics = (n) => n.alive === false ? "" : `<span class="metric">${n.cpu == null ? "" : "cpu " + pct(n.cpu)}
      ${n.mem == null ? "" : "mem " + pct(n.mem)} ${n.power == null ? "" : n.power.toFixed(1) + " W"}
      ${n.energy == null ? "" : (n.energy / 1000).toFixed(2) + " kJ"}</span>${lag(n.loop_lag_ms)}`;
    const node = (n) => `<li class="${nodeState(n)}" data-node="${esc(n.name)}" data-state="${nodeState(n)}" data-status="${esc(nodeWord(n))}">
      <span class="label"><span class="dot ${nodeState(n)}"></span><span class="kind">node</span>
      <span class="name">${esc(n.name)}</span>${metrics(n)}
      ${n.alive === true ? "" : `<span class="badge ${n.alive === false ? "failed" : "unknown"}">${esc(nodeWord(n))}</span>`}
      ${n.trust != null && n.trust < 0.995 ? `<span class="badge trust" data-trust="${n.trust}" title="${esc(n.trust_reason || "")}">trust ${n.trust.toFixed(2)}</span>` : ""}</span>
      <ul class="tree">${n.components.map((c) => comp(c, n.alive === false)).join("")}</ul></li>`;
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
  const nodeList = (names) => names.map((n) => downNodes.has(n)
    ? `<span class="node-down" data-node-down="${esc(n)}">${esc(n)} (NotReady)</span>` : esc(n)).join(", ");
  function renderApps(s) {
    const rows = [];
    for (const app of s.apps) for (const c of app.components) {
      rows.push(`<tr data-app="${esc(app.name)}" data-component="${esc(c.component)}"><td>${esc(app.name)}/${esc(c.component)}</td>
        <td><span class="badge ${esc(c.status)}">${esc(c.status)}</span></td><td>${esc(c.cluster)}</td>
        <td>${nodeList(c.nodes)}</td><td class="num">${qosCell(c.qos)}</td><td>${whyCell(c)}</td></tr>`);
    }
    $("apps").tBodies[0].innerHTML = rows.join("") || '<tr><td colspan="6" class="muted">no applications (mlsysops apply -f APP.yaml)</td></tr>';
  }
  function renderRoutes(s) {
    const target = (r) => r.via === "local" ? '<span class="muted">its own cluster (Service)</span>'
      : r.via === "none" ? '<span class="muted">no route yet</span>'
      : esc(r.endpoints.map((e) => `${e.address}:${e.port}`).join(", ")) + (r.error ? ` <span class="badge failed">${esc(r.error)}</span>` : "");
    const rows = (s.routes || []).map((r) => `<tr data-route="${esc(r.app)}/${esc(r.component)}@${esc(r.from_cluster)}"
      data-via="${esc(r.via)}"><td>${esc(r.app)}/${esc(r.component)}</td><td>${esc(r.from_cluster)}</td>
      <td>${esc(r.to_cluster || "-")}</td><td>${target(r)}</td></tr>`);
    $("routes").tBodies[0].innerHTML = rows.join("") || '<tr><td colspan="4" class="muted">no component has callers</td></tr>';
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
  // Identical decisions (same agent, stage, policy, outcome and reason) collapse into one row with a count,
  // like `kubectl get events`: an unplaceable app re-analysed every interval is one row "×12", not a page.
  function addDecisions(records) {
    const fresh = new Set();
    for (const d of [...records].sort((a, b) => a.ts - b.ts)) {
      if (seenDecisions.has(d.id)) continue;
      seenDecisions.add(d.id);
      const key = [d.agent, d.stage, d.policy || "", d.outcome, d.reason].join("\u0001");
      const g = decisionGroups.get(key) || {rec: d, count: 0, first: d.ts, last: d.ts};
      decisionGroups.delete(key);                     // re-insert: the Map keeps groups by last seen
      g.count += 1; g.first = Math.min(g.first, d.ts);
      if (d.ts >= g.last) { g.last = d.ts; g.rec = d; }
      decisionGroups.set(key, g);
      fresh.add(key);
    }
    while (decisionGroups.size > MAX_DECISIONS) decisionGroups.delete(decisionGroups.keys().next().value);
    return fresh;
  }
  function renderDecisions(records) {
    const fresh = addDecisions(records);
    if (!fresh.size && $("decisions").tBodies[0].rows.length) return;
    const rows = [...decisionGroups.entries()].sort((a, b) => b[1].last - a[1].last).map(([key, g]) => {
      const d = g.rec;
      const alts = Array.isArray(d.alternatives) && d.alternatives.length ? ` (alternatives: ${d.alternatives.length})` : "";
      const times = g.count > 1 ? `<span class="repeat" title="first at ${hms(g.first)}">×${g.count}</span>
        <span class="muted">since ${hms(g.first)}</span>` : "";
      return `<tr class="${fresh.has(key) ? "new" : ""}" data-decision="${esc(d.id)}" data-stage="${esc(d.stage)}"
        data-outcome="${esc(d.outcome)}" data-count="${g.count}"><td class="num">${hms(g.last)}</td><td>${esc(d.agent)}</td>
        <td>${esc(d.stage)}</td><td>${esc(d.policy || "")}</td><td><span class="badge ${esc(d.outcome)}">${esc(d.outcome)}</span></td>
        <td><span class="reason">${esc(d.reason)}${esc(alts)}</span> ${times}<div class="muted why">${esc(explainText(d.explanation))}</div></td></tr>`;
    });
    $("decisions").tBodies[0].innerHTML = rows.join("");
  }
  // `mlsysops explain APP` per app: the summary, and per component its reason, evidence and next step.
  function renderWhy(s) {
    const comp = (c) => `<li data-component="${esc(c.component)}" data-converged="${c.converged}">
      <b>${esc(c.component)}</b>: ${esc(c.reason)}
      ${c.evidence && c.evidence.length ? `<ul class="evidence">${c.evidence.map((e) => `<li>${esc(e)}</li>`).join("")}</ul>` : ""}
      ${c.next_step ? `<div class="next-step">next: ${esc(c.next_step)}</div>` : ""}</li>`;
    const app = (a) => {
      const w = a.why || {converged: true, summary: "", components: []};
      // a converged component is worth a line only when something happened to it (e.g. it was relocated)
      const shown = w.components.filter((c) => !c.converged || (c.evidence || []).length > 1);
      return `<div class="why-app" data-app="${esc(a.name)}" data-converged="${w.converged}">
        <div class="why-head"><span class="dot ${w.converged ? "running" : "failed"}"></span><b>${esc(a.name)}</b>
        <span class="${w.converged ? "muted" : "why-summary"}">${esc(w.converged ? "running as desired" : w.summary)}</span></div>
        ${shown.length ? `<ul>${shown.map(comp).join("")}</ul>` : ""}</div>`;
    };
    $("why").innerHTML = s.apps.map(app).join("") || '<p class="muted">no applications</p>';
  }
  function paint(s) {
    updates += 1; $("updates").textContent = String(updates);
    $("slice").textContent = `· ${s.continuum.id}`;
    downNodes = new Set(nodesOf(s).filter((n) => n.alive === false).map((n) => n.name));
    setBanner(s.alerts);
    renderTopology(s); renderApps(s); renderWhy(s); renderRoutes(s); renderBuckets(s); renderDecisions(s.decisions);
  }
  // the snapshot's samples, at the time each was taken; objects no longer in the snapshot leave the charts
  function chartSnapshot(s) {
    const interval = Math.max(s.digest_interval || 1, STREAM_INTERVAL_S);
    Object.values(charts).forEach((ch) => ch.setInterval(interval));
    const nodes = nodesOf(s);
    const nodeKeys = new Set(nodes.map((n) => n.name));
    for (const n of nodes) {
      const suffix = n.alive === true ? "" : ` (${nodeWord(n)})`;
      for (const m of ["cpu", "mem", "power"]) charts[m].label(n.name, suffix);
      if (n.alive === false) continue;
      const at = n.at || {};
      charts.cpu.add(n.name, at.cpu ?? s.t, n.cpu); charts.mem.add(n.name, at.mem ?? s.t, n.mem);
      charts.power.add(n.name, at.power ?? s.t, n.power);
    }
    const compKeys = new Set();
    for (const app of s.apps) for (const c of app.components) {
      const key = compKey(app, c);
      compKeys.add(key);
      for (const q of c.qos) { charts.qos.add(key, q.ts ?? s.t, q.value); charts.qos.target(key, q.target); }
      const at = c.at || {};
      charts.ccpu.add(key, at.cpu ?? s.t, c.cpu); charts.cmem.add(key, at.memory ?? s.t, c.memory);
    }
    for (const m of ["cpu", "mem", "power"]) charts[m].retain(nodeKeys);
    for (const m of ["qos", "ccpu", "cmem"]) charts[m].retain(compKeys);
    Object.values(charts).forEach((ch) => ch.render(s.t));
  }
  function onStreamEvent(s) {
    streamEvents += 1; document.body.dataset.streamEvents = String(streamEvents);
    paint(s); chartSnapshot(s);
  }

  // -- history: the continuum's telemetry of the last HISTORY_S seconds, so charts do not start at page load
  async function loadHistory(s) {
    const qosMetrics = new Set([].concat(...s.apps.map((a) => [].concat(...a.components.map((c) => c.qos.map((q) => q.metric))))));
    const metrics = [...Object.keys(NODE_METRICS), ...Object.keys(COMPONENT_METRICS), ...qosMetrics];
    const answers = await Promise.all(metrics.map((m) =>
      api(`/api/v1/telemetry?metric=${encodeURIComponent(m)}&window=${HISTORY_S}&limit=5000`)));
    const nodes = new Set(nodesOf(s).map((n) => n.name));
    const comps = new Set([].concat(...s.apps.map((a) => a.components.map((c) => compKey(a, c)))));
    const perComponent = {ccpu: new Map(), cmem: new Map(), qos: new Map()};
    for (const r of [].concat(...answers)) {
      const l = r.labels || {};
      if (NODE_METRICS[r.metric] && nodes.has(l.node) && !l.app) {
        for (const [t, v] of r.points || []) charts[NODE_METRICS[r.metric]].add(l.node, t, v);
        continue;
      }
      const key = `${l.app}/${l.component}`;
      if (!l.app || !comps.has(key)) continue;
      const chart = COMPONENT_METRICS[r.metric] || (qosMetrics.has(r.metric) ? "qos" : null);
      if (!chart) continue;
      const byKey = perComponent[chart];
      if (!byKey.has(key)) byKey.set(key, []);
      byKey.get(key).push(...(r.points || []).map(([t, v]) => [t, v, l.node]));
    }
    const gapS = 2.5 * Math.max(s.digest_interval || 1, STREAM_INTERVAL_S);
    for (const [chart, byKey] of Object.entries(perComponent)) for (const [key, pts] of byKey) {
      // like the snapshot: a component's use is the sum over its instances, its QoS the worst instance
      const combine = chart === "qos" ? (vs) => Math.max(...vs) : (vs) => vs.reduce((a, b) => a + b, 0);
      pts.sort((a, b) => a[0] - b[0]);
      const last = new Map();
      for (let i = 0; i < pts.length; i++) {
        const [t, v, node] = pts[i];
        last.set(node, [t, v]);
        if (i + 1 < pts.length && pts[i + 1][0] === t) continue;   // all instances sampled at t first
        const vs = [...last.values()].filter(([lt]) => t - lt <= gapS).map(([, lv]) => lv);
        charts[chart].add(key, t, combine(vs));
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
            if (data) onStreamEvent(JSON.parse(data));
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

  // First paint from a REST snapshot (tables at once, charts with the backfilled history), then the stream.
  async function start() {
    let s = null;
    try {
      s = await api("/api/v1/dashboard/state");
      paint(s);
      document.body.dataset.firstPaint = "snapshot";
      setConn("unknown", "connecting…");
    } catch (e) {
      if (e.message === "401") return;
      setBanner([{level: "error", text: `could not read the dashboard state: ${e.message}`}]);
    }
    if (s) {
      try { await loadHistory(s); } catch (e) { /* the stream fills the charts from now on */ }
      chartSnapshot(s);
    }
    stream();
  }

  token = readToken();
  if (!token) { askToken(null); return; }
  $("main").hidden = false;
  pollManagement();
  start();
})();
