/**
 * Where a served request's CPU goes, by stage: a V8 CPU profile (`--cpu-prof`) of a pod broker that serves
 * only LocalRequests and of a representative that serves SiteRequests, each sample given to the stage of
 * the innermost frame a rule names (a `JSON.stringify` called by winston is logging; grpc-js under the
 * fan-out is transport). Printed by the cpu part, so the next person sees what is left to take.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { DevFederation } from '@wanas/devfed';
import { untilAllAnswer } from './parts';

/** The stages a sample is given to, in the order they are printed. */
export const STAGES = [
  'decode',
  'encode',
  'middleware',
  'admission',
  'coalesce',
  'plan',
  'fan-out',
  'operation',
  'log',
  'metrics',
  'transport',
  'gc',
  'native',
  'other',
] as const;
/** One stage. `native`: V8's "(program)", native code no JavaScript frame accounts for. */
export type Stage = (typeof STAGES)[number];

/** ms of CPU per request served, by stage, and in all. */
export interface StageFigures {
  requests: number;
  totalMs: number;
  byStage: Record<Stage, number>;
}

/** What the cpu part reports: a LocalRequest served at a pod broker, a SiteRequest at a representative. */
export interface CpuStages {
  shape: string;
  local: StageFigures;
  site: StageFigures;
}

/** The parts of a `.cpuprofile` read here. */
export interface CpuProfile {
  nodes: { id: number; callFrame: { functionName: string; url: string }; children?: number[] }[];
  startTime: number;
  samples: number[];
  timeDeltas: number[];
}

/** Rules, tried on each frame from the innermost out: the first that matches names the stage. */
const RULES: [Stage, (fn: string, url: string) => boolean][] = [
  ['gc', (fn) => fn === '(garbage collector)'],
  ['native', (fn) => fn === '(program)'],
  ['log', (_, url) => /winston|logform|telemetry\/logger|safe-stable-stringify|readable-stream/.test(url)],
  ['metrics', (_, url) => /prom-client|telemetry\/(metrics|admission-metrics)/.test(url)],
  [
    'decode',
    (fn, url) =>
      /proto\/dist|@bufbuild\/protobuf|protobufjs/.test(url) && /decode|read|fromBinary|fromJSON/i.test(fn),
  ],
  ['encode', (_, url) => /proto\/dist|@bufbuild\/protobuf|protobufjs|wire-size/.test(url)],
  ['admission', (_, url) => /server\/admission/.test(url)],
  ['coalesce', (_, url) => /engine\/coalesce/.test(url)],
  ['plan', (_, url) => /engine\/(plan|plan-legs|checks|explain|modes)/.test(url)],
  ['operation', (_, url) => /broker\/dist\/(operations|ledger|store)\/|\/operations\/dist\//.test(url)],
  [
    'transport',
    (_, url) => /@grpc\/grpc-js|node:internal\/http2|node:net|stream_base|node:internal\/streams/.test(url),
  ],
  [
    'fan-out',
    (_, url) =>
      /engine\/(executor|legs|site-call|own-pod|dispatcher|paging)|iterator\/dist|connection-manager\/dist|broker\/dist\/session\//.test(
        url,
      ),
  ],
  [
    'middleware',
    (_, url) => /broker\/dist\/(server|call-context|errors|request-limits)|telemetry\/tracing/.test(url),
  ],
];

/**
 * ms of CPU by stage in a profile, from `fromMs` to `toMs` after its start (idle samples left out). The
 * stage of a frame is decided once per profile node (its callers' stages are the fallback).
 */
export function stagesOf(p: CpuProfile, fromMs: number, toMs: number): Record<Stage, number> {
  const parent = new Map<number, number>();
  for (const n of p.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
  const byId = new Map(p.nodes.map((n) => [n.id, n]));
  const stageOfNode = new Map<number, Stage | undefined>();
  const stageOf = (id: number | undefined): Stage => {
    if (id === undefined) return 'other';
    if (stageOfNode.has(id)) return stageOfNode.get(id) ?? stageOf(parent.get(id));
    const f = byId.get(id)!.callFrame;
    const own = RULES.find(([, match]) => match(f.functionName, f.url))?.[0];
    stageOfNode.set(id, own);
    return own ?? stageOf(parent.get(id));
  };
  const out = Object.fromEntries(STAGES.map((s) => [s, 0])) as Record<Stage, number>;
  let t = 0;
  for (let i = 0; i < p.samples.length; i++) {
    t += p.timeDeltas[i] ?? 0;
    const ms = t / 1000;
    if (ms < fromMs || ms > toMs) continue;
    const node = byId.get(p.samples[i]!)!;
    if (node.callFrame.functionName === '(idle)') continue;
    out[stageOf(node.id)] += (p.timeDeltas[i + 1] ?? p.timeDeltas[i] ?? 0) / 1000;
  }
  return out;
}

/** Per request: every stage's ms divided by the requests served in the window. */
function perRequest(byStage: Record<Stage, number>, requests: number): StageFigures {
  const each = Object.fromEntries(
    STAGES.map((s) => [s, Number((byStage[s] / requests).toFixed(4))]),
  ) as Record<Stage, number>;
  const totalMs = Number((STAGES.reduce((n, s) => n + byStage[s], 0) / requests).toFixed(4));
  return { requests, totalMs, byStage: each };
}

/**
 * Profiles a pod broker and a representative of a 2 sites × 2 pods × 1 broker federation while `n`
 * echo Aggregates run one at a time through `s1-p1-a`. The window is taken on the bench's clock, a second
 * in from each end of the run, and the requests counted are those answered within it; a profile's clock
 * starts at its broker's spawn, a fraction of a second after `spawned`, well within that margin.
 */
export async function measureStages(n: number): Promise<CpuStages> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'wanas-bench-stages-'));
  const profiled: Record<string, string> = { 's1-p2-a': 'local', 's2-p1-a': 'site' };
  const spawned = Date.now();
  const f = await DevFederation.start({
    spec: { s1: { p1: 1, p2: 1 }, s2: { p1: 1, p2: 1 } },
    wanLatencyMs: 10,
    logLevel: 'info',
    nodeArgsFor: (b) =>
      profiled[b.id] ? ['--cpu-prof', `--cpu-prof-dir=${path.join(dir, profiled[b.id]!)}`] : undefined,
  });
  const answered: number[] = [];
  try {
    const ask = f.aggregator('s1-p1-a');
    await untilAllAnswer(ask, 4);
    for (let i = 0; i < Math.min(200, n); i++) await ask({ operation: 'echo', params: { w: i } });
    for (let i = 0; i < n; i++) {
      await ask({ operation: 'echo', params: { i } });
      answered.push(Date.now());
    }
  } finally {
    await f.stop();
  }
  try {
    const from = answered[0]! + 1000;
    const to = answered[answered.length - 1]! - 1000;
    const calls = answered.filter((t) => t > from && t <= to).length;
    if (calls < 10) throw new Error(`too few requests (${calls}) in the profiled window: raise n (${n})`);
    const read = (role: string) => {
      const folder = path.join(dir, role);
      const file = fs.readdirSync(folder).find((x) => x.endsWith('.cpuprofile'));
      if (!file) throw new Error(`no CPU profile was written for the ${role} broker`);
      const p = JSON.parse(fs.readFileSync(path.join(folder, file), 'utf8')) as CpuProfile;
      return stagesOf(p, from - spawned, to - spawned);
    };
    return {
      shape: '2 sites × 2 pods × 1 broker, 10 ms WAN one way, echo, log level info',
      local: perRequest(read('local'), calls),
      site: perRequest(read('site'), calls),
    };
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

/** The stages as lines: ms per request, and the share of its total. */
export function describeStages(s: CpuStages): string {
  const row = (name: string, x: StageFigures) =>
    `  ${name.padEnd(22)} ${x.totalMs.toFixed(3)} ms: ${STAGES.filter((k) => x.byStage[k] >= 0.0005)
      .map((k) => `${k} ${x.byStage[k].toFixed(3)} (${((100 * x.byStage[k]) / x.totalMs).toFixed(0)}%)`)
      .join(', ')}`;
  return [
    `where a served request's CPU goes (main thread, profiled; ${s.shape}):`,
    row('a LocalRequest served', s.local),
    row('a SiteRequest served', s.site),
  ].join('\n');
}
