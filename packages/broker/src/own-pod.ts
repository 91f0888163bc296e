import { status } from '@grpc/grpc-js';
import type { Context } from '@opentelemetry/api';
import { msToDuration, type Attempt, type PodResult } from '@wanas/proto';
import type { Logger } from 'winston';
import { toBrokerError } from './errors';
import { failed } from './fan-out';
import { asJsonObject } from './operations/json';
import type { JsonObject, Operation } from './operations/types';
import type { PodStore } from './store/pod-store';
import { inOperationSpan } from './tracing';
import type { BrokerInfo } from './topology';

/** What running an operation in this broker's pod needs. */
export interface OwnPodDeps {
  self: BrokerInfo;
  store: PodStore;
  logger: Logger;
}

/** Runs the operation in this broker's pod; never rejects: an error becomes the pod's result. */
export async function runOwnPod(
  deps: OwnPodDeps,
  op: Operation,
  params: JsonObject,
  a: {
    correlationId: string;
    headers: Record<string, string>;
    idempotencyKey: string;
    deadline: number;
    signal: AbortSignal;
    /** The call's trace context: the operation's span is its child. */
    trace: Context;
    /** The call does nothing but this operation (a LocalRequest): its server span is the operation's. */
    inCallSpan?: boolean;
  },
): Promise<PodResult> {
  const { self, store, logger } = deps;
  const t0 = Date.now();
  const attempt = (code: number, message: string): Attempt => ({
    brokerId: self.id,
    address: self.address,
    code,
    message,
    latency: msToDuration(Date.now() - t0),
    hedged: false,
  });
  try {
    const result = await inOperationSpan(
      op.name,
      a.trace,
      () =>
        op.execute(params, {
          site: self.site,
          pod: self.pod,
          brokerId: self.id,
          correlationId: a.correlationId,
          headers: a.headers,
          store,
          idempotencyKey: a.idempotencyKey,
          deadline: a.deadline,
          // A getter: the caller's signal is made on first use (see the server's IncomingCall).
          get signal() {
            return a.signal;
          },
          logger,
        }),
      a.inCallSpan,
    );
    return {
      site: self.site,
      pod: self.pod,
      code: 0,
      message: '',
      result: asJsonObject(result),
      answeredBy: self.id,
      attempts: [attempt(0, '')],
      latency: msToDuration(Date.now() - t0),
    };
  } catch (e) {
    const err = toBrokerError(e);
    if (err.code === status.INTERNAL) {
      logger.error('operation failed', {
        correlationId: a.correlationId,
        operation: op.name,
        error: String(err.cause ?? err),
      });
    }
    return {
      ...failed(self, err.code, err.details, [attempt(err.code, err.details)]),
      answeredBy: self.id,
    };
  }
}
