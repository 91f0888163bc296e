import * as grpc from '@grpc/grpc-js';
import { TopologyError, dataDirOf, loadTopology, type Topology } from '@wanas/topology';
import * as fs from 'node:fs';
import * as path from 'node:path';
import YAML from 'yaml';
import { DevFederation } from './federation';
import { freePorts } from './ports';
import type { DevBroker, SupervisedRow } from './supervisor';
import { table } from './text';
import { PrivatePostgres } from './postgres';
import { createTlsDir } from './tls';
import { withAbsolutePaths } from './topology-paths';
import { startUpControl } from './up-control';
import { withMetrics } from './up-metrics';

/** Time to wait for every broker to answer SERVING, ms. */
export const READY_TIMEOUT_MS = 60_000;
/** Grace period given to brokers at shutdown before SIGKILL, ms. */
export const STOP_GRACE_MS = 5_000;

/** Options of {@link runUp}. */
export interface UpOptions {
  topology: string;
  wanLatencyMs: number;
  jitterMs: number;
  restart: boolean;
  /** Brokers of one site per process (default 1). */
  brokersPerProcess?: number;
  /** Make a throwaway CA and certificates here and run the federation with mTLS and authorization on. */
  tlsDir?: string;
  /** Print where the Prometheus config for every broker's /metrics is (`.wanas/prometheus.yml`; every broker serves /metrics beside its console). */
  metrics?: boolean;
  /**
   * Where the pods keep their state: `sqlite` (the topology's own setting, by default a file per pod) or
   * `postgres` (a private PostgreSQL server for this federation, data under the state folder, one schema
   * per pod; stopped with `up`).
   */
  store?: 'sqlite' | 'postgres';
  /** Called once every broker is SERVING (e.g. to run the demo query), with client channel settings. */
  onReady?: (t: Topology, client: ClientChannel) => Promise<void>;
}

/** How a client reaches the brokers `up` started. */
export interface ClientChannel {
  credentials: grpc.ChannelCredentials;
  /** CLI flags that give the same credentials (empty for plaintext). */
  flags: string;
}

/** What `up` writes to `<topology dir>/.wanas/up.json` for `wanas wan ...` and for tests. */
export interface UpState {
  pid: number;
  control: string;
  topology: string;
  brokers: SupervisedRow[];
}

/** Where `up` keeps its state file and logs for a topology file. */
export function upStateDir(topologyFile: string): string {
  return path.join(path.dirname(path.resolve(topologyFile)), '.wanas');
}

/** Reads the state of a running `up` for a topology file. */
export function readUpState(topologyFile: string): UpState {
  const file = path.join(upStateDir(topologyFile), 'up.json');
  try {
    return JSON.parse(fs.readFileSync(file, 'utf8')) as UpState;
  } catch {
    throw new Error(`no running "wanas up" found for ${topologyFile} (no ${file})`);
  }
}

/** `wanas up` cannot run: the message says why; `exitCode` is 2 for bad input, 1 otherwise. */
export class UpError extends Error {
  constructor(
    message: string,
    readonly exitCode: 1 | 2,
  ) {
    super(message);
    this.name = 'UpError';
  }
}

/**
 * `wanas up`: every broker of the topology as its own OS process, a WAN emulator at every `wanAddress`
 * (a {@link DevFederation} on the user's file), a control endpoint for cutting and healing sites; stops
 * everything it started on SIGINT/SIGTERM. Resolves when stopped; rejects with an {@link UpError} when it
 * cannot start.
 */
export async function runUp(opts: UpOptions): Promise<void> {
  const say = (line: string) => process.stdout.write(`${line}\n`);
  let topology = loadUpTopology(opts.topology);
  const stateDir = upStateDir(opts.topology);
  let client: ClientChannel = { credentials: grpc.credentials.createInsecure(), flags: '' };
  if (opts.tlsDir) {
    ({ topology, client } = await withTls(topology, path.resolve(opts.tlsDir)));
    say(`mTLS on: CA, broker and client certificates in ${path.resolve(opts.tlsDir)}`);
  }
  if (opts.metrics) {
    topology = (await withMetrics(topology, stateDir)).topology;
    say(
      `metrics: every broker serves /metrics and /status; Prometheus config (every broker, the shipped rules): ` +
        `prometheus --config.file=${path.join(stateDir, 'prometheus.yml')}`,
    );
  }
  const store = opts.store === 'postgres' ? await withPrivatePostgres(topology, stateDir, say) : undefined;
  if (store) topology = store.topology;
  const stateFile = path.join(stateDir, 'up.json');
  // The state file is rewritten when a broker restarts: only after the brokers start (below), so the
  // control it names exists by then.
  const federation = await openFederation(topology, stateDir, client, opts, say, () => writeState()).catch(
    async (e: unknown) => {
      await store?.server.stop();
      throw e;
    },
  );
  const sites = topology.sites.map((s) => s.name);
  const control = await startUpControl(federation.wan, sites, () => federation.rows(), say);
  function writeState(): void {
    const state: UpState = {
      pid: process.pid,
      control: control.url,
      topology: topology.file!,
      brokers: federation.rows(),
    };
    fs.writeFileSync(stateFile, `${JSON.stringify(state, null, 2)}\n`);
  }

  let stopping = false;
  const stop = async (why: string) => {
    if (stopping) return;
    stopping = true;
    say(`\n${why}: stopping ${federation.brokers.length} brokers, the pods' backends and the WAN emulator`);
    await federation.stop(STOP_GRACE_MS);
    await store?.server.stop();
    await control.close();
    fs.rmSync(stateFile, { force: true });
    say('stopped');
  };
  const stopped = new Promise<void>((resolve) => {
    for (const sig of ['SIGINT', 'SIGTERM'] as const) process.once(sig, () => void stop(sig).then(resolve));
  });

  const t0 = Date.now();
  if (federation.backends.backends.length) {
    say(`starting ${federation.backends.backends.length} pod backends (the services' dev commands)`);
    try {
      await federation.startBackends();
    } catch (e) {
      await stop('a backend did not start');
      throw new UpError((e as Error).message, 1);
    }
  }
  federation.startAll();
  writeState();
  const ready = await federation.waitAllServing(READY_TIMEOUT_MS, () => stopping);
  if (!ready.ok) {
    await stop('not ready');
    throw new UpError(ready.message, 1);
  }
  if (stopping) return stopped;
  const where = { logDir: path.join(stateDir, 'logs'), control: control.url };
  printReady(topology, opts, client, federation.rows(), Date.now() - t0, where, say);
  if (opts.onReady) {
    try {
      await opts.onReady(topology, client);
    } catch (e) {
      say(`demo query failed: ${(e as Error).message}`);
    }
  }
  return stopped;
}

/**
 * The topology's brokers as a {@link DevFederation} in `stateDir` (logs under `logs/`, kept at stop): each
 * in its own process group (Ctrl-C reaches `up` only, which stops them in order), restarted when it dies
 * if asked.
 */
async function openFederation(
  topology: Topology,
  stateDir: string,
  client: ClientChannel,
  opts: UpOptions,
  say: (line: string) => void,
  changed: () => void,
): Promise<DevFederation> {
  let federation: DevFederation;
  try {
    federation = await DevFederation.open({
      topologyFile: topology.file!,
      brokers: await brokersWithConsoles(topology),
      dir: stateDir,
      removeDir: false,
      wanLatencyMs: opts.wanLatencyMs,
      jitterMs: opts.jitterMs,
      restart: opts.restart,
      brokersPerProcess: opts.brokersPerProcess,
      clientCredentials: client.credentials,
      spawnOptions: () => ({ args: ['--grace', '3000'], detached: true }),
      say,
      changed,
      workDir: path.dirname(path.resolve(opts.topology)),
    });
  } catch (e) {
    throw new UpError((e as Error).message, 1);
  }
  if (federation.unemulated.length)
    say(`note: no WAN emulation for ${federation.unemulated.join(', ')} (wanAddress equals address)`);
  return federation;
}

/**
 * The topology's brokers, each with an HTTP listener for its console and /metrics: a free loopback port
 * where the topology gives it none (passed as `--metrics-address`; the user's topology file stays the one
 * the brokers read and reload).
 */
async function brokersWithConsoles(t: Topology): Promise<Omit<DevBroker, 'proc'>[]> {
  const brokers = [...t.brokers.values()];
  const ports = await freePorts(brokers.filter((b) => !b.metricsAddress).length);
  return brokers.map((b) => ({ ...b, metricsAddress: b.metricsAddress ?? `127.0.0.1:${ports.pop()}` }));
}

/**
 * `--store postgres`: a private PostgreSQL server under the state folder (a free port), and the topology
 * the brokers run with — the user's, with `settings.store` pointing every pod at its own schema there.
 */
async function withPrivatePostgres(
  t: Topology,
  stateDir: string,
  say: (line: string) => void,
): Promise<{ topology: Topology; server: PrivatePostgres }> {
  fs.mkdirSync(stateDir, { recursive: true });
  let server: PrivatePostgres;
  try {
    server = await PrivatePostgres.start(stateDir);
  } catch (e) {
    throw new UpError(`--store postgres: ${(e as Error).message}`, 1);
  }
  const doc = withAbsolutePaths(
    YAML.parse(fs.readFileSync(t.file!, 'utf8')) as Record<string, unknown>,
    path.dirname(t.file!),
  );
  doc.settings = { ...(doc.settings as object), store: `${server.url()}?schema=wanas-{site}-{pod}` };
  const file = path.join(stateDir, 'topology.postgres.yaml');
  fs.writeFileSync(file, YAML.stringify(doc));
  say(`store: a private PostgreSQL at 127.0.0.1:${server.port} (data in ${server.dir}), one schema per pod`);
  return { topology: loadTopology(file), server };
}

/** The topology `up` runs: valid, and listing its brokers (DNS pods are for Kubernetes). */
function loadUpTopology(file: string): Topology {
  let t: Topology;
  try {
    t = loadTopology(file);
  } catch (e) {
    throw new UpError(e instanceof TopologyError ? e.message : (e as Error).message, 2);
  }
  const dnsPods = t.sites.flatMap((s) => s.pods.filter((p) => p.dns).map((p) => `${s.name}/${p.name}`));
  if (dnsPods.length) {
    throw new UpError(
      `wanas up starts the brokers a topology lists; these pods are found by DNS (for Kubernetes, see wanas k8s): ${dnsPods.join(', ')}`,
      2,
    );
  }
  return t;
}

/** The ready banner: the brokers' table, where the logs and the control are, and commands to try. */
function printReady(
  topology: Topology,
  opts: UpOptions,
  client: ClientChannel,
  rows: SupervisedRow[],
  tookMs: number,
  where: { logDir: string; control: string },
  say: (line: string) => void,
): void {
  const first = [...topology.brokers.values()][0]!;
  const jitter = opts.jitterMs ? ` ± ${opts.jitterMs} ms` : '';
  say(
    `\nwanas up: ${topology.brokers.size} brokers in ${topology.sites.length} sites SERVING after ${tookMs} ms; ` +
      `WAN ${opts.wanLatencyMs} ms one way (${2 * opts.wanLatencyMs} ms round trip)${jitter}`,
  );
  const scheme = topology.security.mode === 'mtls' ? 'https' : 'http';
  const consoleOf = (b: SupervisedRow) =>
    b.metricsAddress && topology.settings.console.enabled ? `${scheme}://${b.metricsAddress}/` : '-';
  say(
    table(
      ['BROKER', 'SITE', 'POD', 'CLIENT ADDRESS', 'WAN ADDRESS', 'CONSOLE (and /metrics)', 'PID'],
      rows.map((b) => [b.id, b.site, b.pod, b.address, b.wanAddress, consoleOf(b), String(b.pid ?? '-')]),
    ),
  );
  say(`logs: ${where.logDir}   control: ${where.control}`);
  say(`ready: ${[...topology.brokers.values()].map((b) => b.address).join(' ')}`);
  const cli = `npx wanas aggregate --address ${first.address}${client.flags ? ` ${client.flags}` : ''}`;
  const firstRow = rows.find((r) => r.id === first.id);
  say('\ntry:');
  if (firstRow && consoleOf(firstRow) !== '-')
    say(`  open ${consoleOf(firstRow)} in a browser   (the console of ${first.id}; every broker has one)`);
  say(`  ${cli} --op sessions.find --param user=alice`);
  say(`  ${cli} --op pods.capacity --stream`);
  say(
    `  ${cli} --op desktops.provision --param user=bob --param pool=gpu --first --prefer-site ${first.site}`,
  );
  say(`  npx wanas status --address ${first.address}${client.flags ? ` ${client.flags}` : ''}`);
  say(
    `  npx wanas wan cut --site ${topology.sites.at(-1)!.name} --topology ${opts.topology}   (then: wan heal)`,
  );
  if (!client.flags)
    say(`  npx buf curl --protocol grpc --http2-prior-knowledge http://${first.address} --list-services`);
  say('Ctrl-C stops everything.');
}

/**
 * Writes the CA and certificates into `dir`, and `dir/topology.yaml`: the same federation with
 * `security.mode: mtls` (data kept where the original topology keeps it). Brokers run with that file.
 */
async function withTls(t: Topology, dir: string): Promise<{ topology: Topology; client: ClientChannel }> {
  const files = await createTlsDir(dir, [...t.brokers.keys()]);
  const doc = withAbsolutePaths(
    YAML.parse(fs.readFileSync(t.file!, 'utf8')) as Record<string, unknown>,
    path.dirname(t.file!),
  );
  doc.settings = { ...(doc.settings as object), dataDir: dataDirOf(t) };
  doc.security = {
    ...(doc.security as object),
    mode: 'mtls',
    caFile: files.ca,
    certFile: files.brokerCert,
    keyFile: files.brokerKey,
  };
  const file = path.join(dir, 'topology.yaml');
  fs.writeFileSync(file, YAML.stringify(doc));
  const credentials = grpc.credentials.createSsl(
    fs.readFileSync(files.ca),
    fs.readFileSync(files.clientKey),
    fs.readFileSync(files.clientCert),
  );
  return {
    topology: loadTopology(file),
    client: { credentials, flags: `--ca ${files.ca} --cert ${files.clientCert} --key ${files.clientKey}` },
  };
}
