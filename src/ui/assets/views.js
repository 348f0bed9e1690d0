// views.js: the pages. A view is a plain object:
//   { page, title, nav, needs: [sections needed before the first render],
//     shell: static HTML put in <main> once,
//     regions: [[selector, [sections it reads], () => html]] re-rendered when
//       one of their sections changes (app.js skips unchanged HTML),
//     mount(), unmount(), rendered() (first render with data), after(dirty),
//     onclick / onsubmit / oninput / onchange (delegated from <main>) }
// ctx (from app.js): { state, api, json, mark, confirm, notify }.
import {
  esc, attrs, chart, timeTag, fmtBytes, fmtRate, fmtPct, fmtPerSec, fmtDuration, fmtClock, fmtSpan,
} from './charts.js';

const enc = encodeURIComponent;
const FINAL = new Set(['completed', 'failed', 'rolled_back', 'build_failed']);
const FAILED = new Set(['failed', 'rolled_back', 'build_failed']);
/** A run's step that went wrong: a failed status or a message saying "failed…". */
const failedStep = (status, message) => FAILED.has(status) || /^failed/i.test(message ?? '');
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

/** Names of the containers with a label problem. */
const problemNames = memo((list) => new Set(list.map((p) => p.container)));

/** Service key (as runs and backends name it) → {dep, svc}; a deployment's name → its first service. */
const byKey = memo((deps) => {
  const m = new Map();
  for (const d of deps) {
    for (const s of d.services) m.set(keyOf(target(d.name, s.name, d, s)), { dep: d.name, svc: s.name });
    if (d.services.length && !m.has(d.name)) m.set(d.name, { dep: d.name, svc: d.services[0].name });
  }
  return m;
});

// Route key → {host, svcs: Set("dep/svc")}, learnt while the route had ready
// backends: a route whose last replica went away may leave the routing table.
const owners = new Map();
let ownersOf = null;
function routeOwners(state) {
  if (ownersOf === state.routes) return owners;
  ownersOf = state.routes;
  const at = byContainer(state.deployments);
  for (const r of state.routes) {
    const svcs = new Set(r.backends.map((b) => at.get(b.name)).filter(Boolean).map((x) => `${x.dep}/${x.svc}`));
    if (svcs.size) owners.set(routeKey(r), { host: r.host, svcs });
  }
  return owners;
}
/** Hosts known to route to this service. */
const hostsOf = (state, dep, svc) => [...new Set([...routeOwners(state).values()].filter((o) => o.svcs.has(`${dep}/${svc}`)).map((o) => o.host))];

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

const CONTAINER_COLS = [col('Container'), col('Status', 'status'), col('Docker health', 'health'), col('Backend', 'state'), col('Image', 'image'), col('Ports')];

/** A container's row; problem: it has a label problem (red badge next to its name). */
function containerRow(c, extra = [], problem = false) {
  const note = c.routed ? '' : ' <span class="tag" title="no HTTP route: its state decides its DNS answers only">not routed</span>';
  return {
    a: { 'data-container': c.name, 'data-id': c.container_id },
    c: [mono(c.name) + note + (problem ? ` ${badge('label problem', 'bad')}` : ''), badge(c.status), badge(c.health ?? 'none'), badge(c.state), mono(c.image),
      (c.ports ?? []).map((p) => `<span class="nowrap">${esc(p)}</span>`).join(', ') || DASH, ...extra],
  };
}

const ROUTE_COLS = [col('Host'), col('Path'), col('TLS'), col('Ready backends'), col('Service'), col('Policies')];

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
      (r.policies ?? []).map((p) => (/^(blocked|maintenance|paused)/.test(p) ? badge(p, 'bad') : `<span class="small">${esc(p)}</span>`)).join('<br>') || DASH,
    ],
  };
}

const DNS_COLS = [col('Name'), col('Answers'), col('Containers')];

function dnsRow(state, n) {
  // The badge goes below the name when both do not fit on the line.
  const cs = n.containers.map((c) => `<div class="dnsc">${containerLink(state, c.container)} ${badge(c.ready ? 'ready' : 'not ready', c.ready ? 'ok' : 'warn')} <span class="mono small">${esc([].concat(c.addrs ?? []).join(', '))}</span></div>`);
  return {
    a: { 'data-name': n.name },
    c: [mono(n.name), n.ready.length ? n.ready.map(mono).join(' ') : badge('none ready: NODATA', 'warn'), cs.join('') || DASH],
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

const CERT_COLS = [col('Host'), col('State'), col('Valid until'), col('Renew at'), col('Next attempt'), col('Last error'), col('Source'), col('Issuer'), col('Challenge')];

const certRow = (c) => ({
  a: { 'data-host': c.host },
  c: [
    mono(c.host), badge(certState(c)), timeTag(c.valid_until), timeTag(c.renew_at), timeTag(c.next_attempt),
    c.last_error ? `<span class="err">${esc(c.last_error)}</span>${c.failures ? ` <span class="muted">(${esc(c.failures)} failures)</span>` : ''}` : txt(c.not_eligible),
    txt(c.on_demand && c.source ? `${c.source} (on demand)` : c.source),
    txt(c.issuer), txt(c.challenge && c.key_type ? `${c.challenge}, ${c.key_type}` : c.challenge),
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
    const bad = failedStep(s.status, s.message);
    return `<li${bad ? ' class="bad"' : ''}><span class="dt" title="at ${esc(fmtDuration(s.at_ms))}">+${esc(fmtDuration(d))}</span> ${badge(s.status, bad ? 'bad' : undefined)} ${esc(s.message)}</li>`;
  }).join('');
  return `<details data-key="run-${esc(r.id)}"${open ? ' open' : ''}><summary>${steps.length} steps, ${esc(fmtDuration(steps[steps.length - 1].at_ms))}</summary><ol class="steps">${li}</ol></details>`;
}

const RUN_COLS = [col('Run'), col('Status'), col('Started'), col('Took'), col('What'), col('Reason'), col('Steps')];

/** How long a finished run took: to its last step, else by its start and end (null while it runs). */
function tookMs(r) {
  if (!FINAL.has(r.status) && !r.finished_unix) return null;
  const last = r.steps?.[r.steps.length - 1];
  if (last && Number.isFinite(last.at_ms)) return last.at_ms;
  return r.finished_unix ? (r.finished_unix - r.started_unix) * 1000 : null;
}

function runRow(state, r, i) {
  const live = !FINAL.has(r.status) && state.progress[r.id];
  const took = tookMs(r);
  // A scale records the count it aimed at.
  // A scale says where it went (its target); the others how many replicas they touched.
  const count = r.target != null ? `→ ${r.target} replicas` : r.replicas == null ? null : `${r.replicas} replicas`;
  const what = [r.image && `image ${r.image}`, count].filter(Boolean).join(', ');
  return {
    a: { 'data-run': r.id },
    c: [
      `#${esc(r.id)} ${esc(r.kind)}${r.service ? ` <span class="muted mono">${esc(r.service)}</span>` : ''}`,
      badge(r.status) + (live ? `<br><span class="small">${esc(live.message)}</span>` : ''),
      timeTag(r.started_unix),
      took == null ? 'running' : esc(fmtDuration(took)),
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

const svcLink = (at, text) => `<a href="${esc(svcHref(at.dep, at.svc))}">${esc(text ?? `${at.dep}/${at.svc}`)}</a>`;
const RECENT = 6 * 3600; // failed runs stay in "needs attention" this long

/**
 * What needs someone now, each item linked to its service: routes and
 * routed services without a ready replica (they answer 503), containers
 * that are down, unhealthy or restarting/exited while routed, and runs of
 * the last 6 hours that failed.
 */
function attentionHtml(state) {
  const items = [];
  const listed = new Set(); // "dep/svc" already named for having no ready replica
  for (const d of state.deployments) {
    for (const s of d.services) {
      if (!s.containers.some((c) => c.routed) || readyOf(s) > 0) continue;
      const at = { dep: d.name, svc: s.name };
      listed.add(`${d.name}/${s.name}`);
      const hosts = hostsOf(state, d.name, s.name);
      items.push(`${svcLink(at)} ${badge(`0/${s.containers.length} ready`, 'bad')} no ready replica: ${hosts.length ? `${hosts.map(mono).join(', ')} ${hosts.length > 1 ? 'answer' : 'answers'} 503` : 'its routes answer 503'}`);
    }
  }
  const own = routeOwners(state);
  for (const r of state.routes) {
    if (r.backends.length) continue;
    const svcs = [...(own.get(routeKey(r))?.svcs ?? [])];
    if (svcs.length && svcs.every((k) => listed.has(k))) continue;
    const links = svcs.map((k) => { const i = k.indexOf('/'); return svcLink({ dep: k.slice(0, i), svc: k.slice(i + 1) }); });
    items.push(`${mono(routeKey(r))} ${badge('0 ready', 'bad')} answers 503${links.length ? ` · ${links.join(' ')}` : ' · <a href="/routes">routes</a>'}`);
  }
  for (const d of state.deployments) {
    for (const s of d.services) {
      for (const c of s.containers) {
        const why = [
          c.routed && (c.status === 'restarting' || c.status === 'exited') && badge(c.status),
          c.health === 'unhealthy' && badge('unhealthy'),
          c.state === 'down' && badge('down'),
        ].filter(Boolean);
        if (why.length) items.push(`${mono(c.name)} ${why.join(' ')} in ${svcLink({ dep: d.name, svc: s.name })}`);
      }
    }
  }
  const since = Date.now() / 1000 - RECENT;
  const keys = byKey(state.deployments);
  for (const r of [...state.runs].reverse()) {
    if (!FAILED.has(r.status) || (r.finished_unix ?? r.started_unix) < since) continue;
    const at = keys.get(r.service);
    const who = at ? svcLink(at, r.service) : mono(r.service ?? '');
    items.push(`${esc(r.kind)} #${esc(r.id)} of ${who} ${badge(r.status)} ${timeTag(r.started_unix)}${r.reason ? `: <span class="err">${esc(r.reason)}</span>` : ''}`);
  }
  return `<h2>Needs attention ${badge(String(items.length), items.length ? 'bad' : 'ok')}</h2>${items.length ? `<ul class="plist">${items.map((x) => `<li>${x}</li>`).join('')}</ul>` : muted('Nothing: every routed service has a ready replica and no run failed in the last 6 hours.')}`;
}

function problemsHtml(state) {
  const list = state.problems;
  const items = list.map((p) => problemItem(p, containerLink(state, p.container)));
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

function serviceBlock(state, d, s, probs) {
  const routes = routesOf(state, s.containers.map((c) => c.name));
  const rl = routes.map((r) => `<span class="route mono">${r.tls ? 'https' : 'http'}://${esc(routeKey(r))}</span>`).join(' ');
  return `<article class="svc"${attrs({ 'data-service': `${d.name}/${s.name}` })}><div class="svc-head"><h3><a data-link="service" href="${esc(svcHref(d.name, s.name))}">${esc(s.name)}</a></h3>${readyBadge(s)}${s.drift ? ` ${badge('drift')} <span class="small">${esc(s.drift)}</span>` : ''}<a class="small" href="${esc(logsHref(d.name, s.name))}">logs</a></div>${rl ? `<p class="routes-line">${rl}</p>` : ''}${s.containers.length ? table(CONTAINER_COLS, s.containers.map((c) => containerRow(c, [], probs.has(c.name)))) : muted('No containers.')}</article>`;
}

function deploymentsHtml(state) {
  if (!state.deployments.length) return `<section class="card">${muted('No containers on this engine.')}</section>`;
  const probs = problemNames(state.problems);
  return state.deployments.map((d) => `<section class="card dep"${attrs({ 'data-deployment': d.name })}><h2>${esc(d.name)} ${d.compose ? '<span class="tag">compose</span>' : ''}</h2>${d.services.map((s) => serviceBlock(state, d, s, probs)).join('')}</section>`).join('');
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
    shell: '<h1 tabindex="-1">Overview</h1><div id="ov-engine"></div><section class="card" id="attention"></section><div class="grid2"><section class="card" id="problems"></section><section class="card" id="cert-problems"></section></div><div id="ov-deps"></div><section class="card"><h2>Recent events</h2><ol id="events" class="events"></ol></section>',
    regions: [
      ['#ov-engine', ['docker', 'hello'], () => engineHtml(state)],
      ['#attention', ['deployments', 'routes', 'runs'], () => attentionHtml(state)],
      ['#problems', ['problems', 'deployments'], () => problemsHtml(state)],
      ['#cert-problems', ['certificates'], () => certProblemsHtml(state)],
      ['#ov-deps', ['deployments', 'routes', 'problems'], () => deploymentsHtml(state)],
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

/** A container's charts; stopped: their headings say so instead of showing the last sample. */
function containerCharts(name, samples, stopped) {
  const cur = stopped ? 'stopped' : null;
  const t = samples.map((x) => x.t);
  const data = (series) => ({ 'data-container': name, 'data-series': series });
  const lim = samples.length ? samples[samples.length - 1].memory_limit : 0;
  const rx = rates(samples, 'net_rx');
  const tx = rates(samples, 'net_tx');
  return `<div class="chart-group"><h3 class="mono">${esc(name)}</h3><div class="charts">${[
    chart({ title: 'CPU', t, layers: [{ cls: 's-cpu', values: samples.map((x) => x.cpu_percent) }], fmt: fmtPct, data: data('cpu'), cur }),
    chart({ title: 'Memory', t, layers: [{ cls: 's-mem', values: samples.map((x) => x.memory_used) }], fmt: fmtBytes, data: data('memory'), note: lim && !stopped ? `of ${fmtBytes(lim)}` : '', cur }),
    chart({ title: 'Net in', t: rx.t, layers: [{ cls: 's-rx', values: rx.values }], fmt: fmtRate, data: data('net_rx'), cur }),
    chart({ title: 'Net out', t: tx.t, layers: [{ cls: 's-tx', values: tx.values }], fmt: fmtRate, data: data('net_tx'), cur }),
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

// Actions whose confirmation is red: they take a replica out of rotation.
const DANGER = new Set(['stop', 'drain']);
const BUSY = { restart: 'restarting…', stop: 'stopping…', start: 'starting…', drain: 'draining…', undrain: 'undraining…' };
/** What a confirmation adds when the action takes a route's last ready replica away. */
const UNTIL = { restart: 'it is ready again', stop: 'it is started again', drain: 'it is undrained' };

/** The row's buttons; busy: the action in flight (buttons disabled, its word shown and focusable). */
function actionButtons(c, busy) {
  const wait = busy ? `<span class="busy small" data-key="busy" tabindex="-1" role="status">${esc(BUSY[busy] ?? `${busy}…`)}</span>` : '';
  return `<div class="btns">${wait}${actionsFor(c).map((a) => `<button type="button" class="small"${attrs({ 'data-action': a, 'data-id': c.container_id, 'data-name': c.name, 'aria-label': `${cap(a)} ${c.name}`, disabled: !!busy })}>${cap(a)}</button>`).join('')}</div>`;
}

/** One label problem as a list item; who: the container's HTML. */
const problemItem = (p, who) => `<li>${who} <code>${esc(p.key)}=${esc(p.value)}</code> ${esc(p.message)}${p.hint ? ` <span class="hint">${esc(p.hint)}</span>` : ''}</li>`;

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
  let runOrigin = null; // id of the control that started it: the focus goes back there
  let runT0 = 0;
  let runTick = 0;
  const busy = new Map(); // container id → its action in flight
  let focusId = null; // the container row that keeps the focus after its action …
  let focusUntil = 0; // … until then (ms)
  // The forms show what runs now until the user edits them (dirty; cleared when
  // the action is sent or the field is emptied); at: the last edit (ms).
  const fields = { 'scale-replicas': { dirty: false, at: 0 }, 'rollout-image': { dirty: false, at: 0 } };
  let resync = 0;
  const found = () => findService(state, dep, svc);
  const containers = () => found().s?.containers ?? [];
  const names = () => containers().map((c) => c.name);
  const el = (id) => (alive ? document.getElementById(id) : null);

  /** What runs now, as the fields show it: the running replicas and the most common image among them. */
  function live() {
    const cs = containers();
    const run = cs.filter((c) => c.status === 'running');
    const count = new Map();
    for (const c of run.length ? run : cs) count.set(c.image, (count.get(c.image) ?? 0) + 1);
    let image = '';
    for (const [k, n] of count) if (n > (count.get(image) ?? 0)) image = k;
    return { 'scale-replicas': String(run.length), 'rollout-image': image };
  }

  /** Puts what runs now in the fields not edited; force: even in a focused or just emptied one. */
  function syncForms(force = false) {
    const now = live();
    for (const [id, f] of Object.entries(fields)) {
      const input = el(id);
      if (!input || f.dirty) continue;
      if (!force) {
        const wait = f.at + 1500 - Date.now();
        if (wait > 0) { resync ||= setTimeout(() => { resync = 0; syncForms(); }, wait + 50); continue; }
        if (document.activeElement === input) continue;
      }
      if (input.value !== now[id]) input.value = now[id];
    }
  }

  function edited(input) {
    const f = fields[input.id];
    if (!f) return;
    f.at = Date.now();
    f.dirty = input.value.trim() !== '';
  }

  /** " HOST will answer 503 until …" when these containers leave a route of this service without a ready replica. */
  function breaks(gone, until) {
    const out = new Set(gone);
    const hosts = new Set(routesOf(state, names()).filter((r) => r.backends.length && r.backends.every((b) => out.has(b.name))).map((r) => r.host));
    return hosts.size ? ` ${[...hosts].join(', ')} will answer 503 until ${until}.` : '';
  }

  /** Enables what can be used now: nothing while berth does not answer; no second run; no second action on a container. */
  function applyLocks() {
    const off = state.offline;
    for (const id of ['svc-restart', 'svc-stop', 'svc-start', 'scale-go', 'rollout-go']) { const b = el(id); if (b) b.disabled = off || running; }
    for (const id of Object.keys(fields)) { const i = el(id); if (i) i.disabled = off; }
    for (const b of el('svc-containers')?.querySelectorAll('[data-action]') ?? []) b.disabled = off || busy.has(b.dataset.id);
  }

  /** Keeps the focus in the row of the container acted on (its first usable button), never on <body>. */
  function keepFocus() {
    if (!focusId || Date.now() > focusUntil) { focusId = null; return; }
    const a = document.activeElement;
    if (a && a !== document.body && a.isConnected && !a.disabled) return;
    const row = `tr[data-id="${CSS.escape(focusId)}"]`;
    ctx.refocus(el('svc-containers') ?? document, [`${row} button:not(:disabled)`, row]);
  }

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
    const cs = containers();
    if (!cs.length) return muted('No containers.');
    return (statsError ? muted(statsError) : '') + cs.map((c) => containerCharts(c.name, stats.get(c.name) ?? [], c.status !== 'running')).join('');
  };

  function summaryHtml() {
    const { d, s } = found();
    if (!s) return `<p class="banner warn">No container of ${esc(dep)}/${esc(svc)} is running now.</p>`;
    const images = [...new Set(s.containers.map((c) => c.image))];
    const mine = new Set(names());
    const probs = state.problems.filter((p) => mine.has(p.container));
    const pl = probs.length ? `<div class="banner bad"><strong>Label problems</strong><ul class="plist">${probs.map((p) => problemItem(p, mono(p.container))).join('')}</ul></div>` : '';
    return `<p class="summary">${readyBadge(s)} ${images.map(mono).join(' ')} ${s.drift ? `${badge('drift')} ${esc(s.drift)}` : ''} <span class="muted">key ${mono(keyOf(target(dep, svc, d, s)))}</span> <a href="${esc(logsHref(dep, svc))}">Logs</a></p>${pl}`;
  }

  // The autoscaler's view of this service, when it is autoscaled.
  function autoscaleHtml() {
    const { d, s } = found();
    const key = keyOf(target(dep, svc, d, s));
    const a = state.autoscale.find((x) => x.service === key);
    if (!a) return '';
    const pct = (v) => (v == null ? DASH : `${v.toFixed(1)}%`);
    const targets = [a.cpu != null && `CPU ${a.cpu}%`, a.memory != null && `memory ${a.memory}%`, a.requests != null && `${a.requests} req/s per replica`].filter(Boolean).join(', ');
    const now = [a.figures.cpu != null && `CPU ${pct(a.figures.cpu)}`, a.figures.memory != null && `memory ${pct(a.figures.memory)}`, a.figures.requests != null && `${a.figures.requests.toFixed(1)} req/s per replica`].filter(Boolean).join(', ') || 'no figures yet';
    const rows = a.decisions.slice().reverse().map((x) => `<li><time datetime="${esc(new Date(x.at_unix * 1000).toISOString())}">${esc(new Date(x.at_unix * 1000).toLocaleTimeString())}</time> ${esc(x.from)} → ${esc(x.to)}: ${esc(x.reason)} <span class="muted">(run ${esc(x.run)})</span></li>`).join('');
    return `<section class="card" aria-labelledby="as-h"><h2 id="as-h">Autoscaling</h2><p class="summary">${esc(a.min)}–${esc(a.max)} replicas on ${esc(targets)} · <strong>${esc(a.replicas)}</strong> running, ${esc(a.desired)} wanted · now ${esc(now)}</p><p class="small" id="as-state">${esc(a.state)}</p>${rows ? `<ol class="events">${rows}</ol>` : muted('No scale action yet.')}</section>`;
  }

  function containersHtml() {
    const { s } = found();
    const be = byBackend(state.backends);
    const probs = problemNames(state.problems);
    const rows = (s?.containers ?? []).map((c) => {
      const b = be.get(c.name);
      const addrs = Object.entries(c.networks ?? {}).map(([n, ip]) => `${esc(n)} ${mono(ip ?? DASH)}`).join('<br>');
      // berth's own check; its last result means nothing once the container stopped.
      const check = b?.check && c.status === 'running' ? `<br><span class="small">berth check: ${esc(b.check)}</span>` : '';
      return containerRow(c, [addrs || DASH, b ? `${esc(b.restarts)} restarts by berth, ${esc(b.inflight)} in flight${check}` : DASH, actionButtons(c, busy.get(c.container_id))], probs.has(c.name));
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

  // Live progress of a run started here, one <li> per line, in #run-progress;
  // its data-elapsed (shown by style.css) counts the time while it goes on.
  const elapsed = (ms) => (ms < 60000 ? `${Math.floor(ms / 1000)} s` : fmtDuration(ms));
  const progress = {
    start() {
      const ol = el('run-progress');
      if (!ol) return;
      ol.replaceChildren();
      delete ol.dataset.final;
      runT0 = Date.now();
      clearInterval(runTick);
      const tick = () => { const o = el('run-progress'); if (o) o.dataset.elapsed = `running for ${elapsed(Date.now() - runT0)}`; };
      tick();
      runTick = setInterval(tick, 1000);
    },
    line(status, message) {
      const ol = el('run-progress');
      if (!ol) return;
      const bad = failedStep(status, message);
      const li = document.createElement('li');
      li.innerHTML = `${status ? badge(status, bad ? 'bad' : undefined) : ''} ${esc(message)}`;
      if (bad) li.className = 'bad';
      ol.append(li);
    },
    end(final) {
      clearInterval(runTick);
      const ol = el('run-progress');
      if (!ol) return;
      ol.dataset.final = final;
      ol.dataset.elapsed = `${final === 'completed' ? 'took' : 'ended after'} ${elapsed(Date.now() - runT0)}`;
      // A failed rollout leaves the old image running: the field shows it again.
      if (final !== 'completed') { fields['rollout-image'].dirty = false; syncForms(true); }
    },
  };

  /** A run from this page starts or ends: one at a time; the focus stays on its control (or the progress while that is disabled). */
  function setRunning(on) {
    running = on;
    if (on) runOrigin = document.activeElement?.id || null;
    applyLocks();
    const a = document.activeElement;
    const lost = !a || a === document.body || a.disabled;
    if (on && lost) el('run-progress')?.focus({ preventScroll: true });
    const o = !on && el(runOrigin);
    if (o && !o.disabled && (lost || a === el('run-progress'))) o.focus({ preventScroll: true });
  }

  /** POSTs a run and shows its NDJSON progress lines until the final one. */
  async function runStream(url, body) {
    progress.start();
    setRunning(true);
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
      // A TypeError here: the answer stopped half-way, the run itself may go on.
      const msg = e instanceof TypeError ? `berth stopped answering (${fmtClock(Date.now() / 1000)}): the run may go on, see History` : e.message;
      if (!e.silent) { progress.line('error', msg); progress.end('error'); }
    } finally {
      clearInterval(runTick);
      setRunning(false);
    }
  }

  /** Restart of a lone container's service: the container action. */
  async function eachContainer(action) {
    progress.start();
    setRunning(true);
    let failed = false;
    try {
      for (const c of containers()) {
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
    } finally {
      clearInterval(runTick);
      setRunning(false);
    }
  }

  async function containerAction(b) {
    const { action, id, name } = b.dataset;
    if (busy.has(id) || state.offline) return; // one action at a time per container
    const warn = UNTIL[action] ? breaks([name], UNTIL[action]) : '';
    if (!(await ctx.confirm(`${cap(action)} container ${name}?${warn}`, cap(action), DANGER.has(action) ? 'danger' : 'primary'))) return;
    if (busy.has(id)) return;
    busy.set(id, action);
    focusId = id;
    focusUntil = Infinity;
    ctx.mark('busy');
    try {
      const r = await ctx.json(`/api/containers/${enc(id)}/${action}`, { method: 'POST' });
      ctx.notify(`${cap(action)} ${name}: ${r.ok === false ? 'not done' : 'done'}`, r.ok === false ? 'error' : 'info');
    } catch (e) {
      if (!e.silent) ctx.notify(`${cap(action)} ${name}: ${e.message}`, 'error');
    } finally {
      busy.delete(id);
      focusUntil = Date.now() + 8000; // the row changes again when Docker reports the new state
      ctx.mark('busy');
    }
  }

  async function serviceAction(action) {
    const { d, s } = found();
    const t = target(dep, svc, d, s);
    const rolling = action === 'restart' && t.project;
    const what = action === 'restart' ? 'Restart every container of' : `${cap(action)} every container of`;
    const until = { stop: 'the service is started again', restart: 'it is ready again' }[action];
    const warn = until && !rolling ? breaks(names(), until) : '';
    if (!(await ctx.confirm(`${what} ${dep}/${svc}${rolling ? ', one at a time' : ''}?${warn}`, cap(action), action === 'stop' ? 'danger' : 'primary'))) return;
    if (rolling) return runStream(`/api/deployments/${enc(t.project)}/restart?service=${enc(t.name)}`);
    // Stop and start are runs of berth's own, kept in the history.
    if (action !== 'restart') return runStream(`/api/services/${enc(t.name)}/${action}`, { project: t.project });
    return eachContainer(action);
  }

  return {
    page: 'service', title: `${svc} · ${dep}`, nav: 'overview', needs: ['deployments'],
    shell: `<nav class="crumbs" aria-label="Breadcrumb"><a href="/">Overview</a> / ${esc(dep)} / ${esc(svc)}</nav><h1 tabindex="-1">${esc(svc)} <span class="muted">in ${esc(dep)}</span></h1><div id="svc-summary"></div><div id="svc-autoscale"></div>
<section class="card"><h2>Actions</h2><div class="btns"><button type="button" id="svc-restart">Restart service</button><button type="button" id="svc-stop" class="danger">Stop service</button><button type="button" id="svc-start">Start service</button></div>
<form id="scale-form" class="inline"><label for="scale-replicas">Replicas</label><input id="scale-replicas" type="number" min="1" max="1000" step="1" inputmode="numeric" required aria-describedby="scale-hint"><button id="scale-go" type="submit">Scale</button><span id="scale-hint" class="hint small">1 or more: to stop the service, use Stop service.</span></form>
<form id="rollout-form" class="inline"><label for="rollout-image">Image</label><input id="rollout-image" type="text" required spellcheck="false" autocomplete="off" placeholder="image:tag"><button id="rollout-go" type="submit">Roll out</button></form>
<ol id="run-progress" class="progress" aria-live="polite" tabindex="-1"></ol></section>
${card('Containers', 'svc-containers')}${card('Resources', 'svc-charts')}<div class="grid2">${card('Routes', 'svc-routes')}${card('DNS names', 'svc-dns')}</div>${card('History', 'svc-history')}`,
    regions: [
      ['#svc-summary', ['deployments', 'problems'], summaryHtml],
      ['#svc-autoscale', ['deployments', 'autoscale'], autoscaleHtml],
      ['#svc-containers', ['deployments', 'backends', 'problems', 'busy'], containersHtml],
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
    unmount() { alive = false; clearTimeout(timer); clearTimeout(resync); clearInterval(runTick); },
    after(dirty) {
      syncForms();
      applyLocks();
      keepFocus();
      if (dirty.has('runs') || dirty.has('deployments')) {
        const sig = state.runs.filter((r) => r.kind === 'deploy' && r.service === dep && FINAL.has(r.status)).map((r) => r.id).join();
        if (sig !== deploySig) { deploySig = sig; loadDeploys(); }
      }
    },
    relock: applyLocks,
    onclick(e) {
      const b = e.target.closest('button');
      if (!b || b.disabled) return;
      if (b.dataset.action) return containerAction(b);
      const m = /^svc-(restart|stop|start)$/.exec(b.id);
      if (m && !running && !state.offline) return serviceAction(m[1]);
    },
    oninput(e) { edited(e.target); },
    onchange(e) { edited(e.target); },
    onfocusout(e) { if (fields[e.target.id]) syncForms(); },
    async onsubmit(e) {
      e.preventDefault();
      if (running || state.offline) return;
      const { d, s } = found();
      const t = target(dep, svc, d, s);
      if (e.target.id === 'scale-form') {
        const n = Number(el('scale-replicas').value);
        if (!Number.isInteger(n) || n < 1) return;
        if (!(await ctx.confirm(`Scale ${dep}/${svc} from ${live()['scale-replicas']} to ${n} replicas?`, 'Scale'))) return;
        fields['scale-replicas'].dirty = false;
        await runStream(`/api/services/${enc(t.name)}/scale`, { project: t.project, replicas: n });
      } else if (e.target.id === 'rollout-form') {
        const image = el('rollout-image').value.trim();
        if (!image) return;
        if (!(await ctx.confirm(`Roll out ${dep}/${svc} with image ${image}? Each replica is replaced once its successor is ready.`, 'Roll out'))) return;
        fields['rollout-image'].dirty = false;
        await runStream(`/api/services/${enc(t.name)}/rollout`, { project: t.project, image });
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
  let shown = 0; // lines in the box that match the filter
  const el = (id) => document.getElementById(id);
  const matches = (line) => !filter || line.toLowerCase().includes(filter);

  function setStatus(text) {
    const s = el('log-status');
    const t = text ?? (paused ? `paused — ${held.length} new ${held.length === 1 ? 'line' : 'lines'} held` : ended ? 'ended' : 'following');
    if (s && s.textContent !== t) s.textContent = t;
  }

  /** "showing X of Y lines" while a filter is set. */
  function setCount() {
    const c = el('log-count');
    const box = el('log-lines');
    if (!c || !box) return;
    const t = filter ? `showing ${shown} of ${box.childElementCount} lines` : '';
    if (c.textContent !== t) c.textContent = t;
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
      if (!div.hidden) shown++;
      frag.append(div);
    }
    box.append(frag);
    for (let extra = box.childElementCount - MAX_LINES; extra > 0; extra--) {
      if (!box.firstElementChild.hidden) shown--;
      box.firstElementChild.remove();
    }
    if (stick) box.scrollTop = box.scrollHeight;
    setCount();
  }

  function onLines(lines) {
    if (!paused) return append(lines);
    held.push(...lines);
    if (held.length > MAX_LINES) held = held.slice(-MAX_LINES);
    setStatus();
  }

  async function start() {
    ac?.abort();
    const my = (ac = new AbortController());
    ended = false;
    held = [];
    shown = 0;
    el('log-lines')?.replaceChildren();
    setCount();
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
<div class="log-bar"><label>Tail <select id="log-tail"><option>100</option><option>500</option><option>1000</option><option value="all">all</option></select></label><label>Filter <input id="log-filter" type="search" placeholder="text in the line" autocomplete="off"></label><button type="button" id="log-pause">Pause</button><span id="log-status" class="badge b-muted" role="status">connecting…</span><span id="log-count" class="muted small" role="status"></span></div>
<p id="log-targets" class="targets"></p><div id="log-lines" class="log" role="log" tabindex="0" aria-label="Log lines" data-empty="no log lines yet"></div>`,
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
      shown = 0;
      for (const div of el('log-lines').children) { div.hidden = !matches(div.textContent); if (!div.hidden) shown++; }
      setCount();
    },
    onchange(e) { if (e.target.id === 'log-tail') start(); },
  };
}

// ---------- routes ----------

const CLASSES = ['2xx', '3xx', '4xx', '5xx'];

function trafficHtml(state) {
  const tr = state.traffic;
  const iv = tr.interval_secs || 10;
  const cap = `<p class="muted small">Requests per second over ${esc(fmtSpan(state.hello?.history_secs || tr.history_secs || 3600))}, by route.</p>`;
  const keys = [...new Set([...state.routes.map(routeKey), ...Object.keys(tr.routes ?? {})])];
  if (!keys.length) return cap + muted('No traffic yet.');
  // A route without samples yet: zeros at the times the others were counted.
  const ticks = [...new Set(Object.values(tr.routes ?? {}).flatMap((l) => l.map((x) => x.t)))].sort((a, b) => a - b);
  const zeros = ticks.map((t) => ({ t, requests: 0, c2xx: 0, c3xx: 0, c4xx: 0, c5xx: 0 }));
  return cap + keys.map((key) => {
    const list = tr.routes?.[key]?.length ? tr.routes[key] : zeros;
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
    shell: `<h1 tabindex="-1">Routes</h1>${card('Routing table', 'routes-box')}${card('Traffic', 'traffic')}${card('Certificates', 'certs-box')}`,
    regions: [
      ['#routes-box', ['routes', 'deployments'], () => table(ROUTE_COLS, state.routes.map((r) => routeRow(state, r)), { id: 'routes', empty: 'No routes: label a container with berth.host.' })],
      ['#traffic', ['traffic', 'routes', 'hello'], () => trafficHtml(state)],
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
