import * as grpc from '@grpc/grpc-js';
import type { FederationServiceClient } from '@wanas/proto';
import { createHealthProbe } from './health-probe';
import type { Entry } from './ordering';
import type { Connectivity } from './types';

const CONNECTIVITY: Record<grpc.connectivityState, Connectivity> = {
  [grpc.connectivityState.IDLE]: 'idle',
  [grpc.connectivityState.CONNECTING]: 'connecting',
  [grpc.connectivityState.READY]: 'ready',
  [grpc.connectivityState.TRANSIENT_FAILURE]: 'transient-failure',
  [grpc.connectivityState.SHUTDOWN]: 'shutdown',
};

/**
 * Gives `entry` the channel `make` creates and its health probe, and watches the channel's connectivity
 * for as long as it is the entry's: each change is reported to `changed` (the health state machine). A warm
 * channel whose connection dropped, and any channel that lost a live connection, reconnects at once.
 */
export function openChannel(
  entry: Entry,
  make: () => FederationServiceClient,
  changed: (prev: Connectivity, next: Connectivity) => void,
): FederationServiceClient {
  const client = make();
  entry.client = client;
  entry.probe = createHealthProbe(client.getChannel());
  const channel = client.getChannel();
  const watch = (state: grpc.connectivityState) => {
    if (entry.client !== client) return; // a closed channel's last words say nothing of the endpoint
    const next = CONNECTIVITY[state];
    const prev = entry.connectivity;
    if (next !== prev) {
      entry.connectivity = next;
      changed(prev, next);
    }
    if (state === grpc.connectivityState.SHUTDOWN || entry.client !== client) return;
    // A warm channel whose connection dropped reconnects now, not at the next request, and so does any
    // channel that lost a live connection: the reconnect's verdict (ready, refused, or silent until the
    // connect timeout) says whether the peer is still there before a request has to pay for it.
    // (Asking to connect may change the state at once: that state is handled, not just watched from.)
    const reconnect = next === 'idle' && (entry.warm || prev === 'ready');
    const current = reconnect ? channel.getConnectivityState(true) : state;
    if (current !== state) return watch(current);
    channel.watchConnectivityState(state, Infinity, () => watch(channel.getConnectivityState(false)));
  };
  watch(channel.getConnectivityState(true));
  return client;
}

/** Closes the entry's channel and probe, if any: its connectivity is `none` until a channel is opened again. */
export function dropChannel(entry: Entry): void {
  if (!entry.client) return;
  entry.probe?.close();
  entry.client.close();
  entry.client = undefined;
  entry.probe = undefined;
  entry.connectivity = 'none';
}
