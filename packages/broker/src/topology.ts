import * as fs from 'node:fs';
import * as path from 'node:path';
import YAML from 'yaml';
import { z } from 'zod';

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

/** `dns:///NAME:PORT`: the pod's brokers are the addresses NAME resolves to (a headless Service), at PORT. */
const DNS_TARGET = /^dns:\/\/\/([A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?):([0-9]{1,5})$/;
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
    /** Directory of the pods' embedded databases (relative to the topology file). */
    dataDir: z.string().min(1).default('.wanas/data'),
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
    sites: z.array(siteSchema).min(1, 'a federation needs at least one site'),
  })
  .superRefine((t, ctx) => {
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

/** One broker, with where it lives. */
export interface BrokerInfo {
  id: string;
  site: string;
  pod: string;
  /** LAN address (same-site peers and clients). */
  address: string;
  /** WAN address (other sites). */
  wanAddress: string;
  metricsAddress: string | undefined;
  /** Plaintext grpc.health.v1 listener for probes (health only), when set. */
  healthAddress: string | undefined;
  /**
   * The name its certificate carries (CN and SAN) and peers check under mTLS: the broker id, or for a
   * broker found by DNS the pod's identity `<site>-<pod>` (the replicas of a pod share one certificate).
   */
  tlsName: string;
}

/** A pod whose brokers are found by DNS (`brokers: dns:///NAME:PORT`). */
export interface DnsPod {
  /** The name resolved (A and AAAA records), e.g. a headless Service. */
  host: string;
  /** The port every replica serves on. */
  port: number;
  /** Where each replica listens. */
  listen: string;
  healthAddress: string | undefined;
  metricsAddress: string | undefined;
}

/** One pod: its brokers (for a DNS pod, the ones found by the last resolution; none before it). */
export interface PodInfo {
  name: string;
  brokers: BrokerInfo[];
  dns: DnsPod | undefined;
  /** Desktops per pool to seed a new pod database with; undefined: the default pools. */
  pools: Record<string, number> | undefined;
}

/** A validated topology with lookups. */
export interface Topology {
  federation: string;
  settings: TopologyDoc['settings'];
  security: TopologyDoc['security'];
  /** Traces for the federation's brokers (the OTEL_* environment variables win). */
  tracing: TopologyDoc['tracing'];
  /** Sites in file order, each with its pods in file order. */
  sites: { name: string; pods: PodInfo[] }[];
  /** Every broker by id. */
  brokers: Map<string, BrokerInfo>;
  /** The file it came from (absolute), when loaded from a file. */
  file: string | undefined;
}

/** A topology that failed validation: `issues` name the path of each bad field. */
export class TopologyError extends Error {
  constructor(
    message: string,
    readonly issues: string[] = [],
  ) {
    super(issues.length ? `${message}:\n  - ${issues.join('\n  - ')}` : message);
    this.name = 'TopologyError';
  }
}

function formatPath(p: readonly PropertyKey[]): string {
  return p.reduce<string>(
    (s, k) => (typeof k === 'number' ? `${s}[${k}]` : s ? `${s}.${String(k)}` : String(k)),
    '',
  );
}

/** Validates a parsed document; throws {@link TopologyError} naming every bad field. */
export function parseTopology(doc: unknown, file?: string): Topology {
  const r = topologySchema.safeParse(doc);
  if (!r.success) {
    const issues = r.error.issues.map((i) => `${formatPath(i.path) || '(root)'}: ${i.message}`);
    throw new TopologyError(`invalid topology${file ? ` ${file}` : ''}`, issues);
  }
  const t = r.data;
  const brokers = new Map<string, BrokerInfo>();
  const sites = t.sites.map((s) => ({
    name: s.name,
    pods: s.pods.map((p): PodInfo => {
      if (typeof p.brokers === 'string') {
        const [, host, , port] = DNS_TARGET.exec(p.brokers)!;
        return {
          name: p.name,
          brokers: [],
          pools: p.pools,
          dns: {
            host: host!,
            port: Number(port),
            listen: p.listen ?? `0.0.0.0:${port}`,
            healthAddress: p.healthAddress,
            metricsAddress: p.metricsAddress,
          },
        };
      }
      return {
        name: p.name,
        dns: undefined,
        pools: p.pools,
        brokers: p.brokers.map((b) => {
          const info: BrokerInfo = {
            id: b.id,
            site: s.name,
            pod: p.name,
            address: b.address,
            wanAddress: b.wanAddress ?? b.address,
            metricsAddress: b.metricsAddress,
            healthAddress: b.healthAddress,
            tlsName: b.id,
          };
          brokers.set(b.id, info);
          return info;
        }),
      };
    }),
  }));
  return {
    federation: t.federation,
    settings: t.settings,
    security: t.security,
    tracing: t.tracing,
    sites,
    brokers,
    file,
  };
}

/** Reads, parses (YAML) and validates a topology file. */
export function loadTopology(file: string): Topology {
  const abs = path.resolve(file);
  let text: string;
  try {
    text = fs.readFileSync(abs, 'utf8');
  } catch (e) {
    throw new TopologyError(`cannot read topology file ${abs}: ${(e as Error).message}`);
  }
  const doc = YAML.parseDocument(text, { prettyErrors: true, uniqueKeys: true });
  if (doc.errors.length) {
    throw new TopologyError(
      `topology file ${abs} is not valid YAML`,
      doc.errors.map((e) => e.message.split('\n')[0]!),
    );
  }
  return parseTopology(doc.toJS(), abs);
}

/** The site and pod of a broker, or a TopologyError when the id is not in the topology. */
export function findBroker(t: Topology, id: string): BrokerInfo {
  const b = t.brokers.get(id);
  if (!b || b.id.includes('@')) {
    const dnsPods = t.sites.flatMap((s) => s.pods.filter((p) => p.dns).map((p) => `${s.name}/${p.name}`));
    throw new TopologyError(
      `broker id "${id}" is not in the topology; known ids: ${[...t.brokers.keys()].filter((k) => !k.includes('@')).join(', ') || '(none)'}` +
        (dnsPods.length
          ? `; pods found by DNS (start those with --pod SITE/POD): ${dnsPods.join(', ')}`
          : ''),
    );
  }
  return b;
}

/** A pod of the topology by site and pod name; undefined when there is none. */
export function podOf(t: Topology, site: string, pod: string): PodInfo | undefined {
  return t.sites.find((s) => s.name === site)?.pods.find((x) => x.name === pod);
}

/** The identity a DNS pod's replicas share: `<site>-<pod>` (certificate name, broker-id prefix). */
export function dnsPodIdentity(site: string, pod: string): string {
  return `${site}-${pod}`;
}

/**
 * A broker of a pod found by DNS, as this process runs it: `id` defaults to the host name (in
 * Kubernetes, the pod name), it listens on the pod's `listen` address (or `listen` given here).
 */
export function dnsSelf(t: Topology, site: string, pod: string, id: string, listen?: string): BrokerInfo {
  const p = t.sites.find((s) => s.name === site)?.pods.find((x) => x.name === pod);
  if (!p) {
    const all = t.sites.flatMap((s) => s.pods.map((x) => `${s.name}/${x.name}`));
    throw new TopologyError(`pod "${site}/${pod}" is not in the topology; pods: ${all.join(', ')}`);
  }
  if (!p.dns) {
    throw new TopologyError(
      `pod "${site}/${pod}" lists its brokers in the topology; start them with --id (one of ${p.brokers.map((b) => b.id).join(', ')})`,
    );
  }
  const address = listen ?? p.dns.listen;
  return {
    id,
    site,
    pod,
    address,
    wanAddress: address,
    metricsAddress: p.dns.metricsAddress,
    healthAddress: p.dns.healthAddress,
    tlsName: dnsPodIdentity(site, pod),
  };
}

/** Addresses found by DNS, by `host:port` of the pod's `dns:///` target. */
export type Discovered = ReadonlyMap<string, readonly string[]>;

/** The `host:port` key of a DNS pod in {@link Discovered}. */
export function dnsKey(d: DnsPod): string {
  return `${d.host}:${d.port}`;
}

/**
 * The topology with each DNS pod's brokers set to the addresses found for it: broker ids are
 * `<site>-<pod>@<address>` (stable while the replica keeps its IP), dialled at that address on every link.
 */
export function withDiscovered(t: Topology, found: Discovered): Topology {
  if (!t.sites.some((s) => s.pods.some((p) => p.dns))) return t;
  const brokers = new Map([...t.brokers].filter(([id]) => !id.includes('@')));
  const sites = t.sites.map((s) => ({
    name: s.name,
    pods: s.pods.map((p): PodInfo => {
      if (!p.dns) return p;
      const list = (found.get(dnsKey(p.dns)) ?? []).map((address): BrokerInfo => {
        const info: BrokerInfo = {
          id: `${dnsPodIdentity(s.name, p.name)}@${address}`,
          site: s.name,
          pod: p.name,
          address,
          wanAddress: address,
          metricsAddress: undefined,
          healthAddress: undefined,
          tlsName: dnsPodIdentity(s.name, p.name),
        };
        brokers.set(info.id, info);
        return info;
      });
      return { ...p, brokers: list };
    }),
  }));
  return { ...t, sites, brokers };
}

/**
 * Whether `id` names a broker of `site`: a listed one, or one a peer found by DNS for a DNS pod of that
 * site (peers resolve on their own schedule, so a replica may be known to the sender first).
 */
export function isBrokerOfSite(t: Topology, id: string, site: string): boolean {
  const b = t.brokers.get(id);
  if (b) return b.site === site;
  const at = id.indexOf('@');
  if (at < 0) return false;
  const identity = id.slice(0, at);
  return (t.sites.find((s) => s.name === site)?.pods ?? []).some(
    (p) => p.dns && dnsPodIdentity(site, p.name) === identity,
  );
}

/** Certificate names of brokers of this federation: broker ids and DNS pods' identities. */
export function brokerIdentities(t: Topology): Set<string> {
  const names = new Set([...t.brokers.keys()].filter((k) => !k.includes('@')));
  for (const s of t.sites) for (const p of s.pods) if (p.dns) names.add(dnsPodIdentity(s.name, p.name));
  return names;
}

/** A path from the topology file, absolute (relative paths are taken from the file's folder); `{id}` → broker id. */
export function topologyPath(t: Topology, p: string, brokerId?: string): string {
  const withId = brokerId ? p.replaceAll('{id}', brokerId) : p;
  return path.resolve(t.file ? path.dirname(t.file) : process.cwd(), withId);
}

/** The absolute data directory of a topology (relative paths are taken from the topology file's folder). */
export function dataDirOf(t: Topology): string {
  return topologyPath(t, t.settings.dataDir);
}
