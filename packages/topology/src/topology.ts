import * as fs from 'node:fs';
import * as path from 'node:path';
import YAML from 'yaml';
import { DNS_TARGET, topologySchema, type TopologyDoc } from './topology-schema';

export { SAMPLERS, topologySchema, type TopologyDoc } from './topology-schema';

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
  /** Sessions to seed a new pod database with besides the demo users' (the topology's `sessions`). */
  sessions: number;
  /** Where the pod's backends are, by service name (see the topology's `services`). */
  services: Record<string, string>;
  /** This pod's store URL, when it overrides `settings.store`. */
  store: string | undefined;
}

/** A validated topology with lookups. */
export interface Topology {
  federation: string;
  settings: TopologyDoc['settings'];
  security: TopologyDoc['security'];
  /** Traces for the federation's brokers (the OTEL_* environment variables win). */
  tracing: TopologyDoc['tracing'];
  /** Backends every pod runs, by name. */
  services: TopologyDoc['services'];
  /** Configured operations and plug-in modules, in file order. */
  operations: TopologyDoc['operations'];
  /** Client identities' weights and quotas at a busy broker (unlisted clients weigh 1). */
  clients: TopologyDoc['clients'];
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
          sessions: p.sessions ?? 0,
          services: p.services ?? {},
          store: p.store,
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
        sessions: p.sessions ?? 0,
        services: p.services ?? {},
        store: p.store,
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
    services: t.services,
    clients: t.clients,
    operations: t.operations,
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
