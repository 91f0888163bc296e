/**
 * `wanas bench --smoke` on some parts, as the bench-smoke tests run it: tiny topologies, real processes,
 * the WAN emulator, one JSON object per part read from the output. Timings are not asserted: BENCHMARKS.md
 * holds the measurements.
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { WANAS_BIN } from './federation';

/** What a smoke run printed: each part's JSON by name, in the order they ran, and the files it saved. */
export interface SmokeRun {
  parts: string[];
  part<T>(name: string): T;
  saved(file: string): boolean;
}

/** Runs the parts in a temporary results folder, checks the run ended well, and gives its output to `check`. */
export function benchSmoke(parts: string[], check: (run: SmokeRun) => void): void {
  const out = fs.mkdtempSync(path.join(os.tmpdir(), 'wanas-bench-smoke-'));
  try {
    const r = spawnSync(
      process.execPath,
      [WANAS_BIN, 'bench', ...parts, '--smoke', '--json', '--no-markdown', '--out', out],
      { encoding: 'utf8', timeout: 420_000 },
    );
    // The progress bar only draws on a terminal; what remains on stderr must not be an error.
    expect(r.stderr).not.toMatch(/error/i);
    expect(r.status).toBe(0);
    const json = r.stdout
      .trim()
      .split('\n')
      .filter((l) => l.startsWith('{"part"'))
      .map((l) => JSON.parse(l) as { part: string } & Record<string, unknown>);
    check({
      parts: json.map((j) => j.part),
      part: <T>(name: string) => json.find((j) => j.part === name) as T,
      saved: (file) => fs.existsSync(path.join(out, file)),
    });
  } finally {
    fs.rmSync(out, { recursive: true, force: true });
  }
}
