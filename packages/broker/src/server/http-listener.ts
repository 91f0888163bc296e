/**
 * The broker's HTTP listener (`metricsAddress`): `/metrics` (Prometheus text), `/status` (JSON), and the
 * operator console at `/` when it is on. Under `security.mode: mtls` it speaks HTTPS with the broker's
 * certificate and asks browsers for a client certificate (optional: a bearer token does too); the
 * certificate files are re-read as the gRPC server re-reads them, so a rotation applies without a restart.
 * `/metrics` and `/status` stay open to scrapers as before; the console's data needs credentials.
 */
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as https from 'node:https';
import type { Registry } from 'prom-client';

/** One request the listener passes on: handled (true) or not (false, a 404). */
export type HttpRoute = (req: http.IncomingMessage, res: http.ServerResponse, url: URL) => Promise<boolean>;

/** What the listener serves. */
export interface HttpListenerOptions {
  /** host:port (port 0: any free one). */
  address: string;
  registry: Registry;
  status: () => unknown;
  /** The console's routes (undefined when it is off). */
  console?: HttpRoute;
  /** Under mTLS: the broker's PEM files, and how often to re-read them, ms. */
  tls?: { caCertificateFile: string; certificateFile: string; privateKeyFile: string; refreshMs: number };
}

/** A listening HTTP(S) server. */
export interface HttpListener {
  port: number;
  /** `http` or `https`. */
  scheme: string;
  close(): Promise<void>;
}

/** Starts the listener (see the file's comment). */
export async function startHttpListener(o: HttpListenerOptions): Promise<HttpListener> {
  const handler = (req: http.IncomingMessage, res: http.ServerResponse): void => {
    void route(o, req, res).catch((e: unknown) => fail(res, e));
  };
  const tls = o.tls;
  const server = tls
    ? https.createServer({ ...readTls(tls), requestCert: true, rejectUnauthorized: false }, handler)
    : http.createServer(handler);
  const refresh = tls && server instanceof https.Server ? watchTls(server, tls) : undefined;
  const i = o.address.lastIndexOf(':');
  const host = o.address.slice(0, i).replace(/^\[|\]$/g, '');
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(Number(o.address.slice(i + 1)), host, resolve);
  });
  return {
    port: (server.address() as { port: number }).port,
    scheme: tls ? 'https' : 'http',
    close: () => {
      if (refresh) clearInterval(refresh);
      server.closeAllConnections();
      return new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

async function route(o: HttpListenerOptions, req: http.IncomingMessage, res: http.ServerResponse) {
  const url = new URL(req.url ?? '/', 'http://broker');
  if (url.pathname === '/metrics') {
    res.setHeader('content-type', o.registry.contentType);
    res.end(await o.registry.metrics());
  } else if (url.pathname === '/status') {
    res.setHeader('content-type', 'application/json');
    res.end(JSON.stringify(o.status(), null, 2));
  } else if (!(await o.console?.(req, res, url))) {
    res.statusCode = 404;
    res.end(`not found: try /metrics or /status${o.console ? ' or / (the console)' : ''}\n`);
  }
}

/** An error past the routes: a 500 naming it, or a dropped connection once the answer has begun. */
function fail(res: http.ServerResponse, e: unknown): void {
  if (res.headersSent) res.destroy();
  else {
    res.statusCode = 500;
    res.end(`error: ${(e as Error).message}\n`);
  }
}

function readTls(f: NonNullable<HttpListenerOptions['tls']>) {
  return {
    ca: fs.readFileSync(f.caCertificateFile),
    cert: fs.readFileSync(f.certificateFile),
    key: fs.readFileSync(f.privateKeyFile),
  };
}

/** Re-reads the certificate files every `refreshMs`; a changed set replaces the server's context. */
function watchTls(server: https.Server, f: NonNullable<HttpListenerOptions['tls']>): NodeJS.Timeout {
  let last = JSON.stringify(readTls(f));
  const t = setInterval(() => {
    try {
      const now = readTls(f);
      const key = JSON.stringify(now);
      if (key === last) return;
      last = key;
      server.setSecureContext(now);
    } catch {
      // A rotation caught half-written: the files are read again next time.
    }
  }, f.refreshMs);
  t.unref();
  return t;
}
