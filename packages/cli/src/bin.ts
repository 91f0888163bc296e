#!/usr/bin/env node
import { Command } from 'commander';
import { registerAggregate } from './cmd-aggregate';
import { registerBroker } from './cmd-broker';
import { registerStatus } from './cmd-status';
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
  registerUp(program);
  registerWan(program);
  return program;
}

if (require.main === module) {
  createProgram()
    .parseAsync(process.argv)
    .catch((e: unknown) => {
      process.stderr.write(`error: ${(e as Error).message}\n`);
      process.exit(1);
    });
}
