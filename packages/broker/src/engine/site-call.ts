/**
 * One SiteRequest attempt, in the way the plan chose: unary, streamed pod by pod, or a first-fit search
 * (streamed, never downgraded to unary: an older representative would act in every pod listed).
 */
import { status, type Metadata, type ServiceError } from '@grpc/grpc-js';
import { streamCall, unaryCall, type CancellableCall } from '@wanas/iterator';
import type {
  FederationServiceClient,
  PodResult,
  SiteRequest,
  SiteResponse,
  SiteStreamEvent,
} from '@wanas/proto';

/**
 * Starts one SiteRequest attempt; resolves with the pods it answered for. `unary`: SiteRequest, the site's
 * answer whole. `stream`: StreamSiteRequest, each pod reported to `onPod` as it finishes; a representative
 * of an older version (UNIMPLEMENTED) is asked the unary way instead. `first`: StreamSiteRequest with no
 * such fallback, so an older representative, which would not know `first` and would act in every pod
 * listed, is never sent a first-fit write.
 */
export function siteCall(
  client: FederationServiceClient,
  req: SiteRequest,
  md: Metadata,
  deadline: Date,
  how: 'unary' | 'stream' | 'first',
  onPod: (pod: PodResult) => void,
): CancellableCall<(PodResult | undefined)[]> {
  const unary = (): CancellableCall<(PodResult | undefined)[]> => {
    const call = unaryCall<SiteResponse>((cb) => client.siteRequest(req, md, { deadline }, cb));
    return { ...call, promise: call.promise.then((res) => res.pods) };
  };
  if (how === 'unary') return unary();
  const stream = streamCall<SiteStreamEvent>(client.streamSiteRequest(req, md, { deadline }), (event) => {
    if (event.pod) onPod(event.pod);
  });
  let current: CancellableCall<(PodResult | undefined)[]> = {
    ...stream,
    promise: stream.promise.then((events) => events.map((e) => e.pod)),
  };
  if (how === 'first') return current;
  const promise = current.promise.catch((err: ServiceError) => {
    if (err.code !== status.UNIMPLEMENTED) throw err;
    current = unary();
    return current.promise;
  });
  return { promise, cancel: () => current.cancel(), acknowledged: () => current.acknowledged?.() ?? false };
}
