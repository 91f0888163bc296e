import { TopologyError, createLogger, startBroker, type LogFormat } from '@wanas/broker';
import type { Command } from 'commander';
import { parseAddress, parsePositiveInt } from './parse';

/** `wanas broker --topology FILE --id ID`: one broker, the production entry point. */
export function registerBroker(program: Command): void {
  program
    .command('broker')
    .description('run one broker of the topology (the production entry point)')
    .requiredOption('-t, --topology <file>', 'topology YAML file')
    .requiredOption('-i, --id <id>', "this broker's id in the topology")
    .option(
      '--metrics-address <host:port>',
      "serve /metrics and /status here (default: the topology's metricsAddress)",
      parseAddress,
    )
    .option('--log-format <format>', 'json or pretty (default: pretty on a terminal, else json)')
    .option('--log-level <level>', 'error, warn, info, debug', 'info')
    .option('--grace <ms>', 'shutdown grace period for in-flight calls, ms', parsePositiveInt, 10_000)
    .action(
      async (o: {
        topology: string;
        id: string;
        metricsAddress?: string;
        logFormat?: string;
        logLevel: string;
        grace: number;
      }) => {
        if (o.logFormat && o.logFormat !== 'json' && o.logFormat !== 'pretty') {
          program.error(`error: --log-format must be json or pretty, got "${o.logFormat}"`, { exitCode: 2 });
        }
        const logger = createLogger({ format: o.logFormat as LogFormat | undefined, level: o.logLevel });
        let broker;
        try {
          broker = await startBroker({
            id: o.id,
            topologyFile: o.topology,
            logger,
            metricsAddress: o.metricsAddress,
          });
        } catch (e) {
          const msg =
            e instanceof TopologyError ? e.message : `cannot start broker ${o.id}: ${(e as Error).message}`;
          process.stderr.write(`error: ${msg}\n`);
          process.exit(2);
        }
        const b = broker;
        process.on('SIGHUP', () => b.reload());
        const stop = (signal: string) => {
          logger.info('signal received; shutting down gracefully', { signal });
          b.close(o.grace).then(
            () => process.exit(0),
            (e: unknown) => {
              logger.error('shutdown failed', { error: String(e) });
              process.exit(1);
            },
          );
        };
        process.once('SIGTERM', () => stop('SIGTERM'));
        // Started by `wanas up` with an IPC channel: when `up` goes away (even by SIGKILL), so does the broker.
        if (process.env.WANAS_EXIT_WITH_PARENT === '1' && process.send)
          process.once('disconnect', () => stop('parent exited'));
        process.once('SIGINT', () => stop('SIGINT'));
      },
    );
}
