/** Running the `wanas` command from tests: one-shot commands, and a `wanas up` that keeps running. */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import * as readline from 'node:readline';
import { stopProcess } from '@wanas/devfed';
import { WANAS_BIN } from './federation';

/** Runs `wanas ARGS` to its end (at most 30 s): its status, stdout and stderr. */
export function wanas(...args: string[]) {
  return wanasIn({}, ...args);
}

/** Where and with what environment a `wanas` command runs (default: the test's own). */
export interface WanasOptions {
  cwd?: string;
  env?: NodeJS.ProcessEnv;
}

/** {@link wanas} from another folder or with another environment. */
export function wanasIn(o: WanasOptions, ...args: string[]) {
  return spawnSync(process.execPath, [WANAS_BIN, ...args], { ...o, encoding: 'utf8', timeout: 30_000 });
}

/** A `wanas up` the test started. */
export interface RunningUp {
  proc: ChildProcess;
  /** Everything it printed so far (stdout and stderr). */
  output(): string;
  /** Sends `signal` (SIGINT: `up` stops its brokers in order), SIGKILL after 10 s; resolves once it exited. */
  stop(signal?: NodeJS.Signals): Promise<void>;
}

/** Starts `wanas up ARGS`; resolves once it prints its `ready:` line, rejects with its output if it exits first. */
export async function startUp(args: string[], o: WanasOptions = {}): Promise<RunningUp> {
  const proc = spawn(process.execPath, [WANAS_BIN, 'up', ...args], {
    ...o,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let output = '';
  proc.stderr!.on('data', (d: Buffer) => (output += d.toString()));
  const lines = readline.createInterface({ input: proc.stdout! });
  await new Promise<void>((resolve, reject) => {
    lines.on('line', (l) => {
      output += `${l}\n`;
      if (l.startsWith('ready:')) resolve();
    });
    proc.once('exit', (code) => reject(new Error(`wanas up exited ${code}: ${output}`)));
  });
  return {
    proc,
    output: () => output,
    stop: (signal = 'SIGINT') => stopProcess(proc, 10_000, signal),
  };
}
