import * as http from 'node:http';
import type { WanEmulator } from './wan-emulator';

/** The control endpoint of a running `wanas up` (what `wanas wan` calls): its URL and how to close it. */
export interface UpControl {
  url: string;
  close(): Promise<void>;
}

/**
 * Serves `GET /status`, `POST /cut?site=S`, `POST /heal?site=S` and `POST /latency?ms=N&jitter=M` on a
 * loopback port: the WAN emulator's controls, refused with 400 for an unknown site or a bad number.
 */
export async function startUpControl(
  wan: WanEmulator,
  sites: readonly string[],
  brokers: () => unknown,
  say: (line: string) => void,
): Promise<UpControl> {
  const server = http.createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://control');
    const site = url.searchParams.get('site') ?? '';
    const reply = (code: number, body: unknown) => {
      res.statusCode = code;
      res.setHeader('content-type', 'application/json');
      res.end(`${JSON.stringify(body, null, 2)}\n`);
    };
    if (url.pathname === '/status') return reply(200, { wan: wan.snapshot(), brokers: brokers() });
    if ((url.pathname === '/cut' || url.pathname === '/heal') && req.method === 'POST') {
      if (!sites.includes(site))
        return reply(400, { error: `unknown site "${site}"; sites: ${sites.join(', ')}` });
      if (url.pathname === '/cut') wan.cut(site);
      else wan.heal(site);
      say(`WAN: site ${site} ${url.pathname === '/cut' ? 'cut off' : 'healed'}`);
      return reply(200, wan.snapshot());
    }
    if (url.pathname === '/latency' && req.method === 'POST') {
      const ms = Number(url.searchParams.get('ms'));
      const jitter = Number(url.searchParams.get('jitter') ?? wan.snapshot().jitterMs);
      if (!(ms >= 0) || !(jitter >= 0))
        return reply(400, { error: 'ms and jitter must be non-negative numbers' });
      wan.setLatency(ms, jitter);
      say(`WAN: latency ${ms} ms one way, jitter ${jitter} ms`);
      return reply(200, wan.snapshot());
    }
    return reply(404, {
      error: 'use GET /status, POST /cut?site=S, POST /heal?site=S, POST /latency?ms=N&jitter=M',
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    url: `http://127.0.0.1:${(server.address() as { port: number }).port}`,
    close: () => new Promise((r) => server.close(() => r())),
  };
}
