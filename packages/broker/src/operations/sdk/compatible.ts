/**
 * A module may say which SDK versions it was written for, as npm does: a `peerDependencies` range for
 * `@wanas/operations` in its package.json. A broker whose SDK is outside that range refuses the module at
 * start, naming both versions, instead of failing on the first call.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { SDK_NAME } from './provide';

/** The package.json that governs a file, as Node finds it: the nearest one in the file's folder or above. */
export function packageJsonOf(file: string): string | undefined {
  for (let dir = path.dirname(file); ; dir = path.dirname(dir)) {
    const candidate = path.join(dir, 'package.json');
    if (fs.existsSync(candidate)) return candidate;
    if (path.dirname(dir) === dir) return undefined;
  }
}

/**
 * Why a module cannot run on this SDK (its package.json's range excludes `version`, or the range is not one),
 * or undefined when it can, or says nothing. A package.json that cannot be read as JSON is the module's
 * problem too: Node would refuse it on `require` anyway.
 */
export function sdkRangeProblem(moduleFile: string, version: string): string | undefined {
  const manifest = packageJsonOf(moduleFile);
  if (!manifest) return undefined;
  let pkg: { peerDependencies?: Record<string, unknown> };
  try {
    pkg = JSON.parse(fs.readFileSync(manifest, 'utf8')) as typeof pkg;
  } catch (e) {
    return `${manifest}: cannot be read as JSON (${(e as Error).message})`;
  }
  const range = pkg.peerDependencies?.[SDK_NAME];
  if (range === undefined) return undefined;
  // semver is loaded here, by the few modules that declare a range, not by every broker's start.
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const semver = require('semver') as typeof import('semver');
  if (typeof range !== 'string' || semver.validRange(range) === null)
    return `${manifest}: peerDependencies "${SDK_NAME}": ${JSON.stringify(range)} is not a version range`;
  if (semver.satisfies(version, range, { includePrerelease: true })) return undefined;
  return `needs ${SDK_NAME} ${range} (peerDependencies in ${manifest}), but this broker provides ${SDK_NAME} ${version}`;
}
