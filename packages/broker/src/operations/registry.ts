import { status } from '@grpc/grpc-js';
import { BrokerError } from '../errors';
import type { JsonObject, Operation } from './types';

/** Operations by name. Unknown names and bad params become INVALID_ARGUMENT naming the problem. */
export class OperationRegistry {
  private readonly ops = new Map<string, Operation>();

  /** Registers an operation; a second one with the same name is a programming error. */
  register<P extends JsonObject>(op: Operation<P>): this {
    if (this.ops.has(op.name)) throw new Error(`operation ${op.name} is already registered`);
    this.ops.set(op.name, op as unknown as Operation);
    return this;
  }

  /** The operation, or INVALID_ARGUMENT listing the known ones. */
  get(name: string): Operation {
    const op = this.ops.get(name);
    if (!op) {
      const known = [...this.ops.keys()].sort().join(', ');
      throw new BrokerError(
        status.INVALID_ARGUMENT,
        name
          ? `operation: unknown operation "${name}" (known: ${known})`
          : `operation: required (known: ${known})`,
      );
    }
    return op;
  }

  /** Validates params against the operation's schema; INVALID_ARGUMENT names each bad field. */
  parseParams(op: Operation, params: JsonObject | undefined): JsonObject {
    const r = op.params.safeParse(params ?? {});
    if (r.success) return r.data;
    const problems = r.error.issues.map(
      (i) =>
        `params${i.path.map((p) => (typeof p === 'number' ? `[${p}]` : `.${String(p)}`)).join('')}: ${i.message}`,
    );
    throw new BrokerError(status.INVALID_ARGUMENT, `${op.name}: ${problems.join('; ')}`);
  }

  /** True when an operation of that name is registered. */
  has(name: string): boolean {
    return this.ops.has(name);
  }

  /** Where a registered operation came from, for messages: `built-in`, `module X`, or its service. */
  originOf(name: string): string {
    const info = this.ops.get(name)?.info;
    if (!info || info.kind === 'builtin') return 'a built-in operation';
    if (info.kind === 'module') return `module ${info.module}`;
    return `service ${info.service}`;
  }

  /** Every registered operation. */
  list(): Operation[] {
    return [...this.ops.values()];
  }
}
