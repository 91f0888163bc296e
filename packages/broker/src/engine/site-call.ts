/**
 * One federation request attempt: a SiteRequest in the way the plan chose (unary, streamed pod by pod, or
 * a first-fit search: streamed, never downgraded to unary, as an older representative would act in every
 * pod listed), or a LocalRequest. Each goes as a frame on a session to the peer when there is one open,
 * else as its own call.
 */
import { status, type Metadata, type ServiceError } from '@grpc/grpc-js';
import { streamCall, unaryCall, type CancellableCall } from '@wanas/iterator';
import type {
  FederationServiceClient,
  LocalRequest,
  LocalResponse,
  PodResult,
  SessionAnswer,
  SiteRequest,
  SiteResponse,
  SiteStreamEvent,
} from '@wanas/proto';
import { sessionError } from '../session/frames';
import type { PeerSession } from '../session/peer-session';

/** The trace context a call's metadata carries (the attempt span's), for a frame. */
const traceparentOf = (md: Metadata): string => String(md.get('traceparent')[0] ?? '');

/** The answer a request's last frame carries, or a failed call's error when it carries another. */
function answerOf<K extends 'site' | 'local'>(a: SessionAnswer, kind: K) {
  const answer = a.answer;
  if (answer?.$case !== kind)
    throw sessionError(status.INTERNAL, `session answered ${answer?.$case} to a ${kind} request`);
  return answer as Extract<NonNullable<SessionAnswer['answer']>, { $case: K }>;
}

/** One LocalRequest attempt: a frame on `session` when given, else a unary call. */
export function localCall(
  client: FederationServiceClient,
  req: LocalRequest,
  md: Metadata,
  deadline: Date,
  session: PeerSession | undefined,
): CancellableCall<LocalResponse> {
  if (!session) return unaryCall<LocalResponse>((cb) => client.localRequest(req, md, { deadline }, cb));
  const frame = {
    frame: { $case: 'local' as const, local: req },
    stream: false,
    traceparent: traceparentOf(md),
  };
  const call = session.request(frame, deadline);
  return { ...call, promise: call.promise.then((a) => answerOf(a, 'local').local) };
}

/** One SiteRequest attempt as a frame on `session`: its pods as they come when streamed, else the site's answer. */
function siteFrame(
  session: PeerSession,
  req: SiteRequest,
  md: Metadata,
  deadline: Date,
  stream: boolean,
  onPod: (pod: PodResult) => void,
): CancellableCall<(PodResult | undefined)[]> {
  const streamed: PodResult[] = [];
  const frame = { frame: { $case: 'site' as const, site: req }, stream, traceparent: traceparentOf(md) };
  const call = session.request(frame, deadline, (pod) => {
    streamed.push(pod);
    onPod(pod);
  });
  const promise = call.promise.then((a) => {
    const { site } = answerOf(a, 'site');
    // Streamed, the last frame is the site's answer without its pods: they came one by one.
    return stream ? streamed : site.pods;
  });
  return { ...call, promise };
}

/**
 * Starts one SiteRequest attempt; resolves with the pods it answered for. `unary`: SiteRequest, the site's
 * answer whole. `stream`: StreamSiteRequest, each pod reported to `onPod` as it finishes; a representative
 * of an older version (UNIMPLEMENTED) is asked the unary way instead. `first`: StreamSiteRequest with no
 * such fallback, so an older representative, which would not know `first` and would act in every pod
 * listed, is never sent a first-fit write. With a `session` (whose peer is of a version that knows them
 * all), a frame instead.
 */
export function siteCall(
  client: FederationServiceClient,
  req: SiteRequest,
  md: Metadata,
  deadline: Date,
  how: 'unary' | 'stream' | 'first',
  onPod: (pod: PodResult) => void,
  session?: PeerSession,
): CancellableCall<(PodResult | undefined)[]> {
  if (session) return siteFrame(session, req, md, deadline, how !== 'unary', onPod);
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
