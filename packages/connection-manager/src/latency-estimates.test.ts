import { RTT_HEDGE_SLACK_MS, floorMs, p95Ms } from './latency-estimates';
import { newEntry, type Entry } from './ordering';

function entry(id: string, samples: number[], connectRttMs?: number): Entry {
  const e = newEntry({ brokerId: id, address: `${id}:1`, site: 's', pod: 'p' }, 's/p', 0);
  for (const ms of samples) e.latency.add(ms);
  e.connectRttMs = connectRttMs;
  return e;
}

const many = (ms: number) => Array.from({ length: 20 }, () => ms);

describe('latency estimates (no sockets)', () => {
  test('p95: own once settled, else a twin’s, else twice the connect round trip plus slack', () => {
    expect(p95Ms(entry('a', many(40)), () => [entry('b', many(90))])).toBe(40);
    expect(p95Ms(entry('a', [40]), () => [entry('b', [5]), entry('c', many(90))])).toBe(90);
    expect(p95Ms(entry('a', [], 25), () => [entry('b', [], 10)])).toBe(2 * 25 + RTT_HEDGE_SLACK_MS);
    expect(p95Ms(entry('a', []), () => [entry('b', [], 30), entry('c', [], 12)])).toBe(
      2 * 12 + RTT_HEDGE_SLACK_MS,
    );
    expect(p95Ms(entry('a', []), () => [])).toBeUndefined();
  });

  test('floor: own 5th percentile once settled, else the lowest mean of the group, itself included', () => {
    expect(floorMs(entry('a', [...many(50), 20]), () => [entry('b', many(5))])).toBe(50);
    expect(floorMs(entry('a', [60]), () => [entry('b', [45]), entry('c', [])])).toBe(45);
    expect(floorMs(entry('a', [30]), () => [entry('b', [45])])).toBe(30);
    expect(floorMs(entry('a', [70]), () => [])).toBe(70);
    expect(floorMs(entry('a', []), () => [])).toBeUndefined();
  });

  test('a settled endpoint never looks up its twins (the hot path: one estimate per attempt)', () => {
    const unasked = () => {
      throw new Error('twins looked up for an endpoint with its own figures');
    };
    expect(p95Ms(entry('a', many(40)), unasked)).toBe(40);
    expect(floorMs(entry('a', many(40)), unasked)).toBe(40);
  });
});
