import {
  createLogger,
  startBroker,
  type BrokerHandle,
  type FaultInjection,
  type LogFormat,
} from '@wanas/broker';
import { TopologyError, loadTopology } from '@wanas/topology';
import { InvalidArgumentError, type Command } from 'commander';
import * as os from 'node:os';
import { parseAddress, parseMetricsAddresses, parsePositiveInt, type MetricsAddresses } from './parse';

interface BrokerFlags {
  topology: string;
  id?: string;
  pod?: { site: string; pod: string };
  listen?: string;
  metricsAddress?: MetricsAddresses;
  logFormat?: string;
  logLevel: string;
  grace: number;
  injectSlow?: FaultInjection['slowFederation'];
  sessions?: boolean;
}

/** Parses `--sessions on|off`. */
function parseOnOff(text: string): boolean {
  if (text !== 'on' && text !== 'off') throw new InvalidArgumentError(`"${text}" is not on or off`);
  return text === 'on';
}

/** Parses `--inject-slow RATIO:MS`, e.g. 0.05:500. */
function parseInjectSlow(text: string): FaultInjection['slowFederation'] {
  const m = /^(0(?:\.\d+)?|1(?:\.0+)?):(\d+)$/.exec(text);
  if (!m) throw new InvalidArgumentError(`"${text}" is not RATIO:MS with RATIO from 0 to 1, e.g. 0.05:500`);
  return { ratio: Number(m[1]), delayMs: Number(m[2]) };
}

/** Parses `--pod SITE/POD`. */
function parsePod(text: string): { site: string; pod: string } {
  const m = /^([a-z0-9-]+)\/([a-z0-9-]+)$/.exec(text);
  if (!m) throw new InvalidArgumentError(`"${text}" is not SITE/POD, e.g. us-east/pod-1`);
  return { site: m[1]!, pod: m[2]! };
}

/**
 * `wanas broker --topology FILE --id ID`: one broker, the production entry point. `--id a,b,c` runs
 * several brokers in one process (benchmarks at scale; not for production). `--pod SITE/POD` runs a
 * replica of a pod whose brokers the topology finds by DNS (Kubernetes: one Deployment per pod).
 */
export function registerBroker(program: Command): void {
  program
    .command('broker')
    .description('run one broker of the topology (the production entry point)')
    .requiredOption('-t, --topology <file>', 'topology YAML file')
    .option('-i, --id <id>', "this broker's id in the topology (a,b,c: several brokers in this process)")
    .option(
      '--pod <site/pod>',
      'run as a replica of this pod, whose brokers are "dns:///NAME:PORT" in the topology (id: --id, else the host name)',
      parsePod,
    )
    .option(
      '--listen <host:port>',
      "with --pod: listen here instead of the pod's listen address",
      parseAddress,
    )
    .option(
      '--metrics-address <host:port|id=host:port,…>',
      "serve the console, /metrics and /status here (default: the topology's metricsAddress); with several --id, one id=host:port each",
      parseMetricsAddresses,
    )
    .option('--log-format <format>', 'json or pretty (default: pretty on a terminal, else json)')
    .option('--log-level <level>', 'error, warn, info, debug', 'info')
    .option('--grace <ms>', 'shutdown grace period for in-flight calls, ms', parsePositiveInt, 10_000)
    .option(
      '--sessions <on|off>',
      "federation sessions: requests to peers as frames on long-lived streams (default: WANAS_SESSIONS, else the topology's settings.sessions)",
      parseOnOff,
    )
    .option(
      '--inject-slow <ratio:ms>',
      'tests and benchmarks only: delay this share of federation requests by MS before working on them',
      parseInjectSlow,
    )
    .action((o: BrokerFlags) => runBrokers(program, o));
}

/** Refuses flags that do not go together (exit 2, naming them); the broker ids to run. */
function checkFlags(program: Command, o: BrokerFlags): string[] {
  if (o.logFormat && o.logFormat !== 'json' && o.logFormat !== 'pretty') {
    program.error(`error: --log-format must be json or pretty, got "${o.logFormat}"`, { exitCode: 2 });
  }
  if (!o.id && !o.pod) program.error('error: give --id ID, or --pod SITE/POD for a DNS pod', { exitCode: 2 });
  if (o.listen && !o.pod) program.error('error: --listen goes with --pod', { exitCode: 2 });
  const ids = (o.id ?? os.hostname()).split(',').filter(Boolean);
  if (o.pod && ids.length > 1) program.error('error: --pod runs one broker; give one --id', { exitCode: 2 });
  if (ids.length > 1 && o.metricsAddress?.all)
    program.error('error: with several --id, give --metrics-address as id=host:port for each', {
      exitCode: 2,
    });
  const unknown = Object.keys(o.metricsAddress?.byId ?? {}).filter((id) => !ids.includes(id));
  if (unknown.length)
    program.error(`error: --metrics-address names ${unknown.join(', ')}, not in --id`, { exitCode: 2 });
  return ids;
}

/** Starts the brokers, then serves until a signal (or the parent's exit) stops them gracefully. */
async function runBrokers(program: Command, o: BrokerFlags): Promise<void> {
  const ids = checkFlags(program, o);
  const logger = createLogger({ format: o.logFormat as LogFormat | undefined, level: o.logLevel });
  const brokers = await startAll(ids, o, logger);
  process.on('SIGHUP', () => brokers.forEach((b) => b.reload()));
  // SIGUSR2: one memory report line (after a full GC when node runs with --expose-gc), for soak tests.
  process.on('SIGUSR2', () => {
    (globalThis as { gc?: () => void }).gc?.();
    const m = process.memoryUsage();
    logger.warn('memory', {
      rssBytes: m.rss,
      heapUsedBytes: m.heapUsed,
      gcForced: typeof (globalThis as { gc?: unknown }).gc === 'function',
    });
  });
  let stopping = false;
  const stop = (signal: string) => {
    if (stopping) return;
    stopping = true;
    logger.info('signal received; shutting down gracefully', { signal });
    Promise.all(brokers.map((b) => b.close(o.grace))).then(
      () => process.exit(0),
      (e: unknown) => {
        logger.error('shutdown failed', { error: String(e) });
        process.exit(1);
      },
    );
  };
  process.once('SIGTERM', () => stop('SIGTERM'));
  process.once('SIGINT', () => stop('SIGINT'));
  // Started by `wanas up` with an IPC channel: when `up` goes away (even by SIGKILL), so does the broker
  // (also when it went away while this broker was still starting).
  if (process.env.WANAS_EXIT_WITH_PARENT === '1' && process.send) {
    if (!process.connected) stop('parent exited');
    else process.once('disconnect', () => stop('parent exited'));
  }
}

/** Starts every broker id; on a failure closes those started, prints why and exits 2. */
async function startAll(
  ids: string[],
  o: BrokerFlags,
  logger: ReturnType<typeof createLogger>,
): Promise<BrokerHandle[]> {
  const brokers: BrokerHandle[] = [];
  // A parent that goes away while brokers start: nothing to drain yet, leave at once.
  const orphaned = () => process.exit(1);
  const withParent = process.env.WANAS_EXIT_WITH_PARENT === '1' && !!process.send;
  if (withParent) process.once('disconnect', orphaned);
  try {
    const topology = ids.length > 1 ? loadTopology(o.topology) : undefined;
    for (const id of ids) {
      brokers.push(
        await startBroker({
          id,
          pod: o.pod,
          listen: o.listen,
          topologyFile: topology ? undefined : o.topology,
          topology,
          logger,
          metricsAddress: o.metricsAddress?.byId[id] ?? o.metricsAddress?.all,
          faults: o.injectSlow ? { slowFederation: o.injectSlow } : undefined,
          sessions: o.sessions,
        }),
      );
    }
  } catch (e) {
    const msg =
      e instanceof TopologyError
        ? e.message
        : `cannot start broker ${ids.join(',')}: ${(e as Error).message}`;
    process.stderr.write(`error: ${msg}\n`);
    await Promise.all(brokers.map((b) => b.close(0)));
    process.exit(2);
  }
  if (withParent) process.off('disconnect', orphaned);
  return brokers;
}
