import { execFile } from 'node:child_process';

/** What a finished command printed, and how it ended (`status` -1 when it was killed). */
export interface RunResult {
  status: number;
  stdout: string;
  stderr: string;
}

/**
 * Runs a command to its end without blocking this process: the WAN emulator of the federation harness
 * runs here, and a `spawnSync` would stall every link it carries while the command waits on them.
 */
export function run(cmd: string, args: string[], timeoutMs = 60_000): Promise<RunResult> {
  return new Promise((resolve) => {
    const child = execFile(
      cmd,
      args,
      { encoding: 'utf8', timeout: timeoutMs, maxBuffer: 64 * 1024 * 1024 },
      (err, stdout, stderr) =>
        resolve({ status: err ? (typeof err.code === 'number' ? err.code : -1) : 0, stdout, stderr }),
    );
    child.stdin?.end();
  });
}
