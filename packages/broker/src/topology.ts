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

const podSchema = z.strictObject({
  name: name('pod name'),
  brokers: z.array(brokerSchema).min(1, 'a pod needs at least one broker'),
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
    /** Warm channels kept per remote site and per other pod of the own site. */
    warmPerTarget: z.number().int().min(1).max(4).default(1),
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

/** The topology file's schema (zod). */
export const topologySchema = z
  .strictObject({
    federation: name('federation name'),
    settings: settingsSchema,
    security: securitySchema,
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
}

/** A validated topology with lookups. */
export interface Topology {
  federation: string;
  settings: TopologyDoc['settings'];
  security: TopologyDoc['security'];
  /** Sites in file order, each with its pods in file order. */
  sites: { name: string; pods: { name: string; brokers: BrokerInfo[] }[] }[];
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
    pods: s.pods.map((p) => ({
      name: p.name,
      brokers: p.brokers.map((b) => {
        const info: BrokerInfo = {
          id: b.id,
          site: s.name,
          pod: p.name,
          address: b.address,
          wanAddress: b.wanAddress ?? b.address,
          metricsAddress: b.metricsAddress,
          healthAddress: b.healthAddress,
        };
        brokers.set(b.id, info);
        return info;
      }),
    })),
  }));
  return { federation: t.federation, settings: t.settings, security: t.security, sites, brokers, file };
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
  if (!b) {
    throw new TopologyError(
      `broker id "${id}" is not in the topology; known ids: ${[...t.brokers.keys()].join(', ')}`,
    );
  }
  return b;
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
