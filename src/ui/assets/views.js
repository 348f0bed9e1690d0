// views.js: the pages. A view is a plain object:
//   { page, title, nav, needs: [sections needed before the first render],
//     shell: static HTML put in <main> once,
//     regions: [[selector, [sections it reads], () => html]] re-rendered when
//       one of their sections changes (app.js skips unchanged HTML),
//     mount(), unmount(), rendered() (first render with data), after(dirty),
//     onclick / onsubmit / oninput / onchange (delegated from <main>) }
// ctx (from app.js): { state, api, json, mark, confirm, notify }.
import {
  esc, attrs, chart, timeTag, fmtBytes, fmtRate, fmtPct, fmtPerSec, fmtDuration, fmtClock,
} from './charts.js';

const enc = encodeURIComponent;
const FINAL = new Set(['completed', 'failed', 'rolled_back', 'build_failed']);
const DASH = '–';

// ---------- shared building blocks ----------

// Badge tone per word; words not listed are neutral. The word is always shown.
const TONE = {};
for (const [tone, words] of Object.entries({
  ok: 'running healthy ready completed valid TLS',
  warn: 'starting draining created restarting paused queued building deploying waiting_healthy switching expiring pending drift removing',
  bad: 'exited dead unhealthy down failed rolled_back build_failed failing expired error disconnected',
})) for (const w of words.split(' ')) TONE[w] = tone;

/** A coloured badge that always carries its word (never colour alone). */
const badge = (word, tone) => `<span class="badge b-${tone ?? TONE[word] ?? 'muted'}">${esc(word)}</span>`;
const mono = (s) => `<span class="mono">${esc(s)}</span>`;
const muted = (s) => `<p class="muted">${esc(s)}</p>`;
/** Any value as escaped text: objects as JSON, nothing as a dash. */
const txt = (v) => (v == null || v === '' ? DASH : esc(typeof v === 'object' ? JSON.stringify(v) : v));
const col = (h, f) => ({ h, f });

/**
 * A table that turns into stacked cards on narrow screens (each cell labelled
 * by its column through data-label). cols: [{h, f}] (f: the cells'
 * data-field); rows: [{a: row attributes, c: [cell HTML]}].
 */
function table(cols, rows, { id, empty = 'Nothing here.' } = {}) {
  const head = cols.map((c) => `<th scope="col">${esc(c.h)}</th>`).join('');
  const body = rows.length
    ? rows.map((r) => `<tr${attrs(r.a)}>${r.c.map((cell, i) => `<td${attrs({ 'data-label': cols[i].h, 'data-field': cols[i].f })}>${cell}</td>`).join('')}</tr>`).join('')
    : `<tr class="empty"><td colspan="${cols.length}">${esc(empty)}</td></tr>`;
  return `<div class="tbl"><table${attrs({ id, class: 'cards' })}><thead><tr>${head}</tr></thead><tbody>${body}</tbody></table></div>`;
}

/** A titled card with a body that a region fills. */
const card = (title, id, extra = '') => `<section class="card"><h2>${esc(title)}</h2>${extra}<div id="${id}"></div></section>`;

// ---------- reading the state ----------

const svcHref = (dep, svc) => `/service/${enc(dep)}/${enc(svc)}`;
const logsHref = (dep, svc, c) => `/logs/${enc(dep)}/${enc(svc)}${c ? `?container=${enc(c)}` : ''}`;
/** How traffic and tests name a route: host + path prefix. */
const routeKey = (r) => r.host + (r.path.startsWith('/') ? r.path : `/${r.path}`);
const readyOf = (s) => s.containers.filter((c) => c.state === 'ready').length;

/** Memoises f(array) per array (each section is replaced whole when it changes). */
const memo = (f) => { const m = new WeakMap(); return (a) => { if (!m.has(a)) m.set(a, f(a)); return m.get(a); }; };

/** Container name → {dep, svc}. */
const byContainer = memo((deps) => {
  const m = new Map();
  for (const d of deps) for (const s of d.services) for (const c of s.containers) m.set(c.name, { dep: d.name, svc: s.name });
  return m;
});
/** Backend name → backend. */
const byBackend = memo((list) => new Map(list.map((b) => [b.name, b])));
/** Container name → routes it serves (routes list only ready backends). */
const routesByContainer = memo((routes) => {
  const m = new Map();
  for (const r of routes) for (const b of r.backends) (m.get(b.name) ?? m.set(b.name, []).get(b.name)).push(r);
  return m;
});

function findService(state, dep, svc) {
  const d = state.deployments.find((x) => x.name === dep);
  return { d, s: d?.services.find((x) => x.name === svc) };
}

/** What the service API names this service: {name, project} (project null: a lone container). */
function target(dep, svc, d, s) {
  const c = s?.containers.find((x) => x.project) ?? s?.containers[0];
  if (c?.project) return { name: c.service ?? svc, project: c.project };
  if (c) return { name: c.name, project: null };
  return d && !d.compose ? { name: svc, project: null } : { name: svc, project: dep };
}
const keyOf = (t) => (t.project ? `${t.project}/${t.name}` : t.name);

/** Unique routes served by any of these container names. */
function routesOf(state, names) {
  const m = routesByContainer(state.routes);
  return [...new Set(names.flatMap((n) => m.get(n) ?? []))];
}

/** A container name linked to its service page when known. */
function containerLink(state, name) {
  const at = byContainer(state.deployments).get(name);
  return at ? `<a class="mono" href="${esc(svcHref(at.dep, at.svc))}">${esc(name)}</a>` : mono(name);
}

const readyBadge = (s) => {
  const n = s.containers.length;
  const r = readyOf(s);
  return `<span class="badge b-${n && r === n ? 'ok' : r ? 'warn' : n ? 'bad' : 'muted'}" data-field="ready">${r}/${n} ready</span>`;
};

// ---------- shared tables ----------

const CONTAINER_COLS = [col('Container'), col('Status', 'status'), col('Health', 'health'), col('Backend', 'state'), col('Image', 'image'), col('Ports')];

function containerRow(c, extra = []) {
  const note = c.routed ? '' : ' <span class="tag" title="no HTTP route: its state decides its DNS answers only">not routed</span>';
  return {
    a: { 'data-container': c.name },
    c: [mono(c.name) + note, badge(c.status), badge(c.health ?? 'none'), badge(c.state), mono(c.image), esc((c.ports ?? []).join(', ')) || DASH, ...extra],
  };
}

const ROUTE_COLS = [col('Host'), col('Path'), col('TLS'), col('Ready backends'), col('Service')];

function routeRow(state, r) {
  const at = byContainer(state.deployments);
  const svcs = new Map(r.backends.map((b) => at.get(b.name)).filter(Boolean).map((x) => [`${x.dep}/${x.svc}`, x]));
  return {
    a: { 'data-route': routeKey(r) },
    c: [
      mono(r.host), mono(r.path),
      r.tls ? badge('TLS') : badge('plain HTTP', 'muted'),
      `${badge(`${r.backends.length} ready`, r.backends.length ? 'ok' : 'bad')} ${r.backends.map((b) => `<span class="mono small">${esc(b.name)} ${esc(b.addr)}</span>`).join(', ')}`,
      [...svcs].map(([k, x]) => `<a href="${esc(svcHref(x.dep, x.svc))}">${esc(k)}</a>`).join(' ') || DASH,
    ],
  };
}

const DNS_COLS = [col('Name'), col('Answers'), col('Containers')];

function dnsRow(state, n) {
  const cs = n.containers.map((c) => `<span class="nowrap">${containerLink(state, c.container)} ${badge(c.ready ? 'ready' : 'not ready', c.ready ? 'ok' : 'warn')}</span> <span class="mono small">${esc([].concat(c.addrs ?? []).join(', '))}</span>`);
  return {
    a: { 'data-name': n.name },
    c: [mono(n.name), n.ready.length ? n.ready.map(mono).join(' ') : badge('none ready: NODATA', 'warn'), cs.join('<br>') || DASH],
  };
}

/** A certificate's state in one word. */
function certState(c) {
  const now = Date.now() / 1000;
  if (c.last_error) return 'failing';
  if (c.valid_until == null) return c.not_eligible ? 'not eligible' : 'pending';
  if (c.valid_until < now) return 'expired';
  return c.valid_until - now < 14 * 86400 ? 'expiring' : 'valid';
}

const CERT_COLS = [col('Host'), col('State'), col('Valid until'), col('Renew at'), col('Next attempt'), col('Last error'), col('Source')];

const certRow = (c) => ({
  a: { 'data-host': c.host },
  c: [
    mono(c.host), badge(certState(c)), timeTag(c.valid_until), timeTag(c.renew_at), timeTag(c.next_attempt),
    c.last_error ? `<span class="err">${esc(c.last_error)}</span>${c.failures ? ` <span class="muted">(${esc(c.failures)} failures)</span>` : ''}` : txt(c.not_eligible),
    txt(c.source),
  ],
});

// ---------- runs (history and live progress) ----------

/** Steps with the time each took (at_ms deltas) in a <details> kept open across re-renders. */
function stepsHtml(r, open) {
  const steps = r.steps ?? [];
  if (!steps.length) return DASH;
  let prev = 0;
  const li = steps.map((s) => {
    const d = s.at_ms - prev;
    prev = s.at_ms;
    return `<li><span class="dt" title="at ${esc(fmtDuration(s.at_ms))}">+${esc(fmtDuration(d))}</span> ${badge(s.status)} ${esc(s.message)}</li>`;
  }).join('');
  return `<details data-key="run-${esc(r.id)}"${open ? ' open' : ''}><summary>${steps.length} steps, ${esc(fmtDuration(steps[steps.length - 1].at_ms))}</summary><ol class="steps">${li}</ol></details>`;
}

const RUN_COLS = [col('Run'), col('Status'), col('Started'), col('Took'), col('What'), col('Reason'), col('Steps')];

function runRow(state, r, i) {
  const live = !FINAL.has(r.status) && state.progress[r.id];
  const what = [r.image && `image ${r.image}`, r.replicas != null && `${r.replicas} replicas`].filter(Boolean).join(', ');
  return {
    a: { 'data-run': r.id },
    c: [
      `#${esc(r.id)} ${esc(r.kind)}${r.service ? ` <span class="muted mono">${esc(r.service)}</span>` : ''}`,
      badge(r.status) + (live ? `<br><span class="small">${esc(live.message)}</span>` : ''),
      timeTag(r.started_unix),
      r.finished_unix ? esc(fmtDuration((r.finished_unix - r.started_unix) * 1000)) : 'running',
      esc(what) || DASH, txt(r.reason), stepsHtml(r, i < 3),
    ],
  };
}

const DEPLOY_COLS = [col('Deploy'), col('Status'), col('Started'), col('Build'), col('Total'), col('This service'), col('Source'), col('Reason')];

function deployRow(h, svc) {
  const secs = (n) => (n == null ? DASH : esc(fmtDuration(n * 1000)));
  return {
    a: { 'data-deploy': h.id },
    c: [
      `#${esc(h.id)} ${txt(h.trigger)}${h.dry_run ? ` ${badge('dry run', 'muted')}` : ''}`,
      badge(h.status), timeTag(h.started_unix), secs(h.build_seconds), secs(h.total_seconds),
      `${txt(h.steps?.[svc])}${h.images?.[svc] ? `<br>${mono(h.images[svc])}` : ''}`,
      `${txt(h.source)}${h.commit ? ` ${mono(String(h.commit).slice(0, 12))}` : ''}`,
      txt(h.reason),
    ],
  };
}

/** Reads a streamed text body line by line (logs, NDJSON progress). */
async function readLines(res, onLines) {
  const reader = res.body.getReader();
  const dec = new TextDecoder();
  let rest = '';
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    rest += dec.decode(value, { stream: true });
    const parts = rest.split('\n');
    rest = parts.pop();
    if (parts.length) onLines(parts.map((l) => l.replace(/\r$/, '')));
  }
  rest += dec.decode();
  if (rest) onLines([rest]);
}

// ---------- overview ----------

function problemsHtml(state) {
  const list = state.problems;
  const items = list.map((p) => `<li>${containerLink(state, p.container)} <code>${esc(p.key)}=${esc(p.value)}</code> ${esc(p.message)}${p.hint ? ` <span class="hint">${esc(p.hint)}</span>` : ''}</li>`);
  return `<h2>Problems ${badge(String(list.length), list.length ? 'bad' : 'ok')}</h2>${list.length ? `<ul class="plist">${items.join('')}</ul>` : muted('No label problems.')}`;
}

function certProblemsHtml(state) {
  const bad = state.certificates.filter((c) => ['failing', 'expired', 'expiring'].includes(certState(c)));
  const items = bad.map((c) => `<li${attrs({ 'data-host': c.host })}>${mono(c.host)} ${badge(certState(c))} valid until ${timeTag(c.valid_until)}${c.last_error ? `: <span class="err">${esc(c.last_error)}</span>` : ''}${c.next_attempt ? `; next attempt ${timeTag(c.next_attempt)}` : ''}</li>`);
  return `<h2>Certificates ${badge(String(bad.length), bad.length ? 'bad' : 'ok')}</h2>${bad.length ? `<ul class="plist">${items.join('')}</ul>` : muted(state.certificates.length ? 'Every certificate is valid.' : 'No ACME certificates.')}`;
}

function engineHtml(state) {
  const d = state.docker;
  if (!d) return '';
  if (!d.connected) return `<p class="banner bad">${badge('disconnected')} The Docker engine is unreachable: routes stay as they were; reconnecting.</p>`;
  if (!d.synced) return `<p class="banner warn">${badge('syncing', 'warn')} Reading the Docker engine's containers…</p>`;
  return `<p class="muted small">Docker engine connected, last full sync ${esc(fmtClock(d.last_sync_unix))}${state.hello ? ` · berth ${esc(state.hello.version)}` : ''}</p>`;
}

function serviceBlock(state, d, s) {
  const routes = routesOf(state, s.containers.map((c) => c.name));
  const rl = routes.map((r) => `<span class="route mono">${r.tls ? 'https' : 'http'}://${esc(routeKey(r))}</span>`).join(' ');
  return `<article class="svc"${attrs({ 'data-service': `${d.name}/${s.name}` })}><div class="svc-head"><h3><a data-link="service" href="${esc(svcHref(d.name, s.name))}">${esc(s.name)}</a></h3>${readyBadge(s)}${s.drift ? ` ${badge('drift')} <span class="small">${esc(s.drift)}</span>` : ''}<a class="small" href="${esc(logsHref(d.name, s.name))}">logs</a></div>${rl ? `<p class="routes-line">${rl}</p>` : ''}${s.containers.length ? table(CONTAINER_COLS, s.containers.map((c) => containerRow(c))) : muted('No containers.')}</article>`;
}

function deploymentsHtml(state) {
  if (!state.deployments.length) return `<section class="card">${muted('No containers on this engine.')}</section>`;
  return state.deployments.map((d) => `<section class="card dep"${attrs({ 'data-deployment': d.name })}><h2>${esc(d.name)} ${d.compose ? '<span class="tag">compose</span>' : ''}</h2>${d.services.map((s) => serviceBlock(state, d, s)).join('')}</section>`).join('');
}

function eventsHtml(state) {
  const list = state.events.slice(-50).reverse();
  if (!list.length) return '<li class="muted">No changes since berth started.</li>';
  return list.map((e) => {
    const where = [e.deployment, e.service].filter(Boolean).join('/');
    const move = e.from != null || e.to != null ? `: ${e.from != null ? badge(e.from) : ''}${e.from != null && e.to != null ? ' → ' : ''}${e.to != null ? badge(e.to) : ''}` : '';
    return `<li><time>${esc(fmtClock(e.t / 1000))}</time> ${containerLink(state, e.container)}${where ? ` <span class="muted">${esc(where)}</span>` : ''} ${esc(e.what)}${move}</li>`;
  }).join('');
}

function overview({ state }) {
  return {
    page: 'overview', title: 'Overview', nav: 'overview', needs: ['deployments'],
    shell: '<h1 tabindex="-1">Overview</h1><div id="ov-engine"></div><div class="grid2"><section class="card" id="problems"></section><section class="card" id="cert-problems"></section></div><div id="ov-deps"></div><section class="card"><h2>Recent events</h2><ol id="events" class="events"></ol></section>',
    regions: [
      ['#ov-engine', ['docker', 'hello'], () => engineHtml(state)],
      ['#problems', ['problems', 'deployments'], () => problemsHtml(state)],
      ['#cert-problems', ['certificates'], () => certProblemsHtml(state)],
      ['#ov-deps', ['deployments', 'routes'], () => deploymentsHtml(state)],
      ['#events', ['events', 'deployments'], () => eventsHtml(state)],
    ],
    rendered() { window.berthRenderedAt ??= performance.now(); },
  };
}

// ---------- service ----------

/** Per-second rates of a cumulative counter between consecutive samples. */
function rates(samples, k) {
  const t = [];
  const values = [];
  for (let i = 1; i < samples.length; i++) {
    const dt = samples[i].t - samples[i - 1].t;
    const dv = samples[i][k] - samples[i - 1][k];
    if (dt > 0 && dv >= 0) { t.push(samples[i].t); values.push(dv / dt); }
  }
  return { t, values };
}

function containerCharts(name, samples) {
  const t = samples.map((x) => x.t);
  const data = (series) => ({ 'data-container': name, 'data-series': series });
  const lim = samples.length ? samples[samples.length - 1].memory_limit : 0;
  const rx = rates(samples, 'net_rx');
  const tx = rates(samples, 'net_tx');
  return `<div class="chart-group"><h3 class="mono">${esc(name)}</h3><div class="charts">${[
    chart({ title: 'CPU', t, layers: [{ cls: 's-cpu', values: samples.map((x) => x.cpu_percent) }], fmt: fmtPct, data: data('cpu') }),
    chart({ title: 'Memory', t, layers: [{ cls: 's-mem', values: samples.map((x) => x.memory_used) }], fmt: fmtBytes, data: data('memory'), note: lim ? `of ${fmtBytes(lim)}` : '' }),
    chart({ title: 'Net in', t: rx.t, layers: [{ cls: 's-rx', values: rx.values }], fmt: fmtRate, data: data('net_rx') }),
    chart({ title: 'Net out', t: tx.t, layers: [{ cls: 's-tx', values: tx.values }], fmt: fmtRate, data: data('net_tx') }),
  ].join('')}</div></div>`;
}

const cap = (s) => s[0].toUpperCase() + s.slice(1);

/** The actions that make sense for a container as it is now. */
function actionsFor(c) {
  if (c.status !== 'running') return ['start'];
  const acts = ['restart', 'stop'];
  if (c.routed) acts.push(c.state === 'draining' ? 'undrain' : 'drain');
  return acts;
}

function actionButtons(c) {
  return `<div class="btns">${actionsFor(c).map((a) => `<button type="button" class="small"${attrs({ 'data-action': a, 'data-id': c.container_id, 'data-name': c.name, 'aria-label': `${cap(a)} ${c.name}` })}>${cap(a)}</button>`).join('')}</div>`;
}

function serviceView(ctx, [dep, svc]) {
  const { state } = ctx;
  const stats = new Map(); // container name → samples, oldest first
  let since = null;
  let every = 10;
  let timer = 0;
  let alive = true;
  let statsError = '';
  let deploys = null; // the deployment's deploy history, when it answers
  let deploySig = null; // which finished deploy runs it was fetched after
  let running = false; // a run started from this page is streaming
  let prefilled = false; // the forms get what runs now once, never over what was typed
  const found = () => findService(state, dep, svc);
  const names = () => (found().s?.containers ?? []).map((c) => c.name);
  const el = (id) => (alive ? document.getElementById(id) : null);

  async function poll() {
    try {
      const data = await ctx.json(`/api/deployments/${enc(dep)}/stats/history${since == null ? '' : `?since=${since}`}`);
      if (!alive) return;
      every = data.interval_secs || every;
      for (const c of data.containers) {
        const list = stats.get(c.container) ?? [];
        for (const x of c.samples) if (!list.length || x.t > list[list.length - 1].t) list.push(x);
        stats.set(c.container, list);
        if (list.length) since = Math.max(since ?? 0, list[list.length - 1].t);
      }
      const cutoff = (since ?? 0) - (data.history_secs || state.hello?.history_secs || 3600);
      for (const list of stats.values()) { const i = list.findIndex((x) => x.t >= cutoff); list.splice(0, i < 0 ? list.length : i); }
      statsError = '';
    } catch (e) {
      if (!alive || e.silent) return;
      statsError = `Resource samples unavailable: ${e.message}`;
    }
    ctx.mark('stats');
    timer = setTimeout(poll, 1000 * (state.hello?.stats_interval_secs || every));
  }

  // Deploy history exists for deployments berth owns only (404 otherwise):
  // asked when there is a sign of it, to keep 404s out of the console.
  async function loadDeploys() {
    const { d } = found();
    const deployed = state.runs.some((r) => r.kind === 'deploy' && r.service === dep);
    if (d?.owned === false || (d?.owned !== true && !deployed && !d?.services.some((s) => s.drift))) return;
    try {
      const list = await ctx.json(`/api/deployments/${enc(dep)}/history`);
      if (alive && Array.isArray(list)) { deploys = list; ctx.mark('deploys'); }
    } catch { /* not owned (404) or unavailable: no deploy history */ }
  }

  const chartsHtml = () => {
    const cs = names();
    if (!cs.length) return muted('No containers.');
    return (statsError ? muted(statsError) : '') + cs.map((n) => containerCharts(n, stats.get(n) ?? [])).join('');
  };

  function summaryHtml() {
    const { d, s } = found();
    if (!s) return `<p class="banner warn">No container of ${esc(dep)}/${esc(svc)} is running now.</p>`;
    const images = [...new Set(s.containers.map((c) => c.image))];
    return `<p class="summary">${readyBadge(s)} ${images.map(mono).join(' ')} ${s.drift ? `${badge('drift')} ${esc(s.drift)}` : ''} <span class="muted">key ${mono(keyOf(target(dep, svc, d, s)))}</span> <a href="${esc(logsHref(dep, svc))}">Logs</a></p>`;
  }

  function containersHtml() {
    const { s } = found();
    const be = byBackend(state.backends);
    const rows = (s?.containers ?? []).map((c) => {
      const b = be.get(c.name);
      const addrs = Object.entries(c.networks ?? {}).map(([n, ip]) => `${esc(n)} ${mono(ip ?? DASH)}`).join('<br>');
      return containerRow(c, [addrs || DASH, b ? `${esc(b.restarts)} restarts, ${esc(b.inflight)} in flight${b.check ? `<br><span class="small">${esc(b.check)}</span>` : ''}` : DASH, actionButtons(c)]);
    });
    return table([...CONTAINER_COLS, col('Networks'), col('Backend detail'), col('Actions')], rows, { empty: 'No containers.' });
  }

  function historyHtml() {
    const { d, s } = found();
    const key = keyOf(target(dep, svc, d, s));
    const runs = state.runs.filter((r) => r.service === key || r.service === dep).reverse().slice(0, 20);
    let html = table(RUN_COLS, runs.map((r, i) => runRow(state, r, i)), { empty: 'No rollout, scale or restart of this service among the recent runs.' });
    if (deploys) html += `<h3>Deploys of ${esc(dep)}</h3>${table(DEPLOY_COLS, deploys.slice(-20).reverse().map((h) => deployRow(h, svc)), { empty: 'No deploys yet.' })}`;
    return html;
  }

  // Live progress of a run started here, one <li> per line, in #run-progress.
  const progress = {
    start() { const ol = el('run-progress'); if (ol) { ol.replaceChildren(); delete ol.dataset.final; } },
    line(status, message) {
      const ol = el('run-progress');
      if (!ol) return;
      const li = document.createElement('li');
      li.innerHTML = `${status ? badge(status) : ''} ${esc(message)}`;
      ol.append(li);
    },
    end(final) { const ol = el('run-progress'); if (ol) ol.dataset.final = final; },
  };

  function setRunning(on) {
    running = on;
    for (const id of ['svc-restart', 'svc-stop', 'svc-start', 'scale-go', 'rollout-go']) { const b = el(id); if (b) b.disabled = on; }
  }

  /** POSTs a run and shows its NDJSON progress lines until the final one. */
  async function runStream(url, body) {
    setRunning(true);
    progress.start();
    let final = null;
    try {
      const res = await ctx.api(url, { method: 'POST', body });
      await readLines(res, (lines) => {
        for (const l of lines) {
          if (!l.trim()) continue;
          let p;
          try { p = JSON.parse(l); } catch { progress.line('', l); continue; }
          progress.line(p.status, p.message ?? '');
          if (FINAL.has(p.status)) final = p.status;
        }
      });
      progress.end(final ?? 'incomplete');
    } catch (e) {
      if (!e.silent) { progress.line('error', e.message); progress.end('error'); }
    } finally {
      setRunning(false);
    }
  }

  /** Service stop/start (or restart of a lone container): the action on each container in turn. */
  async function eachContainer(action) {
    setRunning(true);
    progress.start();
    let failed = false;
    for (const c of found().s?.containers ?? []) {
      try {
        const r = await ctx.json(`/api/containers/${enc(c.container_id)}/${action}`, { method: 'POST' });
        progress.line(r.ok === false ? 'failed' : 'completed', `${action} ${c.name}`);
        failed ||= r.ok === false;
      } catch (e) {
        if (e.silent) return;
        progress.line('failed', `${action} ${c.name}: ${e.message}`);
        failed = true;
      }
    }
    progress.end(failed ? 'failed' : 'completed');
    setRunning(false);
  }

  async function containerAction(b) {
    const { action, id, name } = b.dataset;
    if (!(await ctx.confirm(`${cap(action)} container ${name}?`, cap(action)))) return;
    try {
      const r = await ctx.json(`/api/containers/${enc(id)}/${action}`, { method: 'POST' });
      ctx.notify(`${cap(action)} ${name}: ${r.ok === false ? 'not done' : 'done'}`, r.ok === false ? 'error' : 'info');
    } catch (e) {
      if (!e.silent) ctx.notify(`${cap(action)} ${name}: ${e.message}`, 'error');
    }
  }

  async function serviceAction(action) {
    const { d, s } = found();
    const t = target(dep, svc, d, s);
    const what = action === 'restart' ? 'Restart every container of' : `${cap(action)} every container of`;
    if (!(await ctx.confirm(`${what} ${dep}/${svc}${action === 'restart' && t.project ? ', one at a time' : ''}?`, cap(action)))) return;
    if (action === 'restart' && t.project) return runStream(`/api/deployments/${enc(t.project)}/restart?service=${enc(t.name)}`);
    return eachContainer(action);
  }

  return {
    page: 'service', title: `${svc} · ${dep}`, nav: 'overview', needs: ['deployments'],
    shell: `<nav class="crumbs" aria-label="Breadcrumb"><a href="/">Overview</a> / ${esc(dep)} / ${esc(svc)}</nav><h1 tabindex="-1">${esc(svc)} <span class="muted">in ${esc(dep)}</span></h1><div id="svc-summary"></div>
<section class="card"><h2>Actions</h2><div class="btns"><button type="button" id="svc-restart">Restart service</button><button type="button" id="svc-stop" class="danger">Stop service</button><button type="button" id="svc-start">Start service</button></div>
<form id="scale-form" class="inline"><label for="scale-replicas">Replicas</label><input id="scale-replicas" type="number" min="0" max="1000" step="1" inputmode="numeric" required><button id="scale-go" type="submit">Scale</button></form>
<form id="rollout-form" class="inline"><label for="rollout-image">Image</label><input id="rollout-image" type="text" required spellcheck="false" autocomplete="off" placeholder="image:tag"><button id="rollout-go" type="submit">Roll out</button></form>
<ol id="run-progress" class="progress" aria-live="polite"></ol></section>
${card('Containers', 'svc-containers')}${card('Resources', 'svc-charts')}<div class="grid2">${card('Routes', 'svc-routes')}${card('DNS names', 'svc-dns')}</div>${card('History', 'svc-history')}`,
    regions: [
      ['#svc-summary', ['deployments'], summaryHtml],
      ['#svc-containers', ['deployments', 'backends'], containersHtml],
      ['#svc-charts', ['deployments', 'stats'], chartsHtml],
      ['#svc-routes', ['deployments', 'routes'], () => table(ROUTE_COLS, routesOf(state, names()).map((r) => routeRow(state, r)), { empty: 'No route sends traffic to this service now.' })],
      ['#svc-dns', ['deployments', 'dns'], () => {
        if (!state.dns) return muted(state.loaded.has('dns') ? 'The internal DNS is off.' : 'Loading…');
        const mine = new Set(names());
        return table(DNS_COLS, state.dns.names.filter((n) => n.containers.some((c) => mine.has(c.container))).map((n) => dnsRow(state, n)), { empty: 'No DNS name.' });
      }],
      ['#svc-history', ['deployments', 'runs', 'progress', 'deploys'], historyHtml],
    ],
    mount() { poll(); },
    unmount() { alive = false; clearTimeout(timer); },
    after(dirty) {
      const { s } = found();
      if (!prefilled && s?.containers.length) {
        prefilled = true;
        el('rollout-image').value ||= s.containers[0].image;
        el('scale-replicas').value ||= s.containers.length;
      }
      if (dirty.has('runs') || dirty.has('deployments')) {
        const sig = state.runs.filter((r) => r.kind === 'deploy' && r.service === dep && FINAL.has(r.status)).map((r) => r.id).join();
        if (sig !== deploySig) { deploySig = sig; loadDeploys(); }
      }
    },
    onclick(e) {
      const b = e.target.closest('button');
      if (!b) return;
      if (b.dataset.action) return containerAction(b);
      const m = /^svc-(restart|stop|start)$/.exec(b.id);
      if (m && !running) return serviceAction(m[1]);
    },
    async onsubmit(e) {
      e.preventDefault();
      if (running) return;
      const { d, s } = found();
      const t = target(dep, svc, d, s);
      if (e.target.id === 'scale-form') {
        const n = Number(el('scale-replicas').value);
        if (!Number.isInteger(n) || n < 0) return;
        if (await ctx.confirm(`Scale ${dep}/${svc} to ${n} replicas?`, 'Scale')) await runStream(`/api/services/${enc(t.name)}/scale`, { project: t.project, replicas: n });
      } else if (e.target.id === 'rollout-form') {
        const image = el('rollout-image').value.trim();
        if (!image) return;
        if (await ctx.confirm(`Roll out ${dep}/${svc} with image ${image}? Each replica is replaced once its successor is ready.`, 'Roll out')) await runStream(`/api/services/${enc(t.name)}/rollout`, { project: t.project, image });
      }
    },
  };
}

// ---------- logs ----------

const MAX_LINES = 5000;

function logsView(ctx, [dep, svc], query) {
  const { state } = ctx;
  const one = query.get('container');
  let ac = null;
  let paused = false;
  let ended = false;
  let held = []; // lines received while paused, oldest first
  let filter = '';
  let alive = true;
  const el = (id) => document.getElementById(id);
  const matches = (line) => !filter || line.toLowerCase().includes(filter);

  function setStatus(text) {
    const s = el('log-status');
    if (s) s.textContent = text ?? (paused ? 'paused' : ended ? 'ended' : 'following');
  }

  /** Appends lines in one DOM write, drops the oldest beyond MAX_LINES, keeps the view at the bottom when it was. */
  function append(lines) {
    const box = el('log-lines');
    if (!box || !lines.length) return;
    const stick = box.scrollTop + box.clientHeight >= box.scrollHeight - 24;
    const frag = document.createDocumentFragment();
    for (const l of lines.slice(-MAX_LINES)) {
      const div = document.createElement('div');
      div.textContent = l;
      div.hidden = !matches(l);
      frag.append(div);
    }
    box.append(frag);
    for (let extra = box.childElementCount - MAX_LINES; extra > 0; extra--) box.firstElementChild.remove();
    if (stick) box.scrollTop = box.scrollHeight;
  }

  function onLines(lines) {
    if (!paused) return append(lines);
    held.push(...lines);
    if (held.length > MAX_LINES) held = held.slice(-MAX_LINES);
  }

  async function start() {
    ac?.abort();
    const my = (ac = new AbortController());
    ended = false;
    held = [];
    el('log-lines')?.replaceChildren();
    setStatus('connecting…');
    const { s } = findService(state, dep, svc);
    const lone = s?.containers.length && !s.containers.some((c) => c.project);
    const who = one ? `container=${enc(one)}` : lone ? `container=${enc(s.containers[0].name)}` : `service=${enc(svc)}`;
    try {
      const res = await ctx.api(`/api/deployments/${enc(dep)}/logs?${who}&tail=${enc(el('log-tail').value)}&follow=true`, { signal: my.signal });
      setStatus();
      await readLines(res, onLines);
    } catch (e) {
      if (my.signal.aborted || e.silent) return;
      ctx.notify(`Logs: ${e.message}`, 'error');
    }
    if (my === ac && alive) { ended = true; setStatus(); }
  }

  const targetsHtml = () => {
    const { s } = findService(state, dep, svc);
    const link = (label, c) => `<a href="${esc(logsHref(dep, svc, c))}"${(c ?? null) === one ? ' aria-current="page"' : ''}>${esc(label)}</a>`;
    return `<span class="muted">Show:</span> ${link('all replicas')} ${(s?.containers ?? []).map((c) => link(c.name, c.name)).join(' ')}`;
  };

  return {
    page: 'logs', title: `Logs · ${svc}`, nav: 'overview', needs: ['deployments'],
    shell: `<nav class="crumbs" aria-label="Breadcrumb"><a href="/">Overview</a> / <a href="${esc(svcHref(dep, svc))}">${esc(dep)}/${esc(svc)}</a> / logs</nav><h1 tabindex="-1">Logs of ${esc(svc)}${one ? ` <span class="muted">${esc(one)}</span>` : ''}</h1>
<div class="log-bar"><label>Tail <select id="log-tail"><option>100</option><option>500</option><option>1000</option><option value="all">all</option></select></label><label>Filter <input id="log-filter" type="search" placeholder="text in the line" autocomplete="off"></label><button type="button" id="log-pause">Pause</button><span id="log-status" class="badge b-muted" role="status">connecting…</span></div>
<p id="log-targets" class="targets"></p><div id="log-lines" class="log" role="log" tabindex="0" aria-label="Log lines"></div>`,
    regions: [['#log-targets', ['deployments'], targetsHtml]],
    rendered() { start(); },
    unmount() { alive = false; ac?.abort(); },
    onclick(e) {
      if (e.target.id !== 'log-pause') return;
      paused = !paused;
      e.target.textContent = paused ? 'Resume' : 'Pause';
      if (!paused) { const h = held; held = []; append(h); }
      setStatus();
    },
    oninput(e) {
      if (e.target.id !== 'log-filter') return;
      filter = e.target.value.toLowerCase();
      for (const div of el('log-lines').children) div.hidden = !matches(div.textContent);
    },
    onchange(e) { if (e.target.id === 'log-tail') start(); },
  };
}

// ---------- routes ----------

const CLASSES = ['2xx', '3xx', '4xx', '5xx'];

function trafficHtml(state) {
  const tr = state.traffic;
  const iv = tr.interval_secs || 10;
  const keys = [...new Set([...state.routes.map(routeKey), ...Object.keys(tr.routes ?? {})])];
  if (!keys.length) return muted('No traffic yet.');
  return keys.map((key) => {
    const list = tr.routes?.[key] ?? [];
    const t = list.map((x) => x.t);
    const data = (series) => ({ 'data-route': key, 'data-series': series });
    return `<div class="chart-group"><h3 class="mono">${esc(key || '(no route matched)')}</h3><div class="charts">${
      chart({ title: 'Requests', t, layers: [{ cls: 's-req', values: list.map((x) => x.requests / iv) }], fmt: fmtPerSec, data: data('requests') })
    }${
      chart({ title: 'Status classes', t, stacked: true, fmt: fmtPerSec, data: data('status'), layers: CLASSES.map((c) => ({ label: c, cls: `s-${c}`, values: list.map((x) => x[`c${c}`] / iv) })) })
    }</div></div>`;
  }).join('');
}

function routesView({ state }) {
  return {
    page: 'routes', title: 'Routes', nav: 'routes', needs: ['routes'],
    shell: `<h1 tabindex="-1">Routes</h1>${card('Routing table', 'routes-box')}${card('Traffic', 'traffic', '<p class="muted small">Requests per second over the last hour, by route.</p>')}${card('Certificates', 'certs-box')}`,
    regions: [
      ['#routes-box', ['routes', 'deployments'], () => table(ROUTE_COLS, state.routes.map((r) => routeRow(state, r)), { id: 'routes', empty: 'No routes: label a container with berth.host.' })],
      ['#traffic', ['traffic', 'routes'], () => trafficHtml(state)],
      ['#certs-box', ['certificates'], () => table(CERT_COLS, state.certificates.map(certRow), { id: 'certs', empty: 'No ACME certificates (ACME is off or no host is eligible).' })],
    ],
  };
}

// ---------- DNS ----------

function dnsHtml(state) {
  const dns = state.dns;
  if (!dns) return muted('The internal DNS is off (see dns in the configuration).');
  const q = Object.entries(dns.queries ?? {}).map(([k, v]) => `<div><dt>${esc(k)}</dt><dd${attrs({ 'data-counter': k })}>${esc(v)}</dd></div>`).join('');
  return `<p>Zone ${mono(dns.zone)}: names answer the addresses of ready replicas only.</p><h2>Queries</h2><dl id="dns-queries" class="counters">${q}</dl><h2>Names</h2>${table(DNS_COLS, dns.names.map((n) => dnsRow(state, n)), { id: 'dns-names', empty: 'No names.' })}`;
}

function dnsView({ state }) {
  return {
    page: 'dns', title: 'DNS', nav: 'dns', needs: ['dns'],
    shell: '<h1 tabindex="-1">Internal DNS</h1><section class="card" id="dns-box"></section>',
    regions: [['#dns-box', ['dns', 'deployments'], () => dnsHtml(state)]],
  };
}

// ---------- router ----------

const notFound = () => ({
  page: 'notfound', title: 'Not found', nav: '', needs: [], regions: [],
  shell: '<h1 tabindex="-1">Not found</h1><p>There is no page here. <a href="/">Back to the overview</a>.</p>',
});

/** The view for a location (pathname segments decoded one by one). */
export function viewFor(loc, ctx) {
  let p;
  try { p = loc.pathname.split('/').filter(Boolean).map(decodeURIComponent); } catch { return notFound(); }
  if (!p.length) return overview(ctx);
  if (p.length === 3 && p[0] === 'service') return serviceView(ctx, p.slice(1));
  if (p.length === 3 && p[0] === 'logs') return logsView(ctx, p.slice(1), new URLSearchParams(loc.search));
  if (p.length === 1 && p[0] === 'routes') return routesView(ctx);
  if (p.length === 1 && p[0] === 'dns') return dnsView(ctx);
  return notFound();
}
