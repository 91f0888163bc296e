import fc from 'fast-check';
import { AggregateResponse, LocalResponse, PodResult, SiteResponse, Struct, Value } from '@wanas/proto';
import type { JsonObject } from '../../operations/types';
import {
  aggregateResponseBytes,
  localResponseBytes,
  podResultBytes,
  siteResponseBytes,
  structBytes,
  valueBytes,
} from './wire-size';

/** JSON as operations return it, with long strings, non-ASCII and lone surrogates, empty keys, nesting. */
const json = fc.letrec((tie) => ({
  value: fc.oneof(
    { depthSize: 'small' },
    fc.constant(null),
    fc.boolean(),
    fc.double(),
    fc.string({ unit: 'binary', maxLength: 300 }),
    fc.array(tie('value'), { maxLength: 5 }),
    tie('object'),
  ),
  object: fc.dictionary(fc.string({ unit: 'grapheme', maxLength: 6 }), tie('value'), { maxKeys: 6 }),
}));
const object = json.object as fc.Arbitrary<JsonObject>;

const pod = (result: JsonObject | undefined, i: number): PodResult => ({
  ...PodResult.fromPartial({
    site: `s${i}`,
    pod: 'p1',
    code: result ? 0 : 14,
    message: result ? '' : 'down',
    answeredBy: `b${i}`,
    attempts: [{ brokerId: `b${i}`, address: '127.0.0.1:1', latency: { seconds: 0, nanos: 5 } }],
    latency: { seconds: 1, nanos: 0 },
  }),
  result,
});

describe('encoded sizes without encoding', () => {
  it('a Value and a Struct: exactly what ts-proto writes', () => {
    fc.assert(
      fc.property(json.value, (v) => {
        expect(valueBytes(v)).toBe(Value.encode(Value.wrap(v)).finish().length);
      }),
      { numRuns: 300 },
    );
    fc.assert(
      fc.property(object, (o) => {
        expect(structBytes(o)).toBe(Struct.encode(Struct.wrap(o)).finish().length);
      }),
      { numRuns: 300 },
    );
  });

  it('undefined fields are left out as ts-proto leaves them; a large result counts multi-byte lengths', () => {
    expect(structBytes({ a: undefined, b: 1 })).toBe(
      Struct.encode(Struct.wrap({ a: undefined, b: 1 })).finish().length,
    );
    const big = {
      items: Array.from({ length: 3000 }, (_, i) => ({ id: `session-${i}`, user: 'ü'.repeat(i % 40) })),
    };
    expect(structBytes(big)).toBe(Struct.encode(Struct.wrap(big)).finish().length);
  });

  it('the three answers: exactly their encoded length', () => {
    fc.assert(
      fc.property(
        fc.array(fc.option(object, { nil: undefined }), { maxLength: 4 }),
        object,
        (results, reduced) => {
          const pods = results.map(pod);
          for (const p of pods) expect(podResultBytes(p)).toBe(PodResult.encode(p).finish().length);
          const agg = AggregateResponse.fromPartial({ correlationId: 'c', pods, answeredBy: 'b' });
          agg.reduced = reduced;
          expect(aggregateResponseBytes(agg)).toBe(AggregateResponse.encode(agg).finish().length);
          const site: SiteResponse = { correlationId: 'c', answeredBy: 'b', pods };
          expect(siteResponseBytes(site)).toBe(SiteResponse.encode(site).finish().length);
          const local: LocalResponse = { correlationId: 'c', pod: pods[0] };
          expect(localResponseBytes(local)).toBe(LocalResponse.encode(local).finish().length);
        },
      ),
      { numRuns: 200 },
    );
  });
});
