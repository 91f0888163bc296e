/**
 * `wanas up --tls-dir`: a throwaway CA, broker and client certificates, and a federation that runs with
 * mTLS and authorization on; the CLI reaches it with the client identity and is refused without one.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import YAML from 'yaml';
import { freePorts } from './support/federation';
import { startUp, wanas, type RunningUp } from './support/up';

describe('wanas up --tls-dir (real processes)', () => {
  let dir: string;
  let up: RunningUp;
  let entry: string;
  let tls: string;

  beforeAll(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'wanas-up-tls-'));
    tls = path.join(dir, 'tls');
    const ports = await freePorts(4);
    const broker = (id: string) => ({
      id,
      address: `127.0.0.1:${ports.pop()}`,
      wanAddress: `127.0.0.1:${ports.pop()}`,
    });
    const doc = {
      federation: 'tls-test',
      sites: [
        { name: 'east', pods: [{ name: 'pod-1', brokers: [broker('e1')] }] },
        { name: 'west', pods: [{ name: 'pod-1', brokers: [broker('w1')] }] },
      ],
    };
    fs.writeFileSync(path.join(dir, 'topology.yaml'), YAML.stringify(doc));
    entry = doc.sites[0]!.pods[0]!.brokers[0]!.address;
    up = await startUp([
      '--topology',
      path.join(dir, 'topology.yaml'),
      '--wan-latency-ms',
      '5',
      '--tls-dir',
      tls,
    ]);
  }, 90_000);

  afterAll(async () => {
    await up?.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('writes the CA and the client identity, and brokers serve with mTLS', () => {
    for (const f of ['ca.crt', 'client.crt', 'client.key', 'e1.crt', 'w1.key'])
      expect(fs.existsSync(path.join(tls, f))).toBe(true);
    const ok = wanas(
      'aggregate',
      '--address',
      entry,
      '--ca',
      path.join(tls, 'ca.crt'),
      '--cert',
      path.join(tls, 'client.crt'),
      '--key',
      path.join(tls, 'client.key'),
      '--op',
      'echo',
      '--json',
    );
    expect(ok.status).toBe(0);
    expect(JSON.parse(ok.stdout).summary).toMatchObject({ podsAsked: 2, podsOk: 2 });
  });

  it('refuses a client without an identity, and a plaintext client', () => {
    const anonymous = wanas(
      'aggregate',
      '--address',
      entry,
      '--ca',
      path.join(tls, 'ca.crt'),
      '--op',
      'echo',
    );
    expect(anonymous.status).toBe(1);
    expect(anonymous.stderr).toContain('UNAUTHENTICATED');
    const plain = wanas('aggregate', '--address', entry, '--op', 'echo', '--timeout', '1s');
    expect(plain.status).toBe(1);
    expect(plain.stderr).toContain('UNAVAILABLE');
  });
});
