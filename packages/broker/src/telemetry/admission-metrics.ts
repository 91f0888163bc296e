import { Counter, Gauge, type Registry } from 'prom-client';

/** What the admission gauges read at scrape time. */
export interface AdmissionView {
  limit(cls: 'aggregate' | 'federation'): number;
  inFlight(cls: 'aggregate' | 'federation'): { cost: number; calls: number };
  /** The last queueing delay measured, ms. */
  queueDelayMs: number;
  /** The usual latency of admitted Aggregates now, ms. */
  expectedMs(): number | undefined;
}

/**
 * Admission's metrics: decisions by class, outcome, reason and client (configured client names; every other
 * identity is `other`, so a header cannot grow the label set), and gauges of the limit, work in flight and
 * the queueing delay. The alert `WanasShedding` reads `wanas_admission_total`.
 */
export function admissionMetrics(
  registry: Registry,
  view: AdmissionView,
): (cls: string, client: string, refused: string | undefined) => void {
  const decisions = new Counter({
    name: 'wanas_admission_total',
    help: 'Calls admitted or refused by admission, by class (aggregate, federation), outcome, reason and client.',
    labelNames: ['class', 'outcome', 'reason', 'client'],
    registers: [registry],
  });
  new Gauge({
    name: 'wanas_admission_limit',
    help: 'The adaptive limit now: pods in flight for aggregates, requests for federation.',
    labelNames: ['class'],
    registers: [registry],
    collect() {
      this.set({ class: 'aggregate' }, view.limit('aggregate'));
      this.set({ class: 'federation' }, view.limit('federation'));
    },
  });
  new Gauge({
    name: 'wanas_admission_in_flight',
    help: 'Work admitted and not yet answered: pods of aggregates, federation requests.',
    labelNames: ['class'],
    registers: [registry],
    collect() {
      this.set({ class: 'aggregate' }, view.inFlight('aggregate').cost);
      this.set({ class: 'federation' }, view.inFlight('federation').calls);
    },
  });
  new Gauge({
    name: 'wanas_admission_queue_delay_seconds',
    help: "The broker's queueing delay: how late its event loop ran, the least of the last interval.",
    registers: [registry],
    collect() {
      this.set(view.queueDelayMs / 1000);
    },
  });
  new Gauge({
    name: 'wanas_admission_expected_seconds',
    help: 'The usual latency of admitted aggregates now (a deadline shorter than this is refused).',
    registers: [registry],
    collect() {
      this.set((view.expectedMs() ?? 0) / 1000);
    },
  });
  const bound = new Map<string, Counter.Internal>();
  return (cls, client, refused) => {
    const key = `${cls}|${client}|${refused ?? ''}`;
    let child = bound.get(key);
    if (!child) {
      child = decisions.labels({
        class: cls,
        outcome: refused ? 'refused' : 'admitted',
        reason: refused ?? '',
        client,
      });
      bound.set(key, child);
    }
    child.inc();
  };
}
