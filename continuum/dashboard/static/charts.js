// Time-series charts of the dashboard (uPlot underneath): samples plotted at the time they were taken,
// an explicit gap (null) where a series went silent for more than ~2 intervals, series removed when their
// object is, and axes with units a person reads (HH:MM:SS, %, KiB/MiB/GiB on binary ticks).
"use strict";
window.MlsCharts = (() => {
  const HISTORY_S = 600;            // seconds of chart history kept (and backfilled on load)
  const PALETTE = ["#2f6fdb", "#1f9d55", "#d48806", "#9254de", "#d4380d", "#13a8a8", "#eb2f96", "#597ef7",
                   "#7cb305", "#fa8c16"];
  const AXIS_FONT = "12px system-ui, -apple-system, 'Segoe UI', sans-serif";
  const pad2 = (n) => String(n).padStart(2, "0");
  const hms = (t) => { const d = new Date(t * 1000); return `${pad2(d.getHours())}:${pad2(d.getMinutes())}:${pad2(d.getSeconds())}`; };
  const short = (x) => {   // 3 significant digits at most, no trailing zeros: 512, 12.5, 1.25
    const a = Math.abs(x);
    return String(Number(x.toFixed(a >= 100 ? 0 : a >= 10 ? 1 : 2)));
  };

  const BIN = ["B", "KiB", "MiB", "GiB", "TiB"];
  const binExp = (v) => { let e = 0; while (e < BIN.length - 1 && Math.abs(v) >= 1024 ** (e + 1)) e += 1; return e; };
  const bytes = (v, e = binExp(v)) => `${short(v / 1024 ** e)} ${BIN[e]}`;
  // ticks on binary steps (…, 256 MiB, 512 MiB, 1 GiB)
  const BYTE_INCRS = [].concat(...[0, 1, 2, 3, 4].map((e) => [1, 2, 4, 8, 16, 32, 64, 128, 256, 512].map((m) => m * 1024 ** e)));

  const units = {
    pct: {tick: (v) => `${short(v * 100)}%`, value: (v) => `${(v * 100).toFixed(1)}%`},
    watts: {tick: (v) => `${short(v)} W`, value: (v) => `${v.toFixed(1)} W`},
    ms: {tick: (v) => `${short(v)} ms`, value: (v) => `${v.toFixed(1)} ms`},
    cores: {tick: (v) => short(v), value: (v) => `${v.toFixed(2)} cores`},
    // each tick in its own unit, as Grafana's IEC bytes do: 0 B, 512 MiB, 1 GiB, 1.5 GiB
    bytes: {incrs: BYTE_INCRS, value: (v) => bytes(v), tick: (v) => bytes(v)},
  };
  const TIME_INCRS = [1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600];

  let measureCtx = null;
  function textWidth(s) {
    measureCtx = measureCtx || document.createElement("canvas").getContext("2d");
    measureCtx.font = AXIS_FONT;
    return measureCtx.measureText(s).width;
  }

  class SeriesChart {
    constructor(el, unit) {
      this.el = el; this.unit = unit; this.data = new Map(); this.targets = new Map(); this.suffix = new Map();
      this.plot = null; this.shape = ""; this.points = 0; this.gaps = new Map(); this.gapS = 5;
      this.colours = new Map();   // a series keeps its colour when others come and go
    }
    // samples further apart than this are drawn with a break between them
    setInterval(seconds) { this.gapS = 2.5 * seconds; }
    add(key, t, v) {
      if (t == null || v == null || Number.isNaN(v)) return;
      if (!this.data.has(key)) this.data.set(key, []);
      const arr = this.data.get(key);
      const last = arr.length ? arr[arr.length - 1] : null;
      if (last && last[0] >= t) return;                 // already have it (history, then the stream)
      if (last && t - last[0] > this.gapS) {
        arr.push([(last[0] + t) / 2, null]);            // no sample for > ~2 intervals: a gap, not a line
        if (!this.gaps.has(key)) this.gaps.set(key, []);
        this.gaps.get(key).push([last[0], t]);
      }
      arr.push([t, v]);
      this.points += 1;
    }
    target(key, v) { if (v !== null && v !== undefined) this.targets.set(key, v); }
    label(key, suffix) { this.suffix.set(key, suffix || ""); }
    // drop the series of objects that are gone (a deleted node, a removed app): out of the legend too
    retain(keys) {
      for (const key of [...this.data.keys()]) if (!keys.has(key)) {
        this.data.delete(key); this.targets.delete(key); this.suffix.delete(key); this.gaps.delete(key);
      }
    }
    render(now) {
      for (const arr of this.data.values()) {
        while (arr.length && (arr[0][0] < now - HISTORY_S || arr[0][1] === null)) arr.shift();
      }
      const keys = [...this.data.keys()].filter((k) => this.data.get(k).length).sort();
      for (const k of keys) if (!this.colours.has(k)) this.colours.set(k, this.colours.size);
      this.el.dataset.keys = JSON.stringify(keys);
      this.el.dataset.gaps = JSON.stringify(Object.fromEntries(this.gaps));
      this.el.dataset.points = String(this.points);
      const times = [...new Set([].concat(...keys.map((k) => this.data.get(k).map((p) => p[0]))))].sort((a, b) => a - b);
      this.el.dataset.since = times.length ? String(times[0]) : "";
      if (!times.length) { this.plot?.destroy(); this.plot = null; this.shape = ""; return; }
      const idx = new Map(times.map((t, i) => [t, i]));
      const cols = [times];
      const series = [{value: (u, v) => v == null ? "–" : hms(v)}];
      const value = (u, v) => v == null ? "–" : this.unit.value(v);
      keys.forEach((key) => {
        // undefined: this series has no sample at that time (uPlot joins over it); null: a gap (a break)
        const col = new Array(times.length).fill(undefined);
        for (const [t, v] of this.data.get(key)) col[idx.get(t)] = v;
        cols.push(col);
        const stroke = PALETTE[this.colours.get(key) % PALETTE.length];
        series.push({label: key + (this.suffix.get(key) || ""), stroke, width: 1.5, spanGaps: false, value});
        if (this.targets.has(key)) {
          cols.push(new Array(times.length).fill(this.targets.get(key)));
          series.push({label: `${key} target`, stroke, dash: [6, 4], width: 1, points: {show: false}, value});
        }
      });
      const shape = JSON.stringify(series.map((s) => s.label));
      if (!this.plot || shape !== this.shape) {
        this.plot?.destroy();
        this.shape = shape;
        const width = Math.max(300, this.el.clientWidth);
        const y = {
          size: (u, vals) => {   // as wide as the widest label: never clipped ("5B byte")
            if (!vals) return 50;
            const text = Math.ceil(Math.max(...vals.map(textWidth)));
            this.el.dataset.yLabelPx = String(text); this.el.dataset.yAxisPx = String(text + 18);
            return text + 18;
          },
          font: AXIS_FONT,
          values: (u, splits) => {
            const labels = splits.map(this.unit.tick);
            this.el.dataset.yTicks = JSON.stringify(labels);
            return labels;
          },
        };
        if (this.unit.incrs) y.incrs = this.unit.incrs;
        const x = {space: 80, incrs: TIME_INCRS, font: AXIS_FONT,
                   values: (u, splits) => { const l = splits.map(hms); this.el.dataset.xTicks = JSON.stringify(l); return l; }};
        this.plot = new uPlot({width, height: 180, series, legend: {live: false}, scales: {x: {time: true}},
                               axes: [x, y]}, cols, this.el);
      } else {
        this.plot.setData(cols);
      }
    }
  }

  return {SeriesChart, units, hms, bytes, HISTORY_S};
})();
