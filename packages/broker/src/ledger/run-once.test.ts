import { status } from '@grpc/grpc-js';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { BrokerError } from '../errors';
import { SqliteInventory } from '../store/sqlite-inventory';
import { SqlitePodState } from '../store/pod-state';
import { runOnce, type OnceRequest } from './run-once';

/** Two brokers of one pod: two connections to one real SQLite file, as twins on one host have. */
describe('runOnce: a write reaches its backend once per key, across the brokers of a pod', () => {
  let dir: string;
  let a: SqliteInventory;
  let b: SqliteInventory;
  beforeEach(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'wanas-once-'));
    a = new SqliteInventory(path.join(dir, 'pod.sqlite'), 's1', 'p1');
    b = new SqliteInventory(path.join(dir, 'pod.sqlite'), 's1', 'p1');
  });
  afterEach(() => {
    a.close();
    b.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  const req = (store: SqliteInventory, brokerId: string, over: Partial<OnceRequest> = {}): OnceRequest => ({
    store: new SqlitePodState(store),
    brokerId,
    operation: 'inventory.reserve',
    params: { sku: 'w', quantity: 1 },
    idempotencyKey: 'k1',
    deadline: Date.now() + 3000,
    signal: new AbortController().signal,
    ...over,
  });

  it('replays the first result to a resend through the twin, without acting again', async () => {
    let calls = 0;
    const act = () => Promise.resolve({ id: `r${++calls}` });
    expect(await runOnce(req(a, 'a'), act)).toEqual({ id: 'r1' });
    expect(await runOnce(req(b, 'b'), act)).toEqual({ id: 'r1' });
    expect(calls).toBe(1);
  });

  it('makes a resend wait for a twin whose call is in flight, then replays its outcome', async () => {
    let release: (v: { id: string }) => void = () => undefined;
    let calls = 0;
    const slow = () => {
      calls++;
      return new Promise<{ id: string }>((r) => (release = r));
    };
    const first = runOnce(req(a, 'a'), slow);
    await new Promise((r) => setImmediate(r)); // a holds the claim
    let secondDone = false;
    const second = runOnce(req(b, 'b'), slow).then((v) => ((secondDone = true), v));
    await new Promise((r) => setTimeout(r, 60));
    expect(secondDone).toBe(false);
    release({ id: 'only' });
    expect(await first).toEqual({ id: 'only' });
    expect(await second).toEqual({ id: 'only' });
    expect(calls).toBe(1);
  });

  it('answers ABORTED when the twin is still in flight at the deadline', async () => {
    const never = () => new Promise<{ id: string }>(() => undefined);
    void runOnce(req(a, 'a'), never);
    await new Promise((r) => setImmediate(r));
    const e = await runOnce(req(b, 'b', { deadline: Date.now() + 100 }), never).catch((x: unknown) => x);
    expect((e as BrokerError).code).toBe(status.ABORTED);
    expect((e as BrokerError).details).toContain('in flight on broker a');
  });

  it('takes over a claim whose lease ended (its broker died mid-call)', async () => {
    const never = () => new Promise<{ id: string }>(() => undefined);
    void runOnce(req(a, 'a', { deadline: Date.now() + 50 }), never);
    await new Promise((r) => setTimeout(r, 80));
    expect(await runOnce(req(b, 'b'), () => Promise.resolve({ id: 'b' }))).toEqual({ id: 'b' });
  });

  it("remembers a backend's definitive refusal, and forgets an unknown outcome so a resend acts again", async () => {
    let calls = 0;
    const full = () => {
      calls++;
      return Promise.reject(new BrokerError(status.RESOURCE_EXHAUSTED, 'none left'));
    };
    for (const s of [a, b]) {
      const e = (await runOnce(req(s, s === a ? 'a' : 'b'), full).catch((x: unknown) => x)) as BrokerError;
      expect([e.code, e.details]).toEqual([status.RESOURCE_EXHAUSTED, 'none left']);
    }
    expect(calls).toBe(1);
    let tries = 0;
    const flaky = () =>
      ++tries === 1
        ? Promise.reject(new BrokerError(status.UNAVAILABLE, 'backend down'))
        : Promise.resolve({ ok: true });
    const key = { idempotencyKey: 'k2' };
    await expect(runOnce(req(a, 'a', key), flaky)).rejects.toMatchObject({ code: status.UNAVAILABLE });
    expect(await runOnce(req(b, 'b', key), flaky)).toEqual({ ok: true });
    expect(tries).toBe(2);
  });

  it('refuses the same key with other params', async () => {
    await runOnce(req(a, 'a'), () => Promise.resolve({ id: 'x' }));
    const e = (await runOnce(req(b, 'b', { params: { sku: 'w', quantity: 2 } }), () =>
      Promise.resolve({ id: 'y' }),
    ).catch((x: unknown) => x)) as BrokerError;
    expect(e.code).toBe(status.FAILED_PRECONDITION);
  });
});
