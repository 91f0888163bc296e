/**
 * The container image, without a container engine (none runs here): rebuilds the image's final stage
 * as docker/Dockerfile describes it — the files its COPY lines take from the build stage, a
 * production-only `npm ci`, the native SQLite module — in a temporary folder, then runs the image's
 * ENTRYPOINT there as the container would, and asks the broker a real query. It fails when the image
 * would miss a file or when runtime code needs a development dependency.
 */
import * as grpc from '@grpc/grpc-js';
import { AggregateRequest, AggregationServiceClient, type AggregateResponse } from '@wanas/proto';
import { spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import YAML from 'yaml';
import { loadTopology } from '@wanas/topology';
import { waitServing } from '@wanas/devfed';
import { K8S_PORTS } from '@wanas/k8s';
import { ROOT, freePorts } from './support/federation';

jest.setTimeout(180_000);

const dockerfile = fs.readFileSync(path.join(ROOT, 'docker/Dockerfile'), 'utf8');
const finalStage = dockerfile.slice(dockerfile.lastIndexOf('\nFROM '));

describe('docker/Dockerfile', () => {
  it('runs as the unprivileged node user on Node 20 and exposes the ports wanas k8s uses', () => {
    expect(finalStage).toMatch(/^\nFROM node:20[^\s]* *\n/);
    expect(finalStage).toMatch(/\nUSER node\n/);
    const exposed = /\nEXPOSE ([\d ]+)\n/.exec(finalStage)![1]!.split(' ').map(Number);
    expect(exposed.sort()).toEqual(Object.values(K8S_PORTS).sort());
  });

  it('has a compose demo whose services are the brokers of its (valid) topology', () => {
    const compose = YAML.parse(fs.readFileSync(path.join(ROOT, 'docker/compose.yaml'), 'utf8')) as {
      services: Record<string, { command: string[] }>;
    };
    const t = loadTopology(path.join(ROOT, 'docker/compose-topology.yaml'));
    const ids = Object.values(compose.services).map((svc) => svc.command[svc.command.indexOf('--id') + 1]);
    expect(ids.sort()).toEqual([...t.brokers.keys()].sort());
    for (const [name, svc] of Object.entries(compose.services)) {
      // Each service is the broker of the same name, listening where the topology says peers dial it.
      expect(t.brokers.get(name)?.address).toMatch(new RegExp(`^${name}:`));
      expect(svc.command.slice(0, 2)).toEqual(['--topology', '/etc/wanas/topology.yaml']);
    }
  });

  describe('final stage rebuilt from a production-only install', () => {
    let app: string;
    let entry: string[];

    beforeAll(() => {
      app = fs.mkdtempSync(path.join(os.tmpdir(), 'wanas-image-'));
      entry = JSON.parse(/\nENTRYPOINT (\[.*\])\n/.exec(finalStage)![1]!) as string[];
      // COPY --from=build [--chown=…] /src/A [/src/B …] DEST
      const copies = finalStage
        .split('\n')
        .filter((l) => l.startsWith('COPY --from=build '))
        .map((l) =>
          l
            .split(/\s+/)
            .slice(1)
            .filter((w) => !w.startsWith('--')),
        );
      expect(copies.length).toBeGreaterThan(5);
      for (const words of copies) {
        const to = words.pop()!;
        for (const src of words) {
          const from = src.replace(/^\/src\//, '');
          if (from.endsWith('node_modules')) continue; // made below, as the build stage makes it
          const dest = to.endsWith('/') ? path.join(app, to, path.basename(from)) : path.join(app, to);
          fs.mkdirSync(path.dirname(dest), { recursive: true });
          fs.cpSync(path.join(ROOT, from), dest, { recursive: true });
        }
      }
      // The build stage: `npm ci --omit=dev --ignore-scripts && npm rebuild better-sqlite3` beside the
      // runtime packages' package.json files only.
      const ci = spawnSync(
        'npm',
        ['ci', '--omit=dev', '--ignore-scripts', '--prefer-offline', '--no-audit', '--no-fund'],
        {
          cwd: app,
          encoding: 'utf8',
          timeout: 150_000,
        },
      );
      if (ci.status !== 0) throw new Error(`npm ci --omit=dev failed: ${ci.stderr}`);
      const native = 'node_modules/better-sqlite3/build/Release/better_sqlite3.node';
      fs.mkdirSync(path.dirname(path.join(app, native)), { recursive: true });
      fs.copyFileSync(path.join(ROOT, native), path.join(app, native));
    });
    afterAll(() => {
      if (app) fs.rmSync(app, { recursive: true, force: true });
    });

    it('holds no development dependency, and none of the dev packages or theirs', () => {
      for (const dev of [
        'jest',
        'typescript',
        'kubernetes-models',
        'ts-jest',
        'eslint',
        'cli-progress',
        '@peculiar/x509',
      ])
        expect(fs.existsSync(path.join(app, 'node_modules', dev))).toBe(false);
      for (const pkg of ['devfed', 'bench', 'k8s'])
        expect(fs.existsSync(path.join(app, 'packages', pkg))).toBe(false);
    });

    it('says that the dev commands are not in the image (exit 2)', () => {
      const r = spawnSync(
        process.execPath,
        [path.join(app, 'packages/cli/dist/bin.js'), 'bench', '--smoke'],
        {
          cwd: app,
          encoding: 'utf8',
          timeout: 30_000,
        },
      );
      expect(r.status).toBe(2);
      expect(r.stderr).toMatch(/"wanas bench" needs @wanas\/bench, which this install does not have/);
    });

    it('prints usage with the default CMD', () => {
      const cmd = JSON.parse(/\nCMD (\[.*\])\n/.exec(finalStage)![1]!) as string[];
      const r = spawnSync(entry[0]!, [...entry.slice(1), ...cmd], {
        cwd: app,
        encoding: 'utf8',
        timeout: 30_000,
      });
      expect(r.status).toBe(0);
      expect(r.stdout).toMatch(/Usage: wanas broker/);
    });

    it('serves a real query and a plug-in module through the ENTRYPOINT, and stops cleanly on SIGTERM', async () => {
      const [port, healthPort] = await freePorts(2);
      const topology = path.join(app, 'topology.yaml');
      // A module mounted from elsewhere (as a ConfigMap is), given the image's own SDK without NODE_PATH.
      const mounted = fs.mkdtempSync(path.join(os.tmpdir(), 'wanas-image-module-'));
      fs.writeFileSync(
        path.join(mounted, 'where.js'),
        `const { defineOperation, z } = require('@wanas/operations');
module.exports = defineOperation({ name: 'image.where', description: 'the SDK this module was given',
  idempotent: true, params: z.strictObject({}), execute: async () => ({ sdk: require.resolve('@wanas/operations') }) });`,
      );
      fs.writeFileSync(
        topology,
        YAML.stringify({
          federation: 'image',
          settings: { dataDir: path.join(app, 'data') },
          operations: [{ module: path.join(mounted, 'where.js') }],
          sites: [
            {
              name: 's1',
              pods: [
                {
                  name: 'p1',
                  brokers: [
                    { id: 'a', address: `127.0.0.1:${port}`, healthAddress: `127.0.0.1:${healthPort}` },
                  ],
                },
              ],
            },
          ],
        }),
      );
      const p = spawn(
        entry[0]!,
        [...entry.slice(1), '--topology', topology, '--id', 'a', '--log-format', 'json'],
        {
          cwd: app,
          env: { ...process.env, NODE_ENV: 'production', NODE_PATH: '' },
          stdio: ['ignore', 'ignore', 'pipe'],
        },
      );
      let log = '';
      p.stderr!.on('data', (b: Buffer) => (log += b.toString()));
      const client = new AggregationServiceClient(`127.0.0.1:${port}`, grpc.credentials.createInsecure());
      try {
        await waitServing(`127.0.0.1:${healthPort}`, p, { timeoutMs: 30_000, describe: () => log });
        const ask = (operation: string, params: object) =>
          new Promise<AggregateResponse>((resolve, reject) =>
            client.aggregate(
              AggregateRequest.fromPartial({ operation, params }),
              new grpc.Metadata(),
              { deadline: Date.now() + 10_000 },
              (e, r) => (e ? reject(e) : resolve(r)),
            ),
          );
        const res = await ask('sessions.find', { user: 'alice' });
        expect(res.pods.map((x) => [x.site, x.pod, x.code])).toEqual([['s1', 'p1', 0]]);
        const where = await ask('image.where', {});
        expect(where.pods.map((x) => x.result)).toEqual([
          { sdk: path.join(app, 'packages/operations/dist/index.js') },
        ]);
      } finally {
        client.close();
        fs.rmSync(mounted, { recursive: true, force: true });
        const exited = new Promise<number | null>((r) => p.once('exit', (code) => r(code)));
        p.kill('SIGTERM');
        expect(await exited).toBe(0);
      }
    });
  });
});
