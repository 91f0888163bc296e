/**
 * Plug-in modules (`- module: ./ops/geo.js` in the topology's `operations`): a CommonJS or ES module,
 * by path relative to the topology file or by package name, that exports operations written against
 * `@wanas/operations` — as its default export, an `operations` array, or named exports. The broker provides
 * its own SDK to the module (./sdk/provide); the module's other dependencies resolve from its own folder.
 */
import { operationProblem } from '@wanas/operations';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { pathToFileURL } from 'node:url';
import { packageJsonOf, sdkRangeProblem } from './sdk/compatible';
import { brokerSdk, provideToCommonJs, provideToEsModules } from './sdk/provide';
import type { Operation } from './types';

/** A module that failed to load or exports no valid operation: the start is refused with its name and cause. */
export class ModuleLoadError extends Error {
  constructor(
    readonly module: string,
    cause: string,
  ) {
    super(`operations module ${module}: ${cause}`);
    this.name = 'ModuleLoadError';
  }
}

/** `import()` as Node does it (TypeScript's CommonJS output would turn it into `require`). */
const importModule = new Function('specifier', 'return import(specifier)') as (s: string) => Promise<unknown>;

/**
 * CommonJS through `require` (its errors keep their stack); an ES module (`.mjs`, or `.js` under a
 * package.json with `"type": "module"`) through `import()`. The format is decided here, as Node decides it,
 * rather than by trying `require` first: Node 20.19+ `require`s an ES module itself, past the loader hooks
 * that provide the SDK.
 */
async function load(file: string): Promise<unknown> {
  provideToCommonJs(); // an ES module may `require` the SDK too (through createRequire)
  if (!isEsModule(file)) {
    // A user's module is found at run time by path: `require` is the loader meant for that.
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    return require(file) as unknown;
  }
  provideToEsModules();
  return importModule(pathToFileURL(file).href);
}

/** Whether Node reads `file` as an ES module: by its extension, else by its package's `type`. */
function isEsModule(file: string): boolean {
  if (file.endsWith('.mjs')) return true;
  if (file.endsWith('.cjs') || !file.endsWith('.js')) return false;
  const manifest = packageJsonOf(file);
  if (!manifest) return false;
  try {
    return (JSON.parse(fs.readFileSync(manifest, 'utf8')) as { type?: unknown }).type === 'module';
  } catch {
    return false; // unreadable: sdkRangeProblem has said so already
  }
}

/** Where a module entry points: a path (starts with `.` or `/`) relative to the topology's folder, or a package. */
export function resolveModule(specifier: string, topologyDir: string): string {
  const isPath = specifier.startsWith('.') || path.isAbsolute(specifier);
  try {
    return require.resolve(isPath ? path.resolve(topologyDir, specifier) : specifier, {
      paths: [topologyDir],
    });
  } catch (e) {
    throw new ModuleLoadError(specifier, `not found (${(e as Error).message.split('\n')[0]})`);
  }
}

/** Loads one module and returns its operations, each checked; every problem names the module. */
export async function loadModule(specifier: string, topologyDir: string): Promise<Operation[]> {
  const file = resolveModule(specifier, topologyDir);
  const incompatible = sdkRangeProblem(file, brokerSdk().version);
  if (incompatible) throw new ModuleLoadError(specifier, incompatible);
  let exported: unknown;
  try {
    exported = await load(file);
  } catch (e) {
    throw new ModuleLoadError(specifier, `failed to load: ${loadFailure(e, file)}`);
  }
  const candidates = operationsExported(exported);
  if (candidates.length === 0)
    throw new ModuleLoadError(
      specifier,
      'exports no operation (export defineOperation(...) values, an `operations` array, or a default export)',
    );
  return candidates.map((op) => {
    const problem = operationProblem(op);
    if (problem) throw new ModuleLoadError(specifier, problem);
    const o = op as Operation;
    return { ...o, info: { ...o.info, kind: 'module', module: specifier } };
  });
}

/** An error thrown while loading: its first line, and where in the module it was thrown when the stack says. */
function loadFailure(e: unknown, file: string): string {
  if (!(e instanceof Error)) return String(e);
  const where = e.stack
    ?.split('\n')
    .find((l) => l.includes(file))
    ?.trim();
  return `${e.name}: ${e.message}${where ? ` (${where})` : ''}`;
}

/** The values a module offers as operations: default, `operations`, or every named export that looks like one. */
function operationsExported(mod: unknown): unknown[] {
  const m = (mod ?? {}) as Record<string, unknown>;
  // An ES module's namespace, or a CommonJS module's exports (which `import()` would put under `default`).
  const roots = [m, (m.default ?? {}) as Record<string, unknown>];
  for (const root of roots) {
    if (Array.isArray(root)) return root;
    if (Array.isArray(root.operations)) return root.operations as unknown[];
  }
  const seen = new Set<unknown>();
  for (const root of [m, m.default, ...Object.values(m), ...Object.values((m.default ?? {}) as object)]) {
    if (root && typeof root === 'object' && 'execute' in root && 'name' in root) seen.add(root);
  }
  return [...seen];
}
