import * as grpc from '@grpc/grpc-js';
import { TopologyError, dataDirOf, loadTopology, type BrokerInfo, type Topology } from '@wanas/broker';
import { createHealthProbe } from '@wanas/connection-manager';
import { spawn, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as path from 'node:path';
import YAML from 'yaml';
import { table } from './text';
import { createTlsDir } from './tls';
import { WANAS_BIN, stopProcess } from './processes';
import { WanEmulator, type WanLink } from './wan-emulator';

/** Time to wait for every broker to answer SERVING, ms. */
export const READY_TIMEOUT_MS = 60_000;
/** Grace period given to brokers at shutdown before SIGKILL, ms. */
export const STOP_GRACE_MS = 5_000;
/** Delay before restarting a broker that died (with --restart), ms. */
const RESTART_DELAY_MS = 500;
/** Most restarts of one broker per minute before `up` gives up on it. */
const MAX_RESTARTS_PER_MINUTE = 5;

/** Options of {@link runUp}. */
export interface UpOptions {
  topology: string;
  wanLatencyMs: number;
  jitterMs: number;
  restart: boolean;
  /** Make a throwaway CA and certificates here and run the federation with mTLS and authorization on. */
  tlsDir?: string;
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
  brokers: {
    id: string;
    site: string;
    pod: string;
    address: string;
    wanAddress: string;
    pid: number | undefined;
    log: string;
  }[];
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

interface Managed {
  info: BrokerInfo;
  proc: ChildProcess | undefined;
  log: string;
  restarts: number[];
}

/**
 * `wanas up`: every broker of the topology as its own OS process, a WAN emulator at every `wanAddress`,
 * a control endpoint for cutting and healing sites; stops everything it started on SIGINT/SIGTERM.
 * Resolves when stopped.
 */
export async function runUp(opts: UpOptions): Promise<void> {
  let topology: Topology;
  try {
    topology = loadTopology(opts.topology);
  } catch (e) {
    process.stderr.write(`error: ${e instanceof TopologyError ? e.message : (e as Error).message}\n`);
    process.exit(2);
  }
  const dnsPods = topology.sites.flatMap((s) =>
    s.pods.filter((p) => p.dns).map((p) => `${s.name}/${p.name}`),
  );
  if (dnsPods.length) {
    process.stderr.write(
      `error: wanas up starts the brokers a topology lists; these pods are found by DNS (for Kubernetes, see wanas k8s): ${dnsPods.join(', ')}\n`,
    );
    process.exit(2);
  }
  const out = (s: string) => process.stdout.write(`${s}\n`);
  const stateDir = upStateDir(opts.topology);
  let client: ClientChannel = { credentials: grpc.credentials.createInsecure(), flags: '' };
  if (opts.tlsDir) {
    const made = await withTls(topology, path.resolve(opts.tlsDir));
    topology = made.topology;
    client = made.client;
    out(`mTLS on: CA, broker and client certificates in ${path.resolve(opts.tlsDir)}`);
  }
  const logDir = path.join(stateDir, 'logs');
  fs.mkdirSync(logDir, { recursive: true });

  const links: WanLink[] = [...topology.brokers.values()]
    .filter((b) => b.wanAddress !== b.address)
    .map((b) => ({ brokerId: b.id, site: b.site, listen: b.wanAddress, target: b.address }));
  const same = [...topology.brokers.values()].filter((b) => b.wanAddress === b.address).map((b) => b.id);
  if (same.length) out(`note: no WAN emulation for ${same.join(', ')} (wanAddress equals address)`);
  const wan = new WanEmulator(links, { latencyMs: opts.wanLatencyMs, jitterMs: opts.jitterMs });
  try {
    await wan.start();
  } catch (e) {
    process.stderr.write(`error: ${(e as Error).message}\n`);
    process.exit(1);
  }

  let stopping = false;
  const managed = new Map<string, Managed>();
  const spawnBroker = (m: Managed) => {
    const logFd = fs.openSync(m.log, 'a');
    const proc = spawn(
      process.execPath,
      [
        WANAS_BIN,
        'broker',
        '--topology',
        topology.file!,
        '--id',
        m.info.id,
        '--log-format',
        'json',
        '--grace',
        '3000',
      ],
      {
        // Own process group: Ctrl-C reaches `up` only, which stops the brokers in order. The IPC channel
        // makes a broker exit if `up` itself dies.
        detached: true,
        stdio: ['ignore', logFd, logFd, 'ipc'],
        env: { ...process.env, WANAS_EXIT_WITH_PARENT: '1' },
      },
    );
    fs.closeSync(logFd);
    m.proc = proc;
    proc.on('exit', (code, signal) => {
      if (stopping || m.proc !== proc) return;
      out(`broker ${m.info.id} exited unexpectedly (${signal ?? `code ${code}`}); log: ${m.log}`);
      if (!opts.restart) return;
      const now = Date.now();
      m.restarts = m.restarts.filter((t) => now - t < 60_000);
      if (m.restarts.length >= MAX_RESTARTS_PER_MINUTE) {
        out(
          `broker ${m.info.id} restarted ${MAX_RESTARTS_PER_MINUTE} times in a minute; not restarting it again`,
        );
        return;
      }
      m.restarts.push(now);
      setTimeout(() => {
        if (stopping) return;
        out(`restarting broker ${m.info.id}`);
        spawnBroker(m);
        writeState();
      }, RESTART_DELAY_MS);
    });
  };

  const control = http.createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://control');
    const site = url.searchParams.get('site') ?? '';
    const reply = (code: number, body: unknown) => {
      res.statusCode = code;
      res.setHeader('content-type', 'application/json');
      res.end(`${JSON.stringify(body, null, 2)}\n`);
    };
    const knownSite = topology.sites.some((s) => s.name === site);
    if (url.pathname === '/status') return reply(200, { wan: wan.snapshot(), brokers: brokerRows() });
    if ((url.pathname === '/cut' || url.pathname === '/heal') && req.method === 'POST') {
      if (!knownSite)
        return reply(400, {
          error: `unknown site "${site}"; sites: ${topology.sites.map((s) => s.name).join(', ')}`,
        });
      if (url.pathname === '/cut') wan.cut(site);
      else wan.heal(site);
      out(`WAN: site ${site} ${url.pathname === '/cut' ? 'cut off' : 'healed'}`);
      return reply(200, wan.snapshot());
    }
    if (url.pathname === '/latency' && req.method === 'POST') {
      const ms = Number(url.searchParams.get('ms'));
      const jitter = Number(url.searchParams.get('jitter') ?? wan.snapshot().jitterMs);
      if (!(ms >= 0) || !(jitter >= 0))
        return reply(400, { error: 'ms and jitter must be non-negative numbers' });
      wan.setLatency(ms, jitter);
      out(`WAN: latency ${ms} ms one way, jitter ${jitter} ms`);
      return reply(200, wan.snapshot());
    }
    return reply(404, {
      error: 'use GET /status, POST /cut?site=S, POST /heal?site=S, POST /latency?ms=N&jitter=M',
    });
  });
  await new Promise<void>((r) => control.listen(0, '127.0.0.1', r));
  const controlUrl = `http://127.0.0.1:${(control.address() as { port: number }).port}`;

  const brokerRows = () =>
    [...managed.values()].map((m) => ({
      id: m.info.id,
      site: m.info.site,
      pod: m.info.pod,
      address: m.info.address,
      wanAddress: m.info.wanAddress,
      pid: m.proc?.exitCode === null && m.proc.signalCode === null ? m.proc.pid : undefined,
      log: m.log,
    }));
  const stateFile = path.join(stateDir, 'up.json');
  const writeState = () => {
    const state: UpState = {
      pid: process.pid,
      control: controlUrl,
      topology: topology.file!,
      brokers: brokerRows(),
    };
    fs.writeFileSync(stateFile, `${JSON.stringify(state, null, 2)}\n`);
  };

  const stop = async (signal: string) => {
    if (stopping) return;
    stopping = true;
    out(`\n${signal}: stopping ${managed.size} brokers and the WAN emulator`);
    await Promise.all([...managed.values()].map((m) => stopProcess(m.proc, STOP_GRACE_MS)));
    await wan.close();
    await new Promise((r) => control.close(r));
    fs.rmSync(stateFile, { force: true });
    out('stopped');
  };
  const stopped = new Promise<void>((resolve) => {
    for (const sig of ['SIGINT', 'SIGTERM'] as const) {
      process.once(sig, () => void stop(sig).then(resolve));
    }
  });

  for (const info of topology.brokers.values()) {
    const m: Managed = { info, proc: undefined, log: path.join(logDir, `${info.id}.log`), restarts: [] };
    managed.set(info.id, m);
    spawnBroker(m);
  }
  writeState();

  const t0 = Date.now();
  const ready = await waitAllServing(
    [...managed.values()],
    client.credentials,
    READY_TIMEOUT_MS,
    () => stopping,
  );
  if (!ready.ok) {
    out(`error: ${ready.message}`);
    await stop('not ready');
    process.exitCode = 1;
    return;
  }
  if (stopping) return stopped;
  const first = [...topology.brokers.values()][0]!;
  out(
    `\nwanas up: ${topology.brokers.size} brokers in ${topology.sites.length} sites SERVING after ${Date.now() - t0} ms; ` +
      `WAN ${opts.wanLatencyMs} ms one way (${2 * opts.wanLatencyMs} ms round trip)${opts.jitterMs ? ` ± ${opts.jitterMs} ms` : ''}`,
  );
  out(
    table(
      ['BROKER', 'SITE', 'POD', 'CLIENT ADDRESS', 'WAN ADDRESS', 'PID'],
      brokerRows().map((b) => [b.id, b.site, b.pod, b.address, b.wanAddress, String(b.pid ?? '-')]),
    ),
  );
  out(`logs: ${logDir}   control: ${controlUrl}`);
  out(`ready: ${[...topology.brokers.values()].map((b) => b.address).join(' ')}`);
  out('\ntry:');
  const f = client.flags ? ` ${client.flags}` : '';
  out(`  npx wanas aggregate --address ${first.address}${f} --op sessions.find --param user=alice`);
  out(`  npx wanas aggregate --address ${first.address}${f} --op pods.capacity --stream`);
  out(
    `  npx wanas aggregate --address ${first.address}${f} --op desktops.provision --param user=bob --param pool=gpu --first --prefer-site ${first.site}`,
  );
  out(`  npx wanas status --address ${first.address}${f}`);
  out(
    `  npx wanas wan cut --site ${topology.sites.at(-1)!.name} --topology ${opts.topology}   (then: wan heal)`,
  );
  if (!client.flags)
    out(`  npx buf curl --protocol grpc --http2-prior-knowledge http://${first.address} --list-services`);
  out('Ctrl-C stops everything.');
  if (opts.onReady) {
    try {
      await opts.onReady(topology, client);
    } catch (e) {
      out(`demo query failed: ${(e as Error).message}`);
    }
  }
  return stopped;
}

/**
 * Writes the CA and certificates into `dir`, and `dir/topology.yaml`: the same federation with
 * `security.mode: mtls` (data kept where the original topology keeps it). Brokers run with that file.
 */
async function withTls(t: Topology, dir: string): Promise<{ topology: Topology; client: ClientChannel }> {
  const files = await createTlsDir(dir, [...t.brokers.keys()]);
  const doc = YAML.parse(fs.readFileSync(t.file!, 'utf8')) as Record<string, unknown>;
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

async function waitAllServing(
  all: Managed[],
  credentials: grpc.ChannelCredentials,
  timeoutMs: number,
  cancelled: () => boolean,
): Promise<{ ok: true } | { ok: false; message: string }> {
  const until = Date.now() + timeoutMs;
  const problems: string[] = [];
  await Promise.all(
    all.map(async (m) => {
      const client = new grpc.Client(m.info.address, credentials);
      const probe = createHealthProbe(client.getChannel());
      try {
        for (;;) {
          if (cancelled()) return;
          if (await probe.check(500)) return;
          const p = m.proc;
          if (p && (p.exitCode !== null || p.signalCode !== null)) {
            problems.push(
              `broker ${m.info.id} exited during start-up (${p.signalCode ?? `code ${p.exitCode}`}); log: ${m.log}`,
            );
            return;
          }
          if (Date.now() >= until) {
            problems.push(`broker ${m.info.id} did not answer SERVING within ${timeoutMs} ms; log: ${m.log}`);
            return;
          }
          await new Promise((r) => setTimeout(r, 100));
        }
      } finally {
        client.close();
      }
    }),
  );
  return problems.length ? { ok: false, message: problems.join('\n') } : { ok: true };
}
