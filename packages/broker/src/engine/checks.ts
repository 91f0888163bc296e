/**
 * The checks of an incoming request that planning makes before deciding anything: the operation and its
 * params, the scope, hedging, and what a federation request may ask of this broker. Each refusal names the
 * field (INVALID_ARGUMENT) or says why the request does not belong here.
 */
import { status } from '@grpc/grpc-js';
import { Hedging, type AggregateRequest, type Scope, type TargetList } from '@wanas/proto';
import { BrokerError, invalidArgument } from '../errors';
import type { OperationRegistry } from '../operations/registry';
import type { JsonObject, Operation } from '../operations/types';
import {
  MAX_SCOPE_ENTRIES,
  MAX_TARGET_ENDPOINTS,
  checkHeaders,
  checkIdempotencyKey,
  checkParamsShape,
} from '../request-limits';
import { isBrokerOfSite, type Topology } from '@wanas/topology';
import { key, type PodRef } from './model';

/** Most hops a request may travel: entry → site representative → pod. */
export const MAX_HOPS = 2;

/** Refuses federation requests that target another site, list unknown brokers, or travelled too far. */
export function checkFederationRequest(
  t: Topology,
  self: PodRef,
  kind: string,
  target: TargetList | undefined,
  hops: number,
  sourceSite?: string,
): void {
  if (!target) throw invalidArgument('target', 'required');
  if (target.site !== self.site) {
    throw new BrokerError(
      status.FAILED_PRECONDITION,
      `${kind} for site "${target.site}" reached a broker of site "${self.site}"`,
    );
  }
  if (target.endpoints.length > MAX_TARGET_ENDPOINTS)
    throw invalidArgument('target.endpoints', `at most ${MAX_TARGET_ENDPOINTS}`);
  target.endpoints.forEach((e, i) => {
    if (!isBrokerOfSite(t, e.brokerId, self.site)) {
      throw new BrokerError(
        status.PERMISSION_DENIED,
        `target.endpoints[${i}]: "${e.brokerId}" is not a broker of site "${self.site}" in this topology`,
      );
    }
  });
  if (hops < 1 || hops > MAX_HOPS) {
    throw new BrokerError(
      status.FAILED_PRECONDITION,
      `hops: ${kind} with hops=${hops} refused (1 to ${MAX_HOPS} allowed; no loops)`,
    );
  }
  if (sourceSite && !t.sites.some((s) => s.name === sourceSite)) {
    throw new BrokerError(
      status.PERMISSION_DENIED,
      `source_site "${sourceSite}" is not a site of this federation`,
    );
  }
}

/** What a plan takes from its request as it is, with the operation and its checked params. */
export function carried(
  req: { correlationId: string; headers: Record<string, string>; idempotencyKey: string },
  op: Operation,
  params: JsonObject,
  client: string,
) {
  return {
    correlationId: req.correlationId,
    op,
    params,
    headers: req.headers,
    idempotencyKey: req.idempotencyKey,
    client,
  };
}

/**
 * The checks every request kind shares: the operation exists, headers, params size and shape, the
 * idempotency key, params against the operation's schema, and a key for a state-changing operation.
 * `from` a broker: the entry already held the params to their size and depth limits (and its message was
 * within the gRPC message limit), so that walk over them is not repeated at every hop; the operation's
 * schema still is (a broker of another version may send what this one's schema refuses).
 */
export function parseOperation(
  registry: OperationRegistry,
  req: {
    operation: string;
    headers: Record<string, string>;
    params: JsonObject | undefined;
    idempotencyKey: string;
  },
  from: 'client' | 'broker' = 'client',
): { op: Operation; params: JsonObject } {
  const op = registry.get(req.operation);
  checkHeaders(req.headers);
  if (from === 'client') checkParamsShape(req.params);
  checkIdempotencyKey(req.idempotencyKey);
  const params = registry.parseParams(op, req.params);
  if (!op.idempotent && !req.idempotencyKey) {
    throw invalidArgument(
      'idempotency_key',
      `required for ${op.name}, which changes state (any unique string, e.g. a UUID)`,
    );
  }
  return { op, params };
}

/** The pods a scope selects, in topology order; INVALID_ARGUMENT for names the topology lacks. */
export function resolveScope(t: Topology, scope: Scope | undefined): PodRef[] {
  const sites = scope?.sites ?? [];
  const podsFilter = scope?.pods ?? [];
  if (sites.length > MAX_SCOPE_ENTRIES || podsFilter.length > MAX_SCOPE_ENTRIES) {
    throw invalidArgument('scope', `at most ${MAX_SCOPE_ENTRIES} sites and ${MAX_SCOPE_ENTRIES} pods`);
  }
  const siteNames = new Set(t.sites.map((s) => s.name));
  sites.forEach((s, i) => {
    if (!siteNames.has(s))
      throw invalidArgument(`scope.sites[${i}]`, `unknown site "${s}" (known: ${[...siteNames].join(', ')})`);
  });
  const all = t.sites.flatMap((s) => s.pods.map((p) => ({ site: s.name, pod: p.name })));
  podsFilter.forEach((f, i) => {
    if (!all.some((p) => p.pod === f || key(p) === f)) {
      throw invalidArgument(`scope.pods[${i}]`, `no pod named "${f}" (use "pod" or "site/pod")`);
    }
  });
  const selected = all.filter(
    (p) =>
      (sites.length === 0 || sites.includes(p.site)) &&
      (podsFilter.length === 0 || podsFilter.some((f) => f === p.pod || f === key(p))),
  );
  if (selected.length === 0)
    throw invalidArgument('scope', 'selects no pod (the sites and pods given do not overlap)');
  return selected;
}

/** Whether an Aggregate hedges: its `hedging` field, else the legacy `hedge` flag, else the broker's setting. */
export function hedgingOf(req: Pick<AggregateRequest, 'hedge' | 'hedging'>, byDefault: boolean): boolean {
  switch (req.hedging) {
    case Hedging.HEDGING_ON:
      return true;
    case Hedging.HEDGING_OFF:
      if (req.hedge) {
        throw invalidArgument('hedging', 'HEDGING_OFF contradicts hedge = true; set one of them');
      }
      return false;
    case Hedging.HEDGING_UNSPECIFIED:
      return req.hedge || byDefault;
    default:
      throw invalidArgument(
        'hedging',
        `unknown value ${String(req.hedging)}; use HEDGING_ON, HEDGING_OFF or leave it unset`,
      );
  }
}
