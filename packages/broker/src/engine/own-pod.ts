import { status } from '@grpc/grpc-js';
import type { Context } from '@opentelemetry/api';
import { msToDuration, type Attempt, type PageWindow, type PodResult } from '@wanas/proto';
import type { Logger } from 'winston';
import { toBrokerError } from '../errors';
import { failed } from './model';
import { cutPodPage, pageRequestOf } from './paging/pod-page';
import { asJsonObject } from '../operations/json';
import { runOnce } from '../ledger/run-once';
import type { BrokerOperationContext, JsonObject, Operation } from '../operations/types';
import type { PodState } from '../store/pod-state';
import { inOperationSpan } from '../telemetry/tracing';
import type { BrokerInfo } from '@wanas/topology';

/** What running an operation in this broker's pod needs. */
export interface OwnPodDeps {
  self: BrokerInfo;
  store: PodState;
  logger: Logger;
}

/** The request an operation runs for in this pod. */
export interface OwnPodRequest {
  correlationId: string;
  headers: Record<string, string>;
  idempotencyKey: string;
  deadline: number;
  signal: AbortSignal;
  /** The call's trace context: the operation's span is its child. */
  trace: Context;
  /** The call does nothing but this operation (a LocalRequest): its server span is the operation's. */
  inCallSpan?: boolean;
  /** A pageable operation's window: what it is asked for, and what its answer is cut to. */
  page?: PageWindow | undefined;
}

/**
 * What the operation sees: the request, the pod's store, a logger with the correlation id (made on first
 * use), and `once` over the pod's idempotency ledger.
 */
function operationContext(
  deps: OwnPodDeps,
  op: Operation,
  params: JsonObject,
  a: OwnPodRequest,
  traceparent: () => string | undefined,
): BrokerOperationContext {
  const { self, store, logger } = deps;
  let opLogger: Logger | undefined;
  return {
    site: self.site,
    pod: self.pod,
    brokerId: self.id,
    correlationId: a.correlationId,
    headers: a.headers,
    store,
    idempotencyKey: a.idempotencyKey,
    deadline: a.deadline,
    // Getters: the caller's signal is made on first use (see the server's IncomingCall), the logger too.
    get signal() {
      return a.signal;
    },
    get logger() {
      return (opLogger ??= logger.child({ correlationId: a.correlationId, operation: op.name }));
    },
    // Formatted only for an operation that sends it on (a backend call).
    get traceparent() {
      return traceparent();
    },
    page: a.page && op.page ? pageRequestOf(a.page) : undefined,
    once: (action) =>
      runOnce(
        {
          store,
          brokerId: self.id,
          operation: op.name,
          params,
          idempotencyKey: a.idempotencyKey,
          deadline: a.deadline,
          signal: a.signal,
        },
        action,
      ),
  };
}

/** Runs the operation in this broker's pod; never rejects: an error becomes the pod's result. */
export async function runOwnPod(
  deps: OwnPodDeps,
  op: Operation,
  params: JsonObject,
  a: OwnPodRequest,
): Promise<PodResult> {
  const { self, logger } = deps;
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
      (traceparent) => op.execute(params, operationContext(deps, op, params, a, traceparent)),
      a.inCallSpan,
    );
    const page =
      op.page && a.page
        ? cutPodPage(op.page, asJsonObject(result), a.page, `${self.site}/${self.pod}`)
        : { result: asJsonObject(result), truncated: false, cursor: '' };
    return {
      site: self.site,
      pod: self.pod,
      code: 0,
      message: '',
      result: page.result,
      answeredBy: self.id,
      attempts: [attempt(0, '')],
      latency: msToDuration(Date.now() - t0),
      truncated: page.truncated,
      cursor: page.cursor,
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
