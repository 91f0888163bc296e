import { codeName, durationToMs, type AggregateResponse, type PodResult } from '@wanas/proto';

/** Longest result text shown in a table cell. */
const RESULT_CELL_CHARS = 60;

function short(value: unknown): string {
  if (value === undefined) return '';
  const s = JSON.stringify(value);
  return s.length > RESULT_CELL_CHARS ? `${s.slice(0, RESULT_CELL_CHARS - 1)}…` : s;
}

function ms(d: { seconds: number; nanos: number } | undefined): string {
  const v = durationToMs(d);
  return v === undefined ? '' : `${v.toFixed(1)} ms`;
}

/** Renders rows as a plain aligned table (header + rows). */
export function table(header: string[], rows: string[][]): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: string[]) =>
    cells
      .map((c, i) => c.padEnd(widths[i]!))
      .join('  ')
      .trimEnd();
  return [line(header), line(widths.map((w) => '-'.repeat(w))), ...rows.map(line)].join('\n');
}

/** One table row for a pod result. */
export function podRow(p: PodResult): string[] {
  return [
    p.site,
    p.pod,
    codeName(p.code),
    p.answeredBy || '-',
    p.attempts.map((a) => `${a.brokerId}:${a.code === 0 ? 'ok' : codeName(a.code)}`).join(' '),
    ms(p.latency),
    p.code === 0 ? short(p.result) : p.message,
  ];
}

/** Column names of {@link podRow}. */
export const POD_HEADER = ['SITE', 'POD', 'CODE', 'ANSWERED BY', 'ATTEMPTS', 'LATENCY', 'RESULT'];

/**
 * Widths a streamed table starts with (the rows are printed before the others are known): room for
 * usual site, pod and broker names, the longest code name (RESOURCE_EXHAUSTED) and two attempts.
 */
const STREAM_WIDTHS = [10, 8, 18, 12, 26, 9];

/**
 * A table printed row by row as rows arrive (`wanas aggregate --stream`): every column has a fixed width
 * from the start, so rows line up under the header; a longer cell widens its column for the rows after it.
 */
export class StreamTable {
  private readonly widths: number[];

  constructor(private readonly header: string[]) {
    this.widths = header.map((h, i) => Math.max(h.length, STREAM_WIDTHS[i] ?? 0));
  }

  /** The header line. */
  head(): string {
    return this.line(this.header);
  }

  /** One row, aligned to the widths so far (the last column is not padded). */
  row(cells: string[]): string {
    cells.forEach((c, i) => {
      if (i < cells.length - 1) this.widths[i] = Math.max(this.widths[i] ?? 0, c.length);
    });
    return this.line(cells);
  }

  private line(cells: string[]): string {
    return cells
      .map((c, i) => (i < cells.length - 1 ? c.padEnd(this.widths[i]!) : c))
      .join('  ')
      .trimEnd();
  }
}

/** The summary lines under a table. */
export function summaryLines(res: AggregateResponse): string {
  const s = res.summary;
  const failed =
    s && Object.keys(s.failedByCode).length
      ? ` (${Object.entries(s.failedByCode)
          .map(([k, v]) => `${k}: ${v}`)
          .join(', ')})`
      : '';
  const lines = [
    `pods asked ${s?.podsAsked ?? 0}, ok ${s?.podsOk ?? 0}, failed ${s?.podsFailed ?? 0}${failed}; ${ms(res.latency)} at ${res.answeredBy}; correlation id ${res.correlationId}`,
  ];
  if (res.cached)
    lines.push(`cached: an answer ${ms(res.age)} old, made by ${res.sharedFrom} (--max-staleness)`);
  else if (res.sharedFrom)
    lines.push(`shared: the answer of ${res.sharedFrom}, an identical request in flight`);
  if (res.reduced) lines.push(`reduced: ${JSON.stringify(res.reduced)}`);
  if (res.truncated) lines.push('truncated: the answer was cut to fit one message; the next page goes on');
  if (res.nextPageToken) lines.push(`next page: --page-token ${res.nextPageToken}`);
  return lines.join('\n');
}

/** A whole Aggregate answer as a table plus summary. */
export function formatAggregate(res: AggregateResponse): string {
  return `${table(POD_HEADER, res.pods.map(podRow))}\n\n${summaryLines(res)}`;
}
