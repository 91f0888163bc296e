import { HedgeBudget } from './hedge-budget';

describe('HedgeBudget', () => {
  it('starts full, then allows about `ratio` hedges per request however many are asked for', () => {
    const budget = new HedgeBudget(0.1, 10);
    let granted = 0;
    for (let i = 0; i < 1000; i++) {
      budget.deposit();
      if (budget.tryWithdraw()) granted++;
    }
    // 10 tokens to start with, then one per 10 requests.
    expect(granted).toBeGreaterThanOrEqual(109);
    expect(granted).toBeLessThanOrEqual(111);
    expect(budget.stats()).toMatchObject({ requests: 1000, hedges: granted });
  });

  it('holds at most maxTokens after a quiet spell', () => {
    const budget = new HedgeBudget(0.5, 3, 0);
    for (let i = 0; i < 100; i++) budget.deposit();
    const burst = Array.from({ length: 10 }, () => budget.tryWithdraw()).filter(Boolean).length;
    expect(burst).toBe(3);
    // The 7 refused for want of a token are counted as denied (what WanasHedgeBudgetExhausted watches).
    expect(budget.stats().denied).toBe(7);
  });

  it('grants nothing while overloaded, and counts what it held back', () => {
    let overloaded = true;
    const budget = new HedgeBudget(0.1, 10, 10, () => overloaded);
    expect(budget.tryWithdraw()).toBe(false);
    expect(budget.saturated()).toBe(true);
    overloaded = false;
    expect(budget.tryWithdraw()).toBe(true);
    expect(budget.stats()).toEqual({ requests: 0, hedges: 1, suppressed: 1, denied: 0 });
  });

  it('refuses a ratio outside 0..1', () => {
    expect(() => new HedgeBudget(1.5)).toThrow(/within 0..1, got 1.5/);
  });
});
