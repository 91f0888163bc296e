import * as grpc from '@grpc/grpc-js';
import * as path from 'node:path';
import { createHealthProbe } from '@wanas/connection-manager';
import type { ChildProcess } from 'node:child_process';

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
  },
): Promise<void> {
  const client = new grpc.Client(
    address,
    opts.credentials ?? grpc.credentials.createInsecure(),
    opts.channelOptions ?? {},
  );
  const probe = createHealthProbe(client.getChannel());
  const until = Date.now() + opts.timeoutMs;
  const why = () => (opts.describe ? `: ${opts.describe()}` : '');
  try {
    while (!(await probe.check(500))) {
      if (proc.exitCode !== null || proc.signalCode !== null)
        throw new Error(`process at ${address} exited (${proc.exitCode ?? proc.signalCode})${why()}`);
      if (Date.now() > until) throw new Error(`${address} not SERVING after ${opts.timeoutMs} ms${why()}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  } finally {
    client.close();
  }
}

/** Stops a process: SIGCONT (it may be frozen), SIGTERM, SIGKILL after `graceMs`; resolves once it exited. */
export async function stopProcess(proc: ChildProcess | undefined, graceMs = 5000): Promise<void> {
  if (!proc || proc.exitCode !== null || proc.signalCode !== null) return;
  const exited = new Promise((r) => proc.once('exit', r));
  proc.kill('SIGCONT');
  proc.kill('SIGTERM');
  const t = setTimeout(() => proc.kill('SIGKILL'), graceMs);
  await exited;
  clearTimeout(t);
}

/** The compiled `wanas` command (packages/cli/dist/bin.js), which the harness runs brokers with: from src/ under ts-jest, or from dist/. */
export const WANAS_BIN = path.resolve(__dirname, '../../cli/dist/bin.js');
