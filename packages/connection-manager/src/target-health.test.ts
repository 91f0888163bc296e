import { evaluateTarget, targetStateOf, type EndpointView } from './target-health';
import type { TargetHealth } from './types';

const ep = (
  brokerId: string,
  state: EndpointView['state'],
  stateSince = 0,
  stateReason = '',
): EndpointView => ({
  brokerId,
  state,
  stateSince,
  stateReason,
});
const up: TargetHealth = { site: 's', pod: 'p', state: 'up', since: 0, reason: '' };

describe('target health', () => {
  it('is down only when every endpoint is down, degraded when some are', () => {
    expect(targetStateOf([ep('a', 'ready'), ep('b', 'idle')])).toBe('up');
    expect(targetStateOf([ep('a', 'down'), ep('b', 'failing')])).toBe('degraded');
    expect(targetStateOf([ep('a', 'down'), ep('b', 'down')])).toBe('down');
    // An endpoint never tried (idle) or still connecting is presumed usable: the target is not down.
    expect(targetStateOf([ep('a', 'down'), ep('b', 'connecting')])).toBe('degraded');
  });

  it('goes down at the moment its last endpoint did, with every reason, and keeps that since', () => {
    const views = [
      ep('a', 'down', 100, 'connection lost'),
      ep('b', 'down', 250, 'no connection within 500 ms'),
    ];
    const down = evaluateTarget(up, views, 300);
    expect(down).toEqual({
      site: 's',
      pod: 'p',
      state: 'down',
      since: 250,
      reason: 'a: connection lost; b: no connection within 500 ms',
    });
    // Still down later (a reason refreshed): the since stays.
    const later = evaluateTarget(down, [ep('a', 'down', 100, 'refused'), views[1]!], 900);
    expect(later.since).toBe(250);
    expect(later.reason).toContain('a: refused');
  });

  it('is up again as soon as one endpoint is not down', () => {
    const down = evaluateTarget(up, [ep('a', 'down', 1), ep('b', 'down', 2)], 3);
    const back = evaluateTarget(down, [ep('a', 'ready', 10), ep('b', 'down', 2)], 10);
    expect(back).toMatchObject({ state: 'degraded', since: 10 });
  });
});
