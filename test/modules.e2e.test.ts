/**
 * Plug-in modules from anywhere, as a user writes them: a folder outside the checkout, `wanas up` run from
 * that folder with no NODE_PATH. The broker provides its own `@wanas/operations` to a CommonJS module, an ES
 * module, a module with a dependency in its own `node_modules`, and a TypeScript module compiled against the
 * types `wanas sdk` writes out; each answers through the federation. A module whose package.json asks for
 * an SDK this broker does not provide is refused at start, naming both versions.
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import YAML from 'yaml';
import { ROOT, freePorts } from './support/federation';
import { startUp, wanasIn, type RunningUp } from './support/up';

const SDK_FILE = path.join(ROOT, 'packages/operations/dist/index.js');
const SDK_VERSION = (
  JSON.parse(fs.readFileSync(path.join(ROOT, 'packages/operations/package.json'), 'utf8')) as {
    version: string;
  }
).version;

/** The environment a user's shell would give: nothing that points into the checkout. */
const ENV = Object.fromEntries(Object.entries(process.env).filter(([k]) => k !== 'NODE_PATH'));

/** Writes `files` (path → text) under `dir`. */
function write(dir: string, files: Record<string, string>): void {
  for (const [file, text] of Object.entries(files)) {
    fs.mkdirSync(path.dirname(path.join(dir, file)), { recursive: true });
    fs.writeFileSync(path.join(dir, file), text);
  }
}

const CJS = `
const { defineOperation, z, Code, OperationError } = require('@wanas/operations');
module.exports = { operations: [defineOperation({
  name: 'plug.cjs', description: 'CommonJS from a folder of its own', idempotent: true,
  params: z.strictObject({ miss: z.boolean().optional() }),
  execute: async (p, ctx) => {
    if (p.miss) throw new OperationError(Code.NOT_FOUND, 'nothing at ' + ctx.pod);
    return { pod: ctx.site + '/' + ctx.pod, sdk: require.resolve('@wanas/operations') };
  },
})] };`;

// An ES module (`.js` under "type": "module"): it imports the SDK and also requires it, and reports
// whether both are the one copy.
const ESM = `
import { createRequire } from 'node:module';
import { defineOperation, z, OperationError } from '@wanas/operations';
const required = createRequire(import.meta.url)('@wanas/operations');
export const esm = defineOperation({
  name: 'plug.esm', description: 'an ES module', idempotent: true, params: z.strictObject({}),
  execute: async (p, ctx) => ({ site: ctx.site, oneCopy: required.OperationError === OperationError }),
});`;

const WITH_DEP = `
const shout = require('shout');
const { defineOperation, z } = require('@wanas/operations');
module.exports = defineOperation({
  name: 'plug.dep', description: 'uses a package of its own', idempotent: true,
  params: z.strictObject({ word: z.string() }),
  execute: async (p) => ({ said: shout(p.word) }),
});`;

const TS = `
import { Code, OperationError, defineOperation, z } from '@wanas/operations';

export const typed = defineOperation({
  name: 'plug.ts',
  description: 'written in TypeScript',
  idempotent: true,
  params: z.strictObject({ n: z.number().int() }),
  execute: async (p, ctx) => {
    if (p.n < 0) throw new OperationError(Code.INVALID_ARGUMENT, 'n must not be negative');
    const doubled: number = p.n * 2;
    return { doubled, pod: ctx.pod };
  },
});
`;

describe('plug-in modules outside the checkout, under wanas up', () => {
  let dir: string;
  let up: RunningUp | undefined;
  let entry: string;
  const ask = (op: string, ...params: string[]) => {
    const r = wanasIn(
      { cwd: dir, env: ENV },
      'aggregate',
      '--address',
      entry,
      '--op',
      op,
      ...params.flatMap((p) => ['--param', p]),
      '--json',
    );
    expect(r.stderr).toBe('');
    return JSON.parse(r.stdout) as {
      pods: { site: string; code?: number; message?: string; result?: Record<string, unknown> }[];
    };
  };

  beforeAll(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'wanas-modules-'));
    write(dir, {
      'ops/cjs.js': CJS,
      'ops/esm/package.json': '{ "type": "module" }',
      'ops/esm/index.js': ESM,
      'ops/with-dep/index.js': WITH_DEP,
      'ops/with-dep/node_modules/shout/package.json': '{ "name": "shout", "version": "1.0.0" }',
      'ops/with-dep/node_modules/shout/index.js': 'module.exports = (w) => w.toUpperCase() + "!";',
      'ts-op/package.json': JSON.stringify({
        name: 'ts-op',
        version: '1.0.0',
        main: 'dist/index.js',
        peerDependencies: { '@wanas/operations': `^${SDK_VERSION}` },
      }),
      'ts-op/tsconfig.json': JSON.stringify({
        compilerOptions: {
          target: 'ES2022',
          module: 'commonjs',
          strict: true,
          esModuleInterop: true,
          skipLibCheck: true,
          types: [],
          rootDir: 'src',
          outDir: 'dist',
        },
        include: ['src'],
      }),
      'ts-op/src/index.ts': TS,
    });
    // The TypeScript module as the README has its author build it: the SDK's types from `wanas sdk`,
    // installed from that folder (offline: nothing is downloaded), then tsc.
    const sdk = wanasIn({ cwd: dir, env: ENV }, 'sdk', '--out', path.join(dir, 'wanas-sdk'));
    expect(sdk.stderr).toBe('');
    const npm = spawnSync(
      'npm',
      ['install', '--save-dev', '../wanas-sdk', '--offline', '--no-audit', '--no-fund'],
      { cwd: path.join(dir, 'ts-op'), env: ENV, encoding: 'utf8', timeout: 60_000 },
    );
    expect(npm.status).toBe(0);
    const tsc = spawnSync(process.execPath, [path.join(ROOT, 'node_modules/typescript/bin/tsc'), '-p', '.'], {
      cwd: path.join(dir, 'ts-op'),
      encoding: 'utf8',
      timeout: 60_000,
    });
    expect(tsc.stdout).toBe('');
    expect(tsc.status).toBe(0);

    const ports = await freePorts(4);
    const broker = (id: string) => ({
      id,
      address: `127.0.0.1:${ports.pop()}`,
      wanAddress: `127.0.0.1:${ports.pop()}`,
    });
    const doc = {
      federation: 'modules',
      operations: [
        { module: './ops/cjs.js' },
        { module: './ops/esm/index.js' },
        { module: './ops/with-dep' },
        { module: './ts-op' },
      ],
      sites: [
        { name: 'east', pods: [{ name: 'pod-1', brokers: [broker('e1')] }] },
        { name: 'west', pods: [{ name: 'pod-1', brokers: [broker('w1')] }] },
      ],
    };
    fs.writeFileSync(path.join(dir, 'topology.yaml'), YAML.stringify(doc));
    entry = doc.sites[0]!.pods[0]!.brokers[0]!.address;
    up = await startUp(['--topology', 'topology.yaml', '--wan-latency-ms', '5'], { cwd: dir, env: ENV });
  }, 120_000);

  afterAll(async () => {
    await up?.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('a CommonJS module gets the broker’s own SDK, and its OperationError is the pods’ answer', () => {
    const ok = ask('plug.cjs');
    expect(ok.pods.map((p) => p.result)).toEqual([
      { pod: 'east/pod-1', sdk: SDK_FILE },
      { pod: 'west/pod-1', sdk: SDK_FILE },
    ]);
    const missed = ask('plug.cjs', 'miss=true');
    expect(missed.pods.map((p) => [p.code, p.message])).toEqual([
      [5, 'nothing at pod-1'],
      [5, 'nothing at pod-1'],
    ]);
  });

  it('an ES module imports the same copy that require gives', () => {
    expect(ask('plug.esm').pods.map((p) => p.result)).toEqual([
      { site: 'east', oneCopy: true },
      { site: 'west', oneCopy: true },
    ]);
  });

  it('a module’s own dependencies resolve from its own node_modules', () => {
    expect(ask('plug.dep', 'word=hello').pods.map((p) => p.result)).toEqual([
      { said: 'HELLO!' },
      { said: 'HELLO!' },
    ]);
  });

  it('a TypeScript module compiled against `wanas sdk` types answers, its errors and params checked', () => {
    expect(ask('plug.ts', 'n=21').pods.map((p) => p.result)).toEqual([
      { doubled: 42, pod: 'pod-1' },
      { doubled: 42, pod: 'pod-1' },
    ]);
    expect(ask('plug.ts', 'n=-1').pods.map((p) => p.code)).toEqual([3, 3]);
    const listed = wanasIn({ cwd: dir, env: ENV }, 'ops', '--address', entry);
    expect(listed.stdout).toMatch(/plug\.ts\s+module\s+read/);
  });

  it('refuses at start a module that asks for an SDK this broker does not provide, naming both', async () => {
    const [port] = await freePorts(1);
    write(dir, {
      'future/package.json': JSON.stringify({
        name: 'future',
        peerDependencies: { '@wanas/operations': '^9.0.0' },
      }),
      'future/index.js': CJS.replace('plug.cjs', 'plug.future'),
      'future.yaml': YAML.stringify({
        federation: 'future',
        operations: [{ module: './future' }],
        sites: [{ name: 's', pods: [{ name: 'p', brokers: [{ id: 'a', address: `127.0.0.1:${port}` }] }] }],
      }),
    });
    const why =
      `operations module ./future: needs @wanas/operations ^9.0.0 (peerDependencies in ` +
      `${path.join(dir, 'future/package.json')}), but this broker provides @wanas/operations ${SDK_VERSION}`;
    // The same refusal from `wanas up` and from a plain `wanas broker`.
    const viaUp = wanasIn({ cwd: dir, env: ENV }, 'up', '--topology', 'future.yaml');
    expect(viaUp.status).not.toBe(0);
    expect(viaUp.stderr).toContain(why);
    const plain = wanasIn({ cwd: dir, env: ENV }, 'broker', '--topology', 'future.yaml', '--id', 'a');
    expect(plain.status).not.toBe(0);
    expect(plain.stderr).toContain(why);
  });
});
