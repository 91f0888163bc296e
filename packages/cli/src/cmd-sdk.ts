import { exportSdk } from '@wanas/broker';
import type { Command } from 'commander';

/** `wanas sdk --out DIR`: writes the broker's `@wanas/operations` as a package a module project installs. */
export function registerSdk(program: Command): void {
  program
    .command('sdk')
    .description(
      "write this broker's @wanas/operations (JavaScript, .d.ts and its zod) to a folder, for a module project " +
        'to install for its types and tests; brokers provide their own copy at run time',
    )
    .requiredOption(
      '-o, --out <dir>',
      'the folder to write (made if missing; only an earlier export is replaced)',
    )
    .action((o: { out: string }) => {
      const { dir, version } = exportSdk(o.out);
      process.stdout.write(
        `wrote @wanas/operations ${version} to ${dir}\n` +
          `in your module project: npm install --save-dev ${dir}\n` +
          `and declare what you need: "peerDependencies": { "@wanas/operations": "^${version}" }\n`,
      );
    });
}
