/** The `wanas` command refuses bad input with a message that names the problem and a non-zero exit. */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { spawnBroker } from '@wanas/devfed';
import { spawnSync } from 'node:child_process';
import { WANAS_BIN, freePorts } from './support/federation';
import { wanas } from './support/up';

describe('wanas CLI input errors', () => {
  let dir: string;
  beforeAll(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'wanas-cli-'));
  });
  afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

  it('refuses a bad topology file with the path of the bad field', () => {
    const file = path.join(dir, 'bad.yaml');
    fs.writeFileSync(
      file,
      'federation: demo\nsites:\n  - name: us-east\n    pods:\n      - name: pod-1\n        brokers:\n          - { id: a, address: "localhost" }\n',
    );
    const r = wanas('broker', '--topology', file, '--id', 'a');
    expect(r.status).toBe(2);
    expect(r.stderr).toContain('sites[0].pods[0].brokers[0].address: must be host:port');
  });

  it('refuses an id that is not in the topology, listing the known ones', () => {
    const file = path.join(dir, 'ok.yaml');
    fs.writeFileSync(
      file,
      'federation: demo\nsites:\n  - name: us-east\n    pods:\n      - name: pod-1\n        brokers:\n          - { id: a, address: "127.0.0.1:1" }\n',
    );
    const r = wanas('broker', '--topology', file, '--id', 'zz');
    expect(r.status).toBe(2);
    expect(r.stderr).toContain('broker id "zz" is not in the topology; known ids: a');
  });

  it('refuses a bad sessions setting, from the flag or the environment', () => {
    const file = path.join(dir, 'sessions.yaml');
    fs.writeFileSync(
      file,
      'federation: demo\nsites:\n  - name: us-east\n    pods:\n      - name: pod-1\n        brokers:\n          - { id: a, address: "127.0.0.1:1" }\n',
    );
    const flag = wanas('broker', '--topology', file, '--id', 'a', '--sessions', 'maybe');
    expect(flag.status).not.toBe(0);
    expect(flag.stderr).toContain('"maybe" is not on or off');
    const env = spawnSync(process.execPath, [WANAS_BIN, 'broker', '--topology', file, '--id', 'a'], {
      encoding: 'utf8',
      timeout: 30_000,
      env: { ...process.env, WANAS_SESSIONS: 'maybe' },
    });
    expect(env.status).toBe(2);
    expect(env.stderr).toContain('WANAS_SESSIONS must be "on" or "off", not "maybe"');
  });

  it('refuses malformed flags', () => {
    const dur = wanas('aggregate', '--address', '127.0.0.1:1', '--op', 'echo', '--timeout', 'soon');
    expect(dur.status).not.toBe(0);
    expect(dur.stderr).toContain('"soon" is not a duration');
    const addr = wanas('aggregate', '--address', 'nowhere', '--op', 'echo');
    expect(addr.status).not.toBe(0);
    expect(addr.stderr).toContain('"nowhere" is not host:port');
    const param = wanas('aggregate', '--address', '127.0.0.1:1', '--op', 'echo', '--param', 'novalue');
    expect(param.stderr).toContain('"novalue" is not key=value');
    const unknown = wanas('nonsense');
    expect(unknown.status).not.toBe(0);
    expect(unknown.stderr).toMatch(/unknown command 'nonsense'/);
  });

  it('reports an unreachable broker as an error with a non-zero exit', () => {
    const r = wanas('aggregate', '--address', '127.0.0.1:1', '--op', 'echo', '--timeout', '500ms');
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(/^error: UNAVAILABLE/);
  });
});

describe('a broker started by a parent (wanas up, the bench)', () => {
  it('exits when its parent goes away, even while it is still starting', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'wanas-orphan-'));
    const [port] = await freePorts(1);
    const file = path.join(dir, 't.yaml');
    fs.writeFileSync(
      file,
      `federation: f\nsettings: { dataDir: data }\nsites:\n  - name: s\n    pods:\n      - name: p\n        brokers: [{ id: a, address: "127.0.0.1:${port}" }]\n`,
    );
    try {
      for (const afterMs of [0, 100, 400]) {
        const child = spawnBroker({ topologyFile: file, id: 'a', logFile: path.join(dir, 'a.log') });
        const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
        await new Promise((r) => setTimeout(r, afterMs));
        child.disconnect(); // what the child sees when its parent dies
        const killer = setTimeout(() => child.kill('SIGKILL'), 15_000);
        const code = await exited;
        clearTimeout(killer);
        expect({ afterMs, killedByTest: child.signalCode === 'SIGKILL' }).toEqual({
          afterMs,
          killedByTest: false,
        });
        void code;
      }
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  }, 60_000);
});
