import type { ClientReadableStream, ClientUnaryCall, ServiceError } from '@grpc/grpc-js';

/** One started call that can be cancelled. */
export interface CancellableCall<R> {
  promise: Promise<R>;
  cancel(): void;
  /**
   * True once the peer has acknowledged the call (sent its response headers before the answer): it is
   * alive and working on it. See {@link HedgeOptions.onlyUnacknowledged}.
   */
  acknowledged?(): boolean;
}

/** Adapts a grpc-js unary call (callback style) to a {@link CancellableCall}. */
export function unaryCall<Res>(
  start: (callback: (err: ServiceError | null, res?: Res) => void) => ClientUnaryCall,
): CancellableCall<Res> {
  let call: ClientUnaryCall | undefined;
  let acked = false;
  const promise = new Promise<Res>((resolve, reject) => {
    call = start((err, res) => (err ? reject(err) : resolve(res as Res)));
  });
  call?.on('metadata', () => (acked = true));
  return { promise, cancel: () => call?.cancel(), acknowledged: () => acked };
}

/**
 * Adapts a grpc-js server-streaming call to a {@link CancellableCall} of all its messages: `onMessage`
 * sees each as it arrives; the promise resolves with them all when the stream ends OK and rejects with
 * the call's error otherwise. Response headers count as the acknowledgement.
 */
export function streamCall<Msg>(
  stream: ClientReadableStream<Msg>,
  onMessage: (msg: Msg) => void,
): CancellableCall<Msg[]> {
  let acked = false;
  const messages: Msg[] = [];
  stream.on('metadata', () => (acked = true));
  const promise = new Promise<Msg[]>((resolve, reject) => {
    stream.on('data', (msg: Msg) => {
      messages.push(msg);
      onMessage(msg);
    });
    // grpc-js emits 'error' for a non-OK status before the stream's end; the first to settle counts.
    stream.on('error', reject);
    stream.on('end', () => resolve(messages));
  });
  return { promise, cancel: () => stream.cancel(), acknowledged: () => acked };
}
