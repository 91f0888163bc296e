import * as grpc from '@grpc/grpc-js';
import { ListOperationsResponse, durationToMs, type OperationDescription } from '@wanas/proto';
import type { Command } from 'commander';
import { adminCall, type AdminFlags } from './admin-call';
import { addConnectionFlags } from './credentials';
import { table } from './format';
import { parseAddress } from './parse';

/** The params of an operation in one line: its schema's top-level fields and their types. */
function paramsLine(op: OperationDescription): string {
  const schema = op.paramsSchema as { properties?: Record<string, { type?: unknown }> } | undefined;
  if (!schema) return op.kind === 'grpc' ? '(schema not read yet)' : '';
  const props = Object.entries(schema.properties ?? {});
  if (!props.length) return op.kind === 'http' ? '(any JSON object)' : '{}';
  return props
    .map(([k, v]) => `${k}:${Array.isArray(v.type) ? v.type.join('|') : String(v.type ?? 'any')}`)
    .join(' ');
}

/** Formats a ListOperations answer for a terminal: one row per operation. */
export function formatOperations(res: ListOperationsResponse): string {
  const rows = res.operations.map((op) => [
    op.name,
    op.kind,
    op.idempotent ? (op.cacheMaxAge ? `read, cached ≤ ${durationToMs(op.cacheMaxAge)} ms` : 'read') : 'write',
    op.service ? `${op.service} ${op.method}` : op.module,
    op.reduce ? JSON.stringify(op.reduce) : op.pageKey ? `pages: ${op.pageItems} by ${op.pageKey}` : '',
    paramsLine(op),
  ]);
  return table(['OPERATION', 'KIND', 'READ/WRITE', 'CALLS', 'REDUCE', 'PARAMS'], rows);
}

/** `wanas ops --address HOST:PORT`: the operations that broker serves (AdminService.ListOperations). */
export function registerOps(program: Command): void {
  const cmd = program
    .command('ops')
    .description('the operations a broker serves: built-in, configured (gRPC/HTTP backends) and modules')
    .requiredOption('-a, --address <host:port>', 'the broker', parseAddress)
    .option('--json', "print proto3 JSON (with each operation's params as JSON Schema)")
    .option('--timeout <ms>', 'deadline, ms', (v) => Number(v), 3000);
  addConnectionFlags(cmd).action((o: AdminFlags) =>
    adminCall<ListOperationsResponse>(
      program,
      o,
      'list the operations',
      (c, opts, cb) => c.listOperations({}, new grpc.Metadata(), opts, cb),
      (res) => (o.json ? JSON.stringify(ListOperationsResponse.toJSON(res), null, 2) : formatOperations(res)),
    ),
  );
}
