/**
 * Operations from configuration: each entry of the topology's `operations` that names a service becomes
 * an {@link Operation} calling that service's backend in the broker's own pod (gRPC or HTTP), with its
 * declared reducer, its `nextPodOn` codes, and — for a write — the pod's idempotency ledger around the
 * call. Each service's calls are limited per broker (`maxInFlight`): calls past it are shed at once.
 */
import { fromJson } from '@bufbuild/protobuf';
import * as grpc from '@grpc/grpc-js';
import { status } from '@grpc/grpc-js';
import { codeOf, type JsonObject, cachePolicyProblem } from '@wanas/operations';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { z } from 'zod';
import { BrokerError } from '../errors';
import type { Topology } from '@wanas/topology';
import { HTTP_METHOD, type ConfiguredOperationDoc, type ServiceDoc } from '@wanas/topology';
import { GrpcBackend } from './backend-grpc';
import { HttpBackend } from './backend-http';
import { jsonSchemaOf } from './json-schema';
import { reducerOf } from './reducers';
import type { Operation } from './types';
import type { BackendMetrics } from '../telemetry/metrics';

/** A gRPC service's `tls` section. */
type TlsDoc = NonNullable<NonNullable<ServiceDoc['grpc']>['tls']>;

/** Where this broker's configured operations find their backends. */
export interface ConfiguredDeps {
  /** The topology in force (a reload may move a pod's backend). */
  topology: () => Topology;
  site: string;
  pod: string;
  brokerId: string;
  metrics: BackendMetrics;
}

/** One service's backend in this broker's pod, with its in-flight limit. */
interface ServiceBackend {
  name: string;
  doc: ServiceDoc;
  grpc?: GrpcBackend;
  http?: HttpBackend;
  inFlight: number;
}

/** The configured operations and the backends they call; `close` ends the backends' channels. */
export interface ConfiguredOperations {
  operations: Operation[];
  /** Reads every reflection-backed schema once (not awaited by the start: a pod's backend may start later). */
  warm(log: (message: string, fields: JsonObject) => void): void;
  close(): void;
}

/**
 * Builds the configured operations of a topology for the broker at `site`/`pod`. Throws an Error naming
 * the field when a descriptor set cannot be read or lacks a method.
 */
export function configuredOperations(deps: ConfiguredDeps): ConfiguredOperations {
  const t = deps.topology();
  const dir = t.file ? path.dirname(t.file) : process.cwd();
  const backends = new Map<string, ServiceBackend>();
  for (const [name, doc] of Object.entries(t.services)) {
    const address = () => addressOf(deps, name);
    const b: ServiceBackend = { name, doc, inFlight: 0 };
    try {
      if (doc.grpc)
        b.grpc = new GrpcBackend(
          name,
          address,
          doc.grpc.descriptorSet && path.resolve(dir, doc.grpc.descriptorSet),
          backendCredentials(doc.grpc.tls, dir),
        );
    } catch (e) {
      throw new Error(`services.${name}.grpc: ${(e as Error).message}`);
    }
    if (doc.http) b.http = new HttpBackend(name, address);
    backends.set(name, b);
  }
  const operations: Operation[] = [];
  t.operations.forEach((entry, i) => {
    if ('module' in entry) return;
    const backend = backends.get(entry.service)!;
    try {
      backend.grpc?.checkMethod(entry.method);
    } catch (e) {
      throw new Error(`operations[${i}].method: ${(e as Error).message}`);
    }
    const cacheProblem = entry.cache && cachePolicyProblem(entry.cache);
    if (cacheProblem) throw new Error(`operations[${i}].${cacheProblem}`);
    operations.push(operationOf(entry, backend, deps));
  });
  return {
    operations,
    warm: (log) => {
      for (const entry of t.operations) {
        if ('module' in entry) continue;
        const g = backends.get(entry.service)?.grpc;
        g?.method(entry.method).catch((e: unknown) =>
          log('backend schema not read yet (asked again at the first call)', {
            operation: entry.name,
            error: (e as Error).message,
          }),
        );
      }
    },
    close: () => {
      for (const b of backends.values()) b.grpc?.close();
    },
  };
}

/** The credentials of a gRPC backend's channel: plaintext, or TLS with the files named (read at start). */
function backendCredentials(tls: TlsDoc | undefined, dir: string): grpc.ChannelCredentials {
  if (!tls) return grpc.credentials.createInsecure();
  const read = (field: keyof TlsDoc) => {
    const file = tls[field];
    if (!file) return null;
    try {
      return fs.readFileSync(path.resolve(dir, file));
    } catch (e) {
      throw new Error(`tls.${field}: cannot read ${file}: ${(e as Error).message}`);
    }
  };
  return grpc.credentials.createSsl(read('caFile'), read('keyFile'), read('certFile'));
}

/** The address of a service in this broker's pod, from the topology in force. */
function addressOf(deps: ConfiguredDeps, service: string): string {
  const pod = deps
    .topology()
    .sites.find((s) => s.name === deps.site)
    ?.pods.find((p) => p.name === deps.pod);
  const address = pod?.services[service];
  if (!address)
    throw new BrokerError(
      status.UNAVAILABLE,
      `pod ${deps.site}/${deps.pod} has no address for service ${service}`,
    );
  return address;
}

/** One configured operation. */
function operationOf(doc: ConfiguredOperationDoc, backend: ServiceBackend, deps: ConfiguredDeps): Operation {
  const g = backend.grpc;
  const call = (asked: JsonObject, ctx: Parameters<Operation['execute']>[1]) => {
    // A listing's window goes to the backend in the request fields it names.
    const params =
      doc.page && ctx.page
        ? { ...asked, [doc.page.after]: ctx.page.after, [doc.page.limit]: ctx.page.limit }
        : asked;
    if (g) return g.call(doc.method, params, ctx, !doc.idempotent);
    const [, verb, route] = HTTP_METHOD.exec(doc.method)!;
    return backend.http!.call(verb!, route!, params, ctx, !doc.idempotent);
  };
  return {
    name: doc.name,
    description: doc.description ?? `${doc.method} of service ${doc.service}`,
    idempotent: doc.idempotent,
    params: g ? grpcParams(g, doc.method) : (z.record(z.string(), z.unknown()) as z.ZodType<JsonObject>),
    // The limit is taken before the ledger: a shed write never claimed its key, so a resend is not
    // answered with this broker's momentary "busy" but runs.
    execute: (params, ctx) =>
      limited(backend, deps.metrics, () =>
        doc.idempotent ? call(params, ctx) : ctx.once(() => call(params, ctx)),
      ),
    reduce: doc.reduce ? reducerOf(doc.reduce) : undefined,
    page: doc.page ? { items: doc.page.items, key: doc.page.key } : undefined,
    nextPodOn: doc.nextPodOn.map((n) => codeOf(n)!),
    cache: doc.cache,
    info: {
      kind: g ? 'grpc' : 'http',
      service: doc.service,
      method: doc.method,
      reduce: doc.reduce as JsonObject | undefined,
      paramsSchema: () => {
        const m = g?.knownMethod(doc.method);
        return m ? jsonSchemaOf(m.method.input) : g ? undefined : { type: 'object' };
      },
    },
  };
}

/**
 * The params of a gRPC operation: the request message in proto3 JSON, checked against the schema when it
 * is known at this broker (a descriptor set, or reflection done); before that, the pod's broker checks
 * them when it encodes the request.
 */
function grpcParams(g: GrpcBackend, method: string): z.ZodType<JsonObject> {
  return z.record(z.string(), z.unknown()).superRefine((params, ctx) => {
    const m = g.knownMethod(method);
    if (!m) return;
    try {
      fromJson(m.method.input, params as never, { registry: m.registry });
    } catch (e) {
      ctx.addIssue({ code: 'custom', path: [], message: (e as Error).message });
    }
  }) as unknown as z.ZodType<JsonObject>;
}

/** Runs a backend call within the service's in-flight limit; past it, RESOURCE_EXHAUSTED at once. */
async function limited(
  b: ServiceBackend,
  metrics: BackendMetrics,
  run: () => Promise<JsonObject>,
): Promise<JsonObject> {
  const max = b.doc.maxInFlight;
  if (b.inFlight >= max) {
    metrics.shed(b.name);
    throw new BrokerError(
      status.RESOURCE_EXHAUSTED,
      `service ${b.name}: ${max} calls already in flight from this broker (services.${b.name}.maxInFlight); call shed`,
    );
  }
  b.inFlight++;
  metrics.inFlight(b.name, b.inFlight, max);
  const t0 = Date.now();
  let code: number = status.OK;
  try {
    return await run();
  } catch (e) {
    code = (e as { code?: number }).code ?? status.INTERNAL;
    throw e;
  } finally {
    b.inFlight--;
    metrics.inFlight(b.name, b.inFlight, max);
    metrics.called(b.name, code, (Date.now() - t0) / 1000);
  }
}
