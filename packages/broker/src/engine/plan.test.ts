import { AggregateRequest, Hedging, LocalRequest, Mode, SiteRequest, msToDuration } from '@wanas/proto';
import { key } from './model';
import { builtinOperations } from '../operations/builtin';
import { planAggregate, planLocal, planSite, type PlanContext } from './plan';
import { parseTopology } from '@wanas/topology';

/** 3 sites: us (3 pods), eu (2), ap (1); one broker a pod. */
const topology = parseTopology({
  federation: 'plan',
  sites: [
    ['us', 3],
    ['eu', 2],
    ['ap', 1],
  ].map(([site, n]) => ({
    name: site,
    pods: Array.from({ length: n as number }, (_, i) => ({
      name: `p${i + 1}`,
      brokers: [
        {
          id: `${String(site)}-p${i + 1}-a`,
          address: `127.0.0.1:${7000 + (site === 'us' ? 0 : site === 'eu' ? 100 : 200) + i}`,
        },
      ],
    })),
  })),
});
const NOW = 1_000_000;
const context = (o: Partial<PlanContext> = {}): PlanContext => ({
  self: { site: 'us', pod: 'p2' },
  topology,
  registry: builtinOperations(),
  now: NOW,
  callDeadline: undefined,
  streaming: false,
  client: 'tester',
  siteRoundTripMs: (site) => ({ eu: 80, ap: 30 })[site],
  ...o,
});
const agg = (o: Partial<AggregateRequest>) =>
  AggregateRequest.fromPartial({ correlationId: 'c-1', operation: 'echo', ...o });
const legs = (p: { legs: { via: string; pods: { site: string; pod: string }[] }[] }) =>
  p.legs.map((l) => `${l.via}:${l.pods.map(key).join(',')}`);

describe('planAggregate (no sockets)', () => {
  it('asks the own pod in-process, the own site by LocalRequest and each remote site by one SiteRequest', () => {
    const plan = planAggregate(agg({}), context());
    expect(legs(plan)).toEqual(['local:us/p1', 'own:us/p2', 'local:us/p3', 'site:eu/p1,eu/p2', 'site:ap/p1']);
    expect(plan).toMatchObject({ first: false, hops: 1, hedge: true, stream: false, attemptTimeoutMs: 1000 });
    expect(plan.pods).toHaveLength(6);
  });

  it('answers a margin before the earlier of timeout and the caller deadline', () => {
    expect(planAggregate(agg({ timeout: msToDuration(2000) }), context()).deadline).toBe(NOW + 2000 - 200);
    const byCaller = planAggregate(agg({}), context({ callDeadline: NOW + 800 }));
    expect(byCaller.deadline).toBe(NOW + 800 - 80);
    expect(() => planAggregate(agg({}), context({ callDeadline: NOW - 1 }))).toThrow(
      expect.objectContaining({
        code: 4,
        details: expect.stringMatching(/already passed; nothing was sent/),
      }),
    );
  });

  it('narrows to the scope and streams remote pods when the answer may come early or is streamed', () => {
    const scoped = planAggregate(agg({ scope: { sites: ['eu', 'ap'], pods: [] }, minOk: 2 }), context());
    expect(legs(scoped)).toEqual(['site:eu/p1,eu/p2', 'site:ap/p1']);
    expect(scoped.stream).toBe(true);
    expect(planAggregate(agg({ requiredSites: ['ap'] }), context()).stream).toBe(true);
    expect(planAggregate(agg({}), context({ streaming: true })).stream).toBe(true);
  });

  it('plans first-fit as a search: preferred site, own site (a write in topology order), nearest others', () => {
    const write = planAggregate(
      agg({
        operation: 'desktops.provision',
        params: { user: 'zoe' },
        idempotencyKey: 'k',
        mode: Mode.MODE_FIRST,
        preferSites: ['eu'],
        hedging: Hedging.HEDGING_ON,
      }),
      context(),
    );
    expect(write.first).toBe(true);
    expect(legs(write)).toEqual([
      'site:eu/p1,eu/p2',
      'local:us/p1',
      'own:us/p2',
      'local:us/p3',
      'site:ap/p1',
    ]);
    expect(write.hedge).toBe(false); // a first-fit write never hedges
    const read = planAggregate(agg({ mode: Mode.MODE_FIRST }), context());
    expect(legs(read).slice(0, 2)).toEqual(['own:us/p2', 'local:us/p1']);
  });

  it('refuses bad input naming the field', () => {
    const refused = (o: Partial<AggregateRequest>) => {
      try {
        planAggregate(agg(o), context());
      } catch (e) {
        return (e as { details: string }).details;
      }
      return 'accepted';
    };
    expect(refused({ operation: 'nope' })).toMatch(/^operation: unknown operation "nope"/);
    expect(refused({ operation: 'desktops.provision', params: { user: 'z' } })).toMatch(
      /^idempotency_key: required/,
    );
    expect(refused({ scope: { sites: ['mars'], pods: [] } })).toMatch(
      /^scope\.sites\[0\]: unknown site "mars"/,
    );
    expect(refused({ timeout: msToDuration(-1) })).toMatch(/^timeout:/);
    expect(refused({ minOk: 7 })).toMatch(/^min_ok: 7 is more than the 6 pod/);
  });
});

describe('planSite and planLocal (no sockets)', () => {
  const fed = {
    self: { site: 'us', pod: 'p2' },
    topology,
    registry: builtinOperations(),
    client: 'tester',
    now: NOW,
    callDeadline: undefined,
  };
  const target = { site: 'us', pod: '', endpoints: [] };
  const site = (o: Partial<SiteRequest>) =>
    SiteRequest.fromPartial({
      correlationId: 'c',
      operation: 'echo',
      target,
      hops: 1,
      sourceSite: 'eu',
      deadline: msToDuration(1000),
      ...o,
    });

  it("asks the site's pods from its representative, one hop further, a margin before the deadline given", () => {
    const plan = planSite(site({}), fed);
    expect(legs(plan)).toEqual(['local:us/p1', 'own:us/p2', 'local:us/p3']);
    expect(plan).toMatchObject({ first: false, hops: 2, deadline: NOW + 1000 - 100 });
    // First-fit: a read starts at the representative's own pod; a write keeps the order given.
    expect(legs(planSite(site({ first: true }), fed))).toEqual(['own:us/p2', 'local:us/p1', 'local:us/p3']);
    const given = planSite(
      site({
        first: true,
        operation: 'desktops.provision',
        params: { user: 'z' },
        idempotencyKey: 'k',
        pods: ['p3', 'p1'],
      }),
      fed,
    );
    expect(given).toMatchObject({ first: true });
    expect(legs(given)).toEqual(['local:us/p3', 'local:us/p1']);
  });

  it('refuses requests for another site, from its own site, travelled too far, or naming unknown pods', () => {
    const details = (fn: () => unknown) => {
      try {
        fn();
      } catch (e) {
        return (e as { details: string }).details;
      }
      return 'accepted';
    };
    expect(details(() => planSite(site({ target: { ...target, site: 'eu' } }), fed))).toMatch(
      /reached a broker of site "us"/,
    );
    expect(details(() => planSite(site({ sourceSite: 'us' }), fed))).toMatch(
      /same-site peers use LocalRequest/,
    );
    expect(details(() => planSite(site({ hops: 3 }), fed))).toMatch(/hops=3 refused/);
    expect(details(() => planSite(site({ pods: ['p9'] }), fed))).toMatch(
      /^pods\[0\]: site "us" has no pod "p9"/,
    );
    const local = LocalRequest.fromPartial({
      correlationId: 'c',
      operation: 'echo',
      hops: 1,
      target: { site: 'us', pod: 'p1', endpoints: [] },
    });
    expect(details(() => planLocal(local, fed))).toMatch(
      /LocalRequest for pod "us\/p1" reached a broker of us\/p2/,
    );
  });
});
