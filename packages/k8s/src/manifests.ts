import { dnsPodIdentity, type Topology } from '@wanas/topology';
// Types only (a dev dependency): object literals below are checked against the Kubernetes API types at
// compile time, and the tests validate the output against the OpenAPI schema with the same package.
import type { IDeployment } from 'kubernetes-models/apps/v1/Deployment';
import type { IPodDisruptionBudget } from 'kubernetes-models/policy/v1/PodDisruptionBudget';
import type { IConfigMap } from 'kubernetes-models/v1/ConfigMap';
import type { INamespace } from 'kubernetes-models/v1/Namespace';
import type { IPersistentVolumeClaim } from 'kubernetes-models/v1/PersistentVolumeClaim';
import type { IService } from 'kubernetes-models/v1/Service';
import type { IVolume } from 'kubernetes-models/v1/Volume';
import type { IProbe } from 'kubernetes-models/v1/Probe';
import type { IContainer } from 'kubernetes-models/v1/Container';
import { operationsFiles, type OperationsFiles } from './operations-files';

/** Ports every broker container uses (the image's EXPOSE). */
export const K8S_PORTS = { grpc: 7000, health: 7001, metrics: 9000 } as const;
/** Where the container finds its files. */
const PATHS = {
  topologyDir: '/etc/wanas/topology',
  tlsDir: '/etc/wanas/tls',
  data: '/var/lib/wanas',
} as const;
/** The image's unprivileged `node` user. */
const NODE_UID = 1000;
/** CoreDNS's default TTL for records of headless Services, s. */
const CLUSTER_DNS_TTL_S = 5;
/** Label keys. */
const LABEL = {
  name: 'app.kubernetes.io/name',
  component: 'app.kubernetes.io/component',
  partOf: 'app.kubernetes.io/part-of',
  managedBy: 'app.kubernetes.io/managed-by',
  site: 'wanas.io/site',
  pod: 'wanas.io/pod',
} as const;

/** Options of {@link k8sManifests}. */
export interface K8sOptions {
  image: string;
  namespace: string;
  /** Emit only these sites' objects (one cluster per datacenter); all when empty. The ConfigMap is always whole. */
  sites: string[];
  /** The cluster DNS domain the pods' headless Services resolve in (multi-cluster: e.g. clusterset.local). */
  clusterDomain: string;
  /** Replicas of a pod the topology already gives as dns:///NAME:PORT (a listed pod: its broker count). */
  replicas: number;
  /** The broker's shutdown grace for in-flight calls, ms. */
  graceMs: number;
  /** Container resources. */
  cpuRequest: string;
  memoryRequest: string;
  memoryLimit: string;
  /**
   * Where a pod's brokers keep their shared state: `postgres` (the production shape: a database server, its
   * connection from the `dbSecret` Secret) or `sqlite` (a file: one replica per pod only).
   */
  store: 'postgres' | 'sqlite';
  /** The Secret with the database connection (keys host, port, username, password, dbname: CloudNativePG's `<cluster>-app`). */
  dbSecret: string;
  /** `sqlite` only: the file on a ReadWriteOnce claim, or on the replica's emptyDir (lost with it). */
  data: 'pvc' | 'emptydir';
  dataSize: string;
  storageClass: string | undefined;
  /** Emit a Namespace object. */
  createNamespace: boolean;
}

/** A Kubernetes object wanas k8s emits. */
export type Manifest =
  INamespace | IConfigMap | IService | IDeployment | IPodDisruptionBudget | IPersistentVolumeClaim;

/** A generated set: the objects, and the Secrets an operator must create before applying them. */
export interface K8sOutput {
  manifests: Manifest[];
  /** Per pod: the Secret name and the certificate name (CN/SAN) it must carry. */
  secrets: { name: string; site: string; pod: string; certificateName: string }[];
  /** The topology the brokers run with (the ConfigMap's `topology.yaml`), as data. */
  topology: Record<string, unknown>;
}

/** Kubernetes object names of a pod (a DNS label: ≤ 63 characters). */
export function podObjectName(site: string, pod: string): string {
  return `wanas-${site}-${pod}`;
}

/** A refused generation: names what is wrong. */
export class K8sError extends Error {}

/**
 * The manifests that run a topology on Kubernetes: per pod a Deployment (replicas = the pod's brokers)
 * and a headless Service its replicas are found by (`dns:///…`), a PodDisruptionBudget and, with
 * `data: pvc`, a shared volume claim; per site a client Service; the topology as a ConfigMap, rewritten so
 * every pod is found by DNS and every link runs mTLS with certificates from per-pod Secrets.
 */
export function k8sManifests(t: Topology, o: K8sOptions): K8sOutput {
  checkNames(t, o);
  checkStore(t, o);
  const preStopS = Math.ceil(t.settings.dnsRefreshMs / 1000) + CLUSTER_DNS_TTL_S + 1;
  const b: Builder = {
    o,
    preStopS,
    graceS: preStopS + Math.ceil(o.graceMs / 1000) + 5,
    meta: (name, labels = {}) => ({ name, namespace: o.namespace, labels: { ...COMMON_LABELS, ...labels } }),
  };
  const manifests: Manifest[] = [];
  const secrets: K8sOutput['secrets'] = [];
  if (o.createNamespace)
    manifests.push({
      apiVersion: 'v1',
      kind: 'Namespace',
      metadata: { name: o.namespace, labels: COMMON_LABELS },
    } satisfies INamespace);
  const files = operationsFiles(t, PATHS.topologyDir);
  manifests.push({
    apiVersion: 'v1',
    kind: 'ConfigMap',
    metadata: b.meta('wanas-topology'),
    // topology.yaml is filled by the caller (YAML text); descriptor sets and modules beside it.
    data: { 'topology.yaml': '', ...files.data },
    ...(Object.keys(files.binaryData).length ? { binaryData: files.binaryData } : {}),
  } satisfies IConfigMap);
  for (const s of t.sites) {
    if (o.sites.length && !o.sites.includes(s.name)) continue;
    manifests.push(siteService(b, s.name));
    for (const p of s.pods) {
      const secret = `${podObjectName(s.name, p.name)}-tls`;
      secrets.push({
        name: secret,
        site: s.name,
        pod: p.name,
        certificateName: dnsPodIdentity(s.name, p.name),
      });
      manifests.push(...podObjects(b, s.name, p.name, p.dns ? o.replicas : p.brokers.length, secret));
    }
  }
  checkUnique(manifests);
  return { manifests, secrets, topology: k8sTopology(t, o, files) };
}

/** What every builder shares: the options, the shutdown timings and the metadata maker. */
interface Builder {
  o: K8sOptions;
  /** Seconds a stopping replica waits out of DNS before SIGTERM. */
  preStopS: number;
  /** terminationGracePeriodSeconds: the preStop wait, the broker's grace, and slack. */
  graceS: number;
  meta(
    name: string,
    labels?: Record<string, string>,
  ): { name: string; namespace: string; labels: Record<string, string> };
}

const COMMON_LABELS = { [LABEL.partOf]: 'wanas', [LABEL.managedBy]: 'wanas-k8s' };

/** Refuses sites the topology lacks and object names Kubernetes would refuse. */
function checkNames(t: Topology, o: K8sOptions): void {
  const unknownSites = o.sites.filter((s) => !t.sites.some((x) => x.name === s));
  if (unknownSites.length)
    throw new K8sError(
      `--site ${unknownSites.join(', ')}: not in the topology (sites: ${t.sites.map((s) => s.name).join(', ')})`,
    );
  for (const s of t.sites)
    for (const p of s.pods) {
      const n = podObjectName(s.name, p.name);
      if (n.length > 63)
        throw new K8sError(`pod ${s.name}/${p.name}: object name "${n}" is longer than 63 characters`);
    }
}

/** `--store sqlite` runs one replica per pod: a file is not a database that replicas on two nodes can share. */
function checkStore(t: Topology, o: K8sOptions): void {
  if (o.store !== 'sqlite') return;
  const many = t.sites.flatMap((s) =>
    s.pods
      .filter((p) => (p.dns ? o.replicas : p.brokers.length) > 1)
      .map((p) => `${s.name}/${p.name} (${p.dns ? o.replicas : p.brokers.length})`),
  );
  if (many.length)
    throw new K8sError(
      `--store sqlite needs one replica per pod (SQLite's file locks are not reliable on a volume shared by nodes); these pods have more: ${many.join(', ')}. Use --store postgres`,
    );
}

/** Refuses two objects of a kind with one name (two sites or pods whose names join to the same). */
function checkUnique(manifests: Manifest[]): void {
  const seen = new Set<string>();
  for (const m of manifests) {
    const k = `${m.kind}/${m.metadata!.name!}`;
    if (seen.has(k))
      throw new K8sError(
        `two objects would both be named ${k}: rename a site or pod (names are wanas-<site>-<pod>)`,
      );
    seen.add(k);
  }
}

/** The topology the brokers run with: every pod found by DNS, every link over mTLS from the pod's Secret. */
function k8sTopology(t: Topology, o: K8sOptions, files: OperationsFiles): Record<string, unknown> {
  const hostOf = (site: string, pod: string) =>
    `${podObjectName(site, pod)}.${o.namespace}.svc.${o.clusterDomain}`;
  const { dnsServers: _dropped, ...settings } = t.settings;
  void _dropped;
  return {
    federation: t.federation,
    settings: { ...settings, dataDir: PATHS.data, store: storeOf(t, o) },
    tracing: t.tracing,
    security: {
      mode: 'mtls',
      caFile: `${PATHS.tlsDir}/ca.crt`,
      certFile: `${PATHS.tlsDir}/tls.crt`,
      keyFile: `${PATHS.tlsDir}/tls.key`,
      refreshIntervalMs: t.security.refreshIntervalMs,
      clientTokens: t.security.clientTokens,
    },
    ...(Object.keys(files.services).length ? { services: files.services } : {}),
    ...(files.operations.length ? { operations: files.operations } : {}),
    sites: t.sites.map((s) => ({
      name: s.name,
      pods: s.pods.map((p) => ({
        name: p.name,
        ...(p.pools ? { pools: p.pools } : {}),
        ...(o.store === 'postgres' && p.store?.startsWith('postgres') ? { store: p.store } : {}),
        ...(Object.keys(p.services).length ? { services: p.services } : {}),
        brokers: `dns:///${hostOf(s.name, p.name)}:${K8S_PORTS.grpc}`,
        listen: `0.0.0.0:${K8S_PORTS.grpc}`,
        healthAddress: `0.0.0.0:${K8S_PORTS.health}`,
        metricsAddress: `0.0.0.0:${K8S_PORTS.metrics}`,
      })),
    })),
  };
}

/** The libpq variables the PostgreSQL store reads what its URL leaves out from, each from the Secret. */
function databaseEnv(secret: string) {
  const key = (name: string, k: string) => ({ name, valueFrom: { secretKeyRef: { name: secret, key: k } } });
  return [
    key('PGHOST', 'host'),
    key('PGPORT', 'port'),
    key('PGUSER', 'username'),
    key('PGPASSWORD', 'password'),
    key('PGDATABASE', 'dbname'),
  ];
}

/** The store URL the brokers run with: the topology's own PostgreSQL URL, or one the Secret's variables complete. */
function storeOf(t: Topology, o: K8sOptions): string | undefined {
  if (o.store === 'sqlite') return undefined;
  const own = t.settings.store;
  return own?.startsWith('postgres') ? own : 'postgresql:///?schema=wanas-{site}-{pod}';
}

const siteLabelsOf = (site: string) => ({ [LABEL.name]: 'wanas', [LABEL.site]: site });
const GRPC_PORT = { name: 'grpc', port: K8S_PORTS.grpc, targetPort: 'grpc', appProtocol: 'grpc' };

/** The Service clients of a datacenter call any of its brokers through. */
function siteService(b: Builder, site: string): IService {
  return {
    apiVersion: 'v1',
    kind: 'Service',
    metadata: b.meta(`wanas-${site}`, { ...siteLabelsOf(site), [LABEL.component]: 'client-endpoint' }),
    spec: { type: 'ClusterIP', selector: siteLabelsOf(site), ports: [GRPC_PORT] },
  };
}

/** One pod's objects: its headless discovery Service, its volume claim (pvc), Deployment and PodDisruptionBudget. */
function podObjects(b: Builder, site: string, pod: string, replicas: number, secret: string): Manifest[] {
  const { o } = b;
  const name = podObjectName(site, pod);
  const labels = { ...siteLabelsOf(site), [LABEL.pod]: pod };
  const objects: Manifest[] = [
    {
      apiVersion: 'v1',
      kind: 'Service',
      metadata: b.meta(name, { ...labels, [LABEL.component]: 'pod-discovery' }),
      spec: {
        clusterIP: 'None', // headless: the name resolves to every ready replica
        publishNotReadyAddresses: false,
        selector: labels,
        ports: [GRPC_PORT],
      },
    } satisfies IService,
  ];
  if (o.store === 'sqlite' && o.data === 'pvc')
    objects.push({
      apiVersion: 'v1',
      kind: 'PersistentVolumeClaim',
      metadata: b.meta(`${name}-data`, labels),
      spec: {
        // The pod's one replica keeps its database here (SQLite's locks are not for a volume shared by nodes).
        accessModes: ['ReadWriteOnce'],
        resources: { requests: { storage: o.dataSize } },
        ...(o.storageClass ? { storageClassName: o.storageClass } : {}),
      },
    } satisfies IPersistentVolumeClaim);
  objects.push(deployment(b, site, pod, labels, replicas, secret), {
    apiVersion: 'policy/v1',
    kind: 'PodDisruptionBudget',
    metadata: b.meta(name, labels),
    spec: { maxUnavailable: 1, selector: { matchLabels: labels } },
  } satisfies IPodDisruptionBudget);
  return objects;
}

/** A pod's Deployment: its replicas spread over nodes, never below capacity in a rollout, locked down. */
function deployment(
  b: Builder,
  site: string,
  pod: string,
  labels: Record<string, string>,
  replicas: number,
  secret: string,
): IDeployment {
  const name = podObjectName(site, pod);
  const volumes: IVolume[] = [
    { name: 'topology', configMap: { name: 'wanas-topology' } },
    { name: 'tls', secret: { secretName: secret, defaultMode: 0o440 } },
    { name: 'tmp', emptyDir: { medium: 'Memory', sizeLimit: '16Mi' } },
    b.o.store === 'sqlite' && b.o.data === 'pvc'
      ? { name: 'data', persistentVolumeClaim: { claimName: `${name}-data` } }
      : { name: 'data', emptyDir: { sizeLimit: b.o.dataSize } },
  ];
  return {
    apiVersion: 'apps/v1',
    kind: 'Deployment',
    metadata: b.meta(name, labels),
    spec: {
      replicas,
      selector: { matchLabels: labels },
      // Never below the pod's capacity during a rollout: a new replica is ready before an old one goes.
      strategy: { type: 'RollingUpdate', rollingUpdate: { maxUnavailable: 0, maxSurge: 1 } },
      template: {
        metadata: {
          labels,
          annotations: {
            'prometheus.io/scrape': 'true',
            'prometheus.io/port': String(K8S_PORTS.metrics),
            'prometheus.io/path': '/metrics',
          },
        },
        spec: {
          automountServiceAccountToken: false,
          enableServiceLinks: false,
          terminationGracePeriodSeconds: b.graceS,
          securityContext: {
            runAsNonRoot: true,
            runAsUser: NODE_UID,
            runAsGroup: NODE_UID,
            fsGroup: NODE_UID,
            seccompProfile: { type: 'RuntimeDefault' },
          },
          // Replicas of a pod on different nodes, so one node failing leaves the pod answering.
          affinity: {
            podAntiAffinity: {
              preferredDuringSchedulingIgnoredDuringExecution: [
                {
                  weight: 100,
                  podAffinityTerm: {
                    topologyKey: 'kubernetes.io/hostname',
                    labelSelector: { matchLabels: labels },
                  },
                },
              ],
            },
          },
          containers: [brokerContainer(b, site, pod)],
          volumes,
        },
      },
    },
  };
}

/** The broker container: its flags, ports, gRPC health probes, preStop wait, resources and locked-down context. */
function brokerContainer(b: Builder, site: string, pod: string): IContainer {
  const { o } = b;
  const grpcProbe = (periodSeconds: number, failureThreshold: number): IProbe => ({
    grpc: { port: K8S_PORTS.health, service: '' },
    periodSeconds,
    timeoutSeconds: 2,
    failureThreshold,
  });
  return {
    name: 'broker',
    image: o.image,
    imagePullPolicy: 'IfNotPresent',
    args: [
      '--topology',
      `${PATHS.topologyDir}/topology.yaml`,
      '--pod',
      `${site}/${pod}`,
      '--id',
      '$(POD_NAME)',
      '--grace',
      String(o.graceMs),
    ],
    env: [
      { name: 'POD_NAME', valueFrom: { fieldRef: { fieldPath: 'metadata.name' } } },
      { name: 'WANAS_LOG_FORMAT', value: 'json' },
      { name: 'NODE_ENV', value: 'production' },
      ...(o.store === 'postgres' ? databaseEnv(o.dbSecret) : []),
    ],
    ports: [
      { name: 'grpc', containerPort: K8S_PORTS.grpc, protocol: 'TCP' },
      { name: 'health', containerPort: K8S_PORTS.health, protocol: 'TCP' },
      { name: 'metrics', containerPort: K8S_PORTS.metrics, protocol: 'TCP' },
    ],
    // Kubernetes probes speak plaintext gRPC health: the broker serves it on its own port.
    startupProbe: grpcProbe(1, 60),
    readinessProbe: grpcProbe(2, 2),
    livenessProbe: grpcProbe(10, 3),
    lifecycle: {
      // Out of DNS first (peers re-resolve every dnsRefreshMs, cluster DNS caches for its TTL), then
      // SIGTERM: the broker stops taking calls and finishes those in flight within --grace.
      preStop: { exec: { command: ['sleep', String(b.preStopS)] } },
    },
    resources: {
      requests: { cpu: o.cpuRequest, memory: o.memoryRequest },
      limits: { memory: o.memoryLimit },
    },
    securityContext: {
      allowPrivilegeEscalation: false,
      readOnlyRootFilesystem: true,
      runAsNonRoot: true,
      capabilities: { drop: ['ALL'] },
    },
    volumeMounts: [
      { name: 'topology', mountPath: PATHS.topologyDir, readOnly: true },
      { name: 'tls', mountPath: PATHS.tlsDir, readOnly: true },
      { name: 'data', mountPath: PATHS.data },
      { name: 'tmp', mountPath: '/tmp' },
    ],
  };
}
