import type { BrokerInfo } from '@wanas/broker';
import * as grpc from '@grpc/grpc-js';
import type { ChildProcess } from 'node:child_process';
import * as path from 'node:path';
import { spawnBroker, stopProcess, waitServing } from './processes';

/** Delay before restarting a broker that died (with restarts on), ms. */
const RESTART_DELAY_MS = 500;
/** Most restarts of one broker per minute before the supervisor gives up on it. */
const MAX_RESTARTS_PER_MINUTE = 5;

/**
 * Where one supervised broker stands. `running`: its process is up (or starting). `restarting`: it died
 * and is started again after a short delay. `given-up`: it died too often (or restarts are off).
 * `stopped`: the supervisor stopped it.
 */
export type SupervisedState = 'running' | 'restarting' | 'given-up' | 'stopped';

/** One broker process of `wanas up`. */
interface Supervised {
  info: BrokerInfo;
  proc: ChildProcess | undefined;
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
  /** Where it serves /metrics and /status (undefined when off). */
  metricsAddress: string | undefined;
  pid: number | undefined;
  log: string;
}

/**
 * Runs every broker of a topology file as its own process (own process group: Ctrl-C reaches `up` only,
 * which stops them in order; the IPC channel makes a broker exit if `up` dies), each logging to its own
 * file, and restarts one that dies (at most MAX_RESTARTS_PER_MINUTE a minute) when asked to.
 */
export class BrokerSupervisor {
  private readonly brokers = new Map<string, Supervised>();

  constructor(
    private readonly topologyFile: string,
    private readonly logDir: string,
    private readonly restart: boolean,
    private readonly say: (line: string) => void,
    /** Called when a broker's process changes (its pid is in the state file). */
    private readonly changed: () => void,
  ) {}

  /** Starts every broker. */
  startAll(brokers: Iterable<BrokerInfo>): void {
    for (const info of brokers) {
      const s: Supervised = {
        info,
        proc: undefined,
        log: path.join(this.logDir, `${info.id}.log`),
        state: 'running',
        restarts: [],
      };
      this.brokers.set(info.id, s);
      this.spawn(s);
    }
  }

  /** Every broker's row: where it listens, its pid while alive, its log. */
  rows(): SupervisedRow[] {
    return [...this.brokers.values()].map((s) => ({
      id: s.info.id,
      site: s.info.site,
      pod: s.info.pod,
      address: s.info.address,
      wanAddress: s.info.wanAddress,
      metricsAddress: s.info.metricsAddress,
      pid: s.proc?.exitCode === null && s.proc.signalCode === null ? s.proc.pid : undefined,
      log: s.log,
    }));
  }

  get size(): number {
    return this.brokers.size;
  }

  /** Stops every broker (SIGTERM, SIGKILL after `graceMs`). */
  async stopAll(graceMs: number): Promise<void> {
    for (const s of this.brokers.values()) s.state = 'stopped';
    await Promise.all([...this.brokers.values()].map((s) => stopProcess(s.proc, graceMs)));
  }

  /** Waits until every broker answers SERVING; says which did not (exited, or not within `timeoutMs`). */
  async waitAllServing(
    credentials: grpc.ChannelCredentials,
    timeoutMs: number,
    cancelled: () => boolean,
  ): Promise<{ ok: true } | { ok: false; message: string }> {
    const problems = (
      await Promise.all(
        [...this.brokers.values()].map((s) => problemStarting(s, credentials, timeoutMs, cancelled)),
      )
    ).filter((p): p is string => !!p);
    return problems.length ? { ok: false, message: problems.join('\n') } : { ok: true };
  }

  private spawn(s: Supervised): void {
    const proc = spawnBroker({
      topologyFile: this.topologyFile,
      id: s.info.id,
      logFile: s.log,
      args: ['--grace', '3000'],
      detached: true,
    });
    s.proc = proc;
    s.state = 'running';
    proc.on('exit', (code, signal) => {
      if (s.state === 'stopped' || s.proc !== proc) return;
      this.say(`broker ${s.info.id} exited unexpectedly (${signal ?? `code ${code}`}); log: ${s.log}`);
      this.handleExit(s);
    });
  }

  /** A broker died: restart it after a delay, unless restarts are off or it died too often this minute. */
  private handleExit(s: Supervised): void {
    const now = Date.now();
    s.restarts = s.restarts.filter((t) => now - t < 60_000);
    if (!this.restart || s.restarts.length >= MAX_RESTARTS_PER_MINUTE) {
      if (this.restart)
        this.say(
          `broker ${s.info.id} restarted ${MAX_RESTARTS_PER_MINUTE} times in a minute; not restarting it again`,
        );
      s.state = 'given-up';
      return;
    }
    s.restarts.push(now);
    s.state = 'restarting';
    setTimeout(() => {
      if (s.state !== 'restarting') return;
      this.say(`restarting broker ${s.info.id}`);
      this.spawn(s);
      this.changed();
    }, RESTART_DELAY_MS);
  }
}

/** Waits for one broker's SERVING; the problem, or undefined when it serves (or waiting was cancelled). */
async function problemStarting(
  s: Supervised,
  credentials: grpc.ChannelCredentials,
  timeoutMs: number,
  cancelled: () => boolean,
): Promise<string | undefined> {
  try {
    await waitServing(s.info.address, s.proc!, { timeoutMs, credentials, cancelled });
    return undefined;
  } catch (e) {
    return `broker ${s.info.id}: ${(e as Error).message}; log: ${s.log}`;
  }
}
