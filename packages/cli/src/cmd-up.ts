import * as grpc from '@grpc/grpc-js';
import { AggregateRequest, AggregationServiceClient, Mode, type AggregateResponse } from '@wanas/proto';
import { randomUUID } from 'node:crypto';
import { Option, type Command } from 'commander';
import { formatAggregate } from './format';
import { parsePositiveInt } from './parse';
import type { ClientChannel } from '@wanas/devfed';
import { loadDevPackage } from './dev-packages';
import type { Topology } from '@wanas/topology';

interface UpFlags {
  topology: string;
  wanLatencyMs: number;
  jitterMs: number;
  restart?: boolean;
  brokersPerProcess?: number;
  tlsDir?: string;
  metrics?: boolean;
  store: 'sqlite' | 'postgres';
  demoQuery?: boolean;
}

/** One Aggregate through `client`, 10 s deadline. */
function ask(client: AggregationServiceClient, req: AggregateRequest): Promise<AggregateResponse> {
  return new Promise<AggregateResponse>((resolve, reject) =>
    client.aggregate(req, new grpc.Metadata(), { deadline: Date.now() + 10_000 }, (e, r) =>
      e ? reject(e) : resolve(r),
    ),
  );
}

/**
 * The demo: sessions.find for alice through the first broker, then a GPU desktop for her placed first-fit,
 * home site first (the demo's home site has no GPU desktop free, so the next site gets it).
 */
async function demoQuery(t: Topology, channel: ClientChannel): Promise<void> {
  const entry = [...t.brokers.values()][0]!;
  const client = new AggregationServiceClient(entry.address, channel.credentials);
  const cli = `npx wanas aggregate --address ${entry.address}${channel.flags ? ` ${channel.flags}` : ''}`;
  try {
    const found = await ask(
      client,
      AggregateRequest.fromPartial({ operation: 'sessions.find', params: { user: 'alice' } }),
    );
    process.stdout.write(`\n$ ${cli} --op sessions.find --param user=alice\n${formatAggregate(found)}\n`);
    const placed = await ask(
      client,
      AggregateRequest.fromPartial({
        operation: 'desktops.provision',
        params: { user: 'alice', pool: 'gpu' },
        mode: Mode.MODE_FIRST,
        preferSites: [entry.site],
        idempotencyKey: randomUUID(),
      }),
    );
    process.stdout.write(
      `\n$ ${cli} --op desktops.provision --param user=alice --param pool=gpu --first --prefer-site ${entry.site}\n` +
        `${formatAggregate(placed)}\n\nfederation running; Ctrl-C to stop.\n`,
    );
  } finally {
    client.close();
  }
}

/** `wanas up`: the whole federation on this machine, with an emulated WAN. */
export function registerUp(program: Command): void {
  program
    .command('up')
    .description(
      'start every broker of the topology as its own process, with a WAN emulator at every wanAddress',
    )
    .requiredOption('-t, --topology <file>', 'topology YAML file (e.g. examples/demo.yaml)')
    .option('--wan-latency-ms <n>', 'delay added in each direction on WAN links, ms', parsePositiveInt, 25)
    .option('--jitter-ms <n>', 'random extra delay per chunk, 0..n ms', parsePositiveInt, 0)
    .option('--restart', 'restart brokers that die')
    .option(
      '--brokers-per-process <n>',
      "run up to n brokers of a site in one process (each its own servers, channels and store): a federation at the product's limits on a few cores; a process that dies takes its brokers with it",
      parsePositiveInt,
      1,
    )
    .option(
      '--tls-dir <dir>',
      'make a throwaway CA and certificates here; run with mTLS and authorization on',
    )
    .option(
      '--metrics',
      'print the Prometheus config that scrapes every broker (every broker serves /metrics beside its console)',
    )
    .addOption(
      new Option(
        '--store <kind>',
        "where the pods keep their state: the topology's own (sqlite: a file per pod), or postgres (a private PostgreSQL server, one schema per pod)",
      )
        .choices(['sqlite', 'postgres'])
        .default('sqlite'),
    )
    .option(
      '--demo-query',
      "once ready, find alice's sessions and place a GPU desktop for her (home site first); print both",
    )
    .action(async (o: UpFlags) => {
      const devfed = await loadDevPackage<typeof import('@wanas/devfed')>('@wanas/devfed', 'up');
      try {
        await devfed.runUp({
          topology: o.topology,
          wanLatencyMs: o.wanLatencyMs,
          jitterMs: o.jitterMs,
          restart: !!o.restart,
          brokersPerProcess: o.brokersPerProcess,
          tlsDir: o.tlsDir,
          metrics: !!o.metrics,
          store: o.store,
          onReady: o.demoQuery ? demoQuery : undefined,
        });
      } catch (e) {
        if (!(e instanceof devfed.UpError)) throw e;
        process.stderr.write(`error: ${e.message}\n`);
        process.exit(e.exitCode);
      }
    });
}
