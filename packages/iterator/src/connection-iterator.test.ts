import * as grpc from '@grpc/grpc-js';
import * as net from 'node:net';
import {
  FederationServiceClient,
  LocalRequest,
  LocalResponse,
  type Endpoint,
  type TargetList,
} from '@wanas/proto';
import {
  ConnectionIterator,
  DEADLINE_REACHED,
  MAX_HEDGES_PER_REQUEST,
  unaryCall,
  type EndpointSource,
} from './connection-iterator';
import { HedgeBudget } from './hedge-budget';
// eslint-disable-next-line @typescript-eslint/no-require-imports
const { startPeer } = require('../../../test/support/peer-server');

type Peer = Awaited<ReturnType<typeof startPeer>>;

/** Real grpc-js clients, one per address, in the target list's own order (no health). */
class PlainSource implements EndpointSource<FederationServiceClient> {
  readonly clients = new Map<string, FederationServiceClient>();
  order(target: TargetList): Endpoint[] {
    return target.endpoints;
  }
  client(ep: Endpoint): FederationServiceClient {
    let c = this.clients.get(ep.address);
    if (!c) {
      // The connection manager's reconnect back-off (grpc-js's default starts at 1 s).
      c = new FederationServiceClient(ep.address, grpc.credentials.createInsecure(), {
        'grpc.initial_reconnect_backoff_ms': 200,
        'grpc.max_reconnect_backoff_ms': 1000,
      });
      this.clients.set(ep.address, c);
    }
    return c;
  }
  track<R>(_ep: Endpoint, run: () => Promise<R>): Promise<R> {
    return run();
  }
  close(): void {
    for (const c of this.clients.values()) c.close();
  }
}

async function refusedAddress(): Promise<string> {
  const s = net.createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  const port = (s.address() as net.AddressInfo).port;
  await new Promise((r) => s.close(r));
  return `127.0.0.1:${port}`;
}

const request = LocalRequest.fromPartial({ correlationId: 'c', operation: 'echo', params: { x: 1 } });

function run(
  source: EndpointSource<FederationServiceClient>,
  addresses: string[],
  extra: {
    deadlineMs?: number;
    attemptTimeoutMs?: number;
    idempotent?: boolean;
    hedge?: { delayMs?: number; budget: HedgeBudget; onlyUnacknowledged?: boolean };
    signal?: AbortSignal;
  } = {},
) {
  const target: TargetList = {
    site: 's',
    pod: 'p',
    endpoints: addresses.map((address, i) => ({ brokerId: `b${i}`, address })),
  };
  return new ConnectionIterator<FederationServiceClient, LocalResponse>({
    target,
    source,
    attempt: (client, _ep, deadline, mode) =>
      unaryCall((cb) =>
        client.localRequest(
          request,
          new grpc.Metadata({ waitForReady: mode.waitForReady }),
          { deadline },
          cb,
        ),
      ),
    deadline: Date.now() + (extra.deadlineMs ?? 3000),
    attemptTimeoutMs: extra.attemptTimeoutMs ?? 1000,
    idempotent: extra.idempotent ?? true,
    hedge: extra.hedge,
    signal: extra.signal,
  }).run();
}

describe('ConnectionIterator against real grpc-js servers', () => {
  let peers: Peer[] = [];
  let source: PlainSource;
  const peer = async (behaviour?: unknown) => {
    const p = await startPeer({ id: `peer${peers.length}`, behaviour });
    peers.push(p);
    return p;
  };
  beforeEach(() => {
    source = new PlainSource();
  });
  afterEach(async () => {
    source.close();
    await Promise.all(peers.map((p) => p.stop()));
    peers = [];
  });

  it('fails over from a refused port to the next endpoint', async () => {
    const good = await peer();
    const out = await run(source, [await refusedAddress(), good.address]);
    expect(out.ok).toBe(true);
    expect(out.attempts.map((a) => a.code)).toEqual([grpc.status.UNAVAILABLE, grpc.status.OK]);
    if (out.ok) expect(out.endpoint.brokerId).toBe('b1');
  });

  it('fails over from a server that accepts but never answers, after the attempt timeout', async () => {
    const hang = await peer({ kind: 'hang' });
    const good = await peer();
    const t0 = Date.now();
    const out = await run(source, [hang.address, good.address], { attemptTimeoutMs: 200 });
    const elapsed = Date.now() - t0;
    expect(out.ok).toBe(true);
    expect(out.attempts.map((a) => a.code)).toEqual([grpc.status.DEADLINE_EXCEEDED, grpc.status.OK]);
    expect(elapsed).toBeGreaterThanOrEqual(195);
    expect(good.calls()).toBe(1);
  });

  it('fails over from a server that returns UNAVAILABLE', async () => {
    const bad = await peer({ kind: 'unavailable' });
    const good = await peer();
    const out = await run(source, [bad.address, good.address]);
    expect(out.ok).toBe(true);
    expect(out.attempts).toHaveLength(2);
    expect(bad.calls()).toBe(1);
  });

  it("does not retry the caller's errors: INVALID_ARGUMENT is the answer", async () => {
    const invalid = await peer({ kind: 'invalid' });
    const good = await peer();
    const out = await run(source, [invalid.address, good.address]);
    expect(out.ok).toBe(false);
    if (!out.ok) {
      expect(out.code).toBe(grpc.status.INVALID_ARGUMENT);
      expect(out.message).toContain('params.user');
    }
    expect(good.calls()).toBe(0);
  });

  it('never exceeds the overall deadline, and says what was tried', async () => {
    const a = await peer({ kind: 'hang' });
    const b = await peer({ kind: 'hang' });
    const t0 = Date.now();
    const out = await run(source, [a.address, b.address], { deadlineMs: 300, attemptTimeoutMs: 200 });
    const elapsed = Date.now() - t0;
    expect(out.ok).toBe(false);
    if (!out.ok) {
      expect(out.code).toBe(grpc.status.DEADLINE_EXCEEDED);
      expect(out.message).toMatch(/b0: DEADLINE_EXCEEDED.*b1: DEADLINE_EXCEEDED/);
    }
    expect(elapsed).toBeLessThan(300 + 100);
    // The second attempt only had the 100 ms left of the overall budget.
    expect(out.attempts[1]!.latencyMs).toBeLessThan(150);
  });

  it('reports UNAVAILABLE with every attempt when all endpoints are down, after one bounded reconnect wait', async () => {
    const t0 = Date.now();
    const out = await run(source, [await refusedAddress(), await refusedAddress()]);
    expect(out.ok).toBe(false);
    if (!out.ok) {
      expect(out.code).toBe(grpc.status.UNAVAILABLE);
      expect(out.message).toContain('all 3 attempts failed for s/p');
      expect(out.attempts.map((a) => a.brokerId)).toEqual(['b0', 'b1', 'b0']);
    }
    expect(Date.now() - t0).toBeLessThan(3000); // the wait is bounded (RECONNECT_WAIT_MS), not the deadline
  });

  it('waits for a refused endpoint that comes back (a pod whose only broker is restarting)', async () => {
    const address = await refusedAddress();
    const port = Number(address.split(':')[1]);
    // The broker is back 300 ms after the request started: within the last-resort reconnect wait.
    const back = new Promise<Peer>((resolve) =>
      setTimeout(() => void startPeer({ id: 'back', port }).then(resolve), 300),
    );
    const out = await run(source, [address], { idempotent: false });
    const p = await back;
    peers.push(p);
    expect(out.ok).toBe(true);
    expect(out.attempts.map((a) => a.code)).toEqual([grpc.status.UNAVAILABLE, grpc.status.OK]);
    expect(p.calls()).toBe(1);
  });

  it('does not resend a state-changing request that may have reached the peer', async () => {
    const bad = await peer({ kind: 'unavailable' });
    const good = await peer();
    const out = await run(source, [bad.address, good.address], { idempotent: false });
    expect(out.ok).toBe(false);
    expect(good.calls()).toBe(0);
  });

  it('does resend a state-changing request when the connection was refused', async () => {
    const good = await peer();
    const out = await run(source, [await refusedAddress(), good.address], { idempotent: false });
    expect(out.ok).toBe(true);
    expect(good.calls()).toBe(1);
  });

  it('hedges a slow endpoint: the first answer wins, the loser is cancelled', async () => {
    const slow = await peer({ kind: 'ok', delayMs: 400 });
    const fast = await peer();
    const t0 = Date.now();
    const out = await run(source, [slow.address, fast.address], {
      hedge: { delayMs: 20, budget: new HedgeBudget(0.1, 10, 1) },
    });
    expect(Date.now() - t0).toBeLessThan(400);
    expect(out.ok).toBe(true);
    if (out.ok) expect(out.endpoint.address).toBe(fast.address);
    const hedge = out.attempts.find((a) => a.hedged);
    expect(hedge?.code).toBe(grpc.status.OK);
    expect(out.attempts.find((a) => !a.hedged)?.code).toBe(grpc.status.CANCELLED);
  });

  it('hedges again when the twin it hedged to is stuck too, at most MAX_HEDGES_PER_REQUEST times', async () => {
    // Two stuck twins before a good one: the second hedge reaches it long before any attempt timeout.
    const stuck = [await peer({ kind: 'hang' }), await peer({ kind: 'hang' })];
    const good = await peer();
    let t0 = Date.now();
    let out = await run(source, [stuck[0]!.address, stuck[1]!.address, good.address], {
      attemptTimeoutMs: 1000,
      hedge: { delayMs: 20, budget: new HedgeBudget(0.1, 10, 10) },
    });
    expect(Date.now() - t0).toBeLessThan(500);
    expect(out.ok).toBe(true);
    if (out.ok) expect(out.endpoint.address).toBe(good.address);
    expect(out.attempts.filter((a) => a.hedged).map((a) => a.brokerId)).toEqual(['b2', 'b1']);
    // Three stuck: after two hedges the fourth endpoint waits for the first attempt's timeout.
    const third = await peer({ kind: 'hang' });
    t0 = Date.now();
    out = await run(source, [stuck[0]!.address, stuck[1]!.address, third.address, good.address], {
      attemptTimeoutMs: 300,
      hedge: { delayMs: 20, budget: new HedgeBudget(0.1, 10, 10) },
    });
    expect(Date.now() - t0).toBeGreaterThanOrEqual(290);
    expect(out.ok).toBe(true);
    expect(out.attempts.filter((a) => a.hedged)).toHaveLength(MAX_HEDGES_PER_REQUEST);
    expect(third.calls()).toBe(1);
  });

  it('keeps hedges within the budget however slow the first endpoint is', async () => {
    const slow = await peer({ kind: 'ok', delayMs: 30 });
    const fast = await peer();
    const budget = new HedgeBudget(0.1, 10, 1);
    for (let i = 0; i < 40; i++) {
      await run(source, [slow.address, fast.address], { hedge: { delayMs: 1, budget } });
    }
    const { requests, hedges } = budget.stats();
    expect(requests).toBe(40);
    expect(hedges).toBeGreaterThanOrEqual(4);
    expect(hedges).toBeLessThanOrEqual(1 + 0.1 * 40);
    expect(fast.calls()).toBe(hedges);
  });

  it('sends no hedge while the budget says the broker is overloaded, and counts what it held back', async () => {
    const slow = await peer({ kind: 'ok', delayMs: 150 });
    const fast = await peer();
    let overloaded = true;
    const budget = new HedgeBudget(1, 10, 10, () => overloaded);
    const held = await run(source, [slow.address, fast.address], { hedge: { delayMs: 10, budget } });
    expect(held.ok && held.endpoint.address).toBe(slow.address);
    expect(held.attempts.some((a) => a.hedged)).toBe(false);
    expect(budget.stats()).toMatchObject({ hedges: 0, suppressed: 1 });
    overloaded = false;
    const hedged = await run(source, [slow.address, fast.address], { hedge: { delayMs: 10, budget } });
    expect(hedged.ok && hedged.endpoint.address).toBe(fast.address);
    expect(budget.stats()).toMatchObject({ hedges: 1, suppressed: 1 });
  });

  it('cancels every attempt when the caller cancels', async () => {
    const a = await peer({ kind: 'hang' });
    const ac = new AbortController();
    setTimeout(() => ac.abort(), 50);
    const t0 = Date.now();
    const out = await run(source, [a.address], { signal: ac.signal });
    expect(Date.now() - t0).toBeLessThan(900);
    expect(out.ok).toBe(false);
    if (!out.ok) expect(out.code).toBe(grpc.status.CANCELLED);
    expect(out.attempts[0]?.code).toBe(grpc.status.CANCELLED);
  });

  it('reports a target whose every endpoint is known down UNAVAILABLE at once, without an attempt', async () => {
    const a = await peer();
    const b = await peer();
    const since = Date.now() - 1500;
    const down = Object.assign(new PlainSource(), {
      targetDown: () => ({ since, reason: 'b0: connection lost; b1: no connection within 500 ms' }),
    });
    const out = await run(down, [a.address, b.address]);
    down.close();
    expect(out).toMatchObject({ ok: false, code: grpc.status.UNAVAILABLE, attempts: [] });
    if (!out.ok) {
      expect(out.message).toContain(`s/p is down since ${new Date(since).toISOString()}`);
      expect(out.message).toContain('b1: no connection within 500 ms');
    }
    expect(a.calls() + b.calls()).toBe(0);
  });

  it('does not hedge an attempt its peer acknowledged (onlyUnacknowledged), and hedges a silent one', async () => {
    const acking = await peer({ kind: 'ok', delayMs: 300, ack: true });
    const twin = await peer();
    const budget = new HedgeBudget();
    // The hedge fires at 150 ms, half the peers' 300 ms answer: room for the acknowledgement of a first call on
    // a new connection to arrive on a loaded machine (a fresh-check missed a 30 ms delay once).
    const hedge = { delayMs: 150, budget, onlyUnacknowledged: true };
    const acked = await run(source, [acking.address, twin.address], { hedge });
    expect(acked.ok).toBe(true);
    expect(acked.attempts.map((a) => [a.brokerId, a.hedged])).toEqual([['b0', false]]);
    expect(twin.calls()).toBe(0);
    const silent = await peer({ kind: 'ok', delayMs: 300 });
    const out = await run(source, [silent.address, twin.address], { hedge });
    expect(out.ok && out.endpoint.brokerId).toBe('b1');
    expect(out.attempts.find((a) => a.hedged)?.code).toBe(grpc.status.OK);
  });

  it('reports DEADLINE_EXCEEDED with the cut-off attempt when aborted because the overall deadline was reached', async () => {
    const hang = await peer({ kind: 'hang' });
    const ac = new AbortController();
    setTimeout(() => ac.abort(DEADLINE_REACHED), 100);
    const out = await run(source, [hang.address], { signal: ac.signal });
    expect(out.ok).toBe(false);
    if (!out.ok) expect(out.code).toBe(grpc.status.DEADLINE_EXCEEDED);
    expect(out.attempts).toEqual([
      expect.objectContaining({ brokerId: 'b0', code: grpc.status.DEADLINE_EXCEEDED }),
    ]);
  });

  it('switches from a silent endpoint to its twin when the budget has no token for a hedge (no extra load)', async () => {
    const silent = await peer({ kind: 'hang' });
    const twin = await peer();
    const empty = new HedgeBudget(0.1, 10, 0);
    // Fastest usual answer 15 ms: an acknowledgement is due within 2 × 15 + 20 = 50 ms.
    const floored = Object.assign(new PlainSource(), { latencyFloorMs: () => 15 });
    const t0 = Date.now();
    const out = await run(floored, [silent.address, twin.address], {
      attemptTimeoutMs: 2000,
      hedge: { delayMs: 50, budget: empty, onlyUnacknowledged: true },
    });
    expect(Date.now() - t0).toBeLessThan(1000);
    expect(out.ok && out.endpoint.brokerId).toBe('b1');
    expect(out.attempts.map((a) => [a.brokerId, a.code, a.hedged])).toEqual([
      ['b0', grpc.status.DEADLINE_EXCEEDED, false],
      ['b1', grpc.status.OK, false],
    ]);
    expect(out.attempts[0]!.message).toMatch(/not acknowledged within 50 ms/);
    expect(empty.stats().hedges).toBe(0);
    // An acknowledging peer is waited for, budget or not.
    const acking = await peer({ kind: 'ok', delayMs: 200, ack: true });
    const kept = await run(floored, [acking.address, twin.address], {
      hedge: { delayMs: 50, budget: empty, onlyUnacknowledged: true },
    });
    expect(kept.attempts.map((a) => a.brokerId)).toEqual(['b0']);
    floored.close();
  });
});
