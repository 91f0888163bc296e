/**
 * The metrics read by a real Prometheus: `wanas up --metrics` gives every broker a /metrics address and
 * writes a scrape config with the shipped rules; a Prometheus (Debian's package; .ci/run installs it)
 * scrapes the federation; a site is cut off with `wanas wan cut`, and WanasSiteUnreachable fires, as
 * Prometheus's HTTP API reports it. Then the site is healed and the alert resolves.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import YAML from 'yaml';
import { stopProcess } from '@wanas/devfed';
import { freePorts } from './support/federation';
import { startUp, wanas, type RunningUp } from './support/up';
import { until } from './support/until';

jest.setTimeout(150_000);

interface Alert {
  labels: Record<string, string>;
  state: 'pending' | 'firing';
}

describe('alerts in a real Prometheus scraping a wanas up federation', () => {
  let dir: string;
  let topology: string;
  let up: RunningUp | undefined;
  let prometheus: ChildProcess | undefined;
  let api: string;

  beforeAll(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'wanas-prom-'));
    const ports = await freePorts(9);
    const broker = (id: string) => ({
      id,
      address: `127.0.0.1:${ports.pop()}`,
      wanAddress: `127.0.0.1:${ports.pop()}`,
    });
    topology = path.join(dir, 'topology.yaml');
    fs.writeFileSync(
      topology,
      YAML.stringify({
        federation: 'prom-test',
        settings: { dataDir: 'data' },
        sites: [
          { name: 'east', pods: [{ name: 'pod-1', brokers: [broker('e1a'), broker('e1b')] }] },
          { name: 'west', pods: [{ name: 'pod-1', brokers: [broker('w1a'), broker('w1b')] }] },
        ],
      }),
    );
    up = await startUp(['--topology', topology, '--metrics', '--wan-latency-ms', '5']);
    // The config `up` wrote, scraped and evaluated every second for the test.
    const config = YAML.parse(fs.readFileSync(path.join(dir, '.wanas', 'prometheus.yml'), 'utf8')) as {
      global: Record<string, string>;
    };
    config.global = { scrape_interval: '1s', evaluation_interval: '1s' };
    const configFile = path.join(dir, 'prometheus-test.yml');
    fs.writeFileSync(configFile, YAML.stringify(config));
    api = `http://127.0.0.1:${ports.pop()}`;
    prometheus = spawn(
      'prometheus',
      [
        `--config.file=${configFile}`,
        `--storage.tsdb.path=${path.join(dir, 'tsdb')}`,
        `--web.listen-address=${api.slice('http://'.length)}`,
      ],
      { stdio: ['ignore', 'ignore', 'pipe'] },
    );
    let promLog = '';
    prometheus.stderr!.on('data', (d: Buffer) => (promLog = (promLog + d.toString()).slice(-4000)));
    try {
      await until(
        'Prometheus scraping all 4 brokers',
        async () => {
          const r = await fetch(`${api}/api/v1/targets`).catch(() => undefined);
          if (!r?.ok) return false;
          const body = (await r.json()) as { data: { activeTargets: { health: string }[] } };
          const t = body.data.activeTargets;
          return t.length === 4 && t.every((x) => x.health === 'up');
        },
        30_000,
      );
    } catch (e) {
      throw new Error(`${(e as Error).message}; Prometheus said: ${promLog}`);
    }
  });

  afterAll(async () => {
    await stopProcess(prometheus, 10_000, 'SIGINT');
    await up?.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  const alerts = async (): Promise<Alert[]> => {
    const r = await fetch(`${api}/api/v1/alerts`);
    return ((await r.json()) as { data: { alerts: Alert[] } }).data.alerts;
  };
  const siteAlert = async (site: string) =>
    (await alerts()).find(
      (a) => a.labels.alertname === 'WanasSiteUnreachable' && a.labels.peer_site === site,
    );

  it('loads the shipped rules and fires nothing on a healthy federation', async () => {
    const r = (await (await fetch(`${api}/api/v1/rules`)).json()) as {
      data: { groups: { name: string; rules: { name: string }[] }[] };
    };
    const names = r.data.groups.flatMap((g) => g.rules.map((x) => x.name));
    expect(names).toEqual(
      expect.arrayContaining(['WanasSiteUnreachable', 'WanasPodUnreachable', 'WanasOverloaded']),
    );
    expect(await alerts()).toEqual([]);
  });

  it('fires WanasSiteUnreachable for a site cut off, and resolves it once healed', async () => {
    expect(wanas('wan', 'cut', '--site', 'west', '--topology', topology).status).toBe(0);
    try {
      // Noticed by the east brokers within ~2 s, then the rule's 15 s "for".
      await until(
        'WanasSiteUnreachable firing for west',
        async () => (await siteAlert('west'))?.state === 'firing',
        60_000,
      );
      expect((await siteAlert('west'))!.labels).toMatchObject({ severity: 'critical', peer_site: 'west' });
    } finally {
      expect(wanas('wan', 'heal', '--site', 'west', '--topology', topology).status).toBe(0);
    }
    await until('WanasSiteUnreachable resolved', async () => (await siteAlert('west')) === undefined, 30_000);
  });
});
