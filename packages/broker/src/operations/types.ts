import type { JsonObject, Operation as SdkOperation, OperationContext } from '@wanas/operations';
import type { PodState } from '../store/pod-state';

export type { JsonObject, OperationContext, OperationInfo, PodOutcome, ShapeTarget } from '@wanas/operations';

/**
 * What the broker's own operations see: the SDK's context plus the pod's store (the built-in desktop
 * operations keep their inventory there). A plug-in module sees the SDK's {@link OperationContext} only.
 */
export interface BrokerOperationContext extends OperationContext {
  /** The pod's store (shared by the pod's brokers). */
  store: PodState;
}

/** An operation as the broker holds it: an SDK operation, run with the broker's context. */
export type Operation<P extends JsonObject = JsonObject> = SdkOperation<P, BrokerOperationContext>;
