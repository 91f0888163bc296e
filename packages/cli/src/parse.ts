import { InvalidArgumentError } from 'commander';

const DURATION = /^(\d+(?:\.\d+)?)(ms|s|m|h)$/;
const UNIT_MS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 };

/** Parses "250ms", "2s", "1.5s", "1m" to ms (commander argument parser). */
export function parseDurationMs(text: string): number {
  const m = DURATION.exec(text.trim());
  if (!m) throw new InvalidArgumentError(`"${text}" is not a duration; use e.g. 500ms, 2s, 1m`);
  const ms = Number(m[1]) * UNIT_MS[m[2]!]!;
  if (!(ms > 0)) throw new InvalidArgumentError(`"${text}" must be positive`);
  return ms;
}

/** Parses a positive integer option. */
export function parsePositiveInt(text: string): number {
  const n = Number(text);
  if (!Number.isInteger(n) || n < 0)
    throw new InvalidArgumentError(`"${text}" is not a non-negative integer`);
  return n;
}

/** Parses host:port. */
export function parseAddress(text: string): string {
  if (!/^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+):\d{1,5}$/.test(text)) {
    throw new InvalidArgumentError(`"${text}" is not host:port, e.g. 127.0.0.1:7101`);
  }
  return text;
}

/** Where brokers serve their HTTP listener: one address (one broker), and/or one per broker id. */
export interface MetricsAddresses {
  all?: string;
  byId: Record<string, string>;
}

/** Parses `host:port`, or `id=host:port[,id=host:port…]` (several brokers in one process). */
export function parseMetricsAddresses(text: string): MetricsAddresses {
  if (!text.includes('=')) return { all: parseAddress(text), byId: {} };
  const byId: Record<string, string> = {};
  for (const part of text.split(',')) {
    const i = part.indexOf('=');
    if (i <= 0) throw new InvalidArgumentError(`"${part}" is not id=host:port, e.g. s1-p1-a=127.0.0.1:9101`);
    byId[part.slice(0, i)] = parseAddress(part.slice(i + 1));
  }
  return { byId };
}

/**
 * Collects `k=v` params: v is taken as JSON when it parses (numbers, true/false, null, objects),
 * otherwise as a string. Dotted keys nest: `a.b=1` → {a: {b: 1}}.
 */
export function collectParam(text: string, acc: Record<string, unknown> = {}): Record<string, unknown> {
  const i = text.indexOf('=');
  if (i <= 0) throw new InvalidArgumentError(`"${text}" is not key=value`);
  const keyPath = text.slice(0, i).split('.');
  const raw = text.slice(i + 1);
  let value: unknown = raw;
  try {
    value = JSON.parse(raw);
  } catch {
    value = raw; // not JSON: a plain string
  }
  let node = acc;
  for (const k of keyPath.slice(0, -1)) {
    if (typeof node[k] !== 'object' || node[k] === null) node[k] = {};
    node = node[k] as Record<string, unknown>;
  }
  node[keyPath[keyPath.length - 1]!] = value;
  return acc;
}

/** Collects a repeatable string option. */
export function collect(value: string, acc: string[] = []): string[] {
  return [...acc, value];
}
