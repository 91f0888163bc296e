#!/usr/bin/env node
/**
 * The inventory example's HTTP backend: a JSON catalog search, one per pod, in plain Node (no packages).
 *
 *   node examples/inventory/catalog.js --port 19201 --site eu-west --pod dub-a [--delay-ms 0] [--events FILE]
 *
 * POST /v1/search {"q": "wid", "limit": 5} → {"items": [{"name", "score", "price"}], "matched": N}
 * POST /v1/products {"after": "", "limit": 100} → {"products": [{"sku", "name", "price"}]}: the pod's 40
 *   products in sku order, from `after` (inclusive), at most `limit` (0: all) — a listing wanas pages
 * GET /v1/health → {"ok": true}
 * A missing q is HTTP 400 with {"message": ...}; --delay-ms makes every answer slow (a slow pod), and a
 * request whose client goes away is logged as cancelled; --events appends one JSON line per request.
 */
'use strict';
const http = require('node:http');
const fs = require('node:fs');
const crypto = require('node:crypto');

const args = { host: '127.0.0.1', delayMs: 0 };
const argv = process.argv.slice(2);
for (let i = 0; i < argv.length; i += 2) {
  const [flag, value] = [argv[i], argv[i + 1]];
  const key = flag.replace(/^--/, '').replace(/-([a-z])/g, (_, c) => c.toUpperCase());
  if (!['port', 'host', 'site', 'pod', 'delayMs', 'events'].includes(key) || value === undefined) {
    process.stderr.write(`catalog: unknown flag ${flag}\n`);
    process.exit(2);
  }
  args[key] = key === 'port' || key === 'delayMs' ? Number(value) : value;
}
if (!Number.isInteger(args.port) || !args.site || !args.pod) {
  process.stderr.write('usage: catalog.js --port N --site S --pod P [--delay-ms MS] [--events FILE]\n');
  process.exit(2);
}

const NAMES = ['widget', 'widget-pro', 'wide-gizmo', 'gadget', 'gizmo', 'sprocket', 'flange', 'window'];
const score = (name) =>
  crypto.createHash('sha256').update(`${args.site}/${args.pod}/${name}`).digest().readUInt16BE(0) / 65535;
// Appended synchronously: a line is in the file before the answer leaves (tests read it right after).
const record = (req, outcome, more = {}) =>
  args.events &&
  fs.appendFileSync(
    args.events,
    JSON.stringify({
      method: `${req.method} ${req.url}`,
      site: args.site,
      pod: args.pod,
      outcome,
      headers: req.headers,
      ...more,
    }) + '\n',
  );

function send(res, status, body) {
  res.writeHead(status, { 'content-type': 'application/json' });
  res.end(JSON.stringify(body));
}

/** The pod's products: 40, with skus spread by a hash so that every pod's interleave in sku order. */
const PRODUCTS = Array.from({ length: 40 }, (_, i) => {
  const name = `${NAMES[i % NAMES.length]}-${Math.floor(i / NAMES.length) + 1}`;
  const sku = crypto
    .createHash('sha256')
    .update(`${args.site}/${args.pod}/${name}`)
    .digest('hex')
    .slice(0, 12);
  return { sku, name, price: Math.round(score(name + '$') * 10000) / 100 };
}).sort((a, b) => (a.sku < b.sku ? -1 : 1));

function products(req, res, body) {
  let q;
  try {
    q = JSON.parse(body || '{}');
  } catch {
    return send(res, 400, { message: 'the body is not JSON' });
  }
  const after = typeof q.after === 'string' ? q.after : '';
  const limit = Number.isInteger(q.limit) && q.limit > 0 ? q.limit : PRODUCTS.length;
  record(req, 'ok', { after, limit });
  send(res, 200, { products: PRODUCTS.filter((p) => p.sku >= after).slice(0, limit) });
}

const server = http.createServer((req, res) => {
  let body = '';
  req.setEncoding('utf8');
  req.on('data', (c) => (body += c));
  req.on('end', () => {
    record(req, 'received');
    if (req.method === 'GET' && req.url === '/v1/health') return send(res, 200, { ok: true });
    if (req.method === 'POST' && req.url === '/v1/products') return products(req, res, body);
    if (req.method !== 'POST' || req.url !== '/v1/search')
      return send(res, 404, { message: `no route ${req.method} ${req.url}` });
    let q;
    try {
      q = JSON.parse(body || '{}');
    } catch {
      return send(res, 400, { message: 'the body is not JSON' });
    }
    if (typeof q.q !== 'string' || !q.q) return send(res, 400, { message: 'q: required (a search string)' });
    const limit = Number.isInteger(q.limit) && q.limit > 0 ? q.limit : 10;
    const answer = () => {
      const items = NAMES.filter((n) => n.includes(q.q))
        .map((name) => ({
          name,
          score: Math.round(score(name) * 1000) / 1000,
          price: Math.round(score(name + '$') * 10000) / 100,
        }))
        .sort((a, b) => b.score - a.score);
      record(req, 'ok');
      send(res, 200, { items: items.slice(0, limit), matched: items.length });
    };
    if (!args.delayMs) return answer();
    const timer = setTimeout(answer, args.delayMs);
    res.on('close', () => {
      if (res.writableFinished) return;
      clearTimeout(timer);
      record(req, 'cancelled');
    });
  });
});
server.listen(args.port, args.host, () => {
  process.stdout.write(
    JSON.stringify({
      msg: 'catalog backend serving',
      address: `${args.host}:${server.address().port}`,
      site: args.site,
      pod: args.pod,
    }) + '\n',
  );
});
const stop = () => server.close(() => process.exit(0)) && setTimeout(() => process.exit(0), 500).unref();
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
