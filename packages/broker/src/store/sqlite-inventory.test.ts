import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import Database from 'better-sqlite3';
import { Refusal } from '../ledger/ledger';
import {
  DEMO_USERS,
  SqliteInventory,
  SEED_DESKTOPS_PER_POOL,
  SEED_POOLS,
  StoreBusyError,
} from './sqlite-inventory';

describe('SqliteInventory (a real SQLite file shared by two brokers of a pod)', () => {
  let dir: string;
  let a: SqliteInventory;
  let b: SqliteInventory;
  beforeEach(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'wanas-store-'));
    a = new SqliteInventory(path.join(dir, 'pod.sqlite'), 'us-east', 'pod-1');
    b = new SqliteInventory(path.join(dir, 'pod.sqlite'), 'us-east', 'pod-1');
  });
  afterEach(() => {
    a.close();
    b.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('seeds deterministic demo data once, with a standard pool', () => {
    const cap = a.capacity();
    expect(cap.total).toBe(SEED_POOLS.length * SEED_DESKTOPS_PER_POOL);
    expect(cap.pools.standard!.total).toBe(SEED_DESKTOPS_PER_POOL);
    expect(b.capacity()).toEqual(cap);
    const assigned = DEMO_USERS.reduce((n, u) => n + a.findUser(u).desktops.length, 0);
    expect(cap.inUse).toBe(assigned);
    // Same site and pod elsewhere: the same data.
    const c = new SqliteInventory(path.join(dir, 'other.sqlite'), 'us-east', 'pod-1');
    expect(DEMO_USERS.map((u) => c.findUser(u).desktops.map((d) => d.id))).toEqual(
      DEMO_USERS.map((u) => a.findUser(u).desktops.map((d) => d.id)),
    );
    c.close();
  });

  it('acts once per idempotency key across both brokers, and refuses the key with other params', () => {
    let actions = 0;
    const act = (s: SqliteInventory) => () => {
      actions++;
      return { desktop: s.assignFreeDesktop('zoe', 'standard')!.id };
    };
    const first = a.once('k1', 'desktops.provision', { user: 'zoe', pool: 'standard' }, act(a));
    const second = b.once('k1', 'desktops.provision', { pool: 'standard', user: 'zoe' }, act(b));
    expect(actions).toBe(1);
    expect(second).toEqual({ result: (first as { result: unknown }).result, replayed: true });
    expect(b.findUser('zoe').desktops).toHaveLength(1);
    const conflict = b.once('k1', 'desktops.provision', { user: 'zoe', pool: 'gpu' }, act(b));
    expect('conflict' in conflict).toBe(true);
    expect(actions).toBe(1);
  });

  it('remembers a refusal under the key: a resend hears the same "not here" even once there is room', () => {
    let room = false;
    const act = () => {
      if (!room) throw new Refusal(8, 'pool "standard" of us-east/pod-1 has no free desktop');
      return { desktop: a.assignFreeDesktop('zoe', 'standard')!.id };
    };
    const first = a.once('k9', 'desktops.provision', { user: 'zoe' }, act);
    expect(first).toMatchObject({ refused: { code: 8 }, replayed: false });
    room = true;
    const again = b.once('k9', 'desktops.provision', { user: 'zoe' }, act);
    expect(again).toMatchObject({ refused: { code: 8, message: expect.stringMatching(/no free desktop/) } });
    expect(again).toMatchObject({ replayed: true });
    expect(a.findUser('zoe').desktops).toHaveLength(0);
  });

  it('seeds the pools its topology gives; a pool of 0 exists and is always full', () => {
    const c = new SqliteInventory(path.join(dir, 'sized.sqlite'), 'eu', 'pod-9', undefined, {
      standard: 3,
      gpu: 0,
    });
    expect(c.capacity().pools).toEqual({ standard: expect.objectContaining({ total: 3 }) });
    expect(c.hasPool('gpu')).toBe(true);
    expect(c.hasPool('fpga')).toBe(false);
    expect(c.assignFreeDesktop('zoe', 'gpu')).toBeUndefined();
    c.close();
  });

  it('forgets keys after the window and rolls back a failed action', () => {
    expect(() =>
      a.once('k2', 'op', {}, () => {
        a.assignFreeDesktop('zoe', 'standard');
        throw new Error('no');
      }),
    ).toThrow('no');
    expect(a.findUser('zoe').desktops).toHaveLength(0);
    a.once('k3', 'op', {}, () => ({ n: 1 }), 1);
    const later = Date.now() + 5;
    while (Date.now() < later) {
      // wait out the 1 ms window
    }
    expect(a.once('k3', 'op', {}, () => ({ n: 2 }), 1)).toEqual({ result: { n: 2 }, replayed: false });
  });

  it('waits for a twin holding the write lock without blocking the event loop, up to the deadline', async () => {
    // A twin frozen inside a write transaction: another connection holds the write lock.
    const twin = new Database(path.join(dir, 'pod.sqlite'));
    twin.exec('BEGIN IMMEDIATE');
    let ticks = 0;
    const ticker = setInterval(() => ticks++, 10);
    try {
      const t0 = Date.now();
      await expect(a.onceWithin(Date.now() + 300, 'k4', 'op', {}, () => ({ n: 1 }))).rejects.toBeInstanceOf(
        StoreBusyError,
      );
      const waited = Date.now() - t0;
      expect(waited).toBeGreaterThanOrEqual(200);
      expect(waited).toBeLessThan(2000); // not the 5 s busy timeout of start-up
      expect(ticks).toBeGreaterThan(5); // the event loop kept running meanwhile

      // The twin commits while we wait: the write goes through, once.
      let actions = 0;
      setTimeout(() => twin.exec('COMMIT'), 100);
      const out = await a.onceWithin(Date.now() + 3000, 'k4', 'op', {}, () => ({ n: ++actions }));
      expect(out).toEqual({ result: { n: 1 }, replayed: false });
      expect(actions).toBe(1);
    } finally {
      clearInterval(ticker);
      if (twin.inTransaction) twin.exec('ROLLBACK');
      twin.close();
    }
  });

  it('opens a new file from six processes at the same moment (twins starting together)', async () => {
    // The compiled store (npm test builds first), in separate processes: real concurrent opens.
    const dist = path.resolve(__dirname, '../../dist/store/sqlite-inventory.js');
    const script = `const { SqliteInventory } = require(${JSON.stringify(dist)});
      const [file, at] = process.argv.slice(1);
      while (Date.now() < Number(at)) {}
      try { new SqliteInventory(file, 's', 'p').close(); console.log('ok'); }
      catch (e) { console.log('FAIL ' + e.code + ' ' + e.message); }`;
    for (let round = 0; round < 3; round++) {
      const file = path.join(dir, `race-${round}.sqlite`);
      const at = Date.now() + 500;
      const outs = await Promise.all(
        Array.from(
          { length: 6 },
          () =>
            new Promise<string>((resolve) => {
              const p = spawn(process.execPath, ['-e', script, file, String(at)]);
              let out = '';
              let err = '';
              p.stdout.on('data', (b: Buffer) => (out += b.toString()));
              p.stderr.on('data', (b: Buffer) => (err += b.toString()));
              // A process that printed nothing says how it ended (exit code or signal, and its stderr).
              p.on('close', (code, signal) =>
                resolve(out.trim() || `no output: exit ${code ?? signal}: ${err.trim().slice(0, 500)}`),
              );
            }),
        ),
      );
      expect(outs).toEqual(Array(6).fill('ok'));
      const s = new SqliteInventory(file, 's', 'p');
      expect(s.capacity().total).toBe(SEED_POOLS.length * SEED_DESKTOPS_PER_POOL); // seeded once
      s.close();
    }
  }, 30_000);
});
