/**
 * Renders rows as a plain aligned table (header, a rule, rows), for the dev tools' output. The client keeps
 * its own copy (`@wanas/cli` format.ts): it must not load the dev tools, which are not in the broker image.
 */
export function table(header: string[], rows: string[][]): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: string[]) =>
    cells
      .map((c, i) => c.padEnd(widths[i]!))
      .join('  ')
      .trimEnd();
  return [line(header), line(widths.map((w) => '-'.repeat(w))), ...rows.map(line)].join('\n');
}
