import { durationToMs, type Duration } from '@wanas/proto';
import { invalidArgument } from './errors';

/** Longest correlation id accepted. */
export const MAX_CORRELATION_ID_LENGTH = 128;
/** Most headers a request may carry. */
export const MAX_HEADERS = 64;
/** Longest header name. */
export const MAX_HEADER_NAME_LENGTH = 128;
/** Longest header value. */
export const MAX_HEADER_VALUE_LENGTH = 4096;
/** Most sites or pods a scope may name. */
export const MAX_SCOPE_ENTRIES = 1024;
/** Most endpoints a target list may carry. */
export const MAX_TARGET_ENDPOINTS = 256;
/** Longest idempotency key. */
export const MAX_IDEMPOTENCY_KEY_LENGTH = 256;
/** Deepest nesting of params accepted. */
export const MAX_PARAMS_DEPTH = 16;
/** Largest params, as JSON bytes. */
export const MAX_PARAMS_BYTES = 256 * 1024;

const CORRELATION_ID = /^[A-Za-z0-9._:-]+$/;
const HEADER_NAME = /^[A-Za-z0-9._-]+$/;
const IDEMPOTENCY_KEY = /^[\x21-\x7e]+$/;

/** True for a non-empty correlation id within limits (safe to echo in metadata and logs). */
export function isValidCorrelationId(id: string): boolean {
  return id.length > 0 && id.length <= MAX_CORRELATION_ID_LENGTH && CORRELATION_ID.test(id);
}

/** Validates a correlation id (empty is allowed: the broker fills one). */
export function checkCorrelationId(id: string, field = 'correlation_id'): void {
  if (!id) return;
  if (id.length > MAX_CORRELATION_ID_LENGTH)
    throw invalidArgument(field, `at most ${MAX_CORRELATION_ID_LENGTH} characters`);
  if (!CORRELATION_ID.test(id)) throw invalidArgument(field, 'may hold letters, digits and . _ : - only');
}

/** Validates request headers. */
export function checkHeaders(headers: Record<string, string>): void {
  const names = Object.keys(headers);
  if (names.length > MAX_HEADERS)
    throw invalidArgument('headers', `at most ${MAX_HEADERS} entries, got ${names.length}`);
  for (const k of names) {
    if (k.length === 0 || k.length > MAX_HEADER_NAME_LENGTH || !HEADER_NAME.test(k)) {
      throw invalidArgument(
        `headers["${k.slice(0, 40)}"]`,
        `names are 1-${MAX_HEADER_NAME_LENGTH} letters, digits, . _ -`,
      );
    }
    if ((headers[k] ?? '').length > MAX_HEADER_VALUE_LENGTH) {
      throw invalidArgument(`headers["${k}"]`, `value longer than ${MAX_HEADER_VALUE_LENGTH} characters`);
    }
  }
}

/** Validates params size and depth (their content is the operation's schema's job). */
export function checkParamsShape(params: unknown): void {
  if (params === undefined) return;
  const depth = (v: unknown, d: number): number => {
    if (d > MAX_PARAMS_DEPTH) return d;
    if (Array.isArray(v)) return Math.max(d, ...v.map((x) => depth(x, d + 1)));
    if (v && typeof v === 'object') return Math.max(d, ...Object.values(v).map((x) => depth(x, d + 1)));
    return d;
  };
  if (depth(params, 1) > MAX_PARAMS_DEPTH)
    throw invalidArgument('params', `nested deeper than ${MAX_PARAMS_DEPTH} levels`);
  const bytes = Buffer.byteLength(JSON.stringify(params));
  if (bytes > MAX_PARAMS_BYTES)
    throw invalidArgument('params', `${bytes} bytes of JSON; at most ${MAX_PARAMS_BYTES}`);
}

/** Validates an idempotency key (empty allowed here; operations that need one say so). */
export function checkIdempotencyKey(key: string): void {
  if (!key) return;
  if (key.length > MAX_IDEMPOTENCY_KEY_LENGTH)
    throw invalidArgument('idempotency_key', `at most ${MAX_IDEMPOTENCY_KEY_LENGTH} characters`);
  if (!IDEMPOTENCY_KEY.test(key))
    throw invalidArgument('idempotency_key', 'printable ASCII without spaces only');
}

/**
 * A positive duration in ms, or `fallback` when unset. Zero or negative is refused (no downstream call
 * is made for a request that has no time), and so is anything above `maxMs`.
 */
export function positiveMs(d: Duration | undefined, field: string, fallback: number, maxMs: number): number {
  const ms = durationToMs(d);
  if (ms === undefined) return fallback;
  if (!(ms > 0)) throw invalidArgument(field, `must be positive, got ${ms} ms`);
  if (ms > maxMs) throw invalidArgument(field, `must be at most ${maxMs} ms, got ${ms} ms`);
  return ms;
}
