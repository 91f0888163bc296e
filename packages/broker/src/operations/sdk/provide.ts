/**
 * The broker hands its own `@wanas/operations` to every plug-in module it loads, wherever the module lives:
 * a module's `require('@wanas/operations')` and `import … from '@wanas/operations'` resolve to the file the
 * broker itself runs, so `OperationError` and `Code` are the broker's own (one copy, one `instanceof`).
 * Every other specifier resolves as Node resolves it, from the module's own folder.
 *
 * Node 20 has no public hook for `require`'s resolution (`module.registerHooks` is Node 22), so CommonJS is
 * redirected by wrapping `Module._resolveFilename` — the hook every module-alias tool uses — and ES modules
 * by a `module.register` resolve hook (./esm-hooks), which runs on Node's loader thread.
 */
import Module from 'node:module';
import * as path from 'node:path';
import { pathToFileURL } from 'node:url';

/** The specifier a module writes for the SDK. */
export const SDK_NAME = '@wanas/operations';

/** Where the broker's SDK is: its entry file and its version (from its package.json). */
export interface Sdk {
  file: string;
  version: string;
  /** The SDK package's folder: its `package.json`, `dist/*.js` and `dist/*.d.ts`. */
  dir: string;
}

/** The SDK this broker runs. */
export function brokerSdk(): Sdk {
  const file = require.resolve(SDK_NAME);
  const manifest = require.resolve(`${SDK_NAME}/package.json`);
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const { version } = require(manifest) as { version: string };
  return { file, version, dir: path.dirname(manifest) };
}

type ResolveFilename = (request: string, parent: unknown, isMain: boolean, options?: unknown) => string;
interface ModuleInternals {
  _resolveFilename: ResolveFilename;
}

let toCommonJs = false;
let toEsModules = false;

/**
 * Redirects `require('@wanas/operations')` to the broker's copy, once per process. Global, and harmless
 * as such: the broker's own `require` of the SDK resolves to the same file anyway.
 */
export function provideToCommonJs(): void {
  if (toCommonJs) return;
  toCommonJs = true;
  const file = brokerSdk().file;
  const internals = Module as unknown as ModuleInternals;
  const original = internals._resolveFilename;
  internals._resolveFilename = function (request, parent, isMain, options) {
    if (request === SDK_NAME) return file;
    return original.call(this, request, parent, isMain, options);
  };
}

/**
 * Redirects `import … from '@wanas/operations'` to the broker's copy, once per process, before the first
 * ES module is imported (the hooks start a loader thread, so a broker with CommonJS modules only has none).
 */
export function provideToEsModules(): void {
  if (toEsModules) return;
  toEsModules = true;
  Module.register(pathToFileURL(path.join(__dirname, 'esm-hooks.js')), {
    data: { name: SDK_NAME, url: pathToFileURL(brokerSdk().file).href },
  });
}
