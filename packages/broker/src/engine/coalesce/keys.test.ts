import { AggregateRequest, LocalRequest, SiteRequest, msToDuration } from '@wanas/proto';
import { stableJson } from '@wanas/topology';
import { aggregateKey, federationKey } from './keys';

describe('keys: what makes two requests identical', () => {
  it('an Aggregate: same read whatever its routing, key order or timing; never across clients or reloads', () => {
    const a = AggregateRequest.fromPartial({ operation: 'x', params: { a: 1, b: 2 }, correlationId: 'c1' });
    const b = AggregateRequest.fromPartial({
      operation: 'x',
      params: { b: 2, a: 1 },
      correlationId: 'c2',
      timeout: msToDuration(300),
      idempotencyKey: 'k',
      maxStaleness: msToDuration(2000),
    });
    expect(aggregateKey(a, 'alice', 0)).toBe(aggregateKey(b, 'alice', 0));
    expect(aggregateKey(a, 'alice', 0)).not.toBe(aggregateKey(a, 'bob', 0));
    expect(aggregateKey(a, 'alice', 0)).not.toBe(aggregateKey(a, 'alice', 1));
    expect(aggregateKey(a, 'alice', 0)).not.toBe(aggregateKey({ ...a, pageToken: 't' }, 'alice', 0));
    expect(aggregateKey(a, 'alice', 0)).not.toBe(aggregateKey({ ...a, headers: { h: '1' } }, 'alice', 0));
  });

  it('is the sorted JSON of the client, the generation and every field that is not routing', () => {
    const req = AggregateRequest.fromPartial({
      operation: 'x',
      params: { z: [1, { b: 2, a: null }], a: 'é' },
      correlationId: 'c1',
      timeout: msToDuration(300),
    });
    const asked: Record<string, unknown> = { ...req };
    for (const k of ['correlationId', 'idempotencyKey', 'hedge', 'attemptTimeout', 'timeout', 'maxStaleness'])
      delete asked[k];
    expect(aggregateKey(req, 'alice "x"', 3)).toBe(stableJson([3, 'alice "x"', asked]));
  });

  it('a federation request: same from any sender; none without a client', () => {
    const site = (o: Partial<SiteRequest>) =>
      SiteRequest.fromPartial({ operation: 'x', params: { a: 1 }, client: 'alice', ...o });
    expect(federationKey(site({ sourceBroker: 'a', hops: 1, deadline: msToDuration(100) }))).toBe(
      federationKey(site({ sourceBroker: 'b', hops: 1, deadline: msToDuration(900), correlationId: 'z' })),
    );
    expect(federationKey(site({}))).not.toBe(federationKey(site({ client: 'bob' })));
    expect(federationKey(site({ client: '' }))).toBeUndefined();
    const local = LocalRequest.fromPartial({ operation: 'x', client: 'alice', hops: 1 });
    expect(federationKey(local)).toBe(federationKey({ ...local, hops: 2, sourceSite: 's2' }));
  });
});
