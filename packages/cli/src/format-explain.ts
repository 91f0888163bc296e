import { durationToMs, type ExplainResponse, type ExplainedLeg } from '@wanas/proto';
import { table } from './format';

const ms = (d: { seconds: number; nanos: number } | undefined): string => {
  const v = durationToMs(d);
  return v === undefined ? '-' : `${Math.round(v * 10) / 10}ms`;
};

/** The brokers a leg would try, in order, each with its state: `s2-p1-a(ready) s2-p2-a(down)`. */
function brokersOf(leg: ExplainedLeg): string {
  if (!leg.endpoints.length) return '(in-process)';
  return leg.endpoints.map((e) => `${e.brokerId}(${e.state})`).join(' ');
}

/**
 * Formats an Explain answer for a terminal: what the broker would do, one row per leg in the order they
 * run (MODE_FIRST: one after another until a pod answers OK), and why a leg would fail at once.
 */
export function formatExplain(res: ExplainResponse): string {
  const how =
    res.mode === 'first'
      ? `first-fit${res.preferSites.length ? `, preferring ${res.preferSites.join(', ')}` : ''}: legs one after another until a pod answers OK`
      : `all legs at once${res.minOk ? `, answering at ${res.minOk} OK` : ''}${res.requiredSites.length ? `, required: ${res.requiredSites.join(', ')}` : ''}`;
  const head = [
    `${res.operation} planned by ${res.plannedBy}: ${res.pods.length} pod(s) in scope, ${how}`,
    `works to ${ms(res.deadline)} from now; hedging ${res.hedge ? 'on' : 'off'}`,
  ];
  if (res.page) {
    const from = res.page.after ? `after ${res.page.after} (${res.page.afterPod})` : 'from the start';
    const each = res.page.limit ? `${res.page.limit} item(s)` : 'every item';
    head.push(`a listing's page ${from}: each pod asked for ${each} in at most ${res.page.maxBytes} bytes`);
  }
  const rows = res.legs.map((leg, i) => [
    String(i + 1),
    leg.via,
    leg.pods.join(','),
    leg.method,
    leg.targetState || '-',
    brokersOf(leg),
    ms(leg.expectedLatency),
    res.hedge && leg.hedgeDelay ? ms(leg.hedgeDelay) : '-',
    ms(leg.attemptTimeout),
    ms(leg.hopDeadline),
    leg.skipped,
  ]);
  return `${head.join('\n')}\n\n${table(
    [
      'LEG',
      'VIA',
      'PODS',
      'METHOD',
      'TARGET',
      'BROKERS (IN ORDER)',
      'EXPECTED',
      'HEDGE AFTER',
      'ATTEMPT',
      'HOP DEADLINE',
      'NOTE',
    ],
    rows,
  )}`;
}
