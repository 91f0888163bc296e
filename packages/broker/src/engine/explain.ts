/**
 * `Explain`: the plan an Aggregate would run now, shown without running it — the legs in order, the
 * brokers each would try (ranked by the connection manager as a request would see them) and their state,
 * what would fail at once as known down and why, expected latencies from measured round trips, hedge
 * delays and the deadline each hop would be given.
 */
import type { ConnectionManager, HealthRow, TargetHealth } from '@wanas/connection-manager';
import { hedgeDelayMs } from '@wanas/iterator';
import { msToDuration, type Duration, type ExplainResponse, type ExplainedLeg } from '@wanas/proto';
import { key, type AggregatePlan, type Leg } from './model';
import { hopDeadlineMs } from './plan-legs';

/** What explaining reads: the connection manager's view of every target, and the time. */
export interface ExplainDeps {
  cm: ConnectionManager;
  brokerId: string;
  now: number;
}

const ms = (x: number | undefined): Duration | undefined => (x === undefined ? undefined : msToDuration(x));

/** The plan as an operator reads it (run by the plan itself; the dispatcher says when it would share). */
export function explain(plan: AggregatePlan, deps: ExplainDeps): ExplainResponse {
  const { mode } = plan;
  // The connection manager's tables, read once for every leg.
  const view: View = {
    ...deps,
    rows: new Map(deps.cm.snapshot().map((r) => [r.address, r])),
    targets: deps.cm.targets(),
  };
  return {
    correlationId: plan.correlationId,
    operation: plan.op.name,
    mode: mode.kind,
    deadline: msToDuration(Math.max(0, plan.deadline - deps.now)),
    hedge: plan.hedge,
    minOk: mode.kind === 'all' ? mode.minOk : 0,
    requiredSites: mode.kind === 'all' ? [...mode.requiredSites] : [],
    preferSites: mode.kind === 'first' ? [...mode.preferSites] : [],
    pods: plan.pods.map(key),
    legs: plan.legs.map((leg) => explainLeg(plan, leg, view)),
    plannedBy: deps.brokerId,
    page: plan.page,
    answerFrom: 'run',
    joins: '',
  };
}

/** What explaining a leg reads: the deps, the endpoint rows by address and the target states. */
interface View extends ExplainDeps {
  rows: Map<string, HealthRow>;
  targets: TargetHealth[];
}

/** One leg: where it goes, through which brokers in which order, and what it would cost. */
function explainLeg(plan: AggregatePlan, leg: Leg, deps: View): ExplainedLeg {
  const base = {
    via: leg.via,
    site: leg.site,
    pods: leg.pods.map(key),
    method: leg.method,
    attemptTimeout: msToDuration(leg.attemptTimeoutMs),
    params: leg.params,
    sitePods: leg.sitePods,
  };
  const left = Math.max(0, plan.deadline - deps.now);
  if (!leg.target)
    return {
      ...base,
      targetState: '',
      skipped: '',
      endpoints: [],
      expectedLatency: undefined,
      hedgeDelay: undefined,
      hopDeadline: msToDuration(left),
    };
  const { cm, rows } = deps;
  const prefer = leg.preferBrokers.length
    ? (ep: { brokerId: string }) => leg.preferBrokers.includes(ep.brokerId)
    : undefined;
  const ordered = cm.order(leg.target, prefer);
  const endpoints = ordered.map((ep) => {
    const row = rows.get(ep.address);
    return {
      brokerId: ep.brokerId,
      address: ep.address,
      state: row?.state ?? 'idle',
      stateReason: row?.stateReason ?? '',
      latencyFloor: ms(cm.latencyFloorMs(ep)),
      latencyP95: ms(cm.latencyP95Ms(ep)),
    };
  });
  const first = ordered[0];
  const floor = first && cm.latencyFloorMs(first);
  const down = cm.targetDown(leg.target);
  const group = deps.targets.find((t) => t.site === leg.target!.site && t.pod === leg.target!.pod);
  return {
    ...base,
    targetState: group?.state ?? 'up',
    skipped: down
      ? `known down for ${Math.round(deps.now - down.since)} ms (${down.reason}): would answer UNAVAILABLE at once, sending nothing`
      : '',
    endpoints,
    expectedLatency: ms(floor),
    hedgeDelay:
      plan.hedge && first
        ? msToDuration(hedgeDelayMs(cm.latencyP95Ms(first), leg.attemptTimeoutMs))
        : undefined,
    hopDeadline: msToDuration(hopDeadlineMs(leg.via, Math.min(left, leg.attemptTimeoutMs), floor)),
  };
}
