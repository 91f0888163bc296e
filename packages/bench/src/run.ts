import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { table } from '@wanas/devfed';
import { describeFailure, failurePart, type FailureResult } from './part-failure';
import { describePlacement, placementPart, type PlacementResult } from './part-placement';
import { scalePart } from './part-scale';
import { describeScale } from './scale-describe';
import { cpuPart, describeCpu } from './part-cpu';
import { latencyPart } from './part-latency';
import { describeTracing, tracingPart } from './part-tracing';
import { describeStore, storePart } from './part-store';
import { describeUpstream, upstreamPart } from './part-upstream';
import { failoverPart, tailPart, throughputPart, type BenchCounts, type Progress } from './parts';
import { latencySvg } from './svg';
import { describeOverload, overloadPart } from './part-overload';
import { coalescePart, describeCoalesce } from './part-coalesce';

/** The parts of `wanas bench`, in the order they run. */
export const PARTS = [
  'latency',
  'cpu',
  'tracing',
  'failover',
  'failure',
  'placement',
  'tail',
  'throughput',
  'scale',
  'upstream',
  'store',
  'overload',
  'coalesce',
] as const;
/** One part of the benchmark. */
export type Part = (typeof PARTS)[number];

async function progressBar(): Promise<Progress & { stop(): void }> {
  const { default: cliProgress } = await import('cli-progress');
  const bar = new cliProgress.SingleBar(
    {
      format: '{label} [{bar}] {value}/{total}',
      hideCursor: true,
      clearOnComplete: true,
      stream: process.stderr,
    },
    cliProgress.Presets.shades_classic,
  );
  let running = false;
  return {
    start(label, total) {
      // Off a terminal the bar does not draw: WANAS_BENCH_VERBOSE=1 says each step on a line of its own.
      if (process.env.WANAS_BENCH_VERBOSE === '1')
        process.stderr.write(`${new Date().toISOString()} ${label}\n`);
      if (running) bar.stop();
      bar.start(total || 1, 0, { label: label.padEnd(44) });
      if (!total) bar.setTotal(1_000_000);
      running = true;
    },
    tick(n = 1) {
      bar.increment(n);
    },
    stop() {
      if (running) bar.stop();
      running = false;
    },
  };
}

const ratio = (a: number, b: number) => `${(a / b).toFixed(2)}×`;

/** A latency summary's P50, P90, P99 and MAX cells. */
const cells = (x: { p50Ms: number; p90Ms: number; p99Ms: number; maxMs: number }) => [
  String(x.p50Ms),
  String(x.p90Ms),
  String(x.p99Ms),
  String(x.maxMs),
];

/** Human lines for one part's result. */
function describe(
  r: Record<string, unknown> & { part: Part },
  describeFailure?: (r: FailureResult) => string,
  describePlacement?: (r: PlacementResult) => string,
): string {
  if (r.part === 'failure' && describeFailure) return describeFailure(r as unknown as FailureResult);
  if (r.part === 'placement' && describePlacement) return describePlacement(r as unknown as PlacementResult);
  const byPart: Partial<Record<Part, (x: never) => string>> = {
    latency: describeLatency,
    cpu: describeCpu,
    tracing: describeTracing,
    failover: describeFailover,
    tail: describeTail,
    scale: describeScale,
    throughput: describeThroughput,
    upstream: describeUpstream,
    store: describeStore,
    overload: describeOverload,
    coalesce: describeCoalesce,
  };
  const describePart = byPart[r.part];
  return describePart ? describePart(r as never) : JSON.stringify(r);
}

function describeLatency(l: Awaited<ReturnType<typeof latencyPart>>): string {
  const rows = [
    ['limit: 1 warm WAN call', String(l.limitMs), '', String(l.limitP99Ms), ''],
    ['wanas', ...cells(l.wanas)],
    ['flat (warm channels)', ...cells(l.alternatives.flat)],
    ['flat (new connection per call)', ...cells(l.alternatives.flatNewConnection)],
    ['sequential (site after site)', ...cells(l.alternatives.sequential)],
  ];
  return [
    table(['LATENCY (ms)', 'P50', 'P90', 'P99', 'MAX'], rows),
    `wanas p50 / limit p50 = ${ratio(l.wanas.p50Ms, l.limitMs)} (target ≤ 1.1×); wanas p99 / limit p99 = ${ratio(l.wanas.p99Ms, l.limitP99Ms)} (target ≤ 1.25×)`,
    `growth in a remote site: 1 pod p50 ${l.growth.onePodP50Ms} ms → ${l.growth.pods} pods ${l.growth.manyPodsP50Ms} ms = ${((l.growth.manyPodsP50Ms / l.growth.onePodP50Ms - 1) * 100).toFixed(1)}% (target ≤ +20%)`,
    `wanas / flat (warm channels): p50 ${ratio(l.wanas.p50Ms, l.alternatives.flat.p50Ms)}, p99 ${ratio(l.wanas.p99Ms, l.alternatives.flat.p99Ms)} (target ≤ 1.0× both)`,
    `flat-new-connection p50 / wanas p50 = ${ratio(l.alternatives.flatNewConnection.p50Ms, l.wanas.p50Ms)} (target ≥ 2.5×); sequential p50 / wanas p50 = ${ratio(l.alternatives.sequential.p50Ms, l.wanas.p50Ms)}`,
    `WAN connections held by the entry: wanas ${l.wanConnections.wanas} (remote sites: ${l.remoteSites}), flat ${l.wanConnections.flat} (remote pods); WAN bytes per aggregate: wanas ${l.wanBytesPerAggregate.wanas}, flat ${l.wanBytesPerAggregate.flat}`,
    `pods answered: wanas ${(l.podsAnswered.wanas * 100).toFixed(1)}%, flat ${(l.podsAnswered.flat * 100).toFixed(1)}%; transport: ${l.transport === 'mtls' ? 'mTLS (a new connection pays TCP + TLS 1.3 handshakes)' : 'plaintext (a new connection pays the TCP handshake)'}`,
  ].join('\n');
}

function describeFailover(f: Awaited<ReturnType<typeof failoverPart>>): string {
  const rows = [
    ['healthy', ...cells(f.healthy)],
    ['SIGKILL: first 10', ...cells(f.kill.first10)],
    ['SIGKILL: next', ...cells(f.kill.next)],
    ['SIGSTOP: first 10', ...cells(f.freeze.first10)],
    ['SIGSTOP: next', ...cells(f.freeze.next)],
  ];
  return [
    table(['FAILOVER (ms)', 'P50', 'P90', 'P99', 'MAX'], rows),
    `killed ${f.kill.killed.length} brokers (${f.kill.killed.join(' ')}); pods answered ${(f.kill.podsAnswered * 100).toFixed(2)}%`,
    `froze ${f.freeze.frozen.length} brokers; pods answered ${(f.freeze.podsAnswered * 100).toFixed(2)}%; attempt timeout ${f.attemptTimeoutMs} ms; warm channels per target ${f.warmPerTarget}; hedging ${f.hedge ? 'on (the default)' : 'off'}`,
    `after detection: kill p99 / healthy p99 = ${ratio(f.kill.next.p99Ms, f.healthy.p99Ms)}, freeze p99 / healthy p99 = ${ratio(f.freeze.next.p99Ms, f.healthy.p99Ms)} (target ≤ 1.1×)`,
  ].join('\n');
}

function describeTail(t: Awaited<ReturnType<typeof tailPart>>): string {
  return [
    table(
      ['TAIL (ms)', 'P50', 'P90', 'P99', 'MAX'],
      [
        ['healthy', ...cells(t.healthy)],
        ['5% answers +500 ms, hedging off', ...cells(t.hedgingOff)],
        ['5% answers +500 ms, hedging on', ...cells(t.hedgingOn)],
      ],
    ),
    `hedged p99 / healthy p99 = ${ratio(t.hedgingOn.p99Ms, t.healthy.p99Ms)} (target ≤ 1.3×); extra requests ${(t.extraRequestsShare * 100).toFixed(1)}% (target ≤ 10%)`,
  ].join('\n');
}

function describeThroughput(t: Awaited<ReturnType<typeof throughputPart>>): string {
  // Calls per aggregate from s1-p1-a on 3 × 3 × 1: the Aggregate, 2 LocalRequests, 2 SiteRequests, 2 × 2 LocalRequests.
  const callsPerAggregate = 9;
  const best = Math.max(...t.wanas.map((w) => w.aggregatesPerSecond));
  return [
    table(
      ['THROUGHPUT', 'IN FLIGHT', 'PER SECOND', 'P99 (ms)', 'ERRORS'],
      [
        ...t.wanas.map((w) => [
          'wanas aggregates (9 pods each)',
          String(w.concurrency),
          String(w.aggregatesPerSecond),
          String(w.p99Ms),
          String(w.errors),
        ]),
        [
          'raw grpc-js unary echo',
          String(t.rawEcho.concurrency),
          String(t.rawEcho.callsPerSecond),
          String(t.rawEcho.p99Ms),
          '0',
        ],
      ],
    ),
    `efficiency = ${best} aggregates/s × ${callsPerAggregate} calls ÷ ${t.rawEcho.callsPerSecond} raw calls/s = ${((best * callsPerAggregate) / t.rawEcho.callsPerSecond).toFixed(2)} (target ≥ 1.0)`,
  ].join('\n');
}

function machine(): string {
  const cpus = os.cpus();
  return `${cpus.length} × ${cpus[0]?.model ?? 'cpu'}, ${(os.totalmem() / 2 ** 30).toFixed(0)} GiB, ${os.type()} ${os.release()}, Node ${process.version}`;
}

/** The flags of `wanas bench`. */
export interface BenchFlags {
  json?: boolean;
  requests: number;
  quick?: boolean;
  smoke?: boolean;
  warmPerTarget: number;
  hedge: boolean;
  tls?: boolean;
  out: string;
  markdown: boolean;
  /**
   * Federation sessions of the brokers each part starts: `on`, `off` (unary calls only), or `both` (each
   * part runs twice in this run, sessions on then off: their figures side by side). Default: the brokers'
   * default (on), or `WANAS_SESSIONS`.
   */
  sessions?: 'on' | 'off' | 'both';
}

/** The sessions settings each part runs with: the brokers' own default (undefined), or on and/or off. */
function sessionModes(o: BenchFlags): ('on' | 'off' | undefined)[] {
  if (o.sessions === undefined) return [undefined];
  if (o.sessions === 'both') return ['on', 'off'];
  if (o.sessions === 'on' || o.sessions === 'off') return [o.sessions];
  throw new BenchUsageError(`--sessions must be on, off or both, not "${String(o.sessions)}"`);
}

/** A bad part name or flag (the CLI says it and exits 2). */
export class BenchUsageError extends Error {}

/**
 * Runs the chosen parts (all when none), prints each part's tables, saves every sample and a chart under
 * `o.out`, and rewrites BENCHMARKS.md unless `o.markdown` is false. Throws {@link BenchUsageError} for a bad
 * part or flag.
 */
export async function runBench(parts: string[], o: BenchFlags): Promise<void> {
  const chosen = (parts.length ? parts : [...PARTS]) as Part[];
  for (const p of chosen)
    if (!PARTS.includes(p)) throw new BenchUsageError(`unknown part "${p}" (parts: ${PARTS.join(', ')})`);
  const requests = o.smoke ? 10 : o.quick ? 200 : o.requests;
  if (!Number.isInteger(requests) || requests < 10)
    throw new BenchUsageError('--requests must be an integer ≥ 10');
  const counts: BenchCounts = {
    requests,
    slowAlternatives: o.smoke ? 5 : Math.max(20, Math.round(requests / 5)),
    throughputSeconds: o.smoke ? 1 : o.quick ? 3 : 5,
    smoke: !!o.smoke,
    warmPerTarget: o.warmPerTarget,
    hedge: o.hedge,
    tls: !!o.tls,
  };
  fs.mkdirSync(o.out, { recursive: true });
  const progress = await progressBar();
  const say = (r: Record<string, unknown> & { part: Part }) =>
    describe(r, describeFailure, describePlacement);
  const results: (Record<string, unknown> & { part: Part })[] = [];
  const started = new Date();
  const modes = sessionModes(o);
  for (const [part, sessions] of chosen.flatMap((p) => modes.map((m) => [p, m] as const))) {
    // The brokers a part starts read it from their environment (inherited).
    if (sessions) process.env.WANAS_SESSIONS = sessions;
    const fn = {
      latency: latencyPart,
      cpu: cpuPart,
      tracing: tracingPart,
      failover: failoverPart,
      failure: failurePart,
      placement: placementPart,
      tail: tailPart,
      throughput: throughputPart,
      scale: scalePart,
      upstream: upstreamPart,
      store: storePart,
      overload: overloadPart,
      coalesce: coalescePart,
    }[part];
    const r = (await fn(counts, progress)) as unknown as Record<string, unknown> & { part: Part };
    if (sessions) r.sessions = sessions;
    progress.stop();
    results.push(r);
    const { series, ...summary } = r as { series?: Record<string, number[]> };
    const key = sectionOf(r);
    fs.writeFileSync(
      path.join(o.out, `${key}.json`),
      `${JSON.stringify({ ...r, machine: machine(), at: new Date().toISOString(), requests }, null, 1)}\n`,
    );
    if (series)
      fs.writeFileSync(
        path.join(o.out, `${key}.svg`),
        latencySvg(`${key}: latency distribution (CDF), ${machine()}`, series),
      );
    process.stdout.write(`\n${say(r)}\n`);
    void summary;
  }
  if (o.markdown) writeMarkdown(results, counts, started, o.out, say);
  if (o.json)
    for (const r of results) {
      const { series: _series, ...rest } = r as { series?: unknown };
      process.stdout.write(`${JSON.stringify(rest)}\n`);
    }
}

/** Where a result is saved and shown: its part, or `latency_mtls` for a latency run over mTLS (kept beside the plaintext one). */
function sectionOf(r: Record<string, unknown> & { part: Part }): string {
  const base = r.part === 'latency' && r.transport === 'mtls' ? 'latency_mtls' : r.part;
  return r.sessions === 'off' ? `${base}_unary` : base;
}

/** Markdown sections in order, with their headings. */
const SECTIONS: [string, string][] = [
  ['latency', 'latency'],
  ['latency_mtls', 'latency over mTLS (`--tls`)'],
  ['cpu', 'CPU per aggregate'],
  ['tracing', 'tracing cost'],
  ['failover', 'failover'],
  ['failure', 'failure paths'],
  ['placement', 'placement and request modes'],
  ['tail', 'tail'],
  ['throughput', 'throughput'],
  ['scale', 'scale'],
  ['upstream', 'configured operations (upstream gRPC backend)'],
  ['store', 'pod store: SQLite and PostgreSQL'],
  ['overload', 'overload (open loop, 0.25× to 4× capacity and back)'],
  ['coalesce', 'identical reads once (coalescing and the results cache)'],
];

function writeMarkdown(
  results: (Record<string, unknown> & { part: Part })[],
  counts: BenchCounts,
  started: Date,
  out: string,
  say: (r: Record<string, unknown> & { part: Part }) => string,
): void {
  const file = 'BENCHMARKS.md';
  const sections = new Map<string, string>();
  if (fs.existsSync(file)) {
    for (const m of fs.readFileSync(file, 'utf8').matchAll(/<!-- part:(\w+) -->\n([\s\S]*?)<!-- \/part -->/g))
      sections.set(m[1]!, m[2]!);
  }
  for (const r of results) {
    const key = sectionOf(r);
    const chart = fs.existsSync(path.join(out, `${key}.svg`))
      ? `\n![${key}](${path.join(out, `${key}.svg`)})\n`
      : '';
    sections.set(
      key,
      `Run ${started.toISOString()} on ${machine()}, ${counts.requests} requests per series.\n\n\`\`\`\n${say(r)}\n\`\`\`\n${chart}\n`,
    );
  }
  const body = [
    '# Benchmarks',
    '',
    "Real broker processes on loopback behind the WAN emulator (`wanas up`'s delaying TCP proxy). Rerun all with",
    '`npm run bench` (about 20 minutes on 2 cores), one part with `npm run bench -- latency` (`cpu`, `tracing`, `failover`, `failure`, `placement`, `tail`,',
    '`throughput`, `scale`, `upstream`, `store`, `overload`), a fast look with `npm run bench -- --quick`, the latency part over mTLS with',
    '`npm run bench -- latency --tls`, sessions on and off side by side with `--sessions both`. Results (with every sample) are saved in',
    '`bench/results/`; `--json` prints one JSON object per part. This machine is shared and noisy: compare ratios',
    'within one run, not absolute numbers across runs.',
    '',
    ...SECTIONS.flatMap(([p, heading]): [string, string][] => [
      [p, heading],
      [`${p}_unary`, `${heading}, sessions off (unary calls)`],
    ])
      .filter(([p]) => sections.has(p))
      .flatMap(([p, heading]) => [
        `## ${heading}`,
        '',
        `<!-- part:${p} -->`,
        sections.get(p)!.trimEnd(),
        '<!-- /part -->',
        '',
      ]),
  ].join('\n');
  // Hand-written analysis below "## Notes" survives reruns.
  const previous = fs.existsSync(file) ? fs.readFileSync(file, 'utf8') : '';
  const notes = previous.indexOf('\n## Notes');
  fs.writeFileSync(file, notes >= 0 ? `${body}${previous.slice(notes + 1)}` : body);
}
