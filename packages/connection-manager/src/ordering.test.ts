import {
  MAX_RETRY_AFTER_MS,
  SLOW_MEMORY_MS,
  newEntry,
  noteSlow,
  rankEndpoints,
  tierOf,
  type Entry,
} from './ordering';

/** An endpoint's state as the manager keeps it (warm, connected, ready), with what a case sets. */
function entry(brokerId: string, over: Partial<Entry> = {}): Entry {
  const base = newEntry({ brokerId, address: `${brokerId}:1`, site: 's', pod: 'p' }, 's/p', 0);
  return { ...base, connectivity: 'ready', state: 'ready', stateReason: '', warm: true, ...over };
}

const withLatency = (e: Entry, ms: number, n = 10): Entry => {
  for (let i = 0; i < n; i++) e.latency.add(ms);
  return e;
};
const ids = (eps: { brokerId: string }[]) => eps.map((e) => e.brokerId);
const rank = (entries: Entry[], now: number, rotation = 0, prefer?: (id: string) => boolean) =>
  ids(
    rankEndpoints(
      entries.map((e) => ({ ep: { brokerId: e.endpoint.brokerId, address: e.endpoint.address }, entry: e })),
      (e) => tierOf(e, 500, now),
      now,
      () => rotation,
      prefer && ((ep) => prefer(ep.brokerId)),
    ),
  );

describe('tierOf (injected clock)', () => {
  it('ranks warm healthy, then not connected, then failing or reconnecting, then down', () => {
    expect(tierOf(entry('a'), 500, 0)).toBe(0);
    expect(tierOf(entry('a', { connectivity: 'idle' }), 500, 0)).toBe(1);
    expect(tierOf(entry('a', { state: 'connecting', connectivity: 'connecting' }), 500, 0)).toBe(1);
    expect(tierOf(entry('a', { state: 'reconnecting' }), 500, 0)).toBe(2);
    expect(tierOf(entry('a', { state: 'down' }), 500, 0)).toBe(3);
  });

  it('keeps a failing endpoint out for a back-off doubling per failure, until a probe answered since', () => {
    const failing = entry('a', { state: 'failing', consecutiveFailures: 3, lastFailureAt: 1000 });
    // Back-off 500 × 2^2 = 2000 ms; no SERVING probe since the failure: still out after it.
    expect(tierOf(failing, 500, 2999)).toBe(2);
    expect(tierOf(failing, 500, 3000)).toBe(2);
    failing.probeOkAt = 1500;
    expect(tierOf(failing, 500, 2999)).toBe(2);
    expect(tierOf(failing, 500, 3000)).toBe(0);
  });

  it('caps the back-off at MAX_RETRY_AFTER_MS', () => {
    const failing = entry('a', {
      state: 'failing',
      consecutiveFailures: 40,
      lastFailureAt: 0,
      probeOkAt: 1,
    });
    expect(tierOf(failing, 500, MAX_RETRY_AFTER_MS - 1)).toBe(2);
    expect(tierOf(failing, 500, MAX_RETRY_AFTER_MS)).toBe(0);
  });
});

describe('rankEndpoints (injected clock)', () => {
  const now = 10_000;

  it('puts the healthy first, then failing, then down (still listed: tried if nothing else answers)', () => {
    const down = entry('down', { state: 'down' });
    const failing = entry('failing', { state: 'failing', consecutiveFailures: 1, lastFailureAt: now });
    const ok = entry('ok');
    expect(rank([down, failing, ok], now)).toEqual(['ok', 'failing', 'down']);
  });

  it('orders by fresh latency, and rotates among equals', () => {
    const fast = withLatency(entry('fast', { lastUsedAt: now }), 10);
    const slow = withLatency(entry('slow', { lastUsedAt: now }), 100);
    expect(rank([slow, fast], now)).toEqual(['fast', 'slow']);
    const twin = withLatency(entry('twin', { lastUsedAt: now }), 11);
    expect(rank([fast, twin, slow], now, 0)).toEqual(['fast', 'twin', 'slow']);
    expect(rank([fast, twin, slow], now, 1)).toEqual(['twin', 'fast', 'slow']);
  });

  it('treats a stale latency as unknown: an endpoint left out by one slow sample gets calls again', () => {
    const fast = withLatency(entry('fast', { lastUsedAt: now }), 10);
    const stale = withLatency(entry('stale', { lastUsedAt: now - 5_000 }), 100);
    // Rotated as equals: each takes a turn first.
    expect(new Set([0, 1].map((r) => rank([fast, stale], now, r)[0]))).toEqual(new Set(['fast', 'stale']));
    // Fresh, the same latencies order the fast one first whatever the rotation.
    stale.lastUsedAt = now;
    expect([0, 1].map((r) => rank([fast, stale], now, r)[0])).toEqual(['fast', 'fast']);
  });

  it('orders an endpoint marked slow after its twins for SLOW_MEMORY_MS', () => {
    const marked = entry('marked', { slowAt: now - 1000 });
    const other = entry('other');
    expect(rank([marked, other], now)).toEqual(['other', 'marked']);
    expect(rank([marked, other], now + SLOW_MEMORY_MS, 0)).toEqual(['marked', 'other']);
  });

  it('takes a preference among the equals at the head, never over a healthier endpoint', () => {
    const a = entry('a');
    const b = entry('b');
    const idle = entry('idle', { connectivity: 'idle' });
    expect(rank([a, b], now, 0, (id) => id === 'b')).toEqual(['b', 'a']);
    expect(rank([idle, a], now, 0, (id) => id === 'idle')).toEqual(['a', 'idle']);
  });
});

describe('noteSlow', () => {
  it('marks an answer far above the usual latency, once the window is settled and nothing failed', () => {
    const e = entry('a');
    noteSlow(e, 10_000, 5);
    expect(e.slowAt).toBe(0); // no usual latency yet
    withLatency(e, 10);
    noteSlow(e, 100, 6); // 3 × 10 + 100 ms of slack: not slow
    expect(e.slowAt).toBe(0);
    noteSlow(e, 200, 7);
    expect(e.slowAt).toBe(7);
    const failing = withLatency(entry('b', { consecutiveFailures: 1 }), 10);
    noteSlow(failing, 10_000, 8);
    expect(failing.slowAt).toBe(0);
  });
});
