/**
 * Failure paths with real broker processes behind the WAN emulator: a partitioned site and a frozen pod
 * are found without traffic and then cost no attempt; a caller that sets only its gRPC deadline gets its
 * partial answer in time; a cancel reaches every hop; a representative waiting on one slow pod is not
 * hedged.
 */
import * as grpc from '@grpc/grpc-js';
import type { AggregateRequest } from '@wanas/proto';
import { DevFederation } from '@wanas/devfed';
import { until, untilSiteDown } from './support/until';
import { cancelAcrossHops } from '@wanas/bench';

const ENTRY = 's1-p1-a';

describe('failure paths (real processes, emulated WAN)', () => {
  let f: DevFederation;
  let aggregate: ReturnType<DevFederation['aggregator']>;
  const ask = (req: Partial<AggregateRequest>, deadlineMs = 10_000) => aggregate(req, deadlineMs);
  const status = (id: string) => f.status(id);
  const allAnswer = async () => (await ask({ operation: 'echo' })).summary?.podsFailed === 0;

  beforeAll(async () => {
    f = await DevFederation.start({
      sites: 3,
      podsPerSite: 2,
      brokersPerPod: 2,
      wanLatencyMs: 10,
      logLevel: 'info',
      settings: { attemptTimeoutMs: 250 },
    });
    aggregate = f.aggregator(ENTRY);
    await until('every pod answers', allAnswer, 20_000);
    for (let i = 0; i < 20; i++) await ask({ operation: 'echo' });
  }, 90_000);
  afterAll(async () => {
    await f?.stop();
  });

  it('finds a partitioned site without traffic, then reports its pods UNAVAILABLE without an attempt, and uses it again once healed', async () => {
    f.wan.cut('s3');
    try {
      // No request runs: keepalive finds the warm channel dead and the search finds every broker silent.
      await untilSiteDown(() => status(ENTRY), 's3');
      const res = await ask({ operation: 'echo' });
      const s3 = res.pods.filter((p) => p.site === 's3');
      expect(s3).toHaveLength(2);
      for (const p of s3) {
        expect(p.code).toBe(grpc.status.UNAVAILABLE);
        expect(p.message).toMatch(/s3 is down since \S+ \(\d+ ms\): s3-p1-a: /);
        expect(p.attempts).toEqual([]);
      }
      // Nothing was tried there (no attempt), so nothing was waited for; every other pod answered.
      expect(res.pods.filter((p) => p.site !== 's3' && p.code !== 0)).toEqual([]);
    } finally {
      f.wan.heal('s3');
    }
    // The recovery fails nothing outside s3, and s3 answers again.
    await until('s3 answers again', async () => {
      const r = await ask({ operation: 'echo' });
      expect(r.pods.filter((p) => p.site !== 's3' && p.code !== 0)).toEqual([]);
      return r.summary?.podsFailed === 0;
    });
  });

  it('finds a pod whose every broker is frozen, reports it UNAVAILABLE at once, and uses it again when thawed', async () => {
    const frozen = f.brokers.filter((b) => b.site === 's2' && b.pod === 'p2');
    for (const b of frozen) b.proc!.kill('SIGSTOP');
    try {
      await until('s2/p2 reported down', async () => {
        const r = await ask({ operation: 'echo' });
        const p = r.pods.find((x) => x.site === 's2' && x.pod === 'p2')!;
        return p.code === grpc.status.UNAVAILABLE && /is down since/.test(p.message);
      });
      const res = await ask({ operation: 'echo' });
      expect(res.pods.filter((p) => p.code !== 0).map((p) => `${p.site}/${p.pod}`)).toEqual(['s2/p2']);
    } finally {
      for (const b of frozen) b.proc!.kill('SIGCONT');
    }
    await until('s2/p2 answers again', allAnswer);
  });

  it('answers a caller that sets only its gRPC deadline in time, with every pod but the slow one', async () => {
    for (const slowPod of ['s1/p2', 's2/p1']) {
      await until('every pod answers', allAnswer);
      for (let i = 0; i < 3; i++) {
        const res = await ask({ operation: 'echo', params: { sleepMs: 5000, sleepPod: slowPod } }, 800);
        const slow = res.pods.find((p) => `${p.site}/${p.pod}` === slowPod)!;
        expect(res.pods.filter((p) => p !== slow && p.code !== 0)).toEqual([]);
        // The slow pod was cut off by a deadline (or found down by then), with what was tried listed.
        expect([grpc.status.DEADLINE_EXCEEDED, grpc.status.UNAVAILABLE]).toContain(slow.code);
        if (slow.code === grpc.status.DEADLINE_EXCEEDED) expect(slow.attempts.length).toBeGreaterThan(0);
      }
    }
    await until('every pod answers', allAnswer);
  });

  it('ends every hop (entry, representatives, pod brokers) soon after the caller cancels, and logs it CANCELLED', async () => {
    const r = await cancelAcrossHops(f);
    // The entry, one representative per remote site (2), and a LocalRequest to every pod the entry or a
    // representative does not run itself (s1/p2, and the other pod of s2 and of s3): each logged CANCELLED.
    expect(r.codes).toEqual({
      'aggregate CANCELLED': 1,
      'site CANCELLED': 2,
      'local CANCELLED': expect.any(Number) as number,
    });
    expect(r.codes['local CANCELLED']).toBeGreaterThanOrEqual(3);
    // Every hop ended long before the 4 s its pods were asked to sleep.
    expect(r.lastHopEndedMs).toBeLessThan(2000);
    // And gave back what admission lent it: the entry's Aggregate share, every broker's federation calls.
    await until('every broker holds no admitted work', async () => {
      const all = await Promise.all(f.brokers.map((b) => status(b.id)));
      return all.every((s) => s.admission?.inFlight === 0 && s.admission.federationInFlight === 0);
    });
    await until('every pod answers', allAnswer);
  });

  it('does not hedge a SiteRequest whose representative acknowledged it and waits on one slow pod', async () => {
    const wan = new Set(f.brokers.map((b) => b.wanAddress));
    let extra = 0;
    for (let i = 0; i < 10; i++) {
      const res = await ask({ operation: 'echo', params: { sleepMs: 150, sleepPod: 's2/p2' } });
      expect(res.summary?.podsFailed).toBe(0);
      const reps = new Set(
        res.pods.filter((p) => p.site === 's2').flatMap((p) => p.attempts.filter((a) => wan.has(a.address))),
      );
      extra += new Set([...reps].map((a) => a.brokerId)).size - 1;
    }
    expect(extra).toBeLessThanOrEqual(1);
  });
});
