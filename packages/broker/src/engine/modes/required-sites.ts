import { status } from '@grpc/grpc-js';
import { AggregateResponse, RpcStatus, codeName, type PodResult } from '@wanas/proto';
import { BrokerError } from '../../errors';
import { key } from '../model';

/** The type URL of the partial answer carried in a failed call's google.rpc.Status details. */
export const AGGREGATE_RESPONSE_TYPE_URL = 'type.googleapis.com/wanas.v1.AggregateResponse';
/** Most failed pods named in the message (the details carry them all). */
const MAX_NAMED = 10;

/**
 * The error for an Aggregate whose required site has a failed pod, or undefined when every pod of the
 * required sites is OK. Its code is the failed pods' own when they all agree (pods cancelled because the
 * answer was already decided are not counted), UNAVAILABLE otherwise; the message names the failed pods;
 * the partial response travels as a google.rpc.Status detail.
 */
export function requiredSitesFailure(
  response: AggregateResponse,
  requiredSites: ReadonlySet<string>,
): BrokerError | undefined {
  if (requiredSites.size === 0) return undefined;
  const failedPods = response.pods.filter((p) => requiredSites.has(p.site) && p.code !== status.OK);
  if (failedPods.length === 0) return undefined;
  return podsFailure(response, failedPods, `required site(s) ${[...requiredSites].join(', ')}`);
}

/**
 * The error for an Aggregate that needed the pods `failedPods` and did not get them (`what` says why they
 * were needed). Its code is theirs when they agree, UNAVAILABLE otherwise.
 */
export function podsFailure(response: AggregateResponse, failedPods: PodResult[], what: string): BrokerError {
  const decisive = failedPods.filter((p) => p.code !== status.CANCELLED);
  const counted = decisive.length ? decisive : failedPods;
  const codes = new Set(counted.map((p) => p.code));
  const code = codes.size === 1 ? counted[0]!.code : status.UNAVAILABLE;
  const named = counted.slice(0, MAX_NAMED).map(describe).join('; ');
  const more = counted.length > MAX_NAMED ? `; and ${counted.length - MAX_NAMED} more` : '';
  const err = new BrokerError(code, `${what}: ${counted.length} pod(s) failed: ${named}${more}`);
  err.statusDetails = RpcStatus.encode({
    code,
    message: err.details,
    details: [
      {
        typeUrl: AGGREGATE_RESPONSE_TYPE_URL,
        value: Buffer.from(AggregateResponse.encode(response).finish()),
      },
    ],
  }).finish();
  return err;
}

function describe(p: PodResult): string {
  return `${key(p)} ${codeName(p.code)}${p.message ? ` (${p.message.slice(0, 160)})` : ''}`;
}
