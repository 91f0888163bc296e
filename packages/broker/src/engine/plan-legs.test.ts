import { builtinOperations } from '../operations/builtin';
import { parseTopology } from '@wanas/topology';
import { key, type PodRef } from './model';
import { firstFitLegs, siteLeg, podLeg, type LegContext } from './plan-legs';

/** us (2 pods), eu (2), ap (1), sa (1); two brokers a pod. */
const topology = parseTopology({
  federation: 'legs',
  sites: (
    [
      ['us', 2],
      ['eu', 2],
      ['ap', 1],
      ['sa', 1],
    ] as const
  ).map(([site, n], s) => ({
    name: site,
    pods: Array.from({ length: n }, (_, i) => ({
      name: `p${i + 1}`,
      brokers: ['a', 'b'].map((x, b) => ({
        id: `${site}-p${i + 1}-${x}`,
        address: `127.0.0.1:${7000 + 100 * s + 10 * i + b}`,
        wanAddress: `127.0.0.2:${7000 + 100 * s + 10 * i + b}`,
      })),
    })),
  })),
});
const pods: PodRef[] = topology.sites.flatMap((s) => s.pods.map((p) => ({ site: s.name, pod: p.name })));
const registry = builtinOperations();
const read = registry.get('echo');
const write = registry.get('desktops.provision');
const context = (op = read, o: Partial<LegContext> = {}): LegContext => ({
  self: { site: 'us', pod: 'p2' },
  topology,
  op,
  params: { user: 'zoe' },
  attemptTimeoutMs: 100,
  first: true,
  stream: false,
  ...o,
});

describe('firstFitLegs', () => {
  const siteRoundTripMs = (site: string) => ({ eu: 80, ap: 20 })[site];

  it('tries the preferred sites in order, then the own site (own pod first), then the nearest others', () => {
    const steps = firstFitLegs(context(read), pods, ['eu'], siteRoundTripMs);
    expect(steps.map((s) => `${s.via}:${s.pods.map(key).join(',')}`)).toEqual([
      'site:eu/p1,eu/p2',
      'own:us/p2',
      'local:us/p1',
      'site:ap/p1',
      'site:sa/p1', // never measured: last
    ]);
  });

  it('keeps the topology order within the own site for a write, whichever broker of the site is the entry', () => {
    const steps = firstFitLegs(context(write), pods, [], siteRoundTripMs);
    expect(steps.slice(0, 2).map((s) => `${s.via}:${s.pods.map(key).join(',')}`)).toEqual([
      'local:us/p1',
      'own:us/p2',
    ]);
  });

  it('keeps the own site at its preferred place and skips sites out of scope', () => {
    const scoped = pods.filter((p) => p.site !== 'ap');
    const steps = firstFitLegs(context(read), scoped, ['sa', 'us'], siteRoundTripMs);
    expect(steps.map((s) => s.pods.map(key).join(','))).toEqual(['sa/p1', 'us/p2', 'us/p1', 'eu/p1,eu/p2']);
  });
});

describe('the legs, whole before they run', () => {
  it("sends a LocalRequest to the pod's brokers (LAN addresses), the own pod in-process", () => {
    const local = podLeg(context(read, { first: false }), { site: 'us', pod: 'p1' });
    expect(local).toMatchObject({ via: 'local', method: 'LocalRequest', attemptTimeoutMs: 100 });
    expect(local.target).toEqual({
      site: 'us',
      pod: 'p1',
      endpoints: [
        { brokerId: 'us-p1-a', address: '127.0.0.1:7000' },
        { brokerId: 'us-p1-b', address: '127.0.0.1:7001' },
      ],
    });
    expect(podLeg(context(), { site: 'us', pod: 'p2' })).toMatchObject({
      via: 'own',
      method: 'in-process',
      target: undefined,
    });
  });

  it("sends a SiteRequest to any of the site's brokers (WAN addresses) with twice the attempt timeout", () => {
    const all = siteLeg(
      context(read, { first: false }),
      'eu',
      pods.filter((p) => p.site === 'eu'),
    );
    expect(all).toMatchObject({
      method: 'SiteRequest',
      sitePods: [],
      attemptTimeoutMs: 200,
      preferBrokers: [],
    });
    expect(all.target!.endpoints.map((e) => e.address)).toEqual([
      '127.0.0.2:7100',
      '127.0.0.2:7101',
      '127.0.0.2:7110',
      '127.0.0.2:7111',
    ]);
    const streamed = siteLeg(context(read, { first: false, stream: true }), 'eu', [
      { site: 'eu', pod: 'p2' },
    ]);
    expect(streamed).toMatchObject({ method: 'StreamSiteRequest', sitePods: ['p2'] });
  });

  it('names the pods of a first-fit search in topology order; a write prefers a representative in its first pod', () => {
    const eu = pods.filter((p) => p.site === 'eu');
    expect(siteLeg(context(read), 'eu', eu)).toMatchObject({ sitePods: ['p1', 'p2'], preferBrokers: [] });
    expect(siteLeg(context(write), 'eu', eu)).toMatchObject({
      sitePods: ['p1', 'p2'],
      preferBrokers: ['eu-p1-a', 'eu-p1-b'],
    });
  });

  it('shapes the params for where each leg goes', () => {
    const shaped = { ...read, shape: (p: object, t: object) => ({ ...p, at: t }) };
    expect(siteLeg(context(shaped), 'eu', pods.slice(2, 4)).params).toEqual({
      user: 'zoe',
      at: { site: 'eu' },
    });
    expect(podLeg(context(shaped), pods[0]!).params).toEqual({ user: 'zoe', at: { site: 'us', pod: 'p1' } });
  });
});
