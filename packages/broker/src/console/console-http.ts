/**
 * The console's HTTP routes: the page and its assets (self-contained: no CDN, no external font), and the
 * JSON it polls. The data routes need what AggregationService would accept (a client certificate, or
 * `authorization: Bearer <token>`); the page itself holds no data, so a browser without a certificate
 * can load it and ask for a token. Explain and Run go through this broker's own gRPC server, so they are
 * admitted, logged and journaled as any client's call.
 */
import * as grpc from '@grpc/grpc-js';
import {
  AdminServiceClient,
  AggregateRequest,
  AggregateResponse,
  AggregationServiceClient,
  ExplainResponse,
  ListOperationsResponse,
} from '@wanas/proto';
import * as fs from 'node:fs';
import type * as http from 'node:http';
import * as path from 'node:path';
import type { TLSSocket } from 'node:tls';
import { BrokerError } from '../errors';
import type { HttpRoute } from '../server/http-listener';
import type { BrokerSecurity } from '../server/security';
import { FederationView } from './federation-view';
import { failed, type RequestJournal } from './journal';
import { overview, RefusalRate, type OverviewSources } from './overview';
import type { HealthWindows } from './windows';

/** Largest request body the console accepts (an Explain form), bytes. */
const MAX_BODY_BYTES = 64 * 1024;
/** How long Explain and Run may take, ms. */
const CALL_TIMEOUT_MS = 10_000;
/** The page and its assets, by path. */
const ASSETS: Record<string, string> = {
  '/': 'index.html',
  '/console.js': 'console.js',
  '/console.css': 'console.css',
};
const TYPES: Record<string, string> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
};

/** What the console reads and calls. */
export interface ConsoleDeps extends OverviewSources {
  /** This broker's gRPC address (host:port), for Explain and Run. */
  grpcAddress: string;
  brokerId: string;
  security: BrokerSecurity;
  journal: RequestJournal;
  windows: HealthWindows;
  federation: FederationView;
  operations: () => ListOperationsResponse;
  settings: () => { allowRun: boolean; keepBodies: boolean };
}

/** The console's routes, and what to close when the broker stops. */
export function consoleRoutes(deps: ConsoleDeps): { route: HttpRoute; close(): void } {
  const refusals = new RefusalRate();
  const calls = new SelfCalls(deps);
  const api: Record<string, (req: http.IncomingMessage, url: URL) => Promise<unknown>> = {
    'GET /api/overview': () => Promise.resolve(overview(deps, refusals)),
    'GET /api/federation': async () => {
      const views = await deps.federation.views();
      return { views, matrix: FederationView.matrix(views) };
    },
    'GET /api/requests': (_req, url) => Promise.resolve(requests(deps.journal, url)),
    'GET /api/health': () => Promise.resolve(deps.windows.snapshot()),
    'GET /api/operations': () =>
      Promise.resolve({
        ...(ListOperationsResponse.toJSON(deps.operations()) as object),
        console: deps.settings(),
      }),
    'POST /api/explain': async (req) => ExplainResponse.toJSON(await calls.explain(await bodyOf(req))),
    'POST /api/run': async (req) => AggregateResponse.toJSON(await calls.run(await bodyOf(req))),
  };
  const route: HttpRoute = async (req, res, url) => {
    const asset = ASSETS[url.pathname];
    if (asset && req.method === 'GET') return sendAsset(res, asset);
    const one = /^\/api\/requests\/([^/]+)$/.exec(url.pathname);
    const handler = one
      ? () => Promise.resolve(deps.journal.find(decodeURIComponent(one[1]!)) ?? notFound(one[1]!))
      : api[`${req.method} ${url.pathname}`];
    if (!handler) return false;
    try {
      authorize(deps.security, req);
      sendJson(res, 200, await handler(req, url));
    } catch (e) {
      sendError(res, e);
    }
    return true;
  };
  return { route, close: () => calls.close() };
}

/** The journal's entries after `?after=SEQ` (failed ones only with `?failed=1`), newest first, without trees. */
function requests(journal: RequestJournal, url: URL) {
  const after = Number(url.searchParams.get('after') ?? 0) || 0;
  const entries = journal.since(after, url.searchParams.get('failed') === '1');
  return {
    entries: entries
      .map(({ pods: _pods, params: _params, reduced: _reduced, ...e }) => ({ ...e, failed: failed(e) }))
      .reverse(),
  };
}

/** Throws UNAUTHENTICATED / PERMISSION_DENIED as AggregationService would for these credentials. */
function authorize(security: BrokerSecurity, req: http.IncomingMessage): void {
  const md = new grpc.Metadata();
  const auth = req.headers.authorization;
  if (auth) md.set('authorization', auth);
  const socket = req.socket as Partial<TLSSocket>;
  const cert = socket.authorized && socket.getPeerCertificate ? socket.getPeerCertificate() : undefined;
  security.authorize(
    { metadata: md, getAuthContext: () => ({ sslPeerCertificate: cert?.subject ? cert : undefined }) },
    'client',
  );
}

function notFound(id: string): never {
  throw new BrokerError(grpc.status.NOT_FOUND, `no request ${id} in this broker's recent ones`);
}

const HTTP_STATUS: Partial<Record<grpc.status, number>> = {
  [grpc.status.UNAUTHENTICATED]: 401,
  [grpc.status.PERMISSION_DENIED]: 403,
  [grpc.status.NOT_FOUND]: 404,
  [grpc.status.INVALID_ARGUMENT]: 400,
  [grpc.status.FAILED_PRECONDITION]: 400,
};

/** An error as JSON: its gRPC code name and message, with the HTTP status nearest to it. */
function sendError(res: http.ServerResponse, e: unknown): void {
  const code = (e as { code?: number }).code ?? grpc.status.INTERNAL;
  const message = (e as { details?: string }).details || (e as Error).message;
  sendJson(res, HTTP_STATUS[code as grpc.status] ?? 502, { code: grpc.status[code] ?? code, error: message });
}

function sendJson(res: http.ServerResponse, statusCode: number, body: unknown): void {
  res.statusCode = statusCode;
  res.setHeader('content-type', 'application/json');
  res.setHeader('cache-control', 'no-store');
  res.end(JSON.stringify(body));
}

let assetCache: Map<string, Buffer> | undefined;
/** Serves one of the page's files (read once; they ship beside this module). */
function sendAsset(res: http.ServerResponse, name: string): true {
  assetCache ??= new Map();
  let body = assetCache.get(name);
  if (!body) assetCache.set(name, (body = fs.readFileSync(path.join(__dirname, 'assets', name))));
  res.setHeader('content-type', TYPES[path.extname(name)] ?? 'application/octet-stream');
  res.setHeader('content-security-policy', "default-src 'self'; style-src 'self'; img-src 'self' data:");
  res.end(body);
  return true;
}

/** A request body as an AggregateRequest (INVALID_ARGUMENT naming what is wrong). */
async function bodyOf(req: http.IncomingMessage): Promise<AggregateRequest> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > MAX_BODY_BYTES)
      throw new BrokerError(grpc.status.INVALID_ARGUMENT, `the request is over ${MAX_BODY_BYTES} bytes`);
    chunks.push(chunk);
  }
  let json: unknown;
  try {
    json = JSON.parse(Buffer.concat(chunks).toString('utf8'));
  } catch (e) {
    throw new BrokerError(grpc.status.INVALID_ARGUMENT, `the request is not JSON: ${(e as Error).message}`);
  }
  if (!json || typeof json !== 'object' || Array.isArray(json))
    throw new BrokerError(
      grpc.status.INVALID_ARGUMENT,
      'the request must be a JSON object (an AggregateRequest)',
    );
  return AggregateRequest.fromJSON(json);
}

/** Explain and Run through this broker's own gRPC server, as its console (a client of its own). */
class SelfCalls {
  private admin: AdminServiceClient | undefined;
  private aggregation: AggregationServiceClient | undefined;

  constructor(private readonly deps: ConsoleDeps) {}

  explain(request: AggregateRequest): Promise<ExplainResponse> {
    const admin = (this.admin ??= new AdminServiceClient(...this.channel()));
    return new Promise((resolve, reject) =>
      admin.explain({ request }, this.metadata(), this.options(), (e, r) => (e ? reject(e) : resolve(r))),
    );
  }

  /** Runs a read as an Aggregate; refused unless the console allows it, and always for a write. */
  run(request: AggregateRequest): Promise<AggregateResponse> {
    if (!this.deps.settings().allowRun)
      throw new BrokerError(
        grpc.status.PERMISSION_DENIED,
        'running requests from the console is off (settings.console.allowRun)',
      );
    const op = this.deps.operations().operations.find((o) => o.name === request.operation);
    if (op && !op.idempotent)
      throw new BrokerError(
        grpc.status.PERMISSION_DENIED,
        `${op.name} changes state: the console never runs it (use a client)`,
      );
    const agg = (this.aggregation ??= new AggregationServiceClient(...this.channel()));
    return new Promise((resolve, reject) =>
      agg.aggregate(request, this.metadata(), this.options(), (e, r) => (e ? reject(e) : resolve(r))),
    );
  }

  close(): void {
    this.admin?.close();
    this.aggregation?.close();
  }

  private channel(): [string, grpc.ChannelCredentials, grpc.ChannelOptions] {
    const { security, grpcAddress, brokerId } = this.deps;
    return [grpcAddress, security.channelCredentials, security.peerChannelOptions(brokerId)];
  }

  /** Named `console` as a client (in insecure mode; under mTLS it is this broker's certificate). */
  private metadata(): grpc.Metadata {
    const md = new grpc.Metadata();
    md.set('x-wanas-client', 'console');
    return md;
  }

  private options(): grpc.CallOptions {
    return { deadline: Date.now() + CALL_TIMEOUT_MS };
  }
}
