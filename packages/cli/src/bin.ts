#!/usr/bin/env node
import { Command } from 'commander';
import { registerAggregate } from './cmd-aggregate';
import { registerBench } from './cmd-bench';
import { registerBroker } from './cmd-broker';
import { registerK8s } from './cmd-k8s';
import { registerOps } from './cmd-ops';
import { registerSdk } from './cmd-sdk';
import { registerStatus } from './cmd-status';
import { registerToken } from './cmd-token';
import { registerUp } from './cmd-up';
import { registerWan } from './cmd-wan';

/** The `wanas` command line. */
export function createProgram(): Command {
  const program = new Command('wanas')
    .description('wanas: one gRPC query across many datacenters, answered in one WAN round trip')
    .showHelpAfterError('(run with --help for usage)');
  registerBroker(program);
  registerAggregate(program);
  registerStatus(program);
  registerOps(program);
  registerUp(program);
  registerWan(program);
  registerToken(program);
  registerBench(program);
  registerK8s(program);
  registerSdk(program);
  return program;
}

if (require.main === module) {
  // grpc-js passes an IP address as the TLS server name when a client dials one (DEP0123); the
  // certificate check itself is right, so keep that one warning out of the user's terminal.
  const emitWarning = process.emitWarning.bind(process);
  process.emitWarning = ((warning: string | Error, ...rest: unknown[]) => {
    const code = typeof rest[0] === 'object' && rest[0] ? (rest[0] as { code?: string }).code : rest[1];
    if (code === 'DEP0123') return;
    (emitWarning as (...a: unknown[]) => void)(warning, ...rest);
  }) as typeof process.emitWarning;
  createProgram()
    .parseAsync(process.argv)
    .catch((e: unknown) => {
      process.stderr.write(`error: ${(e as Error).message}\n`);
      process.exit(1);
    });
}
