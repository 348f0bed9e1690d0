// app.js: the dashboard's entry point. One EventSource feeds a client-side
// state; a small History API router shows the view of the current path and
// re-renders its regions when the sections they read change.
import { viewFor } from './views.js';
import { fmtClock, refreshTimes } from './charts.js';

const $ = (s) => document.querySelector(s);
const main = $('#main');
const CSRF = $('meta[name="berth-csrf"]')?.content ?? '';

// ---------- state (one key per named event of /api/events) ----------

const DEFAULTS = {
  hello: null, deployments: [], backends: [], routes: [], problems: [], certificates: [],
  dns: null, docker: null, runs: [], events: [], traffic: { interval_secs: 10, routes: {} }, autoscale: [],
};
// offline: the stream is down since offlineSince (unix seconds); the page shows what it had then.
const state = { ...structuredClone(DEFAULTS), progress: {}, loaded: new Set(), offline: false, offlineSince: null };
const MAX_EVENTS = 200;

// ---------- requests ----------

let leaving = false;
/** The session ended (a 401): to the login form, which says so, then back here. */
function toLogin() {
  if (leaving) return;
  leaving = true;
  location.href = `/login?ended=1&next=${encodeURIComponent(location.pathname + location.search)}`;
}

const now = () => fmtClock(Date.now() / 1000);

/**
 * fetch on this origin: CSRF header on changes, JSON body, 401 → login page,
 * any other error status → Error with the server's {"error"} text and .status,
 * no answer at all (TypeError) → Error saying so and that nothing was sent.
 */
async function api(path, { method = 'GET', body, signal } = {}) {
  const headers = {};
  if (method !== 'GET') headers['X-Berth-CSRF'] = CSRF;
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  let res;
  try {
    res = await fetch(path, {
      method, headers, signal, credentials: 'same-origin', cache: 'no-store',
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch (e) {
    if (!(e instanceof TypeError)) throw e; // an abort stays an abort
    throw Object.assign(new Error(`berth did not answer (${now()})${method === 'GET' ? '' : ': the action was not sent'}`), { network: true });
  }
  if (res.status === 401) {
    toLogin();
    throw Object.assign(new Error('signed out'), { silent: true, status: 401 });
  }
  if (!res.ok) {
    let msg = `${res.status} ${res.statusText}`;
    try { msg = (await res.json()).error || msg; } catch { /* not JSON */ }
    throw Object.assign(new Error(msg), { status: res.status });
  }
  return res;
}
const json = async (path, opts) => (await api(path, opts)).json();

// ---------- notices and confirmation ----------

/** A message at the top of the page; info ones go away by themselves. */
function notify(text, kind = 'info') {
  const box = $('#notice');
  const p = document.createElement('p');
  p.className = `note ${kind}`;
  p.setAttribute('role', kind === 'error' ? 'alert' : 'status');
  const close = document.createElement('button');
  close.type = 'button';
  close.className = 'ghost small';
  close.textContent = 'Dismiss';
  close.addEventListener('click', () => p.remove());
  p.append(text, ' ', close);
  box.append(p);
  while (box.childElementCount > 3) box.firstElementChild.remove();
  if (kind !== 'error') setTimeout(() => p.remove(), 6000);
}

const dialog = $('#confirm');
/**
 * Asks in <dialog id=confirm>; resolves true for #confirm-yes, false for No, Escape or the backdrop.
 * tone: 'danger' for what takes something away (stop, drain), else 'primary'.
 */
function confirmAction(message, yes = 'Confirm', tone = 'primary') {
  if (dialog.open) return Promise.resolve(false);
  $('#confirm-msg').textContent = message;
  $('#confirm-yes').textContent = yes;
  $('#confirm-yes').className = tone === 'danger' ? 'danger' : 'primary';
  dialog.returnValue = '';
  dialog.showModal();
  $('#confirm-no').focus();
  return new Promise((resolve) => dialog.addEventListener('close', () => resolve(dialog.returnValue === 'yes'), { once: true }));
}
// A click on the backdrop (the dialog box itself, outside its form) cancels.
dialog.addEventListener('click', (e) => { if (e.target === dialog) dialog.close(''); });

// ---------- rendering ----------

let cur = null; // the current view
let dirty = new Set();
let pending = 0;
const ALL = { has: () => true };
const rendered = new WeakMap(); // region element → the HTML it shows

/** Schedules a re-render of the regions reading these sections (coalesced). */
function mark(...sections) {
  for (const s of sections) dirty.add(s);
  pending ||= setTimeout(() => { pending = 0; const d = dirty; dirty = new Set(); render(d); }, 16);
}

/**
 * Selectors that find the same control again after a region is rebuilt:
 * [the control, its row] (row null outside a keyed row).
 */
function focusKey(node) {
  const q = (a, n) => `[${a}="${CSS.escape(n.getAttribute(a))}"]`;
  const keys = ['data-container', 'data-route', 'data-host', 'data-name', 'data-run', 'data-deploy', 'data-service'];
  const r = node.parentElement?.closest(keys.map((k) => `[${k}]`).join(','));
  const row = r ? q(keys.find((x) => r.hasAttribute(x)), r) : null;
  if (node.id) return [`#${CSS.escape(node.id)}`, row];
  const own = node.localName + ['href', 'data-action', 'data-key'].filter((a) => node.hasAttribute(a)).map((a) => q(a, node)).join('');
  return [row ? `${row} ${own}` : own, row];
}

const FOCUSABLE = 'button:not(:disabled), a[href], input:not(:disabled), [tabindex]';

/** Puts the focus back on that control, or the first usable one of its row, or the page's heading: never <body>. */
function refocus(el, [sel, row]) {
  const t = el.querySelector(sel);
  if (t && !t.disabled) return t.focus({ preventScroll: true });
  const alt = (row && el.querySelector(row)?.querySelector(FOCUSABLE)) || main.querySelector('h1');
  alt?.focus({ preventScroll: true });
}

/** Replaces a region's HTML when it changed, keeping focus and open <details>. */
function patch(el, html) {
  if (rendered.get(el) === html) return;
  const active = el.contains(document.activeElement) ? focusKey(document.activeElement) : null;
  const open = new Map([...el.querySelectorAll('details[data-key]')].map((d) => [d.dataset.key, d.open]));
  el.innerHTML = html;
  rendered.set(el, html);
  for (const d of el.querySelectorAll('details[data-key]')) if (open.has(d.dataset.key)) d.open = open.get(d.dataset.key);
  if (active) refocus(el, active);
}

function render(d) {
  const v = cur;
  if (!v || !v.needs.every((n) => state.loaded.has(n))) return;
  const first = !v.shown;
  // The page's markup goes in with its data, in one task: no half-filled form to type into.
  if (first) main.innerHTML = v.shell;
  for (const [sel, deps, html] of v.regions) {
    if (!first && !deps.some((x) => d.has(x))) continue;
    const el = main.querySelector(sel);
    if (el) patch(el, html());
  }
  v.after?.(first ? ALL : d);
  lockActions();
  if (first) {
    v.shown = true;
    main.removeAttribute('aria-busy');
    v.rendered?.();
    document.body.dataset.page = v.page;
    if (v.focus) main.querySelector('h1')?.focus({ preventScroll: true });
  }
}

const ctx = { state, api, json, mark, notify, confirm: confirmAction, refocus };

// ---------- router ----------

function route(focus) {
  cur?.unmount?.();
  delete document.body.dataset.page;
  cur = viewFor(location, ctx);
  document.title = `${cur.title} · berth`;
  cur.focus = focus;
  main.setAttribute('aria-busy', 'true');
  main.replaceChildren();
  for (const a of document.querySelectorAll('.top nav a')) {
    if (a.id === `nav-${cur.nav}`) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
  cur.mount?.();
  if (focus) scrollTo(0, 0);
  render(ALL);
}

function navigate(to) {
  if (to === location.pathname + location.search) return;
  history.pushState(null, '', to);
  route(true);
}

// In-app links: plain left clicks on local pages (not the API, assets or login).
document.addEventListener('click', (e) => {
  if (e.defaultPrevented || e.button !== 0 || e.metaKey || e.ctrlKey || e.shiftKey || e.altKey) return;
  const a = e.target.closest('a[href]');
  if (!a || a.target || a.hasAttribute('download') || a.getAttribute('href').startsWith('#')) return;
  const url = new URL(a.href);
  if (url.origin !== location.origin || /^\/(api|ui|login|logout|metrics)(\/|$)/.test(url.pathname)) return;
  e.preventDefault();
  navigate(url.pathname + url.search);
});
addEventListener('popstate', () => route(true));
addEventListener('pagehide', () => cur?.unmount?.());
addEventListener('pageshow', (e) => { if (e.persisted) route(false); });

// The view's handlers, delegated from <main> (no listener to remove on navigation).
for (const type of ['click', 'submit', 'input', 'change', 'focusout']) {
  main.addEventListener(type, (e) => {
    const h = cur?.[`on${type}`];
    if (h) Promise.resolve(h(e)).catch((err) => { if (!err?.silent) notify(String(err?.message ?? err), 'error'); });
  });
}

$('#logout').addEventListener('click', async () => {
  try {
    await fetch('/logout', { method: 'POST', headers: { 'X-Berth-CSRF': CSRF }, credentials: 'same-origin', redirect: 'manual' });
  } catch { /* going to the login page either way */ }
  location.href = '/login';
});

// ---------- live stream ----------

// What can change something: locked (disabled, marked data-off) while berth does not answer.
const ACTIONS = '[data-action], button[id^="svc-"], #scale-go, #rollout-go, form :is(input, select, button)';

function lockActions() {
  if (!state.offline) return;
  for (const e of main.querySelectorAll(ACTIONS)) if (!e.disabled) { e.disabled = true; e.dataset.off = ''; }
}

function unlockActions() {
  for (const e of main.querySelectorAll('[data-off]')) { e.disabled = false; delete e.dataset.off; }
  cur?.relock?.(); // the view disables again what is busy for its own reasons
}

function setLive(on) {
  const el = $('#live');
  const text = on ? 'live' : 'reconnecting…';
  if (el.textContent !== text) el.textContent = text;
  el.classList.toggle('off', !on);
  if (state.offline === !on) return;
  state.offline = !on;
  document.body.classList.toggle('offline', !on);
  const banner = $('#offline');
  if (on) {
    state.offlineSince = null;
    banner.textContent = '';
    unlockActions();
  } else {
    state.offlineSince = Date.now() / 1000;
    banner.textContent = `berth is not answering since ${fmtClock(state.offlineSince)} — what you see is from then`;
    lockActions();
  }
  mark('live');
}

/** How traffic names a route: host + path prefix (as views.js). */
const routeKey = (r) => r.host + (r.path.startsWith('/') ? r.path : `/${r.path}`);

/**
 * Appends one traffic interval to every series, 0 for routes without traffic
 * (every route of the routing table gets a series), dropping what is older than the history.
 */
function addTick(tick) {
  const tr = state.traffic;
  tr.routes ??= {};
  const keep = state.hello?.history_secs || tr.history_secs || 3600;
  const zero = { requests: 0, c2xx: 0, c3xx: 0, c4xx: 0, c5xx: 0 };
  for (const k of new Set([...state.routes.map(routeKey), ...Object.keys(tr.routes), ...Object.keys(tick.routes ?? {})])) {
    const list = (tr.routes[k] ??= []);
    if (list.length && list[list.length - 1].t >= tick.t) continue;
    list.push({ ...zero, ...tick.routes?.[k], t: tick.t });
    const i = list.findIndex((x) => x.t > tick.t - keep);
    if (i > 0) list.splice(0, i);
  }
  mark('traffic');
}

let source = null;

function connect() {
  source = new EventSource('/api/events');
  const on = (name, fn) => source.addEventListener(name, (e) => {
    let v;
    try { v = JSON.parse(e.data); } catch { return; }
    setLive(true);
    fn(v);
  });
  for (const name of Object.keys(DEFAULTS)) {
    on(name, (v) => {
      state[name] = v ?? structuredClone(DEFAULTS[name]);
      state.loaded.add(name);
      mark(name);
    });
  }
  on('event', (v) => {
    state.events.push(v);
    if (state.events.length > MAX_EVENTS) state.events.splice(0, state.events.length - MAX_EVENTS);
    mark('events');
  });
  on('traffic_tick', addTick);
  on('progress', (v) => {
    state.progress[v.id] = v;
    const ids = Object.keys(state.progress);
    if (ids.length > 100) delete state.progress[ids[0]];
    mark('progress');
  });
  source.onopen = () => setLive(true);
  source.onerror = () => {
    if (leaving) return;
    setLive(false);
    // EventSource retries by itself, except after an HTTP error (e.g. 401).
    if (source.readyState === EventSource.CLOSED) setTimeout(checkSession, 2000);
  };
}

/** After the stream was refused: to the login page when signed out, else connect again. */
async function checkSession() {
  try {
    const r = await fetch(location.pathname, { method: 'HEAD', cache: 'no-store', credentials: 'same-origin' });
    if (r.status === 401) return toLogin();
  } catch { /* berth unreachable: try again */ }
  connect();
}

// Relative times ("5 min ago", "in 3 d") move on by themselves.
setInterval(() => refreshTimes(main), 15000);

route(false);
connect();
