/**
 * Target health: a target list (a remote site's brokers, a pod's brokers) is down when every one of its
 * endpoints is down. Pure functions over endpoint states; the connection manager calls them on every
 * endpoint transition and asks them before a request is sent.
 */
import type { EndpointState, TargetHealth, TargetState } from './types';

/** What target health needs to know of one endpoint. */
export interface EndpointView {
  brokerId: string;
  state: EndpointState;
  /** When the endpoint entered its state (epoch ms). */
  stateSince: number;
  stateReason: string;
}

/** The state of a target whose endpoints are `endpoints` (an empty target is down: nothing can answer). */
export function targetStateOf(endpoints: EndpointView[]): TargetState {
  const down = endpoints.filter((e) => e.state === 'down').length;
  if (down === endpoints.length) return 'down';
  return down > 0 ? 'degraded' : 'up';
}

/** Why a target is down or degraded: each down endpoint and its reason. */
export function downReason(endpoints: EndpointView[]): string {
  return endpoints
    .filter((e) => e.state === 'down')
    .map((e) => `${e.brokerId}: ${e.stateReason}`)
    .join('; ');
}

/**
 * The target's health after a change of its endpoints: the previous health when the state is unchanged
 * (its `since` stays; the reason is refreshed), else a new one since `now`. For a target that just went down
 * `since` is the moment its last endpoint went down.
 */
export function evaluateTarget(prev: TargetHealth, endpoints: EndpointView[], now: number): TargetHealth {
  const state = targetStateOf(endpoints);
  const reason = state === 'up' ? '' : downReason(endpoints);
  if (state === prev.state) return { ...prev, reason };
  const since = state === 'down' && endpoints.length ? Math.max(...endpoints.map((e) => e.stateSince)) : now;
  return { site: prev.site, pod: prev.pod, state, since, reason };
}

/** "site" or "site/pod". */
export function targetName(t: { site: string; pod: string }): string {
  return t.pod ? `${t.site}/${t.pod}` : t.site;
}
