import { LoopLag, SATURATED_LAG_MS } from './loop-lag';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('LoopLag', () => {
  it('reads near 0 on an idle loop and saturated on a loop blocked in long turns', async () => {
    const lag = new LoopLag(300).start();
    try {
      lag.busy();
      await sleep(700);
      expect(lag.p90Ms).toBeLessThan(SATURATED_LAG_MS);
      expect(lag.saturated()).toBe(false);
      // Turns of 40 ms with a breath between them: timers run up to 40 ms late (bounded: 20 turns).
      const until = Date.now() + 700;
      for (let i = 0; i < 20 && Date.now() < until; i++) {
        lag.busy(); // a call arrives each turn
        const end = Date.now() + 40;
        while (Date.now() < end);
        await new Promise((r) => setImmediate(r));
      }
      // The busy spell spans two windows: the last one closed saw only busy turns.
      expect(lag.p90Ms).toBeGreaterThan(SATURATED_LAG_MS);
      expect(lag.saturated()).toBe(true);
    } finally {
      lag.close();
    }
  });

  it('measures only while calls arrive: paused (no timer, lag 0) after a window without one', async () => {
    const changes: boolean[] = [];
    const lag = new LoopLag(200, (saturated) => changes.push(saturated)).start();
    try {
      expect(lag.current).toBe('paused');
      lag.busy();
      expect(lag.current).toBe('measuring');
      // Busy turns while calls arrive: saturated.
      const until = Date.now() + 450;
      for (let i = 0; i < 15 && Date.now() < until; i++) {
        lag.busy();
        const end = Date.now() + 40;
        while (Date.now() < end);
        await new Promise((r) => setImmediate(r));
      }
      expect(lag.saturated()).toBe(true);
      // No more calls: the next window still measures, the one after finds none and pauses.
      await sleep(600);
      expect(lag.current).toBe('paused');
      expect(lag.p90Ms).toBe(0);
      expect(lag.saturated()).toBe(false);
      expect(changes).toEqual([true, false]);
    } finally {
      lag.close();
    }
    expect(lag.current).toBe('off');
  });
});
