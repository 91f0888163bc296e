/**
 * `wanas sdk --out DIR`: the broker's own `@wanas/operations` written out as a package a module project
 * installs (`npm install --save-dev DIR`) for its types and its own unit tests. Nothing here is downloaded:
 * the SDK's JavaScript and `.d.ts`, and the zod it depends on, are copied from this installation. At run
 * time the broker still provides its own copy (./provide), so installing this one never makes a second.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { brokerSdk, SDK_NAME } from './provide';

/** What {@link exportSdk} wrote. */
export interface ExportedSdk {
  dir: string;
  version: string;
}

/**
 * Writes the SDK package into `outDir` (made if missing). Refuses a folder that holds anything but a
 * previous export, so that it never overwrites a user's files.
 */
export function exportSdk(outDir: string): ExportedSdk {
  const dir = path.resolve(outDir);
  refuseForeignFolder(dir);
  const sdk = brokerSdk();
  fs.rmSync(dir, { recursive: true, force: true });
  fs.mkdirSync(path.join(dir, 'dist'), { recursive: true });
  const dist = path.join(sdk.dir, 'dist');
  for (const f of fs.readdirSync(dist))
    if (/\.(js|d\.ts)$/.test(f)) fs.copyFileSync(path.join(dist, f), path.join(dir, 'dist', f));
  const zod = path.dirname(require.resolve('zod/package.json', { paths: [sdk.dir] }));
  fs.cpSync(zod, path.join(dir, 'node_modules', 'zod'), { recursive: true });
  const manifest = {
    name: SDK_NAME,
    version: sdk.version,
    description:
      'The wanas plug-in SDK, exported by `wanas sdk`: types and a copy for unit tests. ' +
      'A broker provides its own copy to the modules it loads.',
    license: 'Apache-2.0',
    main: 'dist/index.js',
    types: 'dist/index.d.ts',
  };
  fs.writeFileSync(path.join(dir, 'package.json'), `${JSON.stringify(manifest, null, 2)}\n`);
  return { dir, version: sdk.version };
}

function refuseForeignFolder(dir: string): void {
  if (!fs.existsSync(dir)) return;
  if (!fs.statSync(dir).isDirectory()) throw new Error(`--out ${dir}: exists and is not a folder`);
  if (fs.readdirSync(dir).length === 0) return;
  const manifest = path.join(dir, 'package.json');
  const name = fs.existsSync(manifest)
    ? (JSON.parse(fs.readFileSync(manifest, 'utf8')) as { name?: string }).name
    : undefined;
  if (name !== SDK_NAME)
    throw new Error(
      `--out ${dir}: the folder is not empty and holds no earlier ${SDK_NAME} export; choose another`,
    );
}
