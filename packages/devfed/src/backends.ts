/**
 * The pods' development backends (`wanas up` and the tests): for every service whose topology entry has a
 * `dev` command, one process per pod that has an address for it, with `{port}`, `{host}`, `{site}` and
 * `{pod}` filled in from that address. Each runs in its own process group (its shell and what the shell
 * starts stop together), logs to `logs/backend-SERVICE-SITE-POD.log`, and counts as started once its
 * port accepts connections.
 */
import { loadTopology } from '@wanas/topology';
import { spawn, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as path from 'node:path';

/** How long a backend may take to accept connections, ms. */
const BACKEND_READY_TIMEOUT_MS = 20_000;
/** Pause between connection tries while a backend starts, ms. */
const READY_POLL_MS = 50;

/** One backend process of one pod. */
export interface DevBackend {
  service: string;
  site: string;
  pod: string;
  host: string;
  port: number;
  /** The command as run (placeholders filled in). */
  command: string;
  log: string;
  proc: ChildProcess | undefined;
}

/** `host:port` (gRPC, optionally `dns:///`) or a URL (HTTP) → host and port. */
function hostPortOf(address: string): { host: string; port: number } {
  if (/^https?:\/\//.test(address)) {
    const u = new URL(address);
    return { host: u.hostname, port: Number(u.port || (u.protocol === 'https:' ? 443 : 80)) };
  }
  const a = address.replace(/^dns:\/\/\//, '');
  const i = a.lastIndexOf(':');
  return { host: a.slice(0, i).replace(/^\[|\]$/g, ''), port: Number(a.slice(i + 1)) };
}

/** The development backends of a topology file. */
export class DevBackends {
  readonly backends: DevBackend[] = [];

  constructor(
    private readonly topologyFile: string,
    private readonly logDir: string,
    /** Where the commands run (default: the topology file's folder). */
    private readonly workDir = path.dirname(path.resolve(topologyFile)),
  ) {
    const t = loadTopology(topologyFile);
    for (const [service, doc] of Object.entries(t.services)) {
      if (!doc.dev) continue;
      for (const site of t.sites)
        for (const pod of site.pods) {
          const address = pod.services[service];
          if (!address) continue;
          const { host, port } = hostPortOf(address);
          const fill: Record<string, string> = { port: String(port), host, site: site.name, pod: pod.name };
          this.backends.push({
            service,
            site: site.name,
            pod: pod.name,
            host,
            port,
            command: doc.dev.replace(/\{(port|host|site|pod)\}/g, (_, k: string) => fill[k]!),
            log: path.join(logDir, `backend-${service}-${site.name}-${pod.name}.log`),
            proc: undefined,
          });
        }
    }
  }

  /** Starts every backend and waits until each accepts connections; stops them all if one does not. */
  async startAll(): Promise<void> {
    for (const b of this.backends) this.spawn(b);
    try {
      await Promise.all(this.backends.map((b) => this.waitReady(b)));
    } catch (e) {
      await this.stopAll();
      throw e;
    }
  }

  /** The backend of a service in a pod. */
  backend(service: string, site: string, pod: string): DevBackend {
    const b = this.backends.find((x) => x.service === service && x.site === site && x.pod === pod);
    if (!b) throw new Error(`no dev backend of service ${service} in ${site}/${pod}`);
    return b;
  }

  /** Stops one backend (SIGKILL with `graceMs` 0: a crash). */
  stop(b: DevBackend, graceMs = 2000): Promise<void> {
    return stopGroup(b.proc, graceMs);
  }

  /** (Re)starts one backend, with `extraArgs` appended to its command; waits until it accepts connections. */
  async restart(b: DevBackend, extraArgs: string[] = []): Promise<void> {
    await this.stop(b);
    this.spawn(b, extraArgs);
    await this.waitReady(b);
  }

  /** Stops every backend. */
  async stopAll(graceMs = 2000): Promise<void> {
    await Promise.all(this.backends.map((b) => stopGroup(b.proc, graceMs)));
  }

  private spawn(b: DevBackend, extraArgs: string[] = []): void {
    fs.mkdirSync(this.logDir, { recursive: true });
    const out = fs.openSync(b.log, 'a');
    const command = [b.command, ...extraArgs.map(shellQuote)].join(' ');
    b.proc = spawn('/bin/sh', ['-c', `exec ${command}`], {
      cwd: this.workDir,
      stdio: ['ignore', out, out],
      detached: true,
    });
    fs.closeSync(out);
  }

  private async waitReady(b: DevBackend): Promise<void> {
    const until = Date.now() + BACKEND_READY_TIMEOUT_MS;
    for (;;) {
      const p = b.proc!;
      if (p.exitCode !== null || p.signalCode !== null)
        throw new Error(
          `backend ${b.service} of ${b.site}/${b.pod} exited (${p.exitCode ?? p.signalCode}): ${tail(b.log)}`,
        );
      if (await accepts(b.host, b.port)) return;
      if (Date.now() > until)
        throw new Error(
          `backend ${b.service} of ${b.site}/${b.pod} not listening on ${b.host}:${b.port} after ${BACKEND_READY_TIMEOUT_MS} ms: ${tail(b.log)}`,
        );
      await new Promise((r) => setTimeout(r, READY_POLL_MS));
    }
  }
}

/** Stops a process and its group (the shell's children too). */
async function stopGroup(proc: ChildProcess | undefined, graceMs: number): Promise<void> {
  if (!proc || proc.exitCode !== null || proc.signalCode !== null || !proc.pid) return;
  const exited = new Promise((r) => proc.once('exit', r));
  const kill = (sig: NodeJS.Signals) => {
    try {
      process.kill(-proc.pid!, sig);
    } catch {
      proc.kill(sig); // the group is gone already: the process alone
    }
  };
  kill(graceMs > 0 ? 'SIGTERM' : 'SIGKILL');
  const t = setTimeout(() => kill('SIGKILL'), graceMs);
  await exited;
  clearTimeout(t);
}

function accepts(host: string, port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect({ host, port });
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
  });
}

function shellQuote(s: string): string {
  return /^[A-Za-z0-9_./:=@-]+$/.test(s) ? s : `'${s.replace(/'/g, `'\\''`)}'`;
}

function tail(file: string): string {
  try {
    return fs.readFileSync(file, 'utf8').trim().split('\n').slice(-5).join(' | ');
  } catch {
    return '(no log)';
  }
}
