/**
 * The contract stays honest: buf lint is clean, the committed generated code is what `buf generate`
 * produces now, and the protos make no breaking change against the previous commit that had them.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

const root = path.resolve(__dirname, '..');
const buf = path.join(root, 'node_modules/.bin/buf');

function listFiles(dir: string): string[] {
  return fs
    .readdirSync(dir, { withFileTypes: true })
    .flatMap((e) =>
      e.isDirectory() ? listFiles(path.join(dir, e.name)).map((f) => path.join(e.name, f)) : [e.name],
    )
    .sort();
}

describe('contract', () => {
  it('passes buf lint (STANDARD)', () => {
    const r = spawnSync(buf, ['lint'], { cwd: root, encoding: 'utf8' });
    expect(r.stdout + r.stderr).toBe('');
    expect(r.status).toBe(0);
  });

  it('has committed generated code identical to a fresh buf generate', () => {
    const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'wanas-gen-'));
    try {
      const template = fs
        .readFileSync(path.join(root, 'buf.gen.yaml'), 'utf8')
        .replace('packages/proto/src/gen', tmp);
      execFileSync(buf, ['generate', '--template', template], { cwd: root });
      const committed = path.join(root, 'packages/proto/src/gen');
      expect(listFiles(tmp)).toEqual(listFiles(committed));
      for (const f of listFiles(tmp)) {
        expect({ f, text: fs.readFileSync(path.join(tmp, f), 'utf8') }).toEqual({
          f,
          text: fs.readFileSync(path.join(committed, f), 'utf8'),
        });
      }
    } finally {
      fs.rmSync(tmp, { recursive: true, force: true });
    }
  });

  it('has committed descriptor sets (served by reflection) identical to a fresh buf build', () => {
    const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'wanas-desc-'));
    try {
      execFileSync(buf, ['build', '-o', path.join(tmp, 'wanas.binpb')], { cwd: root });
      execFileSync(process.execPath, ['scripts/health-descriptor.js', path.join(tmp, 'health.binpb')], {
        cwd: root,
      });
      for (const f of ['wanas.binpb', 'health.binpb']) {
        const fresh = fs.readFileSync(path.join(tmp, f));
        const committed = fs.readFileSync(path.join(root, 'packages/proto/descriptor', f));
        expect({ f, same: fresh.equals(committed) }).toEqual({ f, same: true });
      }
    } finally {
      fs.rmSync(tmp, { recursive: true, force: true });
    }
  });

  it('makes no breaking change (buf breaking, FILE) against the last commit before HEAD that had protos', () => {
    const git = (...args: string[]) => spawnSync('git', args, { cwd: root, encoding: 'utf8' });
    const base = git('rev-list', '-1', 'HEAD~1', '--', 'proto').stdout.trim();
    if (!base) return; // the first commit with protos has nothing to break
    const r = spawnSync(buf, ['breaking', '--against', `.git#ref=${base},subdir=.`], {
      cwd: root,
      encoding: 'utf8',
    });
    expect(r.stdout + r.stderr).toBe('');
    expect(r.status).toBe(0);
  });
});
