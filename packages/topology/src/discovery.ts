import { Resolver } from 'node:dns/promises';
import type { Logger } from 'winston';
import { dnsKey, type Discovered, type DnsPod, type Topology } from './topology';

/** Per-query timeout of a DNS lookup, ms (c-ares retries once more). */
const DNS_QUERY_TIMEOUT_MS = 1000;
/** Answers that mean "this name has no addresses now" (a Deployment scaled to zero), not "DNS failed". */
const EMPTY_ANSWER = new Set(['ENODATA', 'ENOTFOUND']);

/** What {@link DnsDiscovery.refresh} saw for one DNS pod. */
interface Lookup {
  key: string;
  addresses: string[] | undefined;
  error: string | undefined;
}

/**
 * Resolves the pods given as `dns:///NAME:PORT` into broker addresses (A and AAAA records, sorted) and
 * keeps them fresh. A name that resolves to nothing (NXDOMAIN, no records: scaled to zero) empties the
 * pod's list; a failed lookup (timeout, refused, SERVFAIL) keeps the last list, so a DNS outage never
 * empties a federation.
 */
export class DnsDiscovery {
  private readonly resolver: Resolver;
  private found = new Map<string, string[]>();
  private readonly failing = new Set<string>();

  constructor(
    servers: readonly string[] | undefined,
    private readonly log: Logger,
  ) {
    this.resolver = new Resolver({ timeout: DNS_QUERY_TIMEOUT_MS, tries: 2 });
    if (servers?.length) this.resolver.setServers([...servers]);
  }

  /** The addresses found so far, by `host:port`. */
  get discovered(): Discovered {
    return this.found;
  }

  /** Resolves every DNS pod of `t` once; returns true when any pod's list changed. */
  async refresh(t: Topology): Promise<boolean> {
    const pods = new Map<string, DnsPod>();
    for (const s of t.sites) for (const p of s.pods) if (p.dns) pods.set(dnsKey(p.dns), p.dns);
    const lookups = await Promise.all([...pods.entries()].map(([key, d]) => this.lookup(key, d)));
    const next = new Map<string, string[]>();
    let changed = [...this.found.keys()].some((k) => !pods.has(k));
    for (const l of lookups) {
      const before = this.found.get(l.key);
      if (l.error !== undefined) {
        if (!this.failing.has(l.key))
          this.log.warn('DNS lookup failed; keeping the last brokers found', {
            target: `dns:///${l.key}`,
            error: l.error,
            brokers: before ?? [],
          });
        this.failing.add(l.key);
        if (before) next.set(l.key, before);
        continue;
      }
      if (this.failing.delete(l.key)) this.log.info('DNS lookup works again', { target: `dns:///${l.key}` });
      const addresses = l.addresses!;
      next.set(l.key, addresses);
      if (!before || before.join() !== addresses.join()) {
        changed = true;
        this.log.info('pod brokers found by DNS', {
          target: `dns:///${l.key}`,
          brokers: addresses,
          before: before ?? [],
        });
      }
    }
    this.found = next;
    return changed;
  }

  private async lookup(key: string, d: DnsPod): Promise<Lookup> {
    const settle = (p: Promise<string[]>) =>
      p.then(
        (a) => ({ a, code: undefined as string | undefined }),
        (e: NodeJS.ErrnoException) => ({ a: [] as string[], code: e.code ?? String(e) }),
      );
    const [v4, v6] = await Promise.all([
      settle(this.resolver.resolve4(d.host)),
      settle(this.resolver.resolve6(d.host)),
    ]);
    const failed = [v4.code, v6.code].filter((c) => c !== undefined && !EMPTY_ANSWER.has(c));
    // No address and a real error (not "no such name / no records"): a failed lookup, not an empty pod.
    if (!v4.a.length && !v6.a.length && failed.length)
      return { key, addresses: undefined, error: failed.join(', ') };
    const addresses = [
      ...v4.a.map((ip) => `${ip}:${d.port}`),
      ...v6.a.map((ip) => `[${ip}]:${d.port}`),
    ].sort();
    return { key, addresses: [...new Set(addresses)], error: undefined };
  }
}
