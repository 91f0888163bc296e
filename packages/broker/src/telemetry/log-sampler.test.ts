import { LogSampler } from './log-sampler';

describe('LogSampler (virtual clock)', () => {
  it('writes every line within its budget a second, then one in 1/share with the count left out', () => {
    let now = 0;
    const s = new LogSampler(3, 0.25, () => now);
    const takes = Array.from({ length: 11 }, () => s.take());
    // 3 within the budget; then lines 4, 8 are written (every 4th seen), each saying how many it skipped.
    expect(takes).toEqual([0, 0, 0, 0, false, false, false, 3, false, false, false]);
    now += 1000;
    expect(s.take()).toBe(3); // a new second: written, with the 3 left out before it
    expect(s.take()).toBe(0);
  });
});
