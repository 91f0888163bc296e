/**
 * Admission of client calls before anything is decoded or planned: a grpc-js server interceptor reads the
 * call's headers (identity, deadline), asks {@link Admission}, and either refuses at once
 * (RESOURCE_EXHAUSTED with the `grpc-retry-pushback-ms` trailer, the message never read) or passes the
 * call on with its {@link Ticket} attached to the metadata; the ticket is released when the status is sent.
 */
import * as grpc from '@grpc/grpc-js';
import { PUSHBACK_HEADER } from '../../errors';
import { isRefusal, type Admission, type Refusal, type Ticket } from './admission';

/** Where a call's ticket travels from the interceptor to the middleware (a symbol: never serialized). */
const TICKET = Symbol('wanas.admission.ticket');
/** The header naming a client in insecure mode (untrusted: for development and tests). */
export const CLIENT_HEADER = 'x-wanas-client';
/** Longest identity taken from the header. */
const MAX_CLIENT_NAME = 128;

/** The ticket the interceptor attached to a call's metadata, if any. */
export function ticketOf(md: grpc.Metadata): Ticket | undefined {
  return (md as unknown as { [TICKET]?: Ticket })[TICKET];
}

/** What the interceptor needs of its broker. */
export interface AdmissionInterceptorDeps {
  admission: Admission;
  /** The methods it admits (full paths, e.g. `/wanas.v1.AggregationService/Aggregate`). */
  paths: ReadonlySet<string>;
  /** The caller's identity: certificate CN or token name, or undefined (insecure mode, or unauthenticated). */
  identity: (call: grpc.ServerInterceptingCallInterface, md: grpc.Metadata) => string | undefined;
  /** Called with every refusal (log line and metrics). */
  onRefused: (path: string, client: string, refusal: Refusal, md: grpc.Metadata) => void;
}

/** The interceptor (see the file's comment). */
export function admissionInterceptor(deps: AdmissionInterceptorDeps): grpc.ServerInterceptor {
  return (method, call) => {
    if (!deps.paths.has(method.path)) return new grpc.ServerInterceptingCall(call);
    let ticket: Ticket | undefined;
    return new grpc.ServerInterceptingCall(call, {
      start: (next) =>
        next({
          onReceiveMetadata: (md, mdNext) => {
            const client = clientName(deps.identity(call, md), md, call.getPeer());
            const d = call.getDeadline();
            const deadline = d instanceof Date ? d.getTime() : Number.isFinite(d) ? d : undefined;
            const decision = deps.admission.admit('aggregate', client, deadline);
            if (isRefusal(decision)) {
              deps.onRefused(method.path, client, decision, md);
              const trailer = new grpc.Metadata();
              trailer.set(PUSHBACK_HEADER, String(decision.pushbackMs));
              call.sendStatus({
                code: grpc.status.RESOURCE_EXHAUSTED,
                details: decision.message,
                metadata: trailer,
              });
              return;
            }
            ticket = decision;
            (md as unknown as { [TICKET]?: Ticket })[TICKET] = ticket;
            mdNext(md);
          },
          // A call that ends without a status from us (the caller cancelled) frees its share too.
          onCancel: () => ticket?.release(),
        }),
      sendStatus: (status, statusNext) => {
        ticket?.release();
        statusNext(status);
      },
    });
  };
}

/**
 * A client's identity for fair shares: its certificate CN or token name; in insecure mode the
 * `x-wanas-client` header (untrusted), else the peer's host.
 */
export function clientName(authenticated: string | undefined, md: grpc.Metadata, peer: string): string {
  if (authenticated) return authenticated;
  const header = md.get(CLIENT_HEADER)[0];
  if (typeof header === 'string' && header) return header.slice(0, MAX_CLIENT_NAME);
  const i = peer.lastIndexOf(':');
  return i > 0 ? peer.slice(0, i) : peer;
}
