import { AggregateResponse, msToDuration } from '@wanas/proto';
import { POD_HEADER, StreamTable, summaryLines } from './format';

describe('StreamTable (wanas aggregate --stream)', () => {
  it('lines rows up under the header as they arrive, before the others are known', () => {
    const t = new StreamTable(POD_HEADER);
    const lines = [
      t.head(),
      t.row(['us-east', 'pod-1', 'OK', 'use-1a', 'use-1a:ok', '1.2 ms', '{"a":1}']),
      t.row(['ap-south', 'pod-2', 'RESOURCE_EXHAUSTED', 'aps-2b', 'aps-2a:ok aps-2b:ok', '51.0 ms', 'full']),
    ];
    const resultAt = lines.map((l) =>
      l.indexOf(l === lines[0] ? 'RESULT' : l.includes('full') ? 'full' : '{'),
    );
    expect(new Set(resultAt).size).toBe(1);
    const codeAt = lines.map((l) =>
      l.indexOf(l === lines[0] ? 'CODE' : l.includes('OK  ') ? 'OK' : 'RESOURCE'),
    );
    expect(new Set(codeAt).size).toBe(1);
  });

  it('widens a column for the rows after a longer cell', () => {
    const t = new StreamTable(['A', 'B']);
    t.row(['x'.repeat(20), 'tail']);
    expect(t.row(['y', 'tail']).indexOf('tail')).toBe(22);
  });
});

describe('summaryLines (wanas aggregate)', () => {
  const base = AggregateResponse.fromPartial({
    correlationId: 'mine',
    answeredBy: 'use-1a',
    summary: { podsAsked: 2, podsOk: 2, podsFailed: 0, failedByCode: {} },
  });

  it('says when the answer came from the results cache, how old, and which execution made it', () => {
    const lines = summaryLines({ ...base, cached: true, age: msToDuration(800), sharedFrom: 'c-0' });
    expect(lines).toContain('cached: an answer 800.0 ms old, made by c-0');
  });

  it('says when the answer was shared with an identical request in flight', () => {
    expect(summaryLines({ ...base, sharedFrom: 'c-0' })).toContain('shared: the answer of c-0');
    expect(summaryLines(base)).not.toMatch(/cached|shared/);
  });
});
