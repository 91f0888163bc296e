import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { sdkRangeProblem } from './compatible';
import { exportSdk } from './export';
import { brokerSdk } from './provide';

describe('the SDK a broker provides to its modules', () => {
  let dir: string;
  beforeEach(() => (dir = fs.mkdtempSync(path.join(os.tmpdir(), 'wanas-sdk-'))));
  afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

  const moduleWith = (manifest: string | undefined): string => {
    const folder = path.join(dir, 'mod');
    fs.mkdirSync(path.join(folder, 'lib'), { recursive: true });
    if (manifest !== undefined) fs.writeFileSync(path.join(folder, 'package.json'), manifest);
    fs.writeFileSync(path.join(folder, 'lib/op.js'), '');
    return path.join(folder, 'lib/op.js');
  };
  const peer = (range: unknown) => JSON.stringify({ peerDependencies: { '@wanas/operations': range } });

  it('is the package the broker runs, with its version', () => {
    const sdk = brokerSdk();
    expect(sdk.file).toBe(require.resolve('@wanas/operations'));
    expect(sdk.version).toMatch(/^\d+\.\d+\.\d+/);
  });

  it('accepts a module whose nearest package.json says nothing, or a range the version is in', () => {
    expect(sdkRangeProblem(moduleWith('{ "name": "m" }'), '1.4.0')).toBeUndefined();
    expect(sdkRangeProblem(moduleWith(peer('^1.2.0')), '1.4.0')).toBeUndefined();
    expect(sdkRangeProblem(moduleWith(peer('>=1 <3')), '2.0.0-rc.1')).toBeUndefined();
  });

  it('refuses a range the version is outside of, naming both and where the range is', () => {
    const file = moduleWith(peer('^2.0.0'));
    expect(sdkRangeProblem(file, '1.4.0')).toBe(
      `needs @wanas/operations ^2.0.0 (peerDependencies in ${path.join(dir, 'mod/package.json')}), ` +
        'but this broker provides @wanas/operations 1.4.0',
    );
  });

  it('refuses a range that is not one, and a package.json that is not JSON', () => {
    expect(sdkRangeProblem(moduleWith(peer('newest')), '1.0.0')).toMatch(
      /peerDependencies "@wanas\/operations": "newest" is not a version range$/,
    );
    expect(sdkRangeProblem(moduleWith(peer(2)), '1.0.0')).toMatch(/: 2 is not a version range$/);
    expect(sdkRangeProblem(moduleWith('{ nope'), '1.0.0')).toMatch(/package\.json: cannot be read as JSON/);
  });

  it('exports an installable package: JavaScript, .d.ts, its zod, and a package.json with the version', () => {
    const out = path.join(dir, 'sdk');
    expect(exportSdk(out)).toEqual({ dir: out, version: brokerSdk().version });
    const manifest = JSON.parse(fs.readFileSync(path.join(out, 'package.json'), 'utf8')) as Record<
      string,
      unknown
    >;
    expect(manifest).toMatchObject({
      name: '@wanas/operations',
      version: brokerSdk().version,
      main: 'dist/index.js',
      types: 'dist/index.d.ts',
    });
    expect(manifest.dependencies).toBeUndefined(); // nothing for npm to download
    for (const f of [
      'dist/index.js',
      'dist/index.d.ts',
      'dist/operation.d.ts',
      'node_modules/zod/package.json',
    ])
      expect(fs.existsSync(path.join(out, f))).toBe(true);
    expect(exportSdk(out).dir).toBe(out); // an earlier export is replaced
  });

  it('never writes into a folder that holds something else', () => {
    fs.writeFileSync(path.join(dir, 'notes.txt'), 'mine');
    expect(() => exportSdk(dir)).toThrow(/is not empty and holds no earlier @wanas\/operations export/);
    expect(fs.readFileSync(path.join(dir, 'notes.txt'), 'utf8')).toBe('mine');
    expect(() => exportSdk(path.join(dir, 'notes.txt'))).toThrow(/exists and is not a folder/);
  });
});
