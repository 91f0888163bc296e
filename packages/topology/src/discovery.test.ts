import { TestDnsServer } from '../../../test/support/dns-server';
import { DnsDiscovery } from './discovery';
import winston from 'winston';
import { parseTopology, withDiscovered, isBrokerOfSite, brokerIdentities } from './topology';

const log = winston.createLogger({
  level: 'error',
  transports: [new winston.transports.Console({ silent: true })],
});

describe('DnsDiscovery (against a real DNS server on 127.0.0.1)', () => {
  const dns = new TestDnsServer();
  beforeAll(() => dns.start());
  afterAll(() => dns.close());

  const topology = () =>
    parseTopology({
      federation: 'f',
      sites: [
        {
          name: 's1',
          pods: [
            { name: 'p1', brokers: [{ id: 'a', address: '127.0.0.1:7001' }] },
            { name: 'p2', brokers: 'dns:///p2.s1.test:7100' },
          ],
        },
        { name: 's2', pods: [{ name: 'p1', brokers: 'dns:///p1.s2.test:7200' }] },
      ],
    });

  it('turns A records into target lists, follows changes, empties on NXDOMAIN, keeps the list through SERVFAIL', async () => {
    const t = topology();
    const d = new DnsDiscovery([dns.address], log);
    dns.set('p2.s1.test', ['10.0.0.7', '10.0.0.5']);
    dns.set('p1.s2.test', ['10.1.0.1']);
    expect(await d.refresh(t)).toBe(true);
    let r = withDiscovered(t, d.discovered);
    expect(r.sites[0]!.pods[1]!.brokers.map((b) => b.id)).toEqual([
      's1-p2@10.0.0.5:7100',
      's1-p2@10.0.0.7:7100',
    ]);
    expect(r.sites[1]!.pods[0]!.brokers.map((b) => [b.address, b.tlsName])).toEqual([
      ['10.1.0.1:7200', 's2-p1'],
    ]);
    expect(await d.refresh(t)).toBe(false); // same answer: no change

    dns.set('p2.s1.test', ['10.0.0.5', '10.0.0.9']); // scaled: one replica replaced
    expect(await d.refresh(t)).toBe(true);
    r = withDiscovered(t, d.discovered);
    expect(r.sites[0]!.pods[1]!.brokers.map((b) => b.address)).toEqual(['10.0.0.5:7100', '10.0.0.9:7100']);
    expect(r.brokers.has('s1-p2@10.0.0.7:7100')).toBe(false);

    dns.remove('p1.s2.test'); // scaled to zero: NXDOMAIN
    expect(await d.refresh(t)).toBe(true);
    expect(withDiscovered(t, d.discovered).sites[1]!.pods[0]!.brokers).toEqual([]);

    dns.mode = 'servfail'; // DNS broken: keep what was found
    expect(await d.refresh(t)).toBe(false);
    r = withDiscovered(t, d.discovered);
    expect(r.sites[0]!.pods[1]!.brokers.map((b) => b.address)).toEqual(['10.0.0.5:7100', '10.0.0.9:7100']);
    dns.mode = 'normal';
  });

  it('accepts replicas a peer found before this broker did, and only of DNS pods of that site', () => {
    const t = topology();
    expect(isBrokerOfSite(t, 's1-p2@10.9.9.9:7100', 's1')).toBe(true);
    expect(isBrokerOfSite(t, 's1-p2@10.9.9.9:7100', 's2')).toBe(false);
    expect(isBrokerOfSite(t, 's1-p1@10.9.9.9:7100', 's1')).toBe(false); // p1 lists its brokers
    expect(isBrokerOfSite(t, 'a', 's1')).toBe(true);
    expect([...brokerIdentities(t)].sort()).toEqual(['a', 's1-p2', 's2-p1']);
  });
});
