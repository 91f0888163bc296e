import { loadDevPackage } from './dev-packages';
import type { Command } from 'commander';

/** What the emulator reports after a change (the control's JSON). */
interface WanSnapshot {
  latencyMs: number;
  jitterMs: number;
  cutSites: string[];
}

/**
 * Calls the control of a running `wanas up`; prints the change in one line (`said` of the emulator's new
 * state), or the whole JSON with `json` (and always for `status`). Exits 2 for bad input, 1 when `up` is
 * not reachable.
 */
async function control(
  topology: string,
  method: 'GET' | 'POST',
  route: string,
  said?: (w: WanSnapshot) => string,
  json = false,
): Promise<void> {
  let base: string;
  try {
    const { readUpState } = await loadDevPackage<typeof import('@wanas/devfed')>('@wanas/devfed', 'wan');
    base = readUpState(topology).control;
  } catch (e) {
    process.stderr.write(`error: ${(e as Error).message}\n`);
    process.exit(2);
  }
  const res = await fetch(`${base}${route}`, { method }).catch((e: unknown) => {
    process.stderr.write(`error: cannot reach "wanas up" at ${base}: ${(e as Error).message}\n`);
    process.exit(1);
  });
  const body = await res.text();
  if (!res.ok) {
    let message = body.trim();
    try {
      message = (JSON.parse(body) as { error?: string }).error ?? message;
    } catch {
      // not JSON: print as it is
    }
    process.stderr.write(`error: ${message}\n`);
    process.exit(2);
  }
  if (json || !said) process.stdout.write(body);
  else process.stdout.write(`${said(JSON.parse(body) as WanSnapshot)}\n`);
}

const cutList = (w: WanSnapshot) => `cut off now: ${w.cutSites.length ? w.cutSites.join(', ') : 'none'}`;

/** `wanas wan cut|heal|latency|status`: controls the WAN emulator of a running `wanas up`. */
export function registerWan(program: Command): void {
  const wan = program.command('wan').description('control the WAN emulator of a running "wanas up"');
  const topo = ['-t, --topology <file>', 'the topology "wanas up" runs', 'examples/demo.yaml'] as const;
  wan
    .command('cut')
    .description('cut a site off: its inbound WAN links drop every byte (a partition)')
    .requiredOption('-s, --site <site>', 'site to cut off')
    .option(...topo)
    .option('--json', "print the emulator's state (every link) as JSON")
    .action((o: { site: string; topology: string; json?: boolean }) =>
      control(
        o.topology,
        'POST',
        `/cut?site=${encodeURIComponent(o.site)}`,
        (w) => `site ${o.site} cut off: its WAN links drop every byte (${cutList(w)})`,
        o.json,
      ),
    );
  wan
    .command('heal')
    .description('heal a site that was cut off')
    .requiredOption('-s, --site <site>', 'site to heal')
    .option(...topo)
    .option('--json', "print the emulator's state (every link) as JSON")
    .action((o: { site: string; topology: string; json?: boolean }) =>
      control(
        o.topology,
        'POST',
        `/heal?site=${encodeURIComponent(o.site)}`,
        (w) => `site ${o.site} healed: its WAN links carry bytes again (${cutList(w)})`,
        o.json,
      ),
    );
  wan
    .command('latency')
    .description('change the one-way WAN delay')
    .requiredOption('--ms <n>', 'one-way delay, ms')
    .option('--jitter <n>', 'jitter, ms')
    .option(...topo)
    .option('--json', "print the emulator's state (every link) as JSON")
    .action((o: { ms: string; jitter?: string; topology: string; json?: boolean }) =>
      control(
        o.topology,
        'POST',
        `/latency?ms=${encodeURIComponent(o.ms)}${o.jitter ? `&jitter=${encodeURIComponent(o.jitter)}` : ''}`,
        (w) =>
          `WAN delay now ${w.latencyMs} ms one way (${2 * w.latencyMs} ms round trip), jitter ${w.jitterMs} ms`,
        o.json,
      ),
    );
  wan
    .command('status')
    .description('links, bytes, cut sites and broker processes (JSON)')
    .option(...topo)
    .action((o: { topology: string }) => control(o.topology, 'GET', '/status'));
}
