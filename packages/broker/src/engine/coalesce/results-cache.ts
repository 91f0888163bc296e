/**
 * The entry's results cache (Thanos' and Mimir's query-frontend cache, on one broker): whole answers of
 * operations that allow it (`cache.maxAge`), served again to a client that accepts their age
 * (`AggregateRequest.max_staleness`). Bounded by bytes, least recently used first out; emptied by a
 * topology reload (and keyed by the topology's generation, so nothing from before one is ever served).
 */
import type { AggregateResponse } from '@wanas/proto';
import { LRUCache } from 'lru-cache';

/** A cached answer and when its execution answered (epoch ms). */
export interface CachedAnswer {
  response: AggregateResponse;
  at: number;
}

/** What the cache reports to metrics. */
export interface CacheMetrics {
  lookup(hit: boolean): void;
  bytes(now: number): void;
}

/** The cache (see the file's comment). */
export class ResultsCache {
  private readonly lru: LRUCache<string, CachedAnswer> | undefined;

  /** `maxBytes` 0 turns it off. `size` is an answer's encoded size, bytes. */
  constructor(
    maxBytes: number,
    private readonly size: (r: AggregateResponse) => number,
    private readonly metrics?: CacheMetrics,
  ) {
    this.lru =
      maxBytes > 0
        ? new LRUCache<string, CachedAnswer>({
            maxSize: maxBytes,
            sizeCalculation: (v) => Math.max(1, this.size(v.response)),
            // Never kept past the longest age any operation may allow.
            ttl: 3_600_000,
            ttlAutopurge: false,
            dispose: () => this.reportBytes(),
          })
        : undefined;
  }

  /** The answer under `key` if it is at most `maxAgeMs` old (counted as a hit or a miss). */
  get(key: string, maxAgeMs: number, now = Date.now()): CachedAnswer | undefined {
    const found = this.lru?.get(key);
    const fresh = found && now - found.at <= maxAgeMs ? found : undefined;
    this.metrics?.lookup(fresh !== undefined);
    return fresh;
  }

  /** Whether `get` would find an answer (for Explain; not counted). */
  has(key: string, maxAgeMs: number, now = Date.now()): boolean {
    const found = this.lru?.peek(key);
    return !!found && now - found.at <= maxAgeMs;
  }

  /** Keeps a whole answer, for at most `maxAgeMs`. */
  put(key: string, response: AggregateResponse, maxAgeMs: number, at = Date.now()): void {
    if (!this.lru) return;
    this.lru.set(key, { response, at }, { ttl: maxAgeMs });
    this.reportBytes();
  }

  /** Empties it (a topology reload). */
  clear(): void {
    this.lru?.clear();
    this.reportBytes();
  }

  /** Bytes held now. */
  get bytes(): number {
    return this.lru?.calculatedSize ?? 0;
  }

  private reportBytes(): void {
    this.metrics?.bytes(this.bytes);
  }
}
