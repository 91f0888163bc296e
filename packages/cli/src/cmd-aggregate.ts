import * as grpc from '@grpc/grpc-js';
import {
  Hedging,
  Mode,
  RpcStatus,
  AggregateRequest,
  AggregateResponse,
  AggregationServiceClient,
  ExplainResponse,
  StreamAggregateResponse,
  codeName,
  msToDuration,
} from '@wanas/proto';
import type { Command } from 'commander';
import { randomUUID } from 'node:crypto';
import { adminCall } from './admin-call';
import { addConnectionFlags, clientChannel, type ConnectionFlags } from './credentials';
import { formatExplain } from './format-explain';
import { POD_HEADER, StreamTable, formatAggregate, podRow, summaryLines } from './format';
import { collect, collectParam, parseAddress, parseDurationMs, parsePositiveInt } from './parse';

/** How long an Explain may take, ms (it only plans). */
const EXPLAIN_TIMEOUT_MS = 3000;
/** Extra time the client's gRPC deadline allows past the request's timeout, so the partial answer arrives. */
const CLIENT_DEADLINE_SLACK_MS = 2000;
/** How long a streamed listing (--stream with --page-size) may take in all, ms. */
const STREAMED_LISTING_MS = 10 * 60_000;

interface AggregateOptions {
  address: string;
  op: string;
  param?: Record<string, unknown>;
  paramsJson?: string;
  scopeSite?: string[];
  scopePod?: string[];
  timeout?: number;
  attemptTimeout?: number;
  idempotencyKey?: string;
  correlationId?: string;
  header?: string[];
  hedge?: boolean;
  stream?: boolean;
  json?: boolean;
  first?: boolean;
  preferSite?: string[];
  minOk?: number;
  requireSite?: string[];
  explain?: boolean;
  pageSize?: number;
  pageToken?: string;
  maxStaleness?: number;
}

function buildRequest(o: AggregateOptions): AggregateRequest {
  let params: Record<string, unknown> = o.param ?? {};
  if (o.paramsJson) {
    try {
      params = { ...(JSON.parse(o.paramsJson) as Record<string, unknown>), ...params };
    } catch (e) {
      throw new Error(`--params-json is not JSON: ${(e as Error).message}`);
    }
  }
  const headers: Record<string, string> = {};
  for (const h of o.header ?? []) {
    const i = h.indexOf('=');
    if (i <= 0) throw new Error(`--header "${h}" is not name=value`);
    headers[h.slice(0, i)] = h.slice(i + 1);
  }
  return AggregateRequest.fromPartial({
    correlationId: o.correlationId ?? '',
    operation: o.op,
    params,
    headers,
    timeout: o.timeout === undefined ? undefined : msToDuration(o.timeout),
    attemptTimeout: o.attemptTimeout === undefined ? undefined : msToDuration(o.attemptTimeout),
    scope: { sites: o.scopeSite ?? [], pods: o.scopePod ?? [] },
    idempotencyKey: o.idempotencyKey ?? randomUUID(),
    mode: o.first ? Mode.MODE_FIRST : Mode.MODE_UNSPECIFIED,
    preferSites: o.preferSite ?? [],
    minOk: o.minOk ?? 0,
    requiredSites: o.requireSite ?? [],
    pageSize: o.pageSize ?? 0,
    pageToken: o.pageToken ?? '',
    maxStaleness: o.maxStaleness === undefined ? undefined : msToDuration(o.maxStaleness),
    hedging:
      o.hedge === undefined
        ? Hedging.HEDGING_UNSPECIFIED
        : o.hedge
          ? Hedging.HEDGING_ON
          : Hedging.HEDGING_OFF,
  });
}

/**
 * Prints a failed call and exits 1. A failed required site carries the partial answer as a
 * google.rpc.Status detail: it is printed too (as a table, or JSON with --json).
 */
function fail(err: grpc.ServiceError, json: boolean): never {
  process.stderr.write(`error: ${codeName(err.code)}: ${err.details || err.message}\n`);
  const partial = partialResponse(err);
  if (partial) {
    process.stdout.write(
      json
        ? `${JSON.stringify(AggregateResponse.toJSON(partial), null, 2)}\n`
        : `partial answer:\n${formatAggregate(partial)}\n`,
    );
  }
  process.exit(1);
}

/** The AggregateResponse in a failed call's `grpc-status-details-bin` trailer, if any. */
export function partialResponse(err: grpc.ServiceError): AggregateResponse | undefined {
  const bin = err.metadata?.get('grpc-status-details-bin')[0];
  if (!(bin instanceof Buffer)) return undefined;
  const detail = RpcStatus.decode(bin).details.find((d) => d.typeUrl.endsWith('/wanas.v1.AggregateResponse'));
  return detail ? AggregateResponse.decode(detail.value) : undefined;
}

/** `wanas aggregate`: a client of AggregationService; a table of pods or proto3 JSON. */
export function registerAggregate(program: Command): void {
  const cmd = program
    .command('aggregate')
    .description('run an operation in every pod of the federation (or a scope) through one broker')
    .requiredOption('-a, --address <host:port>', 'a broker to ask', parseAddress)
    .requiredOption(
      '-o, --op <name>',
      'operation, e.g. sessions.find, pods.capacity, desktops.provision, echo',
    )
    .option('-p, --param <key=value>', 'a parameter (repeatable; JSON values allowed)', collectParam)
    .option('--params-json <json>', 'all parameters as one JSON object')
    .option('--scope-site <site>', 'ask only this site (repeatable)', collect)
    .option('--scope-pod <pod>', 'ask only this pod, "pod" or "site/pod" (repeatable)', collect)
    .option('--timeout <duration>', "overall budget, e.g. 2s (default: the broker's, 5s)", parseDurationMs)
    .option('--attempt-timeout <duration>', 'per-attempt timeout, e.g. 500ms', parseDurationMs)
    .option('--idempotency-key <key>', 'for state-changing operations (default: a new UUID per invocation)')
    .option('--correlation-id <id>', 'correlation id (default: the broker makes one)')
    .option('-H, --header <name=value>', 'a header passed to every hop (repeatable)', collect)
    .option('--hedge', "hedge slow endpoints (idempotent operations; default: the broker's setting, on)")
    .option('--no-hedge', 'never hedge this request')
    .option(
      '--first',
      'first-fit: ask pods one after another, stop at the first that answers OK (MODE_FIRST)',
    )
    .option('--prefer-site <site>', 'with --first: try this site first (repeatable, in order)', collect)
    .option('--min-ok <n>', 'answer once this many pods are OK; cancel the rest', parsePositiveInt)
    .option('--require-site <site>', 'fail the call if a pod of this site fails (repeatable)', collect)
    .option('--page-size <n>', 'a listing (e.g. sessions.list): items a page', parsePositiveInt)
    .option('--page-token <token>', "a listing: go on from a page's next page token")
    .option(
      '--max-staleness <duration>',
      'accept a cached whole answer this old, e.g. 2s (operations with cache.maxAge; default: fresh)',
      parseDurationMs,
    )
    .option(
      '--stream',
      'print pods as they arrive (StreamAggregate); a listing: every page, one after another',
    )
    .option(
      '--explain',
      'print the plan the broker would run now (AdminService.Explain): legs, brokers and their state; nothing is sent',
    )
    .option('--json', 'print the response as proto3 JSON');
  addConnectionFlags(cmd).action(async (o: AggregateOptions & ConnectionFlags) => {
    let req: AggregateRequest;
    try {
      req = buildRequest(o);
    } catch (e) {
      program.error(`error: ${(e as Error).message}`, { exitCode: 2 });
    }
    let channel;
    try {
      channel = clientChannel(o);
    } catch (e) {
      program.error(`error: ${(e as Error).message}`, { exitCode: 2 });
    }
    if (o.explain) return explainPlan(program, o, req);
    const client = new AggregationServiceClient(o.address, channel.credentials, channel.options);
    // A streamed listing runs page after page (the timeout counts per page): it gets time for many.
    const budget = o.stream && o.pageSize ? STREAMED_LISTING_MS : (o.timeout ?? 5000);
    const deadline = Date.now() + budget + CLIENT_DEADLINE_SLACK_MS;
    try {
      if (o.stream) await stream(client, req, deadline, !!o.json);
      else {
        const res = await new Promise<AggregateResponse>((resolve, reject) =>
          client.aggregate(req, new grpc.Metadata(), { deadline }, (e, r) => (e ? reject(e) : resolve(r))),
        );
        process.stdout.write(
          o.json
            ? `${JSON.stringify(AggregateResponse.toJSON(res), null, 2)}\n`
            : `${formatAggregate(res)}\n`,
        );
      }
    } catch (e) {
      fail(e as grpc.ServiceError, !!o.json);
    } finally {
      client.close();
    }
  });
}

async function stream(
  client: AggregationServiceClient,
  req: AggregateRequest,
  deadline: number,
  json: boolean,
): Promise<void> {
  const call = client.streamAggregate({ request: req }, new grpc.Metadata(), { deadline });
  const rows = new StreamTable(POD_HEADER);
  if (!json) process.stdout.write(`${rows.head()}\n`);
  await new Promise<void>((resolve, reject) => {
    call.on('data', (msg: StreamAggregateResponse) => {
      if (json) process.stdout.write(`${JSON.stringify(StreamAggregateResponse.toJSON(msg))}\n`);
      else if (msg.event?.$case === 'pod') process.stdout.write(`${rows.row(podRow(msg.event.pod))}\n`);
      else if (msg.event?.$case === 'page') process.stdout.write(`${summaryLines(msg.event.page)}\n`);
      else if (msg.event?.$case === 'done') process.stdout.write(`\n${summaryLines(msg.event.done)}\n`);
    });
    call.on('end', resolve);
    call.on('error', reject);
  });
}

/** `--explain`: the plan, through AdminService.Explain (a table, or proto3 JSON with --json). */
function explainPlan(program: Command, o: AggregateOptions & ConnectionFlags, req: AggregateRequest) {
  return adminCall<ExplainResponse>(
    program,
    { ...o, timeout: EXPLAIN_TIMEOUT_MS },
    'explain the request',
    (c, opts, cb) => c.explain({ request: req }, new grpc.Metadata(), opts, cb),
    (res) => (o.json ? JSON.stringify(ExplainResponse.toJSON(res), null, 2) : formatExplain(res)),
  );
}
