/**
 * The connection manager and the connection iterator together, against real grpc-js peers (in-process
 * and in child processes killed for real): warm channels, shared connections, health-driven order,
 * failover costs.
 */
import * as grpc from '@grpc/grpc-js';
import { spawn, type ChildProcess } from 'node:child_process';
import * as net from 'node:net';
import * as path from 'node:path';
import * as readline from 'node:readline';
import { ConnectionManager, REFUSED_GRACE_MS } from '@wanas/connection-manager';
import { ConnectionIterator, HedgeBudget, unaryCall } from '@wanas/iterator';
import { FederationServiceClient, LocalRequest, LocalResponse, type TargetList } from '@wanas/proto';
// eslint-disable-next-line @typescript-eslint/no-require-imports
const { startPeer } = require('./support/peer-server');

type Peer = Awaited<ReturnType<typeof startPeer>>;
const request = LocalRequest.fromPartial({ correlationId: 'c', operation: 'echo' });

function target(peers: { id: string; address: string }[], pod = 'p'): TargetList {
  return { site: 's', pod, endpoints: peers.map((p) => ({ brokerId: p.id, address: p.address })) };
}

function ask(
  cm: ConnectionManager,
  t: TargetList,
  attemptTimeoutMs = 1000,
  deadlineMs = 3000,
  fixedOrder = false,
) {
  // fixedOrder: the manager's channels and health tracking, but the target list's own order, to make the
  // worst case (the dead endpoint tried first) happen on purpose.
  const source = fixedOrder
    ? { order: (x: TargetList) => x.endpoints, client: cm.client.bind(cm), track: cm.track.bind(cm) }
    : cm;
  return new ConnectionIterator<FederationServiceClient, LocalResponse>({
    target: t,
    source,
    attempt: (client, _ep, deadline) =>
      unaryCall((cb) => client.localRequest(request, new grpc.Metadata(), { deadline }, cb)),
    deadline: Date.now() + deadlineMs,
    attemptTimeoutMs,
    idempotent: true,
  }).run();
}

async function refusedAddress(): Promise<string> {
  const s = net.createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  const port = (s.address() as net.AddressInfo).port;
  await new Promise((r) => s.close(r));
  return `127.0.0.1:${port}`;
}

function groupOf(t: TargetList) {
  return {
    site: t.site,
    pod: t.pod,
    endpoints: t.endpoints.map((e) => ({ ...e, site: t.site, pod: t.pod })),
  };
}

async function until(cond: () => boolean, timeoutMs = 5000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > end) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 10));
  }
}

async function childPeer(id: string): Promise<{ id: string; address: string; proc: ChildProcess }> {
  const proc = spawn(process.execPath, [path.join(__dirname, 'support/peer-server.js'), id], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const rl = readline.createInterface({ input: proc.stdout! });
  const port = await new Promise<string>((resolve, reject) => {
    rl.on('line', (l) => l.startsWith('LISTENING ') && resolve(l.slice(10)));
    proc.once('exit', (code) => reject(new Error(`peer ${id} exited ${code}`)));
  });
  return { id, address: `127.0.0.1:${port}`, proc };
}

describe('connection manager + iterator', () => {
  let peers: Peer[] = [];
  let children: ChildProcess[] = [];
  let cm: ConnectionManager;
  const peer = async (behaviour?: unknown) => {
    const p = await startPeer({ id: `peer${peers.length}`, behaviour });
    peers.push(p);
    return p;
  };
  beforeEach(() => {
    cm = new ConnectionManager({ probeIntervalMs: 50, probeTimeoutMs: 200, maintenanceIntervalMs: 100 });
  });
  afterEach(async () => {
    cm.close();
    await Promise.all(peers.map((p) => p.stop()));
    for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
    peers = [];
    children = [];
  });

  it('pre-connects one warm channel per target list at start-up', async () => {
    const a = [await peer(), await peer()];
    const b = [await peer(), await peer(), await peer()];
    cm.setPeers([groupOf(target(a, 'pa')), groupOf(target(b, 'pb'))]);
    expect(await cm.waitForWarm(3000)).toBe(true);
    const warm = cm.snapshot().filter((r) => r.warm && r.connectivity === 'ready');
    expect(warm.map((r) => r.pod).sort()).toEqual(['pa', 'pb']);
    expect([...a, ...b].reduce((n, p) => n + p.connections(), 0)).toBe(2);
  });

  it('multiplexes many concurrent requests over one TCP connection', async () => {
    const p = await peer({ kind: 'ok', delayMs: 20 });
    const t = target([p]);
    cm.setPeers([groupOf(t)]);
    await cm.waitForWarm(3000);
    const outs = await Promise.all(Array.from({ length: 50 }, () => ask(cm, t)));
    expect(outs.every((o) => o.ok)).toBe(true);
    expect(p.calls()).toBe(50);
    expect(p.connections()).toBe(1);
    expect(cm.openChannels()).toBe(1);
  });

  it('orders an endpoint last after a few failures, and prefers it again once its probe answers SERVING', async () => {
    const flaky = await peer({ kind: 'unavailable' });
    const twin = await peer();
    const t = target([flaky, twin]);
    cm.setPeers([groupOf(t)]);
    await cm.waitForWarm(3000);
    flaky.setServing(false); // sick: fails calls and says so
    // Three calls that reach the flaky endpoint first (the target list's own order).
    for (let i = 0; i < 3; i++) expect((await ask(cm, t, 1000, 3000, true)).ok).toBe(true);
    const row = () => cm.snapshot().find((r) => r.address === flaky.address)!;
    expect(row().breaker).toBe('open');
    expect(row().consecutiveFailures).toBe(3);
    expect(cm.order(t).map((e) => e.address)).toEqual([twin.address, flaky.address]);
    // Still open while its health says NOT_SERVING; closed when SERVING.
    flaky.setBehaviour({ kind: 'ok' });
    await new Promise((r) => setTimeout(r, 200));
    expect(row().breaker).toBe('open');
    flaky.setServing(true);
    await until(() => row().breaker === 'closed');
    // After its back-off it is tried again with real calls, which clear its failures.
    for (let i = 0; i < 100 && row().consecutiveFailures > 0; i++) {
      await ask(cm, t);
      await new Promise((r) => setTimeout(r, 10));
    }
    expect(row().consecutiveFailures).toBe(0);
    // Load spreads over both twins again: at the latest once the twin's lead in latency is stale (2 s).
    const before = flaky.calls();
    const until3s = Date.now() + 3000;
    while (flaky.calls() === before && Date.now() < until3s) {
      await ask(cm, t);
      await new Promise((r) => setTimeout(r, 20));
    }
    expect(flaky.calls()).toBeGreaterThan(before);
  });

  it('orders a twin with a heavy tail after its equals for a while, without counting it as failed', async () => {
    const tail = await peer({ kind: 'ok' });
    const twin = await peer();
    const t = target([tail, twin]);
    cm.setPeers([groupOf(t)]);
    await cm.waitForWarm(3000);
    for (let i = 0; i < 10; i++) expect((await ask(cm, t, 1000, 3000, true)).ok).toBe(true); // a usual latency
    tail.setBehaviour({ kind: 'ok', delayMs: 400 }); // one answer far slower than usual
    expect((await ask(cm, t, 1000, 3000, true)).ok).toBe(true);
    tail.setBehaviour({ kind: 'ok' });
    const row = cm.snapshot().find((r) => r.address === tail.address)!;
    expect(row.consecutiveFailures).toBe(0);
    expect(row.breaker).toBe('closed');
    const before = tail.calls();
    for (let i = 0; i < 20; i++) {
      expect(cm.order(t)[0]!.address).toBe(twin.address);
      await ask(cm, t);
    }
    expect(tail.calls()).toBe(before); // its twin took every request meanwhile
  });

  it('demotes a twin that lost to a hedge as failed only when it then misses a health check (frozen, not slow)', async () => {
    const frozen = await childPeer('frozen');
    children.push(frozen.proc);
    const slow = await peer();
    const twin = await peer();
    const hedged = (t: TargetList) =>
      new ConnectionIterator<FederationServiceClient, LocalResponse>({
        target: t,
        // The target list's own order: the suspect is asked first, the twin gets the hedge.
        source: { order: (x) => x.endpoints, client: cm.client.bind(cm), track: cm.track.bind(cm) },
        attempt: (client, _ep, deadline) =>
          unaryCall((cb) => client.localRequest(request, new grpc.Metadata(), { deadline }, cb)),
        deadline: Date.now() + 3000,
        attemptTimeoutMs: 2000,
        idempotent: true,
        hedge: { delayMs: 50, budget: new HedgeBudget(1, 10, 10) },
      }).run();
    const row = (address: string) => cm.snapshot().find((r) => r.address === address)!;
    for (const suspect of [slow, frozen]) {
      const t = target([suspect, twin], suspect === slow ? 'slow' : 'frozen');
      cm.setPeers([groupOf(t)]);
      await cm.waitForWarm(3000);
      for (let i = 0; i < 10; i++) expect((await ask(cm, t, 1000, 3000, true)).ok).toBe(true); // a usual latency
      if (suspect === slow) slow.setBehaviour({ kind: 'ok', delayMs: 500 });
      else frozen.proc.kill('SIGSTOP');
      const out = await hedged(t);
      expect(out.ok && out.endpoint.address).toBe(twin.address);
      expect(out.attempts.find((a) => a.address === suspect.address)?.code).toBe(grpc.status.CANCELLED);
      if (suspect === slow) {
        // Slow but alive: its health check answers, so it is only ordered after its twin for a while.
        await new Promise((r) => setTimeout(r, 400)); // longer than the probe timeout (200 ms)
        expect(row(slow.address).consecutiveFailures).toBe(0);
        expect(cm.order(t)[0]!.address).toBe(twin.address);
      } else {
        // Stuck: no health answer within the probe timeout, so it counts as failed and is probed until back.
        await until(() => row(frozen.address).consecutiveFailures > 0, 2000);
        // Losing another race (cancelled by us) proves nothing: the failures stand, it stays demoted.
        const failures = row(frozen.address).consecutiveFailures;
        expect((await hedged(t)).ok).toBe(true);
        await until(() => row(frozen.address).inFlight === 0, 1000); // the cancelled attempt has settled
        expect(row(frozen.address).consecutiveFailures).toBeGreaterThanOrEqual(failures);
        expect(cm.order(t)[0]!.address).toBe(twin.address);
        frozen.proc.kill('SIGCONT');
      }
    }
  });

  it('keeps a peer that answers health but fails every call demoted, with a growing back-off', async () => {
    const liar = await peer({ kind: 'unavailable' });
    const twin = await peer();
    const t = target([liar, twin]);
    cm.setPeers([groupOf(t)]);
    await cm.waitForWarm(3000);
    for (let i = 0; i < 3; i++) await ask(cm, t, 1000, 3000, true);
    const end = Date.now() + 1500;
    let outs = 0;
    while (Date.now() < end) {
      const o = await ask(cm, t);
      expect(o.ok).toBe(true);
      outs++;
      await new Promise((r) => setTimeout(r, 5));
    }
    // Re-admitted only after each back-off (probe interval × 2^(failures-1)): a handful of calls, not one per request.
    expect(liar.calls()).toBeLessThan(3 + 6);
    expect(outs).toBeGreaterThan(50);
  });

  it('pays at most one fast failed attempt for a killed (SIGKILL) peer, then skips it', async () => {
    const a = await childPeer('ka');
    const b = await childPeer('kb');
    children.push(a.proc, b.proc);
    const t = target([a, b]);
    cm.setPeers([groupOf(t)]);
    await cm.waitForWarm(3000);
    await ask(cm, target([b])); // warm both channels
    await until(() => cm.snapshot().every((r) => r.connectivity === 'ready'));
    const victim = a;
    const healthyMs: number[] = [];
    for (let i = 0; i < 5; i++) {
      const t0 = performance.now();
      await ask(cm, target([b]));
      healthyMs.push(performance.now() - t0);
    }
    // Exercise the refused-connection code path once, so the figure is not the JIT's first run.
    await ask(cm, target([{ id: 'nobody', address: await refusedAddress() }]));
    victim.proc.kill('SIGKILL');
    await new Promise((r) => victim.proc.once('exit', r));
    const t0 = performance.now();
    const out = await ask(cm, t, 1000, 3000, true);
    const failoverMs = performance.now() - t0;
    expect(out.ok).toBe(true);
    expect(out.attempts.map((x) => x.code)).toEqual([grpc.status.UNAVAILABLE, grpc.status.OK]);
    const later = await ask(cm, t);
    expect(later.attempts).toHaveLength(1);
    const median = healthyMs.sort((x, y) => x - y)[2]!;
    console.log(
      `FIGURE killed-peer failover: extra ${(failoverMs - median).toFixed(1)} ms (healthy ${median.toFixed(1)} ms, with failover ${failoverMs.toFixed(1)} ms)`,
    );
  });

  it('pays the attempt timeout once for a hung peer, then skips it', async () => {
    const hung = await peer({ kind: 'hang' });
    hung.setServing(false); // a frozen process answers no probe either
    const twin = await peer();
    const t = target([hung, twin]);
    cm.setPeers([groupOf(t)]);
    await cm.waitForWarm(3000);
    const t0 = performance.now();
    const first = await ask(cm, t, 200, 3000, true);
    const firstMs = performance.now() - t0;
    expect(first.ok).toBe(true);
    expect(first.attempts.map((x) => x.code)).toEqual([grpc.status.DEADLINE_EXCEEDED, grpc.status.OK]);
    const t1 = performance.now();
    const later = await ask(cm, t, 200);
    const laterMs = performance.now() - t1;
    expect(later.attempts).toHaveLength(1);
    expect(later.attempts[0]!.address).toBe(twin.address);
    console.log(
      `FIGURE hung-peer failover: first request ${firstMs.toFixed(1)} ms (attempt timeout 200 ms), later ${laterMs.toFixed(1)} ms`,
    );
  });

  it('warms an equivalent endpoint at once when the warm channel fails', async () => {
    const a = await peer();
    const b = await peer();
    const t = target([a, b]);
    cm.setPeers([groupOf(t)]);
    await cm.waitForWarm(3000);
    const warm = cm.snapshot().find((r) => r.warm)!;
    const [dying, other] = warm.address === a.address ? [a, b] : [b, a];
    expect(other.connections()).toBe(0);
    await dying.stop();
    await until(() =>
      cm.snapshot().some((r) => r.address === other.address && r.warm && r.connectivity === 'ready'),
    );
    expect(other.connections()).toBe(1);
  });

  it('applies a changed topology without dropping an in-flight call', async () => {
    const old = await peer({ kind: 'ok', delayMs: 300 });
    const t = target([old]);
    cm.setPeers([groupOf(t)]);
    await cm.waitForWarm(3000);
    const inFlight = ask(cm, t);
    await until(() => old.calls() === 1);
    const fresh = await peer();
    cm.setPeers([groupOf(target([fresh]))]);
    expect((await inFlight).ok).toBe(true);
    await until(() => !cm.snapshot().some((r) => r.address === old.address));
    const out = await ask(cm, target([fresh]));
    expect(out.ok).toBe(true);
    await until(() => old.openConnections() === 0);
  });

  it('knows a pod whose every broker is frozen (SIGSTOP) down with no traffic, fails it fast, and uses it again once thawed', async () => {
    const a = await childPeer('frozen-a');
    const b = await childPeer('frozen-b');
    children.push(a.proc, b.proc);
    const t = target([a, b]);
    cm.close();
    const transitions: string[] = [];
    cm = new ConnectionManager({
      probeIntervalMs: 50,
      probeTimeoutMs: 200,
      maintenanceIntervalMs: 100,
      keepaliveTimeMs: 200,
      keepaliveTimeoutMs: 200,
      connectTimeoutMs: 200,
      onTransition: (ep, from, to) => transitions.push(`${ep.brokerId}:${from}->${to}`),
    });
    cm.setPeers([groupOf(t)]);
    await cm.waitForWarm(3000);
    a.proc.kill('SIGSTOP');
    b.proc.kill('SIGSTOP');
    // No request is sent: keepalive finds the warm channel dead, the twin is dialled and never answers.
    await until(() => cm.targetDown(t) !== undefined, 5000);
    expect(cm.targets()).toEqual([expect.objectContaining({ site: 's', pod: 'p', state: 'down' })]);
    expect(cm.snapshot().map((r) => r.state)).toEqual(['down', 'down']);
    // The warm one lost its connection (reconnecting), its twin was dialled (connecting); neither answered.
    expect(transitions.filter((x) => x.endsWith('->down')).sort()).toEqual([
      expect.stringMatching(/^frozen-a:(re)?connecting->down$/),
      expect.stringMatching(/^frozen-b:(re)?connecting->down$/),
    ]);
    const t0 = performance.now();
    const out = await ask(cm, t, 1000);
    expect(performance.now() - t0).toBeLessThan(200); // no attempt: nothing to wait for
    expect(out).toMatchObject({ ok: false, code: grpc.status.UNAVAILABLE, attempts: [] });
    if (!out.ok) expect(out.message).toMatch(/s\/p is down since .*frozen-a: .*frozen-b: /);
    a.proc.kill('SIGCONT');
    b.proc.kill('SIGCONT');
    await until(() => cm.targetDown(t) === undefined, 5000);
    expect((await ask(cm, t)).ok).toBe(true);
  });

  it('still tries a pod whose only broker refuses connections for REFUSED_GRACE_MS (a restart), then reports it down at once', async () => {
    const only = await childPeer('restarting');
    children.push(only.proc);
    const t = target([only]);
    cm.setPeers([groupOf(t)]);
    await cm.waitForWarm(3000);
    only.proc.kill('SIGKILL');
    await until(() => cm.snapshot()[0]!.state === 'down', 5000);
    const downAt = performance.now();
    // Within the grace the target is not reported down: a request is sent (refused at once).
    expect(cm.targetDown(t)).toBeUndefined();
    const early = await ask(cm, t, 200, 300);
    expect(early.attempts.length).toBeGreaterThan(0);
    await until(() => cm.targetDown(t) !== undefined, 5000);
    expect(performance.now() - downAt).toBeGreaterThanOrEqual(REFUSED_GRACE_MS - 100);
    expect(cm.targetDown(t)!.reason).toContain('restarting: connection failed (refused or unreachable)');
    const late = await ask(cm, t, 200, 300);
    expect(late).toMatchObject({ ok: false, code: grpc.status.UNAVAILABLE, attempts: [] });
  });
});
