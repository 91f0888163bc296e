import { status } from '@grpc/grpc-js';
import type { PodResult } from '@wanas/proto';
import { failed, type Tally } from '../model';
import { completionRule } from './completion';

const tally = (o: Partial<Tally>): Tally => ({
  total: 5,
  ok: 0,
  failed: 0,
  requiredLeft: 0,
  requiredFailed: undefined,
  ...o,
});

describe('completionRule', () => {
  it('is absent when neither min_ok nor required sites is set: every pod is waited for', () => {
    expect(completionRule(0, new Set())).toBeUndefined();
  });

  it('answers at min_ok OK pods once every required pod is final', () => {
    const rule = completionRule(3, new Set(['eu']))!;
    expect(rule.required({ site: 'eu', pod: 'p1' })).toBe(true);
    expect(rule.required({ site: 'us', pod: 'p1' })).toBe(false);
    expect(rule.check(tally({ ok: 2 }))).toBeUndefined();
    expect(rule.check(tally({ ok: 3, requiredLeft: 1 }))).toBeUndefined();
    expect(rule.check(tally({ ok: 3 }))).toEqual({
      code: status.CANCELLED,
      message: 'not needed: min_ok 3 reached',
    });
  });

  it('answers at once when min_ok can no longer be reached', () => {
    const rule = completionRule(4, new Set())!;
    expect(rule.check(tally({ ok: 1, failed: 1 }))).toBeUndefined();
    expect(rule.check(tally({ ok: 1, failed: 2 }))?.message).toBe(
      'not waited for: min_ok 4 can no longer be reached (2 of 5 pods failed)',
    );
  });

  it('answers at once when a pod of a required site fails', () => {
    const rule = completionRule(0, new Set(['eu']))!;
    const bad: PodResult = failed({ site: 'eu', pod: 'p2' }, status.UNAVAILABLE, 'down');
    expect(rule.check(tally({ ok: 4, requiredLeft: 1 }))).toBeUndefined();
    expect(rule.check(tally({ requiredFailed: bad }))?.message).toBe(
      'not waited for: eu/p2 of a required site failed',
    );
  });
});
