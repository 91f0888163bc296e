/**
 * The `scale` part's listings: every session of the federation with `sessions.list`, page by page through
 * its tokens, checked (every session once, in order, as many as the pods hold) and timed page by page;
 * then the same listing through a broker process killed between pages and a site partitioned mid-listing,
 * the token continued through another entry broker after the heal.
 */
import * as fs from 'node:fs';
import type { DevFederation } from '@wanas/devfed';
import { AggregateResponse, msToDuration } from '@wanas/proto';
import type { Progress } from './parts';
import { summarize } from './stats';

/** What a listing measured. */
export interface ListingResult {
  sessions: number;
  /** The sessions the pods hold (pods.capacity's desktops in use: one session each). */
  expected: number;
  pages: number;
  /** Every session once, in the listing's order. */
  onceInOrder: boolean;
  pageP50Ms: number;
  pageP99Ms: number;
  /** The largest page a broker sent, bytes (its transport refuses to send one over the limit). */
  largestPageBytes: number;
  /** Peak RSS of the entry broker's process (shared with the brokers it runs), MB. */
  entryPeakRssMb: number;
  /** Pages that failed (partition) and were sent again with the same token. */
  pagesRetried: number;
  /** Faults made between pages. */
  faults: string[];
}

/** A fault to make before the page of that number. */
export type ListingFault = { beforePage: number; what: string; act: () => Promise<void> };

type Listed = { id: string; site: string; pod: string };

/** Peak RSS of a process (VmHWM), MB. */
function peakRssMb(pid: number | undefined): number {
  const m = /VmHWM:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
  return Math.round(Number(m?.[1] ?? 0) / 1024);
}

/** Whether `listed` holds no session twice and is in the listing's order (id bytes, then site/pod). */
function onceInOrder(listed: Listed[]): boolean {
  for (let i = 1; i < listed.length; i++) {
    const a = listed[i - 1]!;
    const b = listed[i]!;
    const c = Buffer.compare(Buffer.from(a.id), Buffer.from(b.id));
    if (c > 0 || (c === 0 && `${a.site}/${a.pod}` >= `${b.site}/${b.pod}`)) return false;
  }
  return true;
}

/** The sessions the pods hold now: pods.capacity's desktops in use (every one has one session). */
async function sessionsHeld(f: DevFederation, entry: string): Promise<number> {
  const r = await f.aggregator(entry)({ operation: 'pods.capacity', timeout: msToDuration(10_000) });
  return Number(r.reduced?.inUse ?? 0);
}

/**
 * Lists every session from `entries[0]` with `pageSize`; before a page a fault may act, after which the
 * next entry broker of `entries` continues. A page that fails is sent again with the same token (through
 * the next entry) until it answers, at most `maxRetries` times in all.
 */
export async function listAll(
  f: DevFederation,
  entries: string[],
  pageSize: number,
  progress: Progress,
  faults: ListingFault[] = [],
  maxRetries = 200,
): Promise<ListingResult> {
  const expected = await sessionsHeld(f, entries[0]!);
  progress.start(
    `scale: list ${expected} sessions, ${pageSize} a page${faults.length ? ', with faults' : ''}`,
    Math.ceil(expected / pageSize),
  );
  const listed: Listed[] = [];
  const times: number[] = [];
  let token = '';
  let entry = 0;
  let retried = 0;
  let largest = 0;
  for (let page = 1; page <= Math.ceil(expected / pageSize) * 2 + 10; page++) {
    for (const fault of faults.filter((x) => x.beforePage === page)) {
      await fault.act();
      entry = (entry + 1) % entries.length;
    }
    const t0 = performance.now();
    const r = await f
      .aggregator(entries[entry]!)({
        operation: 'sessions.list',
        pageSize,
        pageToken: token,
        timeout: msToDuration(10_000),
      })
      .catch(() => undefined);
    if (!r) {
      if (++retried > maxRetries) throw new Error(`scale: page ${page} failed ${maxRetries} times`);
      entry = (entry + 1) % entries.length;
      page--;
      await new Promise((res) => setTimeout(res, 200));
      continue;
    }
    times.push(performance.now() - t0);
    largest = Math.max(largest, AggregateResponse.encode(r).finish().length);
    for (const s of r.reduced!.sessions as Listed[]) listed.push({ id: s.id, site: s.site, pod: s.pod });
    progress.tick();
    token = r.nextPageToken;
    if (!token) break;
  }
  const t = summarize(times);
  return {
    sessions: listed.length,
    expected,
    pages: times.length,
    onceInOrder: onceInOrder(listed),
    pageP50Ms: t.p50Ms,
    pageP99Ms: t.p99Ms,
    largestPageBytes: largest,
    entryPeakRssMb: peakRssMb(f.broker(entries[0]!).proc?.pid),
    pagesRetried: retried,
    faults: faults.map((x) => `before page ${x.beforePage}: ${x.what}`),
  };
}
