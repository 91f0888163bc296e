import { status } from '@grpc/grpc-js';
import * as http from 'node:http';
import type { AddressInfo } from 'node:net';
import { HttpBackend } from './backend-http';

/** Servers a test started: closed after it, passed or not. */
const opened: (() => void)[] = [];
afterEach(() => opened.splice(0).forEach((close) => close()));

/** A real HTTP server on 127.0.0.1:0 whose answers a test scripts; what it saw is kept. */
function server(handle: (req: http.IncomingMessage, body: string, res: http.ServerResponse) => void) {
  /** Each request, and whether its connection went before the answer was written (when it closes). */
  const seen: { req: http.IncomingMessage; body: string; closedEarly: Promise<boolean> }[] = [];
  let onRequest: () => void = () => undefined;
  const received = new Promise<void>((r) => (onRequest = r));
  const s = http.createServer((req, res) => {
    let body = '';
    req.on('data', (c: Buffer) => (body += c.toString()));
    req.on('end', () => {
      const closedEarly = new Promise<boolean>((r) => res.on('close', () => r(!res.writableFinished)));
      seen.push({ req, body, closedEarly });
      onRequest();
      handle(req, body, res);
    });
  });
  opened.push(() => {
    s.close();
    s.closeAllConnections();
  });
  return new Promise<{ url: string; seen: typeof seen; received: Promise<void>; close: () => Promise<void> }>(
    (resolve) =>
      s.listen(0, '127.0.0.1', () =>
        resolve({
          url: `http://127.0.0.1:${(s.address() as AddressInfo).port}`,
          seen,
          received,
          close: () =>
            new Promise((r) => {
              s.close(() => r());
              s.closeAllConnections();
            }),
        }),
      ),
  );
}

const ctx = (over: Partial<Parameters<HttpBackend['call']>[3]> = {}) => ({
  correlationId: 'c-1',
  headers: { 'x-team': 'a', authorization: 'Bearer secret', 'x-bad\nname': 'v' },
  idempotencyKey: 'k-1',
  deadline: Date.now() + 2000,
  signal: new AbortController().signal,
  traceparent: '00-0123456789abcdef0123456789abcdef-0123456789abcdef-01',
  ...over,
});

describe('HttpBackend (a real HTTP server)', () => {
  it('posts params as JSON with our headers and answers the JSON body', async () => {
    const s = await server((_req, body, res) => res.end(JSON.stringify({ echo: JSON.parse(body), n: 1 })));
    const b = new HttpBackend('catalog', () => s.url);
    expect(await b.call('POST', '/v1/search', { q: 'x' }, ctx(), true)).toEqual({ echo: { q: 'x' }, n: 1 });
    const h = s.seen[0]!.req.headers;
    expect(h['x-correlation-id']).toBe('c-1');
    expect(h['x-team']).toBe('a');
    expect(h.traceparent).toBe(ctx().traceparent);
    expect(h['idempotency-key']).toBe('k-1');
    expect(h.authorization).toBeUndefined(); // a caller's credentials are not forwarded
    await b.call('POST', '/v1/search', {}, ctx(), false);
    expect(s.seen[1]!.req.headers['idempotency-key']).toBeUndefined(); // only writes carry the key
    await s.close();
  });

  it('sends GET params as the query string', async () => {
    const s = await server((req, _b, res) => res.end(JSON.stringify({ url: req.url })));
    const b = new HttpBackend('catalog', () => `${s.url}/base/`);
    expect(await b.call('GET', '/items', { q: 'a b', n: 2 }, ctx(), false)).toEqual({
      url: '/base/items?q=a+b&n=2',
    });
    await s.close();
  });

  it("maps HTTP statuses to gRPC codes as gRPC's HTTP mapping does, with the body's message", async () => {
    const table: [number, number][] = [
      [400, status.INVALID_ARGUMENT],
      [401, status.UNAUTHENTICATED],
      [403, status.PERMISSION_DENIED],
      [404, status.NOT_FOUND],
      [409, status.ABORTED],
      [429, status.RESOURCE_EXHAUSTED],
      [501, status.UNIMPLEMENTED],
      [503, status.UNAVAILABLE],
      [504, status.DEADLINE_EXCEEDED],
      [500, status.INTERNAL],
      [502, status.INTERNAL],
    ];
    const s = await server((req, _b, res) => {
      res.statusCode = Number(req.url!.slice(1));
      res.end(JSON.stringify({ message: `said ${res.statusCode}` }));
    });
    const b = new HttpBackend('catalog', () => s.url);
    for (const [http, code] of table) {
      const e = await b
        .call('POST', `/${http}`, {}, ctx(), false)
        .catch((x: { code: number; details: string }) => x);
      expect([http, (e as { code: number }).code]).toEqual([http, code]);
      expect((e as { details: string }).details).toBe(`HTTP ${http}: said ${http}`);
    }
    await s.close();
  });

  it('answers UNAVAILABLE naming the service and address when nothing listens', async () => {
    const s = await server((_q, _b, res) => res.end('{}'));
    await s.close();
    const b = new HttpBackend('catalog', () => s.url);
    const e = (await b.call('POST', '/x', {}, ctx(), false).catch((x: unknown) => x)) as {
      code: number;
      details: string;
    };
    expect(e.code).toBe(status.UNAVAILABLE);
    expect(e.details).toContain(`service catalog at ${s.url}: unreachable (ECONNREFUSED)`);
  });

  it('answers DEADLINE_EXCEEDED for a backend slower than the deadline, and drops the request', async () => {
    const s = await server(() => undefined); // never answers
    const b = new HttpBackend('catalog', () => s.url);
    const e = (await b
      .call('POST', '/x', {}, ctx({ deadline: Date.now() + 150 }), false)
      .catch((x: unknown) => x)) as {
      code: number;
    };
    expect(e.code).toBe(status.DEADLINE_EXCEEDED);
    // Reached in time on any but a frozen machine; then the connection is dropped, not left waiting.
    if (s.seen[0]) expect(await s.seen[0].closedEarly).toBe(true);
    await s.close();
  });

  it('answers CANCELLED when the request is cancelled, and the backend sees the connection go', async () => {
    const s = await server(() => undefined);
    const b = new HttpBackend('catalog', () => s.url);
    const ac = new AbortController();
    const p = b.call('POST', '/x', {}, ctx({ signal: ac.signal, deadline: Date.now() + 10_000 }), false);
    await s.received;
    ac.abort();
    expect(((await p.catch((x: unknown) => x)) as { code: number }).code).toBe(status.CANCELLED);
    expect(await s.seen[0]!.closedEarly).toBe(true);
    await s.close();
  });

  it('refuses a body that is not a JSON object', async () => {
    const s = await server((req, _b, res) => res.end(req.url === '/text' ? 'hello' : '[1]'));
    const b = new HttpBackend('catalog', () => s.url);
    for (const p of ['/text', '/array']) {
      const e = (await b.call('POST', p, {}, ctx(), false).catch((x: unknown) => x)) as { code: number };
      expect(e.code).toBe(status.INTERNAL);
    }
    await s.close();
  });
});
