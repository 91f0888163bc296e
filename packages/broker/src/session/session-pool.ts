/**
 * The sessions a broker keeps to its peers: a few (`perPeer`) per peer channel, opened on first use once
 * the channel is connected, reopened after one ends or breaks (never a request resent on the new one: a
 * request in flight on a broken session failed with it). A peer that does not offer sessions (an older
 * version: UNIMPLEMENTED) or refuses them is called the unary way, and asked again after `retryAfterMs`.
 */
import { connectivityState, status, type ServiceError } from '@grpc/grpc-js';
import type { FederationServiceClient } from '@wanas/proto';
import type { Logger } from 'winston';
import { PeerSession } from './peer-session';

/** Options of a {@link SessionPool}. */
export interface SessionPoolOptions {
  /** Sessions per peer channel, at most. */
  perPeer: number;
  /** Requests in flight per session, at most; more wait (back-pressure). */
  maxInFlight: number;
  /** How long a peer that refused sessions is called unary before it is asked again, ms. */
  retryAfterMs: number;
  log: Logger;
}

/** Default time before a peer that refused sessions is asked again, ms (a rolling upgrade moves on). */
export const SESSION_RETRY_AFTER_MS = 30_000;

/** The sessions to one peer channel. */
interface PeerSessions {
  sessions: PeerSession[];
  /** Refused until then (epoch ms): the peer is called unary. */
  refusedUntil: number;
}

/** A broker's sessions to its peers, by channel. */
export class SessionPool {
  private readonly peers = new Map<FederationServiceClient, PeerSessions>();
  private closed = false;

  constructor(private readonly opts: SessionPoolOptions) {}

  /**
   * The open session with the fewest requests to the peer behind `client`, or undefined: then the request
   * goes as a unary call (no session yet: one is opened now if the channel is connected; or the peer
   * refused them). A full session is still returned: the request waits its turn there.
   */
  pick(client: FederationServiceClient): PeerSession | undefined {
    if (this.closed) return undefined;
    let peer = this.peers.get(client);
    if (!peer) this.peers.set(client, (peer = { sessions: [], refusedUntil: 0 }));
    if (peer.refusedUntil > Date.now()) return undefined;
    let best: PeerSession | undefined;
    for (const s of peer.sessions) if (s.state === 'open' && (!best || s.load < best.load)) best = s;
    const opening = peer.sessions.some((s) => s.state === 'opening');
    const wantMore = !best || (best.load > 0 && peer.sessions.length < this.opts.perPeer);
    if (wantMore && !opening && ready(client)) this.open(client, peer);
    return best;
  }

  /** Sessions open and opening now, and requests in flight on them or waiting (status and metrics). */
  stats(): { open: number; opening: number; inFlight: number } {
    const n = { open: 0, opening: 0, inFlight: 0 };
    for (const p of this.peers.values()) {
      for (const s of p.sessions) {
        if (s.state === 'open') n.open++;
        if (s.state === 'opening') n.opening++;
        n.inFlight += s.load;
      }
    }
    return n;
  }

  /** Closes every session (their requests in flight are cancelled); none is opened again. */
  close(): void {
    this.closed = true;
    for (const p of this.peers.values()) for (const s of [...p.sessions]) s.close();
    this.peers.clear();
  }

  private open(client: FederationServiceClient, peer: PeerSessions): void {
    const session = new PeerSession(client, {
      maxInFlight: this.opts.maxInFlight,
      onClosed: (s, err) => this.closedOne(client, peer, s, err),
    });
    peer.sessions.push(session);
  }

  /** One session ended: it goes; a refusal is remembered; the next pick opens a new one. */
  private closedOne(
    client: FederationServiceClient,
    peer: PeerSessions,
    session: PeerSession,
    err: ServiceError,
  ): void {
    peer.sessions = peer.sessions.filter((s) => s !== session);
    if (REFUSED.has(err.code)) {
      peer.refusedUntil = Date.now() + this.opts.retryAfterMs;
      this.opts.log.info('peer does not take sessions; calling it unary', {
        peer: client.getChannel().getTarget(),
        code: err.code,
        error: err.details,
        retryAfterMs: this.opts.retryAfterMs,
      });
    }
    if (!peer.sessions.length && peer.refusedUntil <= Date.now()) this.peers.delete(client);
  }
}

/** Codes of a peer that does not take sessions (an older version, or one that refuses this broker). */
const REFUSED = new Set<number>([status.UNIMPLEMENTED, status.PERMISSION_DENIED, status.UNAUTHENTICATED]);

/** The channel is connected: a session opened now is up in one round trip. */
function ready(client: FederationServiceClient): boolean {
  return client.getChannel().getConnectivityState(false) === connectivityState.READY;
}
