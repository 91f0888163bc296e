/**
 * @wanas/operations — the SDK a plug-in module is written against: {@link Operation}, {@link defineOperation},
 * the {@link OperationContext} (signal, deadline, logger, idempotency key, `once`), {@link OperationError}
 * and the gRPC {@link Code}s. It depends on zod alone (re-exported as `z`), never on the broker.
 */
export { z } from 'zod';
export * from './abortable';
export * from './cache';
export * from './codes';
export * from './operation';
export * from './operation-error';
