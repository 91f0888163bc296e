/**
 * The topology file's schema (zod): names, addresses, pods listed or found by DNS, settings, security and
 * tracing, each bad field refused with a message that names it. topology.ts validates with it and builds
 * the lookups.
 */
import { z } from 'zod';
import { checkServices, operationEntrySchema, serviceSchema } from './topology-schema-operations';
import { admissionSchema, clientsSchema } from './topology-schema-admission';

/** Names of federations, sites, pods and brokers: DNS-label-like, so they fit Kubernetes names too. */
const NAME = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/;
/** host:port with a numeric port (IPv4, hostname, or [IPv6]). */
const HOST_PORT = /^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+):([0-9]{1,5})$/;

const name = (what: string) =>
  z
    .string()
    .regex(NAME, `${what} must be lower-case letters, digits and '-', 1-63 characters, e.g. "us-east"`);
const hostPort = z
  .string()
  .regex(HOST_PORT, 'must be host:port, e.g. "127.0.0.1:7101"')
  .refine((s) => {
    const port = Number(s.slice(s.lastIndexOf(':') + 1));
    return port >= 1 && port <= 65535;
  }, 'port must be 1-65535');

const brokerSchema = z.strictObject({
  id: name('broker id'),
  address: hostPort.describe('what same-site peers and clients dial (LAN)'),
  wanAddress: hostPort.optional().describe('what other sites dial; defaults to address'),
  metricsAddress: hostPort.optional().describe('HTTP listener for /metrics and /status; off when unset'),
  healthAddress: hostPort
    .optional()
    .describe('plaintext grpc.health.v1 listener (Kubernetes probes); off when unset'),
});

/** A store URL: `sqlite:PATH` or a PostgreSQL connection URL. */
const storeUrl = z
  .string()
  .regex(
    /^(sqlite:.+|postgres(ql)?:\/\/.*)$/,
    'must be sqlite:PATH or a postgres:// URL, e.g. "postgresql://db:5432/wanas?schema={site}-{pod}"',
  )
  .refine((s) => {
    if (s.startsWith('sqlite:')) return true;
    try {
      return !new URL(s.replace(/\{(site|pod)\}/g, 'x')).password;
    } catch {
      return false;
    }
  }, 'must be a valid URL without a password (PGPASSWORD, from a Secret, gives it)');

/** `dns:///NAME:PORT`: the pod's brokers are the addresses NAME resolves to (a headless Service), at PORT. */
export const DNS_TARGET = /^dns:\/\/\/([A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?):([0-9]{1,5})$/;
const dnsTarget = z
  .string()
  .regex(
    DNS_TARGET,
    'must be a list of brokers or "dns:///NAME:PORT", e.g. "dns:///wanas-us-east-pod-1:7000"',
  )
  .refine((s) => {
    const port = Number(s.slice(s.lastIndexOf(':') + 1));
    return port >= 1 && port <= 65535;
  }, 'port must be 1-65535');

/** Fields a pod may only have when its brokers come from DNS: they apply to every replica. */
const DNS_POD_FIELDS = ['listen', 'healthAddress', 'metricsAddress'] as const;

const podSchema = z
  .strictObject({
    name: name('pod name'),
    brokers: z.union([z.array(brokerSchema).min(1, 'a pod needs at least one broker'), dnsTarget]),
    /** DNS pods: where each replica listens (default 0.0.0.0:PORT of `brokers`). */
    listen: hostPort.optional(),
    /** DNS pods: each replica's plaintext health listener (Kubernetes probes). */
    healthAddress: hostPort.optional(),
    /** DNS pods: each replica's /metrics and /status listener. */
    metricsAddress: hostPort.optional(),
    /**
     * Desktops per pool seeded the first time the pod's database is created (default: standard 12, gpu
     * 12). A pool of 0 exists but is always full (placement moves on with RESOURCE_EXHAUSTED).
     */
    pools: z
      .record(
        z.string().regex(/^[a-z0-9-]{1,63}$/, 'a pool name such as "standard"'),
        z.number().int('must be a whole number').min(0).max(10_000),
      )
      .optional(),
    /**
     * Sessions seeded the first time the pod's database is created, besides the demo users' (default 0):
     * deterministic, spread over users and desktops, for listings at scale (`sessions.list`).
     */
    sessions: z.number().int('must be a whole number').min(0).max(250_000).optional(),
    /** Where this pod's backends are, by service name: `host:port` or `dns:///name:port` (gRPC), a base URL (HTTP). */
    services: z.record(z.string(), z.string().min(1)).optional(),
    /** This pod's store URL, instead of `settings.store` (see there). */
    store: storeUrl.optional(),
  })
  .superRefine((pod, ctx) => {
    if (typeof pod.brokers === 'string') return;
    for (const f of DNS_POD_FIELDS) {
      if (pod[f] !== undefined)
        ctx.addIssue({
          code: 'custom',
          path: [f],
          message: `only for a pod whose brokers come from DNS (brokers: "dns:///NAME:PORT"); set it per broker instead`,
        });
    }
  });

const siteSchema = z.strictObject({
  name: name('site name'),
  pods: z.array(podSchema).min(1, 'a site needs at least one pod'),
});

/**
 * The operator console (see the README's "Console"). It holds ids, codes and latencies of the last Aggregates
 * this broker served as entry; request params and results (personal data: users, sessions) only with
 * `keepBodies`.
 */
const consoleSchema = z
  .strictObject({
    /** Serve the console at `/` of the HTTP listener; off: only /metrics and /status. */
    enabled: z.boolean().default(true),
    /** Aggregates kept in the console's ring of recent requests. */
    requests: z.number().int().min(0).max(100_000).default(200),
    /** Keep each request's params and results in the ring (and show them to operators). */
    keepBodies: z.boolean().default(false),
    /** The Explain form may run its request as an Aggregate (reads only: never a state-changing operation). */
    allowRun: z.boolean().default(false),
  })
  .prefault({});

const settingsSchema = z
  .strictObject({
    /** Default per-attempt timeout for LAN requests, ms. */
    attemptTimeoutMs: z.number().int().min(1).max(60_000).default(1000),
    /** Default overall Aggregate timeout when the client sets none, ms. */
    defaultTimeoutMs: z.number().int().min(1).max(300_000).default(5000),
    /** Largest overall timeout a client may ask for, ms. */
    maxTimeoutMs: z.number().int().min(1).max(3_600_000).default(60_000),
    /** Aggregates (unary + streaming) a broker serves at once; more are refused with RESOURCE_EXHAUSTED. */
    maxInFlightAggregates: z.number().int().min(1).max(1_000_000).default(512),
    /**
     * Largest message a broker sends or accepts, bytes (default 4 MiB, gRPC's usual limit). An answer that
     * would be larger is cut at an item of a pageable operation (with the token to go on), never refused by
     * the transport. Read at start for the transport; a reload changes how answers are cut.
     */
    maxMessageBytes: z
      .number()
      .int()
      .min(64 * 1024)
      .max(64 * 1024 * 1024)
      .default(4 * 1024 * 1024),
    /** SiteRequests + LocalRequests a broker serves at once; more are refused with RESOURCE_EXHAUSTED. */
    maxInFlightFederation: z.number().int().min(1).max(1_000_000).default(2048),
    /** How long a pod remembers an idempotency key and its first result, ms (default 24 h). */
    idempotencyWindowMs: z
      .number()
      .int()
      .min(1000)
      .max(30 * 86_400_000)
      .default(86_400_000),
    /**
     * Hedge idempotent operations when the request leaves `hedging` unset: an endpoint slower than its
     * usual p95 gets a second attempt at its twin, within the broker's hedge budget (~10% of requests).
     */
    hedge: z.boolean().default(true),
    /** Warm channels kept per remote site and per other pod of the own site. */
    warmPerTarget: z.number().int().min(1).max(4).default(1),
    /**
     * HTTP/2 keepalive ping interval on peer channels, ms. With `keepaliveTimeoutMs` it bounds how long a
     * blackholed link (partition, frozen peer) goes unnoticed when no traffic runs: interval + timeout.
     */
    keepaliveTimeMs: z.number().int().min(100).max(600_000).default(600),
    /** Time a keepalive ping may go unanswered before its connection is dropped, ms: a WAN round trip plus slack. */
    keepaliveTimeoutMs: z.number().int().min(50).max(60_000).default(500),
    /**
     * A peer connection not made within this time (a silent peer) marks the endpoint down, ms; it doubles
     * with each timeout in a row (at most 8×). A TLS connection costs ~3 WAN round trips: raise it above 500
     * for round trips over ~150 ms.
     */
    connectTimeoutMs: z.number().int().min(50).max(60_000).default(500),
    /** How often pods given as `dns:///NAME:PORT` are resolved again, ms. */
    dnsRefreshMs: z.number().int().min(100).max(3_600_000).default(5000),
    /** DNS servers (host:port) for pods given as `dns:///NAME:PORT`; default: the system's resolvers. */
    dnsServers: z.array(hostPort).max(8).optional(),
    /**
     * Where every pod keeps its shared state: `sqlite:PATH` (relative to the topology file) or a
     * `postgres://`/`postgresql://` URL (`?schema=NAME`); `{site}` and `{pod}` are filled in. Unset: a
     * SQLite file per pod in `dataDir`.
     */
    store: storeUrl.optional(),
    /** Directory of the pods' embedded databases (relative to the topology file). */
    dataDir: z.string().min(1).default('.wanas/data'),
    /**
     * Federation sessions: SiteRequests and LocalRequests travel as frames on long-lived streams between
     * brokers (far less CPU than a call each), falling back to unary calls for a peer without them. Off: a
     * broker neither opens nor serves sessions (as an older version). Read at start; the environment's
     * `WANAS_SESSIONS=on|off` (or `wanas broker --sessions`) overrides it.
     */
    sessions: z.boolean().default(true),
    /** Sessions a broker keeps per peer channel, at most (more spread a burst of large answers). */
    sessionsPerPeer: z.number().int().min(1).max(16).default(1),
    /** Requests in flight on one session, at most; more wait for a turn (back-pressure). */
    sessionMaxInFlight: z.number().int().min(1).max(100_000).default(1024),
    /** Admission by measured delay at every hop (see topology-schema-admission.ts and the README's "Overload"). */
    admission: admissionSchema,
    /**
     * Identical reads in flight at once run once: concurrent Aggregates of the same client (same operation,
     * params, scope, mode, page and headers) at the entry, identical SiteRequests at a representative and
     * LocalRequests at a pod share one execution. Writes never do. Off: every request runs its own.
     */
    coalesce: z.boolean().default(true),
    /** Bytes of whole answers the entry's results cache holds at most (LRU; see operations' `cache.maxAge`). */
    resultsCacheBytes: z
      .number()
      .int()
      .min(0)
      .max(4 * 1024 * 1024 * 1024)
      .default(64 * 1024 * 1024),
    /** The operator console served at `/` of each broker's HTTP listener (`metricsAddress`). */
    console: consoleSchema,
  })
  .prefault({});

const securitySchema = z
  .strictObject({
    /** `insecure`: plaintext, no authentication (loopback only unless allowInsecureNonLoopback). `mtls`: TLS both ways. */
    mode: z.enum(['insecure', 'mtls']).default('insecure'),
    /** CA bundle (PEM) that signs broker and client certificates. */
    caFile: z.string().min(1).optional(),
    /** This broker's certificate (PEM); `{id}` is replaced by the broker id. */
    certFile: z.string().min(1).optional(),
    /** This broker's private key (PEM); `{id}` is replaced by the broker id. */
    keyFile: z.string().min(1).optional(),
    /** How often the certificate files are re-read (replaced files apply without a restart), ms. */
    refreshIntervalMs: z.number().int().min(100).max(86_400_000).default(10_000),
    /** Bearer tokens clients may present instead of a certificate, kept as SHA-256 hex digests. */
    clientTokens: z
      .array(
        z.strictObject({
          name: name('token name'),
          sha256: z
            .string()
            .regex(/^[0-9a-f]{64}$/, 'must be 64 lower-case hex digits (sha256 of the token)'),
        }),
      )
      .default([]),
    /** Allows insecure mode on addresses other than loopback (never in production). */
    allowInsecureNonLoopback: z.boolean().default(false),
  })
  .prefault({})
  .superRefine((sec, ctx) => {
    if (sec.mode !== 'mtls') return;
    for (const f of ['caFile', 'certFile', 'keyFile'] as const) {
      if (!sec[f]) ctx.addIssue({ code: 'custom', path: [f], message: `required when mode is mtls` });
    }
  });

/** OpenTelemetry samplers by their standard names (the values of `OTEL_TRACES_SAMPLER`). */
export const SAMPLERS = [
  'always_on',
  'always_off',
  'traceidratio',
  'parentbased_always_on',
  'parentbased_always_off',
  'parentbased_traceidratio',
] as const;

/**
 * Traces for every broker of the federation (see tracing.ts). The standard `OTEL_*` environment variables,
 * where a broker has them, win over these: one broker can be pointed at another collector.
 */
const tracingSchema = z
  .strictObject({
    /** OTLP/HTTP base URL of a collector, e.g. http://otel-collector:4318 (`/v1/traces` is appended). Unset: off. */
    endpoint: z
      .url({
        protocol: /^https?$/,
        error: 'must be an http:// or https:// URL, e.g. "http://otel-collector:4318"',
      })
      .optional(),
    /** OTLP encoding. */
    protocol: z.enum(['http/protobuf', 'http/json']).default('http/protobuf'),
    /** Which traces are kept (OpenTelemetry's sampler names; default: a caller's choice, else every trace). */
    sampler: z.enum(SAMPLERS).default('parentbased_always_on'),
    /** The fraction of traces kept by the `traceidratio` samplers, 0-1. */
    samplerRatio: z.number().min(0).max(1).optional(),
    /** `service.name` of the spans. */
    serviceName: z.string().min(1).max(256).default('wanas'),
  })
  .prefault({})
  .superRefine((t, ctx) => {
    if (t.samplerRatio !== undefined && !t.sampler.endsWith('traceidratio'))
      ctx.addIssue({
        code: 'custom',
        path: ['samplerRatio'],
        message: `only applies to the traceidratio samplers, not "${t.sampler}"`,
      });
  });

/** The topology file's schema (zod). */
export const topologySchema = z
  .strictObject({
    federation: name('federation name'),
    settings: settingsSchema,
    security: securitySchema,
    tracing: tracingSchema,
    /** Backends every pod runs, by name (see topology-schema-operations.ts). */
    services: z.record(z.string(), serviceSchema).default({}),
    /** Operations from configuration and plug-in modules, beside the built-in ones. */
    operations: z.array(operationEntrySchema).max(1000).default([]),
    /** Client identities' weights and hard quotas at a busy broker; unlisted clients weigh 1. */
    clients: clientsSchema,
    sites: z.array(siteSchema).min(1, 'a federation needs at least one site'),
  })
  .superRefine((t, ctx) => {
    checkServices(t, ctx);
    const seen = {
      site: new Map<string, number>(),
      broker: new Map<string, string>(),
      addr: new Map<string, string>(),
    };
    t.sites.forEach((site, si) => {
      if (seen.site.has(site.name)) {
        ctx.addIssue({
          code: 'custom',
          path: ['sites', si, 'name'],
          message: `duplicate site name "${site.name}"`,
        });
      }
      seen.site.set(site.name, si);
      const pods = new Set<string>();
      site.pods.forEach((pod, pi) => {
        if (pods.has(pod.name)) {
          ctx.addIssue({
            code: 'custom',
            path: ['sites', si, 'pods', pi, 'name'],
            message: `duplicate pod name "${pod.name}" in site "${site.name}"`,
          });
        }
        pods.add(pod.name);
        if (typeof pod.brokers === 'string') {
          // DNS: replicas share ports on their own IPs, and one identity `<site>-<pod>` (certificate name).
          const identity = `${site.name}-${pod.name}`;
          if (identity.length > 63)
            ctx.addIssue({
              code: 'custom',
              path: ['sites', si, 'pods', pi, 'name'],
              message: `"${identity}" (site-pod, the certificate name of a DNS pod) is longer than 63 characters`,
            });
          const prev = seen.broker.get(identity);
          if (prev)
            ctx.addIssue({
              code: 'custom',
              path: ['sites', si, 'pods', pi, 'brokers'],
              message: `the identity "${identity}" of this DNS pod is also a broker id (in ${prev})`,
            });
          seen.broker.set(identity, `${site.name}/${pod.name}`);
          return;
        }
        pod.brokers.forEach((b, bi) => {
          const at = ['sites', si, 'pods', pi, 'brokers', bi];
          const prev = seen.broker.get(b.id);
          if (prev)
            ctx.addIssue({
              code: 'custom',
              path: [...at, 'id'],
              message: `duplicate broker id "${b.id}" (also in ${prev})`,
            });
          seen.broker.set(b.id, `${site.name}/${pod.name}`);
          for (const [field, value] of [
            ['address', b.address],
            ['wanAddress', b.wanAddress],
            ['metricsAddress', b.metricsAddress],
            ['healthAddress', b.healthAddress],
          ] as const) {
            if (!value) continue;
            const owner = seen.addr.get(value);
            // A broker's wanAddress may equal its own address; nothing else may share an address.
            if (owner && !(owner === b.id && field === 'wanAddress')) {
              ctx.addIssue({
                code: 'custom',
                path: [...at, field],
                message: `address ${value} is already used by broker "${owner}"`,
              });
            }
            seen.addr.set(value, b.id);
          }
        });
      });
    });
  });

/** A validated topology, as written in the file (with defaults filled in). */
export type TopologyDoc = z.infer<typeof topologySchema>;
