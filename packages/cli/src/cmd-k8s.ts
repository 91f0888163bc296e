import { TopologyError, loadTopology } from '@wanas/topology';
import type { K8sOptions } from '@wanas/k8s';
import { InvalidArgumentError, type Command } from 'commander';
import * as path from 'node:path';
import { loadDevPackage } from './dev-packages';
import { collect, parsePositiveInt } from './parse';

/** The flags' defaults. */
const K8S_DEFAULTS: Omit<K8sOptions, 'image'> = {
  namespace: 'wanas',
  sites: [],
  clusterDomain: 'cluster.local',
  replicas: 2,
  graceMs: 10_000,
  cpuRequest: '250m',
  memoryRequest: '192Mi',
  memoryLimit: '512Mi',
  store: 'postgres',
  dbSecret: 'wanas-db-app',
  data: 'pvc',
  dataSize: '1Gi',
  storageClass: undefined,
  createNamespace: true,
};

interface K8sFlags {
  topology: string;
  image: string;
  namespace: string;
  site: string[];
  clusterDomain: string;
  replicas: number;
  grace: number;
  cpu: string;
  memory: string;
  memoryLimit: string;
  store: string;
  dbSecret: string;
  data: string;
  dataSize: string;
  storageClass?: string;
  namespaceObject: boolean;
  tlsDir?: string;
}

const DNS_LABEL = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/;
const DNS_NAME = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$/;
/** A Kubernetes resource quantity, e.g. 250m, 0.5, 192Mi, 1Gi. */
const QUANTITY = /^[0-9]+(\.[0-9]+)?(m|k|M|G|T|Ki|Mi|Gi|Ti)?$/;

const matching = (re: RegExp, what: string) => (text: string) => {
  if (!re.test(text)) throw new InvalidArgumentError(`"${text}" is not ${what}`);
  return text;
};

/**
 * `wanas k8s --topology FILE --image IMAGE`: the Kubernetes manifests of a federation, as a YAML stream
 * on stdout (one Deployment, headless Service and PodDisruptionBudget per pod; the topology as a
 * ConfigMap). The Secrets the brokers need are listed on stderr; `--tls-dir` makes throwaway ones.
 */
export function registerK8s(program: Command): void {
  const cmd = program
    .command('k8s')
    .description('write Kubernetes manifests for a topology to stdout (one Deployment per pod)')
    .requiredOption('-t, --topology <file>', 'topology YAML file (listed brokers become replicas)')
    .requiredOption(
      '--image <image>',
      'broker image, e.g. registry.example.com/wanas:1.0',
      matching(/^[^\s]+$/, 'an image reference'),
    )
    .option(
      '-n, --namespace <ns>',
      'namespace of every object',
      matching(DNS_LABEL, 'a namespace name'),
      K8S_DEFAULTS.namespace,
    )
    .option('--site <name>', 'only this site (repeat; one cluster per datacenter)', collect, [])
    .option(
      '--cluster-domain <domain>',
      'DNS domain the headless Services resolve in (multi-cluster: e.g. clusterset.local)',
      matching(DNS_NAME, 'a DNS domain'),
      K8S_DEFAULTS.clusterDomain,
    )
    .option(
      '--replicas <n>',
      'replicas of a pod the topology already gives as dns:///…',
      parsePositiveInt,
      K8S_DEFAULTS.replicas,
    )
    .option(
      '--grace <ms>',
      'broker shutdown grace for in-flight calls, ms',
      parsePositiveInt,
      K8S_DEFAULTS.graceMs,
    )
    .option(
      '--cpu <quantity>',
      'CPU request per broker',
      matching(QUANTITY, 'a quantity'),
      K8S_DEFAULTS.cpuRequest,
    )
    .option(
      '--memory <quantity>',
      'memory request per broker',
      matching(QUANTITY, 'a quantity'),
      K8S_DEFAULTS.memoryRequest,
    )
    .option(
      '--memory-limit <quantity>',
      'memory limit per broker',
      matching(QUANTITY, 'a quantity'),
      K8S_DEFAULTS.memoryLimit,
    )
    .option(
      '--data <kind>',
      "--store sqlite: the file on a 'pvc' (ReadWriteOnce) or the replica's 'emptydir'",
      'pvc',
    )
    .option(
      '--data-size <quantity>',
      'size of the pod database volume',
      matching(QUANTITY, 'a quantity'),
      '1Gi',
    )
    .option('--storage-class <name>', 'storage class of the database claims', matching(DNS_NAME, 'a name'))
    .option('--no-namespace-object', 'do not emit the Namespace object')
    .option(
      '--tls-dir <dir>',
      'write a throwaway CA and one certificate per pod here (demos; not production PKI)',
    );
  addStoreOptions(cmd);
  cmd.action((o: K8sFlags) => runK8s(o));
}

/** `--store` and `--db-secret`: where the pods keep their state. */
function addStoreOptions(cmd: Command): void {
  cmd
    .option(
      '--store <kind>',
      "where pods keep their state: 'postgres' (a database server; the connection from --db-secret) or 'sqlite' (a file: one replica per pod)",
      K8S_DEFAULTS.store,
    )
    .option(
      '--db-secret <name>',
      "the Secret with the database connection (keys host, port, username, password, dbname: CloudNativePG's <cluster>-app)",
      matching(DNS_NAME, 'a name'),
      K8S_DEFAULTS.dbSecret,
    );
}

/** Writes the manifests to stdout and the Secrets to make (or made, with --tls-dir) to stderr. */
async function runK8s(o: K8sFlags): Promise<void> {
  if (o.data !== 'pvc' && o.data !== 'emptydir') failUsage(`--data must be pvc or emptydir, got "${o.data}"`);
  if (o.store !== 'postgres' && o.store !== 'sqlite')
    failUsage(`--store must be postgres or sqlite, got "${o.store}"`);
  if (!(o.replicas >= 1)) failUsage('--replicas must be at least 1');
  const k8s = await loadDevPackage<typeof import('@wanas/k8s')>('@wanas/k8s', 'k8s');
  let out;
  try {
    out = k8s.k8sManifests(loadTopology(o.topology), k8sOptionsOf(o));
  } catch (e) {
    return failUsage(e instanceof TopologyError || e instanceof k8s.K8sError ? e.message : String(e));
  }
  const header =
    `# Generated by: wanas k8s --topology ${path.basename(o.topology)} --image ${o.image} --namespace ${o.namespace}\n` +
    `# Before applying, create one Secret per pod (keys ca.crt, tls.crt, tls.key): ${out.secrets.map((s) => s.name).join(', ')}\n` +
    (o.store === 'postgres'
      ? `# Pods keep their state in PostgreSQL, one schema per pod: the Secret ${o.dbSecret} (keys host, port, username, password, dbname; e.g. CloudNativePG's <cluster>-app) must exist\n`
      : `# --store sqlite: one replica per pod, its database a file on ${o.data === 'pvc' ? 'a ReadWriteOnce volume' : "the replica's emptyDir (lost with it)"}; replicas on several nodes need --store postgres\n`);
  process.stdout.write(k8s.renderManifests(out, header));
  const wanted = o.site.length ? out.secrets.filter((s) => o.site.includes(s.site)) : out.secrets;
  if (o.tlsDir) await writeSecrets(o, wanted, k8s.podObjectName);
  else {
    process.stderr.write(
      `the brokers need one Secret per pod in namespace ${o.namespace} (keys ca.crt, tls.crt, tls.key; the ` +
        `certificate's CN and a DNS SAN name the pod):\n` +
        wanted.map((s) => `  ${s.name}: certificate name ${s.certificateName}`).join('\n') +
        `\n(--tls-dir DIR makes throwaway ones for a trial)\n`,
    );
  }
}

/** A usage error: the message on stderr, exit 2. */
function failUsage(msg: string): never {
  process.stderr.write(`error: ${msg}\n`);
  process.exit(2);
}

/** The generator's options from the flags. */
function k8sOptionsOf(o: K8sFlags): K8sOptions {
  return {
    image: o.image,
    namespace: o.namespace,
    sites: o.site,
    clusterDomain: o.clusterDomain,
    replicas: o.replicas,
    graceMs: o.grace,
    cpuRequest: o.cpu,
    memoryRequest: o.memory,
    memoryLimit: o.memoryLimit,
    store: o.store as K8sOptions['store'],
    dbSecret: o.dbSecret,
    data: o.data as K8sOptions['data'],
    dataSize: o.dataSize,
    storageClass: o.storageClass,
    createNamespace: o.namespaceObject,
  };
}

/** `--tls-dir`: a throwaway CA and one certificate per pod (its Service names as SANs), and the kubectl lines. */
async function writeSecrets(
  o: K8sFlags,
  wanted: { name: string; site: string; pod: string; certificateName: string }[],
  podObjectName: (site: string, pod: string) => string,
): Promise<void> {
  const { createTlsDir } = await loadDevPackage<typeof import('@wanas/devfed')>('@wanas/devfed', 'k8s');
  const dir = path.resolve(o.tlsDir!);
  await createTlsDir(
    dir,
    wanted.map((s) => s.certificateName),
    (id) => {
      const s = wanted.find((x) => x.certificateName === id)!;
      const svc = podObjectName(s.site, s.pod);
      const site = `wanas-${s.site}`;
      return [
        svc,
        `${svc}.${o.namespace}.svc`,
        site,
        `${site}.${o.namespace}.svc`,
        `${site}.${o.namespace}.svc.${o.clusterDomain}`,
      ];
    },
  );
  process.stderr.write(
    `wrote a throwaway CA, per-pod certificates and client.crt/client.key to ${dir}; create the Secrets with:\n` +
      wanted
        .map(
          (s) =>
            `  kubectl -n ${o.namespace} create secret generic ${s.name} --from-file=ca.crt=${dir}/ca.crt ` +
            `--from-file=tls.crt=${dir}/${s.certificateName}.crt --from-file=tls.key=${dir}/${s.certificateName}.key`,
        )
        .join('\n') +
      '\n',
  );
}
