import type { PodOutcome } from './types';
import { compare, fieldAt, reducerOf } from './reducers';

const ok = (pod: string, result: Record<string, unknown>): PodOutcome => ({
  site: 's1',
  pod,
  code: 0,
  message: '',
  result,
});
const failed = (pod: string): PodOutcome => ({ site: 's1', pod, code: 14, message: 'down' });

describe('declared reducers', () => {
  it('sums int64 strings exactly, as a string, and ignores failed pods', () => {
    const big = '9007199254740993'; // 2^53 + 1: a double would lose it
    const r = reducerOf({ sum: 'total' })([ok('a', { total: big }), ok('b', { total: '1' }), failed('c')]);
    expect(r).toEqual({ total: '9007199254740994' });
  });

  it('sums plain numbers as a number, fractions included, and reads a dotted path', () => {
    expect(
      reducerOf({ sum: 'stats.n' })([ok('a', { stats: { n: 2 } }), ok('b', { stats: { n: 3 } })]),
    ).toEqual({
      n: 5,
    });
    expect(reducerOf({ sum: 'x' })([ok('a', { x: 0.5 }), ok('b', { x: 1 })])).toEqual({ x: 1.5 });
    expect(reducerOf({ sum: 'x' })([failed('a')])).toEqual({ x: 0 });
  });

  it('finds min and max over numbers and int64 strings; null when no pod has the field', () => {
    const rs = [ok('a', { p: '10' }), ok('b', { p: '9' }), ok('c', { p: '100' })];
    expect(reducerOf({ min: 'p' })(rs)).toEqual({ p: '9' });
    expect(reducerOf({ max: 'p' })(rs)).toEqual({ p: '100' });
    expect(reducerOf({ min: 'q' })(rs)).toEqual({ q: null });
  });

  it('counts the pods that answered OK', () => {
    expect(reducerOf({ count: true })([ok('a', {}), failed('b'), ok('c', {})])).toEqual({ count: 2 });
  });

  it('concatenates arrays in pod order, up to a limit', () => {
    const rs = [ok('a', { items: [1, 2] }), failed('x'), ok('b', { items: [3] }), ok('c', { items: 'no' })];
    expect(reducerOf({ concat: 'items' })(rs)).toEqual({ items: [1, 2, 3] });
    expect(reducerOf({ concat: { field: 'items', limit: 2 } })(rs)).toEqual({ items: [1, 2] });
  });

  it('merges sorted lists by a key, either order, stable for equal keys, up to a limit', () => {
    const rs = [
      ok('a', {
        items: [
          { id: 'a1', s: 9 },
          { id: 'a2', s: 5 },
        ],
      }),
      ok('b', {
        items: [
          { id: 'b1', s: 7 },
          { id: 'b2', s: 5 },
        ],
      }),
    ];
    const desc = reducerOf({ mergeSorted: { field: 'items', by: 's', order: 'desc', limit: 3 } })(rs);
    expect((desc.items as { id: string }[]).map((i) => i.id)).toEqual(['a1', 'b1', 'a2']);
    const asc = reducerOf({ mergeSorted: { field: 'items', by: 's', order: 'asc' } })(rs);
    expect((asc.items as { id: string }[]).map((i) => i.id)).toEqual(['a2', 'b2', 'b1', 'a1']);
  });

  it('orders int64 strings by value, numbers before strings', () => {
    expect(compare('10', '9')).toBeGreaterThan(0);
    expect(compare('-5', 3)).toBeLessThan(0);
    expect(compare(1, 'abc')).toBeLessThan(0);
    expect(compare('b', 'a')).toBeGreaterThan(0);
    expect(fieldAt({ a: { b: 1 } }, 'a.b')).toBe(1);
    expect(fieldAt({ a: 1 }, 'a.b')).toBeUndefined();
  });
});
