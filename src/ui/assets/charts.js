// charts.js: escaping, number/time formatting and small SVG charts.
// No dependencies; every function returns a string of safe HTML.

// ---------- escaping ----------

const ESC = { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' };

/** Escapes any value for HTML text and quoted attribute values (null → ''). */
export const esc = (v) => (v == null ? '' : String(v).replace(/[&<>"']/g, (c) => ESC[c]));

/** {a: 1, b: null, c: true} → ' a="1" c' (null, undefined and false are left out). */
export const attrs = (o = {}) =>
  Object.entries(o)
    .map(([k, v]) => (v == null || v === false ? '' : v === true ? ` ${k}` : ` ${k}="${esc(v)}"`))
    .join('');

// ---------- numbers ----------

const BYTE_UNITS = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];
const DASH = '–';
const ok = (n) => typeof n === 'number' && Number.isFinite(n);

/** Three significant digits at most: 1.23, 12.3, 123. */
const sig = (v) => (v >= 100 || v === 0 ? v.toFixed(0) : v >= 10 ? v.toFixed(1) : v.toFixed(2));

/** 1536 → "1.50 KiB". */
export function fmtBytes(n) {
  if (!ok(n)) return DASH;
  let v = Math.abs(n);
  let i = 0;
  while (v >= 1024 && i < BYTE_UNITS.length - 1) { v /= 1024; i++; }
  return `${n < 0 ? '-' : ''}${i ? sig(v) : Math.round(v)} ${BYTE_UNITS[i]}`;
}

export const fmtRate = (n) => (ok(n) ? `${fmtBytes(n)}/s` : DASH);
export const fmtPct = (n) => (ok(n) ? `${sig(Math.abs(n))} %` : DASH);

/** 950 → "950", 12345 → "12.3k", 0.25 → "0.25". */
export function fmtNum(n) {
  if (!ok(n)) return DASH;
  const a = Math.abs(n);
  if (a >= 1e9) return `${sig(n / 1e9)}G`;
  if (a >= 1e6) return `${sig(n / 1e6)}M`;
  if (a >= 1e4) return `${sig(n / 1e3)}k`;
  return Number.isInteger(n) ? String(n) : sig(n);
}
export const fmtPerSec = (n) => (ok(n) ? `${fmtNum(n)}/s` : DASH);

// ---------- time ----------

const pad = (n) => String(n).padStart(2, '0');

/** Milliseconds → "850 ms", "4.2 s", "3 min 5 s", "2 h 10 min", "3 d 4 h" (never "60 s" or "60 min"). */
export function fmtDuration(ms) {
  if (!ok(ms)) return DASH;
  if (ms < 999.5) return `${Math.round(ms)} ms`;
  if (ms < 59950) return `${(ms / 1000).toFixed(1)} s`;
  // Whole units from the rounded total seconds: 59.96 s is "1 min 0 s", not "60 s".
  const total = Math.round(ms / 1000);
  const m = Math.floor(total / 60);
  if (m < 60) return `${m} min ${total % 60} s`;
  const h = Math.floor(m / 60);
  if (h < 48) return `${h} h ${m % 60} min`;
  return `${Math.floor(h / 24)} d ${h % 24} h`;
}

/** A span of seconds in words: 3600 → "the last hour", 600 → "the last 10 min". */
export function fmtSpan(secs) {
  if (!ok(secs) || secs <= 0) return 'the last hour';
  if (secs % 3600 === 0) return secs === 3600 ? 'the last hour' : `the last ${secs / 3600} hours`;
  return `the last ${secs % 60 === 0 ? `${secs / 60} min` : fmtDuration(secs * 1000)}`;
}

/** Unix seconds → local "HH:MM:SS". */
export function fmtClock(unix) {
  if (!ok(unix)) return DASH;
  const d = new Date(unix * 1000);
  return `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

/** Unix seconds → local "YYYY-MM-DD HH:MM". */
export function fmtTime(unix) {
  if (!ok(unix)) return DASH;
  const d = new Date(unix * 1000);
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}`;
}

/** Unix seconds → "in 3 d 4 h" / "5 min 2 s ago" relative to now. */
export function fmtRel(unix) {
  if (!ok(unix)) return DASH;
  const d = unix * 1000 - Date.now();
  if (Math.abs(d) < 1000) return 'now';
  return d > 0 ? `in ${fmtDuration(d)}` : `${fmtDuration(-d)} ago`;
}

/**
 * A <time> element showing the absolute time, the relative one as its title
 * and in the span.rel after it (app.js refreshes both every 15 s).
 */
export const timeTag = (unix) =>
  ok(unix)
    ? `<time datetime="${new Date(unix * 1000).toISOString()}" title="${esc(fmtRel(unix))}">${fmtTime(unix)}</time> <span class="muted rel">(${esc(fmtRel(unix))})</span>`
    : DASH;

/** Refreshes the relative text of every time[datetime] under root (title and the span.rel after it). */
export function refreshTimes(root = document) {
  for (const t of root.querySelectorAll('time[datetime]')) {
    const unix = Date.parse(t.getAttribute('datetime')) / 1000;
    if (!ok(unix)) continue;
    const rel = fmtRel(unix);
    if (t.title !== rel) t.title = rel;
    const next = t.nextElementSibling;
    if (next?.classList.contains('rel') && next.textContent !== `(${rel})`) next.textContent = `(${rel})`;
  }
}

// ---------- charts ----------

// The SVG is drawn in a fixed viewBox and stretched to its box
// (preserveAspectRatio=none, strokes do not scale: see style.css); the axis
// labels are HTML around it so text stays crisp at any width.
const W = 300;
const H = 100;
const f1 = (n) => Math.round(n * 10) / 10;

/**
 * One chart as a <figure>.
 * - t: sample times (unix seconds), oldest first.
 * - layers: [{label, cls, values}] (values aligned with t); with `stacked`
 *   they are drawn on top of each other (areas), else as line + light area.
 * - fmt: value → text for the axis labels and the legend.
 * - data: attributes for the <svg> (data-container, data-series, ...);
 *   data-samples (point count) and data-last (last value, raw) are added.
 * - cur: text shown instead of the last value (e.g. "stopped").
 */
export function chart({ title, t, layers, stacked = false, fmt = fmtNum, data = {}, note = '', cur = null }) {
  const n = t.length;
  // Top of each layer at each point (cumulative when stacked).
  const tops = [];
  layers.forEach((l, i) => tops.push(l.values.map((v, j) => (ok(v) ? v : 0) + (stacked && i ? tops[i - 1][j] : 0))));
  const top = tops[tops.length - 1] || [];
  const last = n ? (stacked ? top[n - 1] : layers[0].values[n - 1]) : null;
  const max = Math.max(0, ...tops.flat());
  const scale = max > 0 ? max : 1;
  const t0 = t[0];
  const span = n > 1 ? t[n - 1] - t0 : 0;
  const x = (j) => (span ? f1(((t[j] - t0) / span) * W) : j ? W : 0);
  const y = (v) => f1(H - (v / scale) * H);
  // A single point is drawn as a flat segment across the chart.
  const idx = n === 1 ? [0, 0] : [...Array(n).keys()];
  const xs = n === 1 ? [0, W] : idx.map(x);
  const line = (vals) => idx.map((j, k) => `${k ? 'L' : 'M'}${xs[k]} ${y(vals[j])}`).join('');
  const back = (vals) => idx.map((j, k) => [xs[k], y(vals[j])]).reverse().map(([a, b]) => `L${a} ${b}`).join('');
  let paths = '';
  if (n) {
    tops.forEach((vals, i) => {
      const base = stacked && i ? tops[i - 1] : null;
      const area = line(vals) + (base ? back(base) : `L${xs[xs.length - 1]} ${H}L${xs[0]} ${H}`) + 'Z';
      paths += `<path class="area ${esc(layers[i].cls)}" d="${area}"/>`;
      if (!stacked) paths += `<path class="line ${esc(layers[i].cls)}" d="${line(vals)}"/>`;
    });
  }
  const summary = cur != null ? `${title}: ${cur}` : n ? `${title}: last ${fmt(last)}, max ${fmt(max)}` : `${title}: no samples yet`;
  const svg = `<svg class="chart${stacked ? ' stacked' : ''}" viewBox="0 0 ${W} ${H}" preserveAspectRatio="none" role="img" aria-label="${esc(summary)}"${attrs({ ...data, 'data-samples': n, 'data-last': last == null ? '' : +last.toFixed(3) })}>${paths}</svg>`;
  const legend = stacked
    ? `<ul class="legend">${layers.map((l) => `<li><span class="sw ${esc(l.cls)}"></span>${esc(l.label)} ${esc(fmt(n ? l.values[n - 1] : null))}</li>`).join('')}</ul>`
    : '';
  return `<figure class="chart-box"><figcaption><span class="ttl">${esc(title)}</span> <span class="cur">${cur != null ? esc(cur) : n ? esc(fmt(last)) : 'no samples yet'}</span>${note ? ` <span class="muted">${esc(note)}</span>` : ''}</figcaption><div class="plot">${svg}<span class="ymax">${esc(fmt(max))}</span><span class="ymin">${esc(fmt(0))}</span></div><div class="xaxis"><span>${n ? fmtClock(t0) : ''}</span><span>${n ? fmtClock(t[n - 1]) : ''}</span></div>${legend}</figure>`;
}
