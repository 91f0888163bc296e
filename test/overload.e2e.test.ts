/**
 * Overload with real processes: a federation driven open-loop (arrivals on a clock, 300 ms deadlines) at
 * three times the capacity measured in the same run, by a heavy client, with a light client (another
 * identity) beside it; then back to a quarter of capacity. What a user relies on: the excess is refused at
 * once (RESOURCE_EXHAUSTED with a retry pushback) rather than answered partial or late, what is admitted is
 * answered whole, the light client is served, no call ends INTERNAL, and the federation answers normally
 * once the burst is over. The figures against the targets are the bench's (`npm run bench --
 * overload`); the bounds here are loose enough for a loaded machine, and each still fails on the
 * behaviour it names (a fixed-count limit answers most of this load late or partial).
 */
import { DevFederation } from '@wanas/devfed';
import * as path from 'node:path';
import { ROOT } from './support/federation';
import { until } from './support/until';

// The compiled generator: it runs in a worker thread, which needs JavaScript (npm test builds first).
// eslint-disable-next-line @typescript-eslint/no-require-imports
const { runOpenLoop } = require(
  path.join(ROOT, 'packages/bench/dist/open-loop'),
) as typeof import('../packages/bench/src/open-loop');

describe('overload (real processes)', () => {
  let f: DevFederation;
  beforeAll(async () => {
    f = await DevFederation.start({ sites: 2, podsPerSite: 2, brokersPerPod: 2, wanLatencyMs: 10 });
  }, 60_000);
  afterAll(async () => {
    await f?.stop();
  });

  it('past capacity: refuses the excess at once, answers what it admits whole, serves a light client, recovers', async () => {
    const entry = f.broker('s1-p1-a');
    const aggregate = f.aggregator(entry.id);
    for (let i = 0; i < 30; i++) await aggregate({ operation: 'echo' });
    // Capacity in this run: a closed loop of 8 callers for 3 s.
    let whole = 0;
    let n = 0; // every call distinct (nothing to share), as the open loop's are
    const end = Date.now() + 3000;
    await Promise.all(
      Array.from({ length: 8 }, async () => {
        while (Date.now() < end) {
          // The client waits out a refusal's pushback and sends again, as a well-behaved client does.
          const r = await aggregate({ operation: 'echo', params: { n: n++ } }, 2000).catch(() => undefined);
          if (r && !r.summary?.podsFailed) whole++;
        }
      }),
    );
    const capacity = whole / 3;
    const r = await runOpenLoop({
      address: entry.address,
      phases: [
        { name: 'burst', rate: Math.round(3 * capacity), seconds: 4 },
        { name: 'after', rate: Math.max(2, Math.round(capacity / 4)), seconds: 4 },
      ],
      deadlineMs: 300,
      lightRate: Math.max(8, Math.round(capacity / 10)),
      heavyClient: 'heavy',
      lightClient: 'light',
      operation: 'echo',
    });
    const [burst, after] = r.phases;
    const every = [burst!.heavy, burst!.light, after!.heavy, after!.light];

    // Refused at once, with a pushback, for a reason admission names.
    expect(burst!.heavy.refusedMs.length).toBeGreaterThan(0);
    expect(burst!.heavy.withPushback).toBe(burst!.heavy.refusedMs.length);
    expect(Object.keys(burst!.heavy.refusedBy).filter((k) => k === 'other')).toEqual([]);
    // No INTERNAL (a closed HTTP/2 session), nothing but answers, refusals and deadlines.
    for (const c of every)
      for (const code of Object.keys(c.codes))
        expect(['OK', 'RESOURCE_EXHAUSTED', 'DEADLINE_EXCEEDED']).toContain(code);
    // What is admitted is answered whole: partial answers are rare (no hop shed a random share of pods).
    // Unary federation calls (sessions off) leave a few more: a fresh-check run saw 17 of 321 (5.3%) there,
    // against none with sessions; the bench's target (≤ 1%) is measured with sessions.
    const answered = burst!.heavy.whole + burst!.heavy.partial;
    expect(burst!.heavy.partial).toBeLessThanOrEqual(Math.max(2, answered * 0.1));
    // Goodput holds near capacity while three times as much is offered.
    expect(burst!.heavy.whole / burst!.seconds).toBeGreaterThan(0.4 * capacity);
    // Fair between identities: the light client is served while the heavy one is refused. (A few of its
    // calls may still miss a 300 ms deadline on a machine at its limit: the bench counts those.)
    const lightOk = burst!.light.whole / burst!.light.sent;
    const heavyOk = burst!.heavy.whole / burst!.heavy.sent;
    expect(lightOk).toBeGreaterThan(0.75);
    expect(heavyOk).toBeLessThan(0.6);
    expect(lightOk - heavyOk).toBeGreaterThan(0.3);
    // Recovered: from 1 s after the burst, every call answered whole.
    expect(after!.heavy.lateWhole / after!.heavy.lateSent).toBeGreaterThan(0.97);
    expect(after!.light.whole / after!.light.sent).toBeGreaterThan(0.9);
    // No share leaked (refused, expired, cancelled and answered calls alike): nothing is held once idle.
    await until('the entry holds no admitted work', async () => {
      const s = await f.status(entry.id);
      return s.admission?.inFlight === 0 && s.admission.federationInFlight === 0;
    });
  }, 90_000);
});
