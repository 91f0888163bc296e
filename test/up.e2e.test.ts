/**
 * `wanas up` end to end: every broker as its own process behind the WAN emulator; clients through the
 * CLI (table and JSON), buf curl and Python; brokers killed and frozen; a site cut off and healed;
 * Ctrl-C leaves nothing behind.
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import YAML from 'yaml';
import { ROOT, freePorts } from './support/federation';
import { startUp, wanas, type RunningUp } from './support/up';

const PYTHON = '/usr/bin/python3';

interface State {
  brokers: { id: string; site: string; pod: string; address: string; pid: number | undefined }[];
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

async function portFree(hostPort: string): Promise<boolean> {
  const port = Number(hostPort.split(':')[1]);
  return new Promise((resolve) => {
    const s = net.createServer();
    s.once('error', () => resolve(false));
    s.listen(port, '127.0.0.1', () => s.close(() => resolve(true)));
  });
}

type Json = {
  pods: { site: string; pod: string; code?: number; answeredBy: string }[];
  summary: { podsAsked: number; podsOk?: number };
};

describe('wanas up (real processes, emulated WAN)', () => {
  let dir: string;
  let topology: string;
  let up: RunningUp;
  let entry: string;
  let state: State;

  beforeAll(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'wanas-up-'));
    const ports = await freePorts(12);
    const broker = (id: string) => ({
      id,
      address: `127.0.0.1:${ports.pop()}`,
      wanAddress: `127.0.0.1:${ports.pop()}`,
    });
    const doc = {
      federation: 'up-test',
      settings: { attemptTimeoutMs: 300 },
      sites: [
        {
          name: 'east',
          pods: [
            { name: 'pod-1', brokers: [broker('e1a'), broker('e1b')] },
            { name: 'pod-2', brokers: [broker('e2a'), broker('e2b')] },
          ],
        },
        { name: 'west', pods: [{ name: 'pod-1', brokers: [broker('w1a'), broker('w1b')] }] },
      ],
    };
    topology = path.join(dir, 'topology.yaml');
    fs.writeFileSync(topology, YAML.stringify(doc));
    entry = doc.sites[0]!.pods[0]!.brokers[0]!.address;
    up = await startUp(['--topology', topology, '--wan-latency-ms', '10']);
    state = JSON.parse(fs.readFileSync(path.join(dir, '.wanas', 'up.json'), 'utf8')) as State;
  }, 90_000);

  afterAll(async () => {
    await up?.stop('SIGKILL');
    for (const b of state?.brokers ?? []) if (b.pid && alive(b.pid)) process.kill(b.pid, 'SIGKILL');
    fs.rmSync(dir, { recursive: true, force: true });
  });

  const pidOf = (id: string) => state.brokers.find((b) => b.id === id)!.pid!;
  const aggregateJson = (...extra: string[]) => {
    const r = wanas('aggregate', '--address', entry, '--op', 'echo', '--timeout', '2s', '--json', ...extra);
    expect(r.stderr).toBe('');
    return JSON.parse(r.stdout) as Json;
  };

  it('answers through the CLI as a table and as proto3 JSON', () => {
    const table = wanas('aggregate', '--address', entry, '--op', 'sessions.find', '--param', 'user=alice');
    expect(table.status).toBe(0);
    expect(table.stdout).toMatch(/^SITE\s+POD\s+CODE\s+ANSWERED BY\s+ATTEMPTS\s+LATENCY\s+RESULT/);
    for (const pod of ['east\\s+pod-1', 'east\\s+pod-2', 'west\\s+pod-1'])
      expect(table.stdout).toMatch(new RegExp(`${pod}\\s+OK`));
    expect(table.stdout).toContain('pods asked 3, ok 3, failed 0');
    const json = aggregateJson();
    expect(json.pods.map((p) => `${p.site}/${p.pod}`)).toEqual(['east/pod-1', 'east/pod-2', 'west/pod-1']);
    expect(json.summary).toMatchObject({ podsAsked: 3, podsOk: 3 });
    const status = wanas('status', '--address', entry);
    expect(status.stdout).toMatch(/broker e1a \(site east, pod pod-1\)/);
    expect(status.stdout).toMatch(/west\s+up\s/);
    expect(status.stdout).toMatch(/w1[ab]\s+west\/pod-1\s+\S+\s+ready [\d.]+ s\s+ready\s+closed\s+warm/);
  });

  it('answers through buf curl (reflection) and the Python client', () => {
    const buf = spawnSync(
      path.join(ROOT, 'node_modules/.bin/buf'),
      [
        'curl',
        '--protocol',
        'grpc',
        '--http2-prior-knowledge',
        '-d',
        '{"operation":"pods.capacity"}',
        `http://${entry}/wanas.v1.AggregationService/Aggregate`,
      ],
      { encoding: 'utf8' },
    );
    expect(buf.stderr).toBe('');
    expect((JSON.parse(buf.stdout) as Json).summary.podsOk).toBe(3);
    const py = spawnSync(
      PYTHON,
      [
        path.join(ROOT, 'examples/clients/python/client.py'),
        '--address',
        entry,
        '--op',
        'sessions.find',
        '--param',
        'user=alice',
        '--json',
      ],
      {
        encoding: 'utf8',
        timeout: 60_000,
      },
    );
    expect(py.stderr).toBe('');
    const res = JSON.parse(py.stdout) as Json;
    expect(res.pods).toHaveLength(3);
    expect(res.summary).toMatchObject({ podsAsked: 3, podsOk: 3 });
  });

  it('keeps every pod answering while a broker is killed (SIGKILL) and another frozen (SIGSTOP)', async () => {
    const rep = aggregateJson().pods.find((p) => p.site === 'west')!.answeredBy;
    const frozen = 'e2a';
    const results: Json[] = [];
    for (let i = 0; i < 12; i++) {
      if (i === 3) process.kill(pidOf(rep), 'SIGKILL');
      if (i === 6) process.kill(pidOf(frozen), 'SIGSTOP');
      results.push(aggregateJson('--attempt-timeout', '300ms'));
      await new Promise((r) => setTimeout(r, 20));
    }
    process.kill(pidOf(frozen), 'SIGCONT');
    for (const r of results) expect(r.summary).toMatchObject({ podsAsked: 3, podsOk: 3 });
    await new Promise((r) => setTimeout(r, 200));
    expect(up.output()).toContain(`broker ${rep} exited unexpectedly (SIGKILL)`);
  });

  it('reports a site that is cut off, and answers fully again once healed', async () => {
    const cut = wanas('wan', 'cut', '--site', 'west', '--topology', topology);
    expect(cut.status).toBe(0);
    // One line that says what changed; --json gives the emulator's state, every link.
    expect(cut.stdout).toBe('site west cut off: its WAN links drop every byte (cut off now: west)\n');
    const state = JSON.parse(
      wanas('wan', 'cut', '--site', 'west', '--topology', topology, '--json').stdout,
    ) as {
      cutSites: string[];
      links: unknown[];
    };
    expect(state.cutSites).toEqual(['west']);
    expect(state.links.length).toBeGreaterThan(0);
    const during = aggregateJson('--timeout', '1500ms');
    const west = during.pods.find((p) => p.site === 'west')!;
    expect(west.code).toBeDefined();
    expect(during.pods.filter((p) => p.site === 'east' && !p.code)).toHaveLength(2);
    const heal = wanas('wan', 'heal', '--site', 'west', '--topology', topology);
    expect([heal.status, heal.stdout]).toEqual([
      0,
      'site west healed: its WAN links carry bytes again (cut off now: none)\n',
    ]);
    let healed = false;
    for (let i = 0; i < 40 && !healed; i++) {
      healed = aggregateJson('--timeout', '1s').summary.podsOk === 3;
      if (!healed) await new Promise((r) => setTimeout(r, 250));
    }
    expect(healed).toBe(true);
    expect(wanas('wan', 'cut', '--site', 'mars', '--topology', topology).stderr).toContain(
      'unknown site "mars"',
    );
  });

  it('stops everything on Ctrl-C (SIGINT): no process left, no port bound', async () => {
    const current = JSON.parse(fs.readFileSync(path.join(dir, '.wanas', 'up.json'), 'utf8')) as State & {
      brokers: { wanAddress: string }[];
    };
    const exited = new Promise<number | null>((r) => up.proc.once('exit', (code) => r(code)));
    up.proc.kill('SIGINT');
    expect(await exited).toBe(0);
    for (const b of current.brokers)
      if (b.pid) expect({ id: b.id, alive: alive(b.pid) }).toEqual({ id: b.id, alive: false });
    for (const b of current.brokers) {
      expect(await portFree(b.address)).toBe(true);
      expect(await portFree(b.wanAddress)).toBe(true);
    }
    expect(fs.existsSync(path.join(dir, '.wanas', 'up.json'))).toBe(false);
  });
});
