import { hashToken } from '@wanas/topology';
import type { Command } from 'commander';
import { randomBytes } from 'node:crypto';

/** `wanas token`: a new random bearer token and the line that lets brokers accept it. */
export function registerToken(program: Command): void {
  program
    .command('token')
    .description(
      'make a bearer token for clients; prints the token and its topology entry (only the hash is stored)',
    )
    .requiredOption('-n, --name <name>', 'a name for the token, e.g. ops-team')
    .action((o: { name: string }) => {
      const token = randomBytes(32).toString('base64url');
      process.stdout.write(
        `token (give it to the client, e.g. in a file for --token-file; it is not shown again):\n${token}\n\n` +
          `add under security.clientTokens in the topology:\n  - { name: ${o.name}, sha256: ${hashToken(token)} }\n`,
      );
    });
}
