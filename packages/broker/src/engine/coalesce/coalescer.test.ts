import { status } from '@grpc/grpc-js';
import { abortListener, cancelListenerOf, type CallContext } from '../../call-context';
import { Coalescer } from './coalescer';
import type { Execution } from './flight';
import { ResultsCache } from './results-cache';
import { AggregateResponse } from '@wanas/proto';

/** An execution the test finishes by hand, recording what it was given. */
function controllable() {
  const calls: { exec: Execution<string>; finish: (v: string) => void; fail: (e: Error) => void }[] = [];
  const start = (exec: Execution<string>) =>
    new Promise<string>((finish, fail) => calls.push({ exec, finish, fail }));
  return { calls, start };
}

const caller = (end?: number, onPod?: (p: string) => void) => {
  const controller = new AbortController();
  return { controller, caller: { onCancel: abortListener(controller.signal), end, onPod } };
};

describe('Coalescer: identical requests in flight run once', () => {
  beforeEach(() => jest.useFakeTimers({ now: 1_000_000 }));
  afterEach(() => jest.useRealTimers());

  it('runs one execution for callers of the same key, each told whose execution it shared', async () => {
    const c = new Coalescer<string, string>();
    const { calls, start } = controllable();
    const a = c.run('k', 'first', caller().caller, start);
    const b = c.run('k', 'second', caller().caller, start);
    const other = c.run('other', 'third', caller().caller, start);
    expect(calls).toHaveLength(2);
    expect(c.inFlight('k')).toBe('first');
    calls[0]!.finish('answer');
    calls[1]!.finish('x');
    expect(await a).toEqual({ value: 'answer', joined: false, from: 'first' });
    expect(await b).toEqual({ value: 'answer', joined: true, from: 'first' });
    expect((await other).joined).toBe(false);
    expect(c.inFlight('k')).toBeUndefined(); // a request after the answer runs anew
    void c.run('k', 'fourth', caller().caller, start);
    expect(calls).toHaveLength(3);
  });

  it('gives every caller the execution’s error', async () => {
    const c = new Coalescer<string, string>();
    const { calls, start } = controllable();
    const a = c.run('k', 'a', caller().caller, start);
    const b = c.run('k', 'b', caller().caller, start);
    calls[0]!.fail(new Error('boom'));
    await expect(a).rejects.toThrow('boom');
    await expect(b).rejects.toThrow('boom');
  });

  it('a caller that cancels gets CANCELLED; the execution goes on until its last caller has gone', async () => {
    const c = new Coalescer<string, string>();
    const { calls, start } = controllable();
    const one = caller();
    const two = caller();
    const a = c.run('k', 'a', one.caller, start);
    const b = c.run('k', 'b', two.caller, start);
    const signal = calls[0]!.exec.signal; // the execution waits on its signal
    one.controller.abort();
    await expect(a).rejects.toMatchObject({ code: status.CANCELLED });
    expect(signal.aborted).toBe(false);
    two.controller.abort();
    await expect(b).rejects.toMatchObject({ code: status.CANCELLED });
    expect(signal.aborted).toBe(true);
  });

  it('hears a call that offers onCancel through it, without asking for its signal', async () => {
    const c = new Coalescer<string, string>();
    const { calls, start } = controllable();
    const listeners = new Set<() => void>();
    let signalAsked = 0;
    const ctx = {
      get signal() {
        signalAsked++;
        return new AbortController().signal;
      },
      onCancel: (l: () => void) => (listeners.add(l), () => listeners.delete(l)),
    } as unknown as CallContext;
    const a = c.run('k', 'a', { onCancel: cancelListenerOf(ctx), end: undefined }, start);
    const b = c.run('k', 'b', caller().caller, start);
    const signal = calls[0]!.exec.signal;
    expect(listeners.size).toBe(1);
    for (const l of [...listeners]) l(); // the caller cancels
    await expect(a).rejects.toMatchObject({ code: status.CANCELLED });
    expect(listeners.size).toBe(0); // it stopped listening as the caller left
    expect(signal.aborted).toBe(false); // the other caller is still there
    calls[0]!.finish('answer');
    expect((await b).value).toBe('answer');
    expect(signalAsked).toBe(0);
  });

  it('hears a call without onCancel through its signal, read only when a listener is added', () => {
    const controller = new AbortController();
    let signalAsked = 0;
    const ctx = {
      get signal() {
        signalAsked++;
        return controller.signal;
      },
    } as unknown as CallContext;
    const listen = cancelListenerOf(ctx);
    expect(signalAsked).toBe(0);
    let heard = 0;
    const stop = listen(() => heard++);
    controller.abort();
    expect([signalAsked, heard]).toEqual([1, 1]);
    stop();
  });

  it('an execution that never asked for its signal is cancelled when it does, if every caller has gone', async () => {
    const c = new Coalescer<string, string>();
    const { calls, start } = controllable();
    const one = caller();
    const a = c.run('k', 'a', one.caller, start);
    // No signal asked yet: nothing watches the caller, so its cancel is seen only once the execution asks.
    const signal = calls[0]!.exec.signal;
    one.controller.abort();
    await expect(a).rejects.toMatchObject({ code: status.CANCELLED });
    expect(signal.aborted).toBe(true);
  });

  it('a joiner whose deadline comes first gets DEADLINE_EXCEEDED then, without cutting the others short', async () => {
    const c = new Coalescer<string, string>();
    const { calls, start } = controllable();
    const long = c.run('k', 'long', caller(Date.now() + 2000).caller, start);
    const short = c.run('k', 'short', caller(Date.now() + 300).caller, start);
    const later = c.run('k', 'later', caller(Date.now() + 5000).caller, start);
    let shortDone = false;
    short.catch(() => (shortDone = true));
    jest.advanceTimersByTime(200);
    await Promise.resolve();
    expect(shortDone).toBe(false);
    jest.advanceTimersByTime(100); // the short one's work deadline (a margin before 300 ms) has passed
    await expect(short).rejects.toMatchObject({ code: status.DEADLINE_EXCEEDED });
    expect(calls[0]!.exec.signal.aborted).toBe(false);
    jest.advanceTimersByTime(1000);
    calls[0]!.finish('whole');
    expect((await long).value).toBe('whole');
    expect((await later).value).toBe('whole');
  });

  it('a streamed joiner gets the pods already final, then the rest', async () => {
    const c = new Coalescer<string, string>();
    const { calls, start } = controllable();
    const first: string[] = [];
    const late: string[] = [];
    const a = c.run('k', 'a', caller(undefined, (p) => first.push(p)).caller, start);
    calls[0]!.exec.report('p1');
    const b = c.run('k', 'b', caller(undefined, (p) => late.push(p)).caller, start);
    calls[0]!.exec.report('p2');
    calls[0]!.finish('done');
    await Promise.all([a, b]);
    expect(first).toEqual(['p1', 'p2']);
    expect(late).toEqual(['p1', 'p2']);
  });
});

describe('ResultsCache: whole answers, by age and bytes', () => {
  const answer = (id: string, bytes = 10): AggregateResponse =>
    AggregateResponse.fromPartial({ correlationId: id, answeredBy: 'x'.repeat(bytes) });
  const size = (r: AggregateResponse) => AggregateResponse.encode(r).finish().length;

  it('serves an answer no older than asked, counts hits and misses, and empties on clear', () => {
    const seen: boolean[] = [];
    let bytes = 0;
    const cache = new ResultsCache(1 << 20, size, { lookup: (h) => seen.push(h), bytes: (b) => (bytes = b) });
    cache.put('k', answer('a'), 2000, 1000);
    expect(cache.get('k', 500, 1400)?.response.correlationId).toBe('a');
    expect(cache.get('k', 500, 1600)).toBeUndefined(); // older than the client accepts
    expect(cache.get('other', 500, 1400)).toBeUndefined();
    expect(seen).toEqual([true, false, false]);
    expect(bytes).toBeGreaterThan(0);
    cache.clear();
    expect(cache.get('k', 500, 1400)).toBeUndefined();
    expect(bytes).toBe(0);
  });

  it('holds at most its bytes, the least recently used going first', () => {
    const one = size(answer('a', 100));
    const cache = new ResultsCache(one * 2, size);
    cache.put('a', answer('a', 100), 10_000);
    cache.put('b', answer('b', 100), 10_000);
    expect(cache.get('a', 10_000)).toBeDefined(); // a is now the most recently used
    cache.put('c', answer('c', 100), 10_000);
    expect(cache.get('b', 10_000)).toBeUndefined();
    expect(cache.get('a', 10_000)).toBeDefined();
    expect(cache.bytes).toBeLessThanOrEqual(one * 2);
  });

  it('keeps nothing when its size is 0', () => {
    const cache = new ResultsCache(0, size);
    cache.put('k', answer('a'), 10_000);
    expect(cache.get('k', 10_000)).toBeUndefined();
  });
});
