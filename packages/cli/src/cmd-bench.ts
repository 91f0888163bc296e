import type { Command } from 'commander';
import type { BenchFlags } from '@wanas/bench';
import { loadDevPackage } from './dev-packages';

/** `wanas bench [PART...]`: the benchmarks of BENCHMARKS.md, with real broker processes and the WAN emulator. */
export function registerBench(program: Command): void {
  program
    .command('bench')
    .description(
      'benchmarks with real broker processes and the WAN emulator; parts: latency, cpu, tracing, failover, failure, placement, tail, throughput, scale (default: all)',
    )
    .argument('[parts...]', 'parts to run')
    .option('--json', 'print one JSON object per part as the last lines of output')
    .option('--requests <n>', 'sequential requests per series', (v) => Number(v), 1000)
    .option('--quick', 'fewer requests (200 per series), for a fast look')
    .option(
      '--smoke',
      'tiny topologies and 10 requests per series: checks every part runs (not a measurement)',
    )
    .option(
      '--warm-per-target <n>',
      'warm channels per remote site / other pod in the failover part',
      (v) => Number(v),
      1,
    )
    .option(
      '--no-hedge',
      "brokers run with settings.hedge false in the failover part (default: the broker's default, on)",
    )
    .option('--tls', 'run the latency part over mTLS (brokers, the limit and every alternative)')
    .option(
      '--sessions <mode>',
      "brokers' federation sessions: on, off (unary calls), or both (each part twice, on then off, side by side)",
    )
    .option('--out <dir>', 'where to save results and the chart', 'bench/results')
    .option('--no-markdown', 'do not rewrite BENCHMARKS.md')
    .action(async (parts: string[], o: BenchFlags) => {
      const bench = await loadDevPackage<typeof import('@wanas/bench')>('@wanas/bench', 'bench');
      try {
        await bench.runBench(parts, o);
      } catch (e) {
        if (e instanceof bench.BenchUsageError) program.error(`error: ${e.message}`, { exitCode: 2 });
        throw e;
      }
    });
}
