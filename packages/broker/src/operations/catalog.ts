/**
 * The operations a broker serves: the built-in ones (or those given), the topology's configured ones and
 * its plug-in modules, in one registry — and their descriptions for `AdminService.ListOperations`.
 */
import { msToDuration, type ListOperationsResponse, type OperationDescription } from '@wanas/proto';
import { durationMs, nameOfCode, type JsonObject } from '@wanas/operations';
import * as path from 'node:path';
import { z } from 'zod';
import { builtinOperations } from './builtin';
import { configuredOperations, type ConfiguredDeps } from './configured';
import { loadModule } from './modules';
import { OperationRegistry } from './registry';
import type { Operation } from './types';

/** A broker's operations, and what must be closed with it. */
export interface Catalog {
  registry: OperationRegistry;
  /** Starts reading reflection-backed schemas (not awaited). */
  warm(log: (message: string, fields: JsonObject) => void): void;
  close(): void;
}

/**
 * Builds the registry: `base` (default: the built-in operations), then the topology's `operations` in
 * file order. Rejects, naming the field or the module and the cause, when any of them cannot be made or
 * two share a name.
 */
export async function operationsCatalog(deps: ConfiguredDeps, base?: OperationRegistry): Promise<Catalog> {
  const t = deps.topology();
  const registry = base ?? builtinOperations();
  const configured = configuredOperations(deps);
  try {
    const byName = new Map(configured.operations.map((op) => [op.name, op]));
    const dir = t.file ? path.dirname(t.file) : process.cwd();
    for (const [i, entry] of t.operations.entries()) {
      const ops = 'module' in entry ? await loadModule(entry.module, dir) : [byName.get(entry.name)!];
      for (const op of ops) {
        if (registry.has(op.name))
          throw new Error(
            `operations[${i}]: operation "${op.name}" is already defined (by ${registry.originOf(op.name)})`,
          );
        registry.register(op);
      }
    }
  } catch (e) {
    configured.close();
    throw e;
  }
  return { registry, warm: configured.warm, close: configured.close };
}

/** The JSON Schema of an operation's params: its own, or zod's rendering of its params schema. */
function paramsSchemaOf(op: Operation): JsonObject | undefined {
  if (op.info?.paramsSchema) return op.info.paramsSchema();
  try {
    return z.toJSONSchema(op.params, { unrepresentable: 'any', io: 'input' }) as JsonObject;
  } catch {
    return undefined; // a schema zod cannot render (a transform, a custom check): none shown
  }
}

/** What `ListOperations` answers: every operation, sorted by name. */
export function listOperations(registry: OperationRegistry): ListOperationsResponse {
  const operations = registry
    .list()
    .map((op): OperationDescription => ({
      name: op.name,
      description: op.description,
      kind: op.info?.kind ?? 'module',
      service: op.info?.service ?? '',
      method: op.info?.method ?? '',
      idempotent: op.idempotent,
      reduce: op.info?.reduce,
      paramsSchema: paramsSchemaOf(op),
      nextPodOn: (op.nextPodOn ?? []).map(nameOfCode),
      module: op.info?.module ?? '',
      pageItems: op.page?.items ?? '',
      pageKey: op.page?.key ?? '',
      cacheMaxAge: op.cache ? msToDuration(durationMs(op.cache.maxAge) ?? 0) : undefined,
    }))
    .sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  return { operations };
}
