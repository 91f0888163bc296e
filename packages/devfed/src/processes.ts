import * as grpc from '@grpc/grpc-js';
import * as path from 'node:path';
import { createHealthProbe } from '@wanas/connection-manager';
import { spawn, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';

/**
 * The waiting channel reconnects within 50-100 ms of a refused connect. grpc-js's default first backoff
 * is a second, and a broker is rarely listening at the first try: every start waited that second out.
 */
const WAIT_BACKOFF: grpc.ChannelOptions = {
  'grpc.initial_reconnect_backoff_ms': 50,
  'grpc.max_reconnect_backoff_ms': 100,
};

/**
 * Polls grpc.health.v1 on `address` until it answers SERVING. Throws when `proc` exits first (with
 * `describe()` in the message, e.g. the last log lines) or after `timeoutMs`.
 */
export async function waitServing(
  address: string,
  proc: ChildProcess,
  opts: {
    timeoutMs: number;
    credentials?: grpc.ChannelCredentials;
    channelOptions?: grpc.ChannelOptions;
    describe?: () => string;
    /** Stop waiting (resolves) once this returns true. */
    cancelled?: () => boolean;
  },
): Promise<void> {
  const client = new grpc.Client(address, opts.credentials ?? grpc.credentials.createInsecure(), {
    ...WAIT_BACKOFF,
    ...opts.channelOptions,
  });
  const probe = createHealthProbe(client.getChannel());
  const until = Date.now() + opts.timeoutMs;
  const why = () => (opts.describe ? `: ${opts.describe()}` : '');
  try {
    while (!opts.cancelled?.() && !(await probe.check(500))) {
      if (proc.exitCode !== null || proc.signalCode !== null)
        throw new Error(`process at ${address} exited (${proc.exitCode ?? proc.signalCode})${why()}`);
      if (Date.now() > until) throw new Error(`${address} not SERVING after ${opts.timeoutMs} ms${why()}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  } finally {
    client.close();
  }
}

/**
 * Stops a process: SIGCONT (it may be frozen), `signal` (SIGTERM; `wanas up` stops its brokers in order on
 * SIGINT), SIGKILL after `graceMs`; resolves once it exited.
 */
export async function stopProcess(
  proc: ChildProcess | undefined,
  graceMs = 5000,
  signal: NodeJS.Signals = 'SIGTERM',
): Promise<void> {
  if (!proc || proc.exitCode !== null || proc.signalCode !== null) return;
  const exited = new Promise((r) => proc.once('exit', r));
  proc.kill('SIGCONT');
  proc.kill(signal);
  const t = setTimeout(() => proc.kill('SIGKILL'), graceMs);
  await exited;
  clearTimeout(t);
}

/** The compiled `wanas` command (packages/cli/dist/bin.js), which the harness runs brokers with: from src/ under ts-jest, or from dist/. */
export const WANAS_BIN = path.resolve(__dirname, '../../cli/dist/bin.js');

/**
 * Node flags every broker runs with (here, in the Docker image's ENTRYPOINT, and in the README's advice):
 * V8's young generation at most 4 MB per semi-space instead of 16. A broker's garbage is short-lived (one
 * call's objects), so the larger nursery only holds more of it: measured, a broker of a 100-site × 10-pod
 * topology 123 → 101 MB RSS, and CPU per aggregate unchanged (0.98× in an interleaved A/B, BENCHMARKS.md).
 */
export const BROKER_NODE_FLAGS = ['--max-semi-space-size=4'];

/** How {@link spawnBroker} starts one `wanas broker` process. */
export interface BrokerProcessOptions {
  topologyFile: string;
  /** `--id` (omitted for a DNS pod's replica, which passes `--pod` in `args`). */
  id?: string;
  /** Append stdout and stderr to this file; without one, stderr is a pipe the caller reads. */
  logFile?: string;
  logLevel?: 'error' | 'warn' | 'info' | 'debug';
  /** More `wanas broker` flags (e.g. `--grace 3000`, `--inject-slow 0.05:500`). */
  args?: string[];
  /** Node flags before the script (e.g. `--cpu-prof`). */
  nodeArgs?: string[];
  env?: Record<string, string>;
  /** Its own process group: a Ctrl-C at the terminal reaches the parent only, which stops it in order. */
  detached?: boolean;
}

/**
 * Starts one broker process, the one way every harness here does (the federation, `wanas up`, tests): JSON
 * logs, and an IPC channel with WANAS_EXIT_WITH_PARENT so it exits when its parent goes away (even by
 * SIGKILL).
 */
export function spawnBroker(o: BrokerProcessOptions): ChildProcess {
  const argv = [
    ...BROKER_NODE_FLAGS,
    ...(o.nodeArgs ?? []),
    WANAS_BIN,
    'broker',
    '--topology',
    o.topologyFile,
    ...(o.id ? ['--id', o.id] : []),
    '--log-format',
    'json',
    ...(o.logLevel ? ['--log-level', o.logLevel] : []),
    ...(o.args ?? []),
  ];
  const log = o.logFile ? fs.openSync(o.logFile, 'a') : undefined;
  try {
    return spawn(process.execPath, argv, {
      detached: o.detached,
      stdio: log === undefined ? ['ignore', 'ignore', 'pipe', 'ipc'] : ['ignore', log, log, 'ipc'],
      env: { ...process.env, WANAS_EXIT_WITH_PARENT: '1', ...o.env },
    });
  } finally {
    if (log !== undefined) fs.closeSync(log);
  }
}
