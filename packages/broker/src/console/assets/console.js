// wanas console: one broker's view of the federation, polled live. Plain DOM, no dependencies; every value
// from the broker goes in as text (never as HTML).
'use strict';

const state = {
  tab: 'sites',
  token: sessionStorage.getItem('wanas-token') || '',
  lastSeq: 0,
  requests: [],
  chosen: '',
  operations: [],
  settings: {},
};

/** An element with attributes and children (strings become text nodes). */
function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'class') el.className = v;
    else if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  for (const c of children.flat())
    if (c !== undefined && c !== null && c !== false) el.append(c instanceof Node ? c : String(c));
  return el;
}
const $ = (id) => document.getElementById(id);
const ms = (x) =>
  x === null || x === undefined ? '–' : x < 10 ? `${x.toFixed(1)} ms` : `${Math.round(x)} ms`;
const ago = (x) =>
  x < 1000
    ? 'just now'
    : x < 60000
      ? `${Math.round(x / 1000)} s`
      : x < 3600000
        ? `${Math.round(x / 60000)} min`
        : `${(x / 3600000).toFixed(1)} h`;
const dot = (s) => h('span', { class: `dot ${s}` });
const CODES = [
  'OK',
  'CANCELLED',
  'UNKNOWN',
  'INVALID_ARGUMENT',
  'DEADLINE_EXCEEDED',
  'NOT_FOUND',
  'ALREADY_EXISTS',
  'PERMISSION_DENIED',
  'RESOURCE_EXHAUSTED',
  'FAILED_PRECONDITION',
  'ABORTED',
  'OUT_OF_RANGE',
  'UNIMPLEMENTED',
  'INTERNAL',
  'UNAVAILABLE',
  'DATA_LOSS',
  'UNAUTHENTICATED',
];
/** A status code as its name (journal entries carry names; AggregateResponse JSON numbers, 0 left out). */
const codeOf = (c) => (typeof c === 'string' ? c : CODES[c || 0] || `CODE_${c}`);
/** A latency in ms from a number of ms or a protobuf Duration ({seconds, nanos} or "1.5s"). */
const durMs = (x) =>
  typeof x === 'number'
    ? x
    : typeof x === 'string'
      ? parseFloat(x) * 1000
      : x
        ? (Number(x.seconds) || 0) * 1000 + (x.nanos || 0) / 1e6
        : null;

/** GET or POST JSON from the broker; a 401/403 shows the credentials form. */
async function api(path, body) {
  const headers = { accept: 'application/json' };
  if (state.token) headers.authorization = `Bearer ${state.token}`;
  if (body !== undefined) headers['content-type'] = 'application/json';
  const res = await fetch(path, {
    method: body === undefined ? 'GET' : 'POST',
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const json = await res.json().catch(() => ({ error: `HTTP ${res.status}` }));
  if (res.status === 401 || res.status === 403) {
    if (path !== '/api/explain' && path !== '/api/run') showLogin(json.error);
    throw new Error(json.error || `HTTP ${res.status}`);
  }
  if (!res.ok)
    throw new Error(json.code ? `${json.code}: ${json.error}` : json.error || `HTTP ${res.status}`);
  if (!$('login').hidden) {
    $('login').hidden = true;
    showTab(state.tab);
  }
  return json;
}

function showLogin(message) {
  $('login').hidden = false;
  $('login-error').textContent = message || '';
  for (const s of document.querySelectorAll('main > section:not(#login)')) s.hidden = true;
}

// ---- Sites: this broker's view ----
function renderOverview(o) {
  $('who').textContent = `${o.broker.id} · ${o.broker.site}/${o.broker.pod}`;
  const a = o.admission || { inFlight: 0, limit: 0, refusalsPerSec: 0 };
  $('vitals').replaceChildren(
    h('span', {}, 'federation ', h('b', {}, o.federation), ` · up ${ago(o.uptimeMs)} · in flight `),
    h('b', { 'data-testid': 'in-flight' }, `${a.inFlight}/${Math.round(a.limit)}`),
    ` pods · refusals `,
    h('b', {}, `${a.refusalsPerSec.toFixed(1)}/s`),
    ` · sessions `,
    h('b', {}, `${o.sessions.open} open, ${o.sessions.served} served`),
    o.store ? ` · store ${o.store.kind} ${o.store.state}` : '',
  );
  $('sites').replaceChildren(
    h('h2', {}, 'Sites as this broker sees them'),
    ...o.sites.map((s) =>
      h(
        'div',
        { class: 'site-row', 'data-site': s.name, 'data-state': s.state },
        h(
          'div',
          {},
          h('div', { class: 'site-name' }, dot(s.state), s.name, s.own ? ' (this site)' : ''),
          h('div', { class: 'site-meta' }, s.state, s.sinceMs ? ` for ${ago(s.sinceMs)}` : ''),
          s.reason ? h('div', { class: 'site-meta' }, s.reason) : '',
          s.own ? '' : h('div', { class: 'site-meta' }, `round trip ${ms(s.roundTripMs)}`),
          s.representative ? h('div', { class: 'site-meta' }, `asks ${s.representative} first`) : '',
        ),
        h('div', { class: 'pods' }, ...s.pods.map((p) => podCell(s, p))),
      ),
    ),
  );
}

function podCell(site, p) {
  return h(
    'div',
    { class: `pod state-${p.state}`, 'data-pod': `${site.name}/${p.name}`, 'data-state': p.state },
    h(
      'div',
      { class: 'pod-name' },
      p.name,
      ' ',
      h('span', { class: 'muted' }, p.state, p.sinceMs ? ` ${ago(p.sinceMs)}` : ''),
    ),
    p.reason ? h('div', { class: 'broker' }, p.reason) : '',
    ...p.brokers.map((b) =>
      h(
        'div',
        { class: 'broker', 'data-broker': b.id, 'data-state': b.state, title: b.reason || '' },
        dot(b.state),
        b.id,
        b.self
          ? ' (this broker)'
          : ` ${b.state} · ${ms(b.roundTripMs)} · ${b.inFlight} in flight · ${b.calls}/${b.failures} calls/failed`,
        b.breaker && b.breaker !== 'closed' ? ` · breaker ${b.breaker}` : '',
      ),
    ),
  );
}

// ---- Federation: every site's view ----
function renderFederation(f) {
  const sites = f.views.map((v) => v.site);
  const cell = (from, to) => f.matrix.find((c) => c.from === from && c.to === to);
  $('federation').replaceChildren(
    h('h2', {}, 'How each site sees the others (round trip, state)'),
    h(
      'table',
      { class: 'grid matrix' },
      h('thead', {}, h('tr', {}, h('th', {}, 'from \\ to'), ...sites.map((s) => h('th', {}, s)))),
      h(
        'tbody',
        {},
        ...f.views.map((v) =>
          h(
            'tr',
            { 'data-from': v.site },
            h(
              'th',
              {},
              v.site,
              v.from
                ? h('div', { class: 'muted' }, `via ${v.from}`, loadOf(v.status))
                : h('div', { class: 'error' }, 'unreachable'),
            ),
            ...sites.map((to) => {
              if (to === v.site) return h('td', { class: 'cell muted' }, '—');
              const c = cell(v.site, to);
              return h(
                'td',
                { class: `cell ${c ? c.state : ''}`, 'data-to': to, 'data-state': c ? c.state : '' },
                c ? c.state : '',
                h('div', { class: 'muted' }, c ? ms(c.roundTripMs) : ''),
              );
            }),
          ),
        ),
      ),
    ),
    ...f.views
      .filter((v) => v.error)
      .map((v) =>
        h(
          'p',
          { class: 'error', 'data-unreachable': v.site },
          `${v.site}: not reachable from this broker (${v.error})`,
        ),
      ),
  );
}

/** A site's broker's load, from its GetStatus: pods in flight against its limit, refusals, sessions. */
function loadOf(status) {
  const a = (status && status.admission) || {};
  const sessions = (status && status.sessions) || {};
  return h(
    'div',
    { class: 'muted' },
    `in flight ${Math.round(a.inFlight || 0)}/${Math.round(a.limit || 0)} · refused ${a.refused || 0} · sessions ${sessions.open || 0} open, ${sessions.served || 0} served`,
  );
}

// ---- Requests: the ring, a live tail, a tree ----
function renderRequests() {
  const failedOnly = $('failed-only').checked;
  const rows = state.requests.filter((r) => !failedOnly || r.failed);
  $('requests-count').textContent =
    `${rows.length} of the last ${state.requests.length} Aggregates this broker served as entry`;
  $('requests-table').tBodies[0].replaceChildren(
    ...rows.map((r) =>
      h(
        'tr',
        {
          class: `pick ${r.correlationId === state.chosen ? 'chosen' : ''}`,
          'data-correlation-id': r.correlationId,
          onclick: () => showTree(r.correlationId),
        },
        h('td', {}, new Date(r.at).toLocaleTimeString()),
        h('td', {}, r.correlationId.slice(0, 36)),
        h('td', {}, r.operation),
        h('td', {}, r.client),
        h(
          'td',
          {},
          h(
            'span',
            { class: `badge ${r.failed ? 'bad' : 'ok'}` },
            r.code !== 'OK' ? r.code : r.podsFailed ? `${r.podsFailed} failed` : 'OK',
          ),
        ),
        h('td', {}, `${r.podsOk}/${r.podsAsked}`, r.cached ? ' cached' : r.sharedFrom ? ' shared' : ''),
        h('td', {}, ms(r.latencyMs)),
      ),
    ),
  );
}

async function showTree(id) {
  state.chosen = id;
  renderRequests();
  try {
    $('request-tree').replaceChildren(treeOf(await api(`/api/requests/${encodeURIComponent(id)}`)));
  } catch (e) {
    $('request-tree').replaceChildren(h('p', { class: 'error' }, e.message));
  }
}

/** An answer's tree: every pod, who answered, every attempt. Works for a journal entry and an AggregateResponse. */
function treeOf(r) {
  const pods = r.pods || [];
  return h(
    'div',
    { 'data-tree': r.correlationId },
    h('div', {}, h('b', {}, r.operation || ''), ` ${r.correlationId}`),
    r.code && r.code !== 'OK' ? h('div', { class: 'error' }, `${r.code}: ${r.message}`) : '',
    ...pods.map((p) =>
      h(
        'div',
        { 'data-tree-pod': `${p.site}/${p.pod}` },
        h(
          'div',
          { class: 'pod-line' },
          dot(codeOf(p.code) === 'OK' ? 'up' : 'bad'),
          `${p.site}/${p.pod} `,
          h(
            'span',
            { class: 'muted' },
            `${codeOf(p.code)} · ${p.answeredBy || ''} · ${ms(durMs(p.latencyMs ?? p.latency))}`,
          ),
        ),
        p.message ? h('div', { class: 'attempt error' }, p.message) : '',
        ...(p.attempts || []).map((a) =>
          h(
            'div',
            { class: 'attempt' },
            `${a.brokerId}: ${codeOf(a.code)} in ${ms(durMs(a.latencyMs ?? a.latency))}${a.hedged ? ' (hedge)' : ''}${a.message ? ` — ${a.message}` : ''}`,
          ),
        ),
        p.result ? h('pre', {}, JSON.stringify(p.result, null, 1)) : '',
      ),
    ),
    r.reduced ? h('pre', {}, `reduced: ${JSON.stringify(r.reduced, null, 1)}`) : '',
  );
}

// ---- Explain ----
function explainRequest() {
  let params;
  try {
    params = JSON.parse($('ex-params').value || '{}');
  } catch (e) {
    throw new Error(`params are not JSON: ${e.message}`);
  }
  const list = (id) =>
    $(id)
      .value.split(',')
      .map((s) => s.trim())
      .filter(Boolean);
  return {
    operation: $('ex-operation').value,
    params,
    scope: { sites: list('ex-sites'), pods: list('ex-pods') },
    mode: $('ex-mode').value,
  };
}

async function explain(ev) {
  ev.preventDefault();
  $('ex-error').textContent = '';
  try {
    const plan = await api('/api/explain', explainRequest());
    $('ex-plan').replaceChildren(planOf(plan));
  } catch (e) {
    $('ex-error').textContent = e.message;
  }
}

async function run() {
  $('ex-error').textContent = '';
  try {
    $('ex-result').replaceChildren(treeOf(await api('/api/run', explainRequest())));
  } catch (e) {
    $('ex-error').textContent = e.message;
  }
}

function planOf(p) {
  const d = (x) => (x ? ms(durMs(x)) : '–');
  return h(
    'div',
    { 'data-plan': p.correlationId },
    h(
      'div',
      {},
      h('b', {}, `${p.operation}`),
      ` · mode ${p.mode} · deadline ${d(p.deadline)} · hedge ${p.hedge ? 'on' : 'off'} · answered from ${p.answerFrom || 'run'}${p.joins ? ` (joins ${p.joins})` : ''} · planned by ${p.plannedBy}`,
    ),
    h('div', { class: 'muted' }, `${(p.pods || []).length} pods in scope`),
    ...(p.legs || []).map((l, i) =>
      h(
        'div',
        {
          class: `leg state-${l.skipped ? 'down' : l.targetState || 'up'}`,
          'data-leg': `${l.via}:${l.site}`,
        },
        h(
          'div',
          { class: 'title' },
          `${i + 1}. ${l.via} → ${l.site} `,
          h('span', { class: 'muted' }, `${l.method} · ${(l.pods || []).join(', ')}`),
        ),
        l.skipped ? h('div', { class: 'error' }, `skipped: ${l.skipped}`) : '',
        h(
          'div',
          { class: 'muted' },
          `attempt timeout ${d(l.attemptTimeout)} · expected ${d(l.expectedLatency)} · hedge after ${d(l.hedgeDelay)} · hop deadline ${d(l.hopDeadline)}`,
        ),
        ...(l.endpoints || []).map((e) =>
          h(
            'div',
            { class: 'broker' },
            dot(e.state),
            `${e.brokerId} ${e.state}${e.stateReason ? ` (${e.stateReason})` : ''} · floor ${d(e.latencyFloor)} · p95 ${d(e.latencyP95)}`,
          ),
        ),
      ),
    ),
  );
}

// ---- Operations ----
function renderOperations(list) {
  state.operations = list.operations || [];
  state.settings = list.console || {};
  const select = $('ex-operation');
  const current = select.value;
  select.replaceChildren(...state.operations.map((o) => h('option', { value: o.name }, o.name)));
  if (current) select.value = current;
  showSchema();
  $('operations').replaceChildren(
    h('h2', {}, 'What this broker serves'),
    h(
      'table',
      { class: 'grid' },
      h(
        'thead',
        {},
        h(
          'tr',
          {},
          ...['name', 'kind', 'backend', 'idempotent', 'reducer', 'pages', 'params schema'].map((t) =>
            h('th', {}, t),
          ),
        ),
      ),
      h(
        'tbody',
        {},
        ...state.operations.map((o) =>
          h(
            'tr',
            { 'data-operation': o.name },
            h('td', {}, h('b', {}, o.name), o.description ? h('div', { class: 'muted' }, o.description) : ''),
            h('td', {}, o.kind),
            h('td', {}, [o.service, o.method].filter(Boolean).join(' / ') || o.module || '–'),
            h(
              'td',
              {},
              o.idempotent
                ? `yes (read)${o.cacheMaxAge ? `, cached ≤ ${ms(durMs(o.cacheMaxAge))}` : ''}`
                : 'no (write)',
            ),
            h('td', {}, o.reduce ? JSON.stringify(o.reduce) : '–'),
            h('td', {}, o.pageItems ? `${o.pageItems} by ${o.pageKey}` : '–'),
            h('td', {}, o.paramsSchema ? h('pre', {}, JSON.stringify(o.paramsSchema, null, 1)) : '–'),
          ),
        ),
      ),
    ),
  );
}

function showSchema() {
  const op = state.operations.find((o) => o.name === $('ex-operation').value);
  $('ex-schema').textContent =
    op && op.paramsSchema ? `params schema: ${JSON.stringify(op.paramsSchema)}` : '';
  const why = !state.settings.allowRun
    ? 'Run is off (settings.console.allowRun)'
    : op && !op.idempotent
      ? 'never for a write'
      : '';
  $('ex-run').disabled = !!why;
  $('ex-run-why').textContent = why;
}

// ---- Health over time ----
function renderHealth(series) {
  const names = Object.keys(series).sort((a, b) => (a === '*' ? -1 : b === '*' ? 1 : a.localeCompare(b)));
  $('health').replaceChildren(
    h('h2', {}, 'Last 15 minutes, 10-second buckets (this broker as entry)'),
    h(
      'div',
      { class: 'charts' },
      ...names.flatMap((n) => {
        const pts = series[n];
        const label = n === '*' ? 'every Aggregate' : `site ${n} (its pods)`;
        return [
          chart(
            `${label}: requests and errors per second`,
            pts,
            [
              ['rps', '#4c9aff'],
              ['errorsPerSec', '#e5484d'],
            ],
            (v) => `${v.toFixed(1)}/s`,
          ),
          chart(
            `${label}: p50 and p99 latency`,
            pts,
            [
              ['p50Ms', '#2fb36b'],
              ['p99Ms', '#e0a526'],
            ],
            ms,
          ),
        ];
      }),
    ),
  );
}

/** A small SVG line chart of `keys` of `points`. */
function chart(title, points, keys, fmt) {
  const W = 300,
    H = 60;
  const max = Math.max(1e-9, ...points.flatMap((p) => keys.map(([k]) => p[k] || 0)));
  const ns = 'http://www.w3.org/2000/svg';
  const svg = document.createElementNS(ns, 'svg');
  svg.setAttribute('viewBox', `0 0 ${W} ${H}`);
  svg.setAttribute('preserveAspectRatio', 'none');
  for (const [k, color] of keys) {
    const line = document.createElementNS(ns, 'polyline');
    line.setAttribute('fill', 'none');
    line.setAttribute('stroke', color);
    line.setAttribute('stroke-width', '1.5');
    line.setAttribute(
      'points',
      points
        .map(
          (p, i) =>
            `${((i / Math.max(1, points.length - 1)) * W).toFixed(1)},${(H - 2 - ((p[k] || 0) / max) * (H - 4)).toFixed(1)}`,
        )
        .join(' '),
    );
    svg.append(line);
  }
  const last = points[points.length - 1] || {};
  return h(
    'div',
    { class: 'chart' },
    h('h3', {}, title),
    svg,
    h(
      'div',
      { class: 'legend' },
      keys
        .map(([k]) => `${k} now ${last[k] === null || last[k] === undefined ? '–' : fmt(last[k])}`)
        .join(' · '),
      ` · max ${fmt(max)}`,
    ),
  );
}

// ---- Polling ----
const pollers = {
  overview: { every: 1000, run: async () => renderOverview(await api('/api/overview')) },
  federation: {
    every: 2000,
    when: () => state.tab === 'federation',
    run: async () => renderFederation(await api('/api/federation')),
  },
  requests: {
    every: 1000,
    run: async () => {
      const { entries } = await api(`/api/requests?after=${state.lastSeq}`);
      if (!entries.length) return;
      state.lastSeq = Math.max(state.lastSeq, ...entries.map((e) => e.seq));
      state.requests = [...entries, ...state.requests].slice(0, 1000);
      if (state.tab === 'requests') renderRequests();
    },
  },
  health: {
    every: 5000,
    when: () => state.tab === 'health',
    run: async () => renderHealth(await api('/api/health')),
  },
};

async function poll(p) {
  if (!p.when || p.when()) {
    try {
      await p.run();
      $('live').className = 'live ok';
    } catch (e) {
      $('live').className = 'live stale';
      $('live').title = e.message;
    }
  }
  setTimeout(() => poll(p), p.every);
}

function showTab(tab) {
  state.tab = tab;
  for (const b of document.querySelectorAll('#tabs button')) b.classList.toggle('on', b.dataset.tab === tab);
  for (const s of document.querySelectorAll('main > section')) s.hidden = s.id !== tab;
  if (tab === 'requests') renderRequests();
  const p = pollers[tab];
  if (p && p.when) p.run().catch(() => undefined);
}

function start() {
  for (const b of document.querySelectorAll('#tabs button'))
    b.addEventListener('click', () => showTab(b.dataset.tab));
  $('failed-only').addEventListener('change', renderRequests);
  $('explain-form').addEventListener('submit', explain);
  $('ex-run').addEventListener('click', run);
  $('ex-operation').addEventListener('change', showSchema);
  $('login-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    state.token = $('token').value.trim();
    sessionStorage.setItem('wanas-token', state.token);
    showTab(state.tab);
    api('/api/operations')
      .then(renderOperations)
      .catch(() => undefined);
  });
  for (const p of Object.values(pollers)) poll(p);
  const loadOperations = () =>
    api('/api/operations')
      .then(renderOperations)
      .catch(() => setTimeout(loadOperations, 2000));
  loadOperations();
}

start();
