import * as grpc from '@grpc/grpc-js';
import type { ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import { spawnBroker, stopProcess, waitServing, type BrokerProcessOptions } from './processes';

/** Delay before restarting a broker that died (with restarts on), ms. */
const RESTART_DELAY_MS = 500;
/** Most restarts of one broker per minute before the supervisor gives up on it. */
const MAX_RESTARTS_PER_MINUTE = 5;

/** One broker of a local federation: where it listens, and its process while one runs. */
export interface DevBroker {
  id: string;
  site: string;
  pod: string;
  address: string;
  wanAddress: string;
  /** Where it serves the console, /metrics and /status (undefined when off); passed as --metrics-address. */
  metricsAddress?: string;
  /** Its current process (set by the supervisor at every start). */
  proc: ChildProcess | undefined;
}

/**
 * Where one supervised broker stands. `running`: its process is up (or starting). `restarting`: it died
 * and is started again after a short delay. `given-up`: it died too often, or restarts are off (a test
 * that killed it starts it again with {@link BrokerSupervisor.start}). `stopped`: the supervisor stopped it.
 */
export type SupervisedState = 'running' | 'restarting' | 'given-up' | 'stopped';

/** One process under supervision, and the brokers it runs (one, or a site's several: `brokersPerProcess`). */
interface Supervised {
  brokers: DevBroker[];
  log: string;
  state: SupervisedState;
  restarts: number[];
}

/** One row of `wanas up`'s table and state file. */
export interface SupervisedRow {
  id: string;
  site: string;
  pod: string;
  address: string;
  wanAddress: string;
  metricsAddress: string | undefined;
  pid: number | undefined;
  log: string;
}

/** How a {@link BrokerSupervisor} runs its brokers. */
export interface SupervisorOptions {
  topologyFile: string;
  /** Each broker's log file (stdout and stderr appended). */
  logFile: (id: string) => string;
  /** Restart a broker that died (at most MAX_RESTARTS_PER_MINUTE a minute). */
  restart: boolean;
  /** More of `spawnBroker`'s options per broker (flags, Node flags, environment, log level, detached). */
  spawnOptions?: (b: DevBroker) => Partial<BrokerProcessOptions>;
  /** Where it says that a broker died or restarts (default: silent). */
  say?: (line: string) => void;
  /** Called when a broker's process changes (a restart). */
  changed?: () => void;
  /**
   * Brokers of one site that share a process (default 1): each still has its own servers, channels and
   * store, but they share one event loop and heap (`wanas broker --id a,b,c`), so that a federation at the
   * product's limits runs on a few cores. A process that dies takes all of its brokers with it.
   */
  brokersPerProcess?: number;
}

/**
 * Runs each broker of a federation as its own process, logging to its own file, and restarts one that
 * dies when asked to: the one process runner behind `wanas up`, the benchmarks and the multi-process tests.
 */
export class BrokerSupervisor {
  /** The supervised processes, by each of their brokers' ids. */
  private readonly brokers = new Map<string, Supervised>();
  private readonly processes: Supervised[] = [];

  constructor(private readonly opts: SupervisorOptions) {}

  /** Puts every broker under supervision (not started yet), grouped into processes by {@link processGroups}. */
  addAll(brokers: DevBroker[]): void {
    for (const group of processGroups(brokers, this.opts.brokersPerProcess ?? 1)) {
      const s: Supervised = {
        brokers: group,
        log: this.opts.logFile(group[0]!.id),
        state: 'given-up',
        restarts: [],
      };
      this.processes.push(s);
      for (const b of group) this.brokers.set(b.id, s);
    }
  }

  /**
   * Starts (or starts again) one broker's process; does not wait for it to serve. Refused while its
   * process runs: a second one would fight for its ports and outlive {@link stopAll}, which stops the latest.
   */
  start(id: string): void {
    const s = this.get(id);
    const first = s.brokers[0]!;
    const running = first.proc;
    if (running && running.exitCode === null && running.signalCode === null)
      throw new Error(
        `broker ${id} is already running (pid ${running.pid}); stop it before starting it again`,
      );
    const ids = s.brokers.map((b) => b.id).join(',');
    const extra = this.opts.spawnOptions?.(first) ?? {};
    const http = s.brokers.filter((b) => b.metricsAddress).map((b) => `${b.id}=${b.metricsAddress}`);
    const proc = spawnBroker({
      topologyFile: this.opts.topologyFile,
      id: ids,
      logFile: s.log,
      ...extra,
      // Each broker's HTTP listener (the console, /metrics), also where `up` gave one the topology does not.
      args: [...(http.length ? ['--metrics-address', http.join(',')] : []), ...(extra.args ?? [])],
    });
    for (const b of s.brokers) b.proc = proc;
    s.state = 'running';
    proc.on('exit', (code, signal) => {
      if (s.state === 'stopped' || first.proc !== proc) return;
      this.opts.say?.(`broker ${ids} exited unexpectedly (${signal ?? `code ${code}`}); log: ${s.log}`);
      this.handleExit(s);
    });
  }

  /** Starts every process (each runs its brokers); does not wait for them to serve. */
  startAll(): void {
    for (const s of this.processes) this.start(s.brokers[0]!.id);
  }

  /** Every broker's row: where it listens, its pid while alive, its log. */
  rows(): SupervisedRow[] {
    return this.processes
      .flatMap(({ brokers, log }) => brokers.map((b) => ({ b, log })))
      .map(({ b, log }) => ({
        id: b.id,
        site: b.site,
        pod: b.pod,
        address: b.address,
        wanAddress: b.wanAddress,
        metricsAddress: b.metricsAddress,
        pid: b.proc?.exitCode === null && b.proc.signalCode === null ? b.proc.pid : undefined,
        log,
      }));
  }

  /** Stops every broker (SIGCONT, SIGTERM, SIGKILL after `graceMs`). */
  async stopAll(graceMs: number): Promise<void> {
    for (const s of this.processes) s.state = 'stopped';
    await Promise.all(this.processes.map((s) => stopProcess(s.brokers[0]!.proc, graceMs)));
  }

  /**
   * Waits until one broker answers SERVING; throws when its process exits first or after `timeoutMs`,
   * with the last lines of its log.
   */
  async waitServing(
    id: string,
    credentials: grpc.ChannelCredentials,
    timeoutMs: number,
    cancelled?: () => boolean,
  ): Promise<void> {
    const s = this.get(id);
    const b = s.brokers.find((x) => x.id === id)!;
    await waitServing(b.address, b.proc!, {
      timeoutMs,
      credentials,
      cancelled,
      describe: () => `${logTail(s.log)}; log: ${s.log}`,
    });
  }

  /** Waits until every broker answers SERVING; says which did not (exited, or not within `timeoutMs`). */
  async waitAllServing(
    credentials: grpc.ChannelCredentials,
    timeoutMs: number,
    cancelled?: () => boolean,
  ): Promise<{ ok: true } | { ok: false; message: string }> {
    const problems = await Promise.all(
      [...this.brokers.keys()].map((id) =>
        this.waitServing(id, credentials, timeoutMs, cancelled).then(
          () => undefined,
          (e: Error) => `broker ${id}: ${e.message}`,
        ),
      ),
    );
    const failed = problems.filter((p): p is string => !!p);
    return failed.length ? { ok: false, message: failed.join('\n') } : { ok: true };
  }

  private get(id: string): Supervised {
    const s = this.brokers.get(id);
    if (!s) throw new Error(`no broker ${id}`);
    return s;
  }

  /** A broker died: restart it after a delay, unless restarts are off or it died too often this minute. */
  private handleExit(s: Supervised): void {
    const now = Date.now();
    s.restarts = s.restarts.filter((t) => now - t < 60_000);
    if (!this.opts.restart || s.restarts.length >= MAX_RESTARTS_PER_MINUTE) {
      if (this.opts.restart)
        this.opts.say?.(
          `broker ${s.brokers[0]!.id} restarted ${MAX_RESTARTS_PER_MINUTE} times in a minute; not restarting it again`,
        );
      s.state = 'given-up';
      return;
    }
    s.restarts.push(now);
    s.state = 'restarting';
    setTimeout(() => {
      if (s.state !== 'restarting') return;
      this.opts.say?.(`restarting broker ${s.brokers[0]!.id}`);
      this.start(s.brokers[0]!.id);
      this.opts.changed?.();
    }, RESTART_DELAY_MS);
  }
}

/**
 * The brokers grouped into processes of at most `n`, each of one site. Twins are kept apart: a process
 * holds the first brokers of some of a site's pods, or their second ones, never two brokers of one pod (a
 * process that dies is then a broker of each of its pods lost, not a pod).
 */
export function processGroups(brokers: DevBroker[], n: number): DevBroker[][] {
  const groups: DevBroker[][] = [];
  const sites = [...new Set(brokers.map((b) => b.site))];
  for (const site of sites) {
    const ofSite = brokers.filter((b) => b.site === site);
    const rank = (b: DevBroker) => ofSite.filter((x) => x.pod === b.pod).indexOf(b);
    const ranks = [...new Set(ofSite.map(rank))].sort((a, b) => a - b);
    for (const r of ranks) {
      const ofRank = ofSite.filter((b) => rank(b) === r);
      for (let i = 0; i < ofRank.length; i += n) groups.push(ofRank.slice(i, i + n));
    }
  }
  return groups;
}

/** The last lines of a log file, for an error message. */
export function logTail(file: string, lines = 5): string {
  try {
    const text = fs.readFileSync(file, 'utf8').trim().split('\n');
    return text.slice(-lines).join(' | ') || '(empty log)';
  } catch {
    return '(no log)';
  }
}
