import { AggregateRequest, Mode, type PodResult } from '@wanas/proto';
import { parseTopology } from '@wanas/topology';
import { sessionsList } from '../../operations/builtin';
import type { PageBinding } from '../model';
import { pagedAnswer } from './answer';
import { mergePage } from './merge';
import { perPodLimit, planPaging, podsToAsk } from './paging';
import { compareBytes, cutPodPage, pageRequestOf } from './pod-page';
import { createHash, createHmac } from 'node:crypto';
import { decodePageToken, encodePageToken } from './token';

const spec = { items: 'sessions', key: 'id' };
const binding: PageBinding = {
  federation: 'f',
  operation: 'sessions.list',
  params: { state: 'connected' },
  scope: { sites: [], pods: [] },
  pods: ['a/p1', 'a/p2', 'b/p1'],
};
const sessions = (...ids: string[]) => ids.map((id) => ({ id, user: 'u' }));
const pod = (site: string, name: string, ids: string[], truncated = false): PodResult => ({
  site,
  pod: name,
  code: 0,
  message: '',
  result: { sessions: sessions(...ids) },
  answeredBy: '',
  attempts: [],
  latency: undefined,
  truncated,
  cursor: ids[ids.length - 1] ?? '',
});

describe('page token', () => {
  const cursor = { after: 's-42', afterPod: 'a/p2', done: [0, 2], fanout: 4 };

  it('gives back the cursor it was made with', () => {
    expect(decodePageToken(encodePageToken(binding, cursor), binding)).toEqual(cursor);
  });

  it.each([
    ['another operation', { operation: 'sessions.find' }, 'made for operation "sessions.list"'],
    ['other params', { params: { state: 'disconnected' } }, 'made for other params'],
    ['another scope', { scope: { sites: ['a'], pods: [] } }, 'made for another scope'],
    ['pods gone from the topology', { pods: ['a/p1', 'b/p1'] }, 'the pods in scope changed'],
    ['another federation', { federation: 'g' }, 'its signature does not match'],
  ])('is refused for %s, naming why', (_what, change, why) => {
    const token = encodePageToken(binding, cursor);
    expect(() => decodePageToken(token, { ...binding, ...change })).toThrow(why);
  });

  it('is refused when altered by a byte, truncated, or not a token', () => {
    const token = encodePageToken(binding, cursor);
    const body = JSON.parse(Buffer.from(token.split('.')[0]!, 'base64url').toString()) as { a: string };
    body.a = 's-00';
    const forged = `${Buffer.from(JSON.stringify(body)).toString('base64url')}.${token.split('.')[1]}`;
    expect(() => decodePageToken(forged, binding)).toThrow('INVALID_ARGUMENT: page_token: altered');
    expect(() => decodePageToken(token.slice(0, -2), binding)).toThrow('altered');
    expect(() => decodePageToken('hello', binding)).toThrow('not a page token');
    expect(() => decodePageToken('x'.repeat(5000), binding)).toThrow('longer than 4096');
  });
});

describe('a signed token that is not a payload', () => {
  // Without WANAS_PAGE_TOKEN_KEY the key comes from the federation's name: anyone may sign a body.
  const forge = (payload: unknown) => {
    const body = Buffer.from(JSON.stringify(payload)).toString('base64url');
    const key = createHash('sha256').update('wanas page token\0f\0').digest();
    return `${body}.${createHmac('sha256', key).update(body).digest('base64url')}`;
  };
  const good = JSON.parse(
    Buffer.from(
      encodePageToken(binding, { after: 'a', afterPod: 'a/p1', done: [], fanout: 2 }).split('.')[0]!,
      'base64url',
    ).toString(),
  ) as Record<string, unknown>;

  it('is refused as INVALID_ARGUMENT naming the field, never an internal error', () => {
    expect(decodePageToken(forge(good), binding).after).toBe('a');
    expect(() => decodePageToken(forge({ ...good, a: 42 }), binding)).toThrow(
      'INVALID_ARGUMENT: page_token: malformed: "a" is missing or not a string',
    );
    expect(() => decodePageToken(forge({ ...good, f: undefined }), binding)).toThrow('malformed: "f"');
    expect(() => decodePageToken(forge({ ...good, f: 0.5 }), binding)).toThrow('malformed: its fan-out');
    expect(() => decodePageToken(forge({ ...good, d: 'zz' }), binding)).toThrow(
      'malformed: its exhausted pods',
    );
    expect(() => decodePageToken(forge([1]), binding)).toThrow('malformed: "v"');
    expect(() => decodePageToken(forge(null), binding)).toThrow('malformed: its body is not an object');
  });
});

describe('byte order of keys', () => {
  it('orders strings as their UTF-8 bytes do, surrogates after the rest of the BMP', () => {
    const keys = ['b', 'a', 'ab', '', 'Z', '\u00e9', '\uffff', '\u{1f600}', '\ue000', 's-0', 's.1', 's-00'];
    const bytes = [...keys].sort((x, y) => Buffer.compare(Buffer.from(x), Buffer.from(y)));
    expect([...keys].sort(compareBytes)).toEqual(bytes);
    expect(compareBytes('abc', 'abc')).toBe(0);
  });
});

describe('a pod cut to its window', () => {
  const result = { sessions: sessions('s-5', 's-1', 's-3', 's-4', 's-2') };

  it('keeps the items after the cursor in order, at most the page, and says it has more', () => {
    const w = { after: 's-2', afterPod: 'a/p1', limit: 2, maxBytes: 0 };
    const page = cutPodPage(spec, result, w, 'a/p1');
    expect((page.result.sessions as { id: string }[]).map((s) => s.id)).toEqual(['s-3', 's-4']);
    expect(page).toMatchObject({ truncated: true, cursor: 's-4' });
    // The operation is asked for one more than the page, and one more again for the cursor's own item.
    expect(pageRequestOf(w)).toEqual({ after: 's-2', limit: 4 });
  });

  it("keeps an item with the cursor's key from a pod after the cursor's", () => {
    const page = cutPodPage(spec, result, { after: 's-2', afterPod: 'a/p1', limit: 0, maxBytes: 0 }, 'b/p1');
    expect((page.result.sessions as { id: string }[]).map((s) => s.id)).toEqual(['s-2', 's-3', 's-4', 's-5']);
    expect(page.truncated).toBe(false);
  });

  it('cuts at an item to fit its bytes; a single item too large is RESOURCE_EXHAUSTED', () => {
    const page = cutPodPage(spec, result, { after: '', afterPod: '', limit: 0, maxBytes: 50 }, 'a/p1');
    expect((page.result.sessions as unknown[]).length).toBeGreaterThan(0);
    expect((page.result.sessions as unknown[]).length).toBeLessThan(5);
    expect(page.truncated).toBe(true);
    expect(() =>
      cutPodPage(spec, result, { after: '', afterPod: '', limit: 0, maxBytes: 5 }, 'a/p1'),
    ).toThrow('RESOURCE_EXHAUSTED: item "s-1" is');
  });

  it('refuses a result that breaks the contract (no list, an item without its key) as INTERNAL', () => {
    const w = { after: '', afterPod: '', limit: 0, maxBytes: 0 };
    expect(() => cutPodPage(spec, { other: [] }, w, 'a/p1')).toThrow('INTERNAL: the result has no list');
    expect(() => cutPodPage(spec, { sessions: [{ id: 1 }] }, w, 'a/p1')).toThrow('has no string "id"');
  });
});

describe('the merge of a page', () => {
  it('merges k lists in order and stops where a pod that has more ends', () => {
    const page = mergePage(
      spec,
      [
        pod('a', 'p1', ['s-1', 's-4', 's-7'], true),
        pod('a', 'p2', ['s-2', 's-5']),
        pod('b', 'p1', ['s-3', 's-9']),
      ],
      10,
      0,
    );
    // Nothing after s-7 may be listed: a/p1 may hold s-8.
    expect(page.items.map((s) => s.id)).toEqual(['s-1', 's-2', 's-3', 's-4', 's-5', 's-7']);
    expect(page.items[1]).toMatchObject({ site: 'a', pod: 'p2' });
    expect([...page.exhausted]).toEqual(['a/p2']);
    expect(page).toMatchObject({ after: 's-7', afterPod: 'a/p1', more: true });
  });

  it('ends at the page size; ties on a key are ordered by pod', () => {
    const page = mergePage(spec, [pod('b', 'p1', ['s-1', 's-2']), pod('a', 'p1', ['s-1', 's-3'])], 3, 0);
    expect(page.items.map((s) => `${String(s.site)}:${String(s.id)}`)).toEqual(['a:s-1', 'b:s-1', 'b:s-2']);
    expect([...page.exhausted]).toEqual(['b/p1']);
    expect(page.more).toBe(true);
  });

  it('ends at the byte budget, and says so', () => {
    const page = mergePage(spec, [pod('a', 'p1', ['s-1', 's-2', 's-3'])], 0, 100);
    expect(page.items.length).toBeLessThan(3);
    expect(page).toMatchObject({ cutByBytes: true, more: true });
  });
});

describe('a listing planned and answered', () => {
  const topology = parseTopology({
    federation: 'f',
    sites: ['a', 'b'].map((site) => ({
      name: site,
      pods: [
        { name: 'p1', brokers: [{ id: `${site}-1`, address: `127.0.0.1:${site === 'a' ? 7001 : 7002}` }] },
      ],
    })),
  });
  const scopePods = [
    { site: 'a', pod: 'p1' },
    { site: 'b', pod: 'p1' },
  ];
  const plan = (o: Partial<AggregateRequest>) =>
    planPaging(
      AggregateRequest.fromPartial({ operation: 'sessions.list', ...o }),
      sessionsList,
      {},
      scopePods,
      topology,
    );

  it('goes on from its token, asking only the pods that still have items', () => {
    const first = plan({ pageSize: 2 })!;
    const answer = pagedAnswer(first, [pod('a', 'p1', ['s-1']), pod('b', 'p1', ['s-2', 's-3'], true)], (f) =>
      AggregateResponse(f),
    );
    expect(answer.reduced).toMatchObject({ count: 2 });
    expect(answer.pods.map((p) => p.result)).toEqual([{ listed: 1 }, { listed: 1 }]);
    const next = plan({ pageSize: 2, pageToken: answer.nextPageToken })!;
    expect(podsToAsk(next, scopePods)).toEqual([{ site: 'b', pod: 'p1' }]);
    expect(next.cursor).toMatchObject({ after: 's-2', afterPod: 'b/p1' });
  });

  it('asks each pod for its share of the page times the fan-out, the whole page at most', () => {
    const first = plan({ pageSize: 1000 })!;
    expect(perPodLimit(first, 50)).toBe(40);
    expect(perPodLimit({ ...first, cursor: { ...first.cursor, fanout: 64 } }, 50)).toBe(1000);
    expect(perPodLimit({ ...first, pageSize: 0 }, 50)).toBe(0);
  });

  it('doubles the fan-out after a page cut short by a pod that ran ahead', () => {
    const first = plan({ pageSize: 4 })!;
    const narrow = { ...first, cursor: { ...first.cursor, fanout: 1 } };
    const answer = pagedAnswer(
      narrow,
      [pod('a', 'p1', ['s-1'], true), pod('b', 'p1', ['s-2', 's-3'], true)],
      (f) => AggregateResponse(f),
    );
    expect(answer.reduced).toMatchObject({ count: 1 });
    expect(plan({ pageSize: 4, pageToken: answer.nextPageToken })!.cursor.fanout).toBe(2);
  });

  it('fails a page whose pod failed (the same token may be sent again)', () => {
    const first = plan({ pageSize: 2 })!;
    const down = { ...pod('b', 'p1', []), code: 14, message: 'site b: unreachable', result: undefined };
    expect(() => pagedAnswer(first, [pod('a', 'p1', ['s-1']), down], (f) => AggregateResponse(f))).toThrow(
      'UNAVAILABLE: a listing needs every pod that still has items (send the same page_token again): 1 pod(s) failed: b/p1',
    );
  });

  it('refuses paging an operation that does not page, a listing in MODE_FIRST or with min_ok', () => {
    const echo = { ...sessionsList, name: 'echo', page: undefined };
    const req = AggregateRequest.fromPartial({ operation: 'echo', pageSize: 5 });
    expect(() => planPaging(req, echo, {}, scopePods, topology)).toThrow(
      'page_size: operation "echo" is not pageable',
    );
    expect(() => plan({ mode: Mode.MODE_FIRST })).toThrow('mode: a listing asks every pod');
    expect(() => plan({ minOk: 1 })).toThrow('min_ok:');
    expect(() => plan({ pageSize: 10_001 })).toThrow('page_size: at most 10000');
  });
});

/** A whole response around the paged fields (what the dispatcher makes). */
function AggregateResponse(f: object) {
  return { correlationId: 'c', summary: undefined, latency: undefined, answeredBy: 'x', ...f } as never;
}
