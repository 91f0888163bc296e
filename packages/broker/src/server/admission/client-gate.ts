/**
 * Admission of client calls before anything is decoded or planned. The admitted methods (Aggregate,
 * StreamAggregate) are served with their request as bytes ({@link rawRequests}); the gate reads the call's
 * headers (identity, deadline), asks {@link Admission}, and either refuses (RESOURCE_EXHAUSTED with the
 * `grpc-retry-pushback-ms` trailer; the request is never decoded) or gives the call its {@link Ticket},
 * and only then is the request decoded. A grpc-js server interceptor could decide on the headers alone,
 * but once a server has one, grpc-js runs every call through its interceptor chain, federation calls
 * included: about 140 µs of CPU per Aggregate on the bench, for a decision that needs no more than this.
 */
import * as grpc from '@grpc/grpc-js';
import { deadlineOf, type ServedCall } from '../../call-context';
import { PUSHBACK_HEADER } from '@wanas/proto';
import { isRefusal, type Admission, type Refusal, type Ticket } from './admission';

/** The header naming a client in insecure mode (untrusted: for development and tests). */
export const CLIENT_HEADER = 'x-wanas-client';
/** Longest identity taken from the header. */
const MAX_CLIENT_NAME = 128;

/** What the gate needs of its broker. */
export interface ClientGateDeps {
  admission: Admission;
  /** The caller's identity: certificate CN or token name, or undefined (insecure mode, or unauthenticated). */
  identity: (call: ServedCall) => string | undefined;
  /** Called with every refusal (log line and metrics); `method` is the full path. */
  onRefused: (method: string, client: string, refusal: Refusal) => void;
}

/** Admits a client call on its headers: its ticket, or the status that refuses it. */
export type ClientGate = (call: ServedCall, method: string) => Ticket | grpc.StatusObject;

/** The gate (see the file's comment). */
export function clientGate(deps: ClientGateDeps): ClientGate {
  return (call, method) => {
    const client = clientName(deps.identity(call), call.metadata, () => call.getPeer());
    const decision = deps.admission.admit('aggregate', client, deadlineOf(call));
    if (!isRefusal(decision)) return decision;
    deps.onRefused(method, client, decision);
    const metadata = new grpc.Metadata();
    metadata.set(PUSHBACK_HEADER, String(decision.pushbackMs));
    return { code: grpc.status.RESOURCE_EXHAUSTED, details: decision.message, metadata };
  };
}

/** True when the gate admitted the call. */
export function isTicket(x: Ticket | grpc.StatusObject): x is Ticket {
  return (x as Ticket).release !== undefined;
}

/**
 * A copy of a service definition whose `methods` take their request as bytes (decoded by the handler once
 * the call is admitted). Reflection and clients still see the service's own types.
 */
export function rawRequests<T extends grpc.ServiceDefinition>(def: T, methods: readonly (keyof T)[]): T {
  const out = { ...def };
  for (const m of methods)
    out[m] = { ...def[m], requestDeserialize: (b: Buffer) => b } as unknown as T[keyof T];
  return out;
}

/**
 * A client's identity for fair shares: its certificate CN or token name; in insecure mode the
 * `x-wanas-client` header (untrusted), else the peer's host (asked for only then).
 */
export function clientName(authenticated: string | undefined, md: grpc.Metadata, peer: () => string): string {
  if (authenticated) return authenticated;
  const header = md.get(CLIENT_HEADER)[0];
  if (typeof header === 'string' && header) return header.slice(0, MAX_CLIENT_NAME);
  const p = peer();
  const i = p.lastIndexOf(':');
  return i > 0 ? p.slice(0, i) : p;
}
