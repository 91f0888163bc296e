/**
 * The page token: where a listing goes on, stateless and tamper-evident. No broker keeps anything between
 * pages; the token carries the cursor (the last item's key and pod) and which pods in scope are exhausted,
 * bound to the operation, its params, the scope as asked and the pods that scope selected, and signed
 * (HMAC-SHA256) with the federation's key, so any broker of the federation continues it and none accepts
 * one altered or made for another listing.
 */
import { createHash, createHmac, timingSafeEqual } from 'node:crypto';
import { stableJson } from '@wanas/topology';
import { invalidArgument } from '../../errors';
import type { PageBinding, PageCursor } from '../model';

/** Longest page token accepted, characters. */
export const MAX_PAGE_TOKEN_CHARS = 4096;
/** The environment variable holding the federation's page-token secret (the same on every broker). */
export const PAGE_TOKEN_KEY_ENV = 'WANAS_PAGE_TOKEN_KEY';
const VERSION = 1;

interface Payload {
  v: number;
  o: string;
  /** Hashes of the params, the scope as asked, and the pods it selected. */
  p: string;
  s: string;
  t: string;
  a: string;
  ap: string;
  /** Exhausted pods: a bitset over the scope's pods, hex. */
  d: string;
  /** The fan-out factor. */
  f: number;
}

const digest = (v: unknown): string =>
  createHash('sha256').update(stableJson(v)).digest('base64url').slice(0, 16);

function keyOf(federation: string): Buffer {
  const secret = process.env[PAGE_TOKEN_KEY_ENV] ?? '';
  return createHash('sha256').update(`wanas page token\0${federation}\0${secret}`).digest();
}

const sign = (federation: string, body: string): string =>
  createHmac('sha256', keyOf(federation)).update(body).digest('base64url');

/** The token of the next page. */
export function encodePageToken(b: PageBinding, c: PageCursor): string {
  const bits = Buffer.alloc(Math.ceil(b.pods.length / 8));
  for (const i of c.done) bits[i >> 3]! |= 1 << (i & 7);
  const payload: Payload = {
    v: VERSION,
    o: b.operation,
    p: digest(b.params),
    s: digest(b.scope),
    t: digest(b.pods),
    a: c.after,
    ap: c.afterPod,
    d: bits.toString('hex'),
    f: c.fanout,
  };
  const body = Buffer.from(JSON.stringify(payload)).toString('base64url');
  return `${body}.${sign(b.federation, body)}`;
}

const refuse = (why: string) => invalidArgument('page_token', why);

const FIELDS: Record<keyof Payload, 'string' | 'number'> = {
  v: 'number',
  o: 'string',
  p: 'string',
  s: 'string',
  t: 'string',
  a: 'string',
  ap: 'string',
  d: 'string',
  f: 'number',
};

/**
 * The payload of a signed body, every field of its type. The signature proves only who made it (with the
 * default key, anyone who knows the federation's name can sign): a body that is not a payload is refused.
 */
function payloadOf(body: string): Payload {
  let p: unknown;
  try {
    p = JSON.parse(Buffer.from(body, 'base64url').toString());
  } catch {
    throw refuse('malformed: its body is not JSON');
  }
  if (!p || typeof p !== 'object') throw refuse('malformed: its body is not an object');
  const bad = Object.entries(FIELDS).find(([k, t]) => typeof (p as Record<string, unknown>)[k] !== t);
  if (bad) throw refuse(`malformed: "${bad[0]}" is missing or not a ${bad[1]}`);
  const q = p as Payload;
  if (!/^([0-9a-f]{2})*$/.test(q.d)) throw refuse('malformed: its exhausted pods are not hex');
  if (!(Number.isInteger(q.f) && q.f >= 1 && q.f <= 1e6))
    throw refuse('malformed: its fan-out is not a whole number from 1');
  return q;
}

/** The cursor a token holds; INVALID_ARGUMENT naming why for one that is not this listing's. */
export function decodePageToken(token: string, b: PageBinding): PageCursor {
  if (token.length > MAX_PAGE_TOKEN_CHARS) throw refuse(`longer than ${MAX_PAGE_TOKEN_CHARS} characters`);
  const [body, mac, extra] = token.split('.');
  if (!body || !mac || extra !== undefined)
    throw refuse('not a page token (send next_page_token exactly as it came)');
  const expected = Buffer.from(sign(b.federation, body));
  const given = Buffer.from(mac);
  if (given.length !== expected.length || !timingSafeEqual(given, expected))
    throw refuse('altered, or made by another federation: its signature does not match');
  const p = payloadOf(body);
  if (p.v !== VERSION) throw refuse(`version ${p.v} is not known to this broker (it knows ${VERSION})`);
  if (p.o !== b.operation) throw refuse(`made for operation "${p.o}", not "${b.operation}"`);
  if (p.p !== digest(b.params)) throw refuse('made for other params: send the same params on every page');
  if (p.s !== digest(b.scope)) throw refuse('made for another scope: send the same scope on every page');
  if (p.t !== digest(b.pods))
    throw refuse(
      'the pods in scope changed since it was made (the topology was changed): start the listing again',
    );
  const bits = Buffer.from(p.d, 'hex');
  const done: number[] = [];
  for (let i = 0; i < b.pods.length; i++) if ((bits[i >> 3] ?? 0) & (1 << (i & 7))) done.push(i);
  return { after: p.a, afterPod: p.ap, done, fanout: p.f };
}
