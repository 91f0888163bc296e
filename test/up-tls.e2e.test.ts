/**
 * `wanas up --tls-dir`: a throwaway CA, broker and client certificates, and a federation that runs with
 * mTLS and authorization on; the CLI reaches it with the client identity and is refused without one. The
 * console is served over HTTPS and its data needs a client certificate or token, in a real browser too.
 */
import { createHash, randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as https from 'node:https';
import * as os from 'node:os';
import * as path from 'node:path';
import YAML from 'yaml';
import { launchBrowser, screenshot } from './support/browser';
import { freePorts } from './support/federation';
import { startUp, wanas, type RunningUp } from './support/up';

describe('wanas up --tls-dir (real processes)', () => {
  let dir: string;
  let up: RunningUp;
  let entry: string;
  let tls: string;
  let consoleUrl: string;
  const token = randomBytes(24).toString('base64url');

  beforeAll(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'wanas-up-tls-'));
    tls = path.join(dir, 'tls');
    const ports = await freePorts(5);
    const broker = (id: string) => ({
      id,
      address: `127.0.0.1:${ports.pop()}`,
      wanAddress: `127.0.0.1:${ports.pop()}`,
    });
    const http = `127.0.0.1:${ports.pop()}`;
    consoleUrl = `https://${http}/`;
    const doc = {
      federation: 'tls-test',
      security: { clientTokens: [{ name: 'ops', sha256: createHash('sha256').update(token).digest('hex') }] },
      sites: [
        { name: 'east', pods: [{ name: 'pod-1', brokers: [{ ...broker('e1'), metricsAddress: http }] }] },
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

  it('serves the console over HTTPS; its data needs a client certificate or token, /metrics does not', async () => {
    const file = (f: string) => fs.readFileSync(path.join(tls, f));
    const get = (p: string, o: https.RequestOptions = {}) =>
      new Promise<{ status: number; body: string }>((resolve, reject) => {
        https
          .get(`${consoleUrl}${p.slice(1)}`, { ca: file('ca.crt'), ...o }, (res) => {
            let body = '';
            res.on('data', (d: Buffer) => (body += d.toString()));
            res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
          })
          .on('error', reject);
      });
    expect(up.output()).toContain(consoleUrl);
    expect((await get('/')).status).toBe(200);
    expect((await get('/metrics')).status).toBe(200);
    const anonymous = await get('/api/overview');
    expect(anonymous.status).toBe(401);
    expect(anonymous.body).toContain('credentials required');
    const wrong = await get('/api/overview', { headers: { authorization: 'Bearer nope' } });
    expect(wrong.status).toBe(401);
    const byCert = await get('/api/overview', { cert: file('client.crt'), key: file('client.key') });
    expect(byCert.status).toBe(200);
    expect(JSON.parse(byCert.body).broker.id).toBe('e1');
    const byToken = await get('/api/overview', { headers: { authorization: `Bearer ${token}` } });
    expect(byToken.status).toBe(200);
  });

  it('in a browser, the console asks for credentials before it shows anything, then shows the sites', async () => {
    const browser = await launchBrowser({ insecureTls: true });
    try {
      const page = await browser.newPage();
      await page.goto(consoleUrl);
      await page.waitForSelector('#login:not([hidden])', { timeout: 30_000 });
      expect(await page.$$('[data-pod]')).toHaveLength(0);
      await screenshot(page, 'console-mtls', '1-credentials-required');
      await page.type('#token', token);
      await page.click('#login-form button[type="submit"]');
      await page.waitForSelector('[data-pod="east/pod-1"]', { timeout: 30_000 });
      await page.waitForSelector('#login[hidden]', { timeout: 30_000 });
      await screenshot(page, 'console-mtls', '2-signed-in-by-token');
    } finally {
      await browser.close();
    }
  });
});
