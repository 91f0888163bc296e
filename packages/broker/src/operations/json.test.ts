import { asJsonObject } from './json';

describe('asJsonObject', () => {
  it('returns plain JSON as it is, without a copy', () => {
    const v = { a: [1, 'x', null, { b: true }], c: { d: 2.5 } };
    expect(asJsonObject(v)).toBe(v);
  });

  it('makes what JSON would of anything else', () => {
    const at = new Date(0);
    expect(asJsonObject({ at, gone: undefined, n: NaN, list: [undefined] })).toEqual({
      at: '1970-01-01T00:00:00.000Z',
      n: null,
      list: [null],
    });
    class Desktop {
      constructor(readonly id: string) {}
    }
    expect(asJsonObject({ d: new Desktop('d1') })).toEqual({ d: { id: 'd1' } });
  });

  it('throws for what JSON cannot carry', () => {
    const cyclic: Record<string, unknown> = {};
    cyclic.self = cyclic;
    expect(() => asJsonObject(cyclic)).toThrow(/circular/i);
    expect(() => asJsonObject({ n: 10n })).toThrow(/BigInt/);
  });
});
