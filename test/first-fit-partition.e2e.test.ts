/**
 * A first-fit write whose preferred site is cut off while it works (real processes, emulated WAN): the
 * outcome is unknown, so no other site is asked (that could place a second desktop); a resend with the same
 * idempotency key after the link heals finds the one desktop.
 */
import { Mode, type AggregateResponse } from '@wanas/proto';
import { DevFederation } from '@wanas/devfed';
import { sleep, until } from './support/until';

const where = (p: { site: string; pod: string }) => `${p.site}/${p.pod}`;

describe('first-fit write cut off by a partition (real processes, emulated WAN)', () => {
  let f: DevFederation;

  beforeAll(async () => {
    f = await DevFederation.start({
      sites: 2,
      podsPerSite: 1,
      brokersPerPod: 1,
      wanLatencyMs: 10,
      settings: { attemptTimeoutMs: 300 },
      // s2's broker takes 400 ms before it works on a SiteRequest: time to cut the link under it.
      injectSlow: (b) => (b.site === 's2' ? '1:400' : undefined),
    });
  }, 60_000);
  afterAll(async () => {
    await f?.stop();
  });

  it('stops with the outcome unknown instead of placing elsewhere, and a resend with the same key finds the one desktop', async () => {
    const aggregate = f.aggregator('s1-p1-a');
    await until(
      'both sites answer',
      async () => (await aggregate({ operation: 'echo' })).summary?.podsOk === 2,
    );
    const req = {
      operation: 'desktops.provision',
      params: { user: 'vera', pool: 'standard' },
      mode: Mode.MODE_FIRST,
      preferSites: ['s2'],
      idempotencyKey: 'k-vera',
    };
    const pending = aggregate(req);
    await sleep(200);
    f.wan.cut('s2');
    let res: AggregateResponse;
    try {
      res = await pending;
    } finally {
      f.wan.heal('s2');
    }
    // The write may have acted in s2 (it did: s2 worked on it after the cut), so s1 was never asked.
    expect(res.pods.map((p) => where(p))).toEqual(['s2/p1']);
    expect(res.pods[0]!.code).not.toBe(0);
    expect(res.pods[0]!.message).toMatch(/outcome unknown \(it may have acted\)/);

    await until(
      's2 answers again',
      async () => (await aggregate({ operation: 'echo' })).summary?.podsOk === 2,
      20_000,
    );
    const again = await aggregate(req);
    expect(again.pods.map((p) => [where(p), p.code])).toEqual([['s2/p1', 0]]);
    expect(again.pods[0]!.result).toMatchObject({ replayed: true });
    const found = await aggregate({ operation: 'sessions.find', params: { user: 'vera' } });
    expect(found.pods.flatMap((p) => (p.result?.desktops as unknown[]) ?? [])).toHaveLength(1);
  }, 60_000);
});
