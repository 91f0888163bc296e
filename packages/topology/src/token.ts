import { createHash } from 'node:crypto';

/** SHA-256 hex of a token (what the topology's `clientTokens` keep). */
export function hashToken(token: string): string {
  return createHash('sha256').update(token, 'utf8').digest('hex');
}
