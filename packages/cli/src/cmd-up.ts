import * as grpc from '@grpc/grpc-js';
import { AggregateRequest, AggregationServiceClient, type AggregateResponse } from '@wanas/proto';
import type { Command } from 'commander';
import { formatAggregate } from './format';
import { parsePositiveInt } from './parse';
import { runUp } from './up/up';

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
    .option('--demo-query', 'once ready, run sessions.find for user alice and print the answer')
    .action(
      async (o: {
        topology: string;
        wanLatencyMs: number;
        jitterMs: number;
        restart?: boolean;
        demoQuery?: boolean;
      }) => {
        await runUp({
          topology: o.topology,
          wanLatencyMs: o.wanLatencyMs,
          jitterMs: o.jitterMs,
          restart: !!o.restart,
          onReady: o.demoQuery
            ? async (t) => {
                const entry = [...t.brokers.values()][0]!;
                const client = new AggregationServiceClient(entry.address, grpc.credentials.createInsecure());
                const req = AggregateRequest.fromPartial({
                  operation: 'sessions.find',
                  params: { user: 'alice' },
                });
                // The first query also shows warm channels at work: no connection set-up on the request path.
                const res = await new Promise<AggregateResponse>((resolve, reject) =>
                  client.aggregate(req, new grpc.Metadata(), { deadline: Date.now() + 10_000 }, (e, r) =>
                    e ? reject(e) : resolve(r),
                  ),
                );
                client.close();
                process.stdout.write(
                  `\n$ npx wanas aggregate --address ${entry.address} --op sessions.find --param user=alice\n${formatAggregate(res)}\n\nfederation running; Ctrl-C to stop.\n`,
                );
              }
            : undefined,
        });
      },
    );
}
