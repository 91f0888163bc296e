import winston from 'winston';
import { EndpointHealth, REASON_REFUSED, type Group } from './endpoint-health';
import { settingsOf } from './options';
import { newEntry, type Entry } from './ordering';
import type { EndpointState } from './types';

/**
 * The endpoint state machine without sockets: connectivity, call outcomes and connect timeouts fed by
 * hand, the clock injected; the host is a plain table of two endpoints in one group.
 */
function harness() {
  let clock = 1_000;
  const settings = settingsOf({ now: () => clock, failureThreshold: 3 });
  const entries = ['a', 'b'].map((id) => makeEntry(id, clock));
  const group: Group = {
    site: 's2',
    pod: '',
    addresses: entries.map((e) => e.endpoint.address),
    rotation: 0,
    health: { site: 's2', pod: '', state: 'up', since: clock, reason: '' },
  };
  const warmed: string[] = [];
  const seen: [string, EndpointState, EndpointState][] = [];
  const health = new EndpointHealth(
    settings,
    winston.createLogger({ silent: true }),
    {
      closed: () => false,
      group: (key) => (key === 's2/' ? group : undefined),
      groupEntries: () => entries,
      openChannel: () => {
        throw new Error('no channels in this test');
      },
      retireChannel: () => undefined,
      warmGroup: (key) => void warmed.push(key),
    },
    (ep, from, to) => void seen.push([ep.brokerId, from, to]),
  );
  return {
    health,
    entries,
    group,
    warmed,
    seen,
    tick: (ms: number) => (clock += ms),
    stop: () => entries.forEach((e) => e.probeTimer && clearTimeout(e.probeTimer)),
  };
}

function makeEntry(id: string, now: number): Entry {
  return newEntry({ brokerId: id, address: `${id}:1`, site: 's2', pod: '' }, 's2/', now);
}

describe('EndpointHealth (no sockets, injected clock)', () => {
  it('follows the channel: dialling, connected, lost (reconnecting), refused (down)', () => {
    const h = harness();
    const [a] = h.entries as [Entry];
    h.health.onConnectivity(a, 'none', 'connecting');
    expect(a.state).toBe('connecting');
    h.health.onConnectivity(a, 'connecting', 'ready');
    expect(a.state).toBe('ready');
    h.health.onConnectivity(a, 'ready', 'idle');
    expect(a.state).toBe('reconnecting');
    h.health.onConnectivity(a, 'idle', 'transient-failure');
    expect([a.state, a.stateReason]).toEqual(['down', REASON_REFUSED]);
    expect(h.seen.map(([, from, to]) => `${from}->${to}`)).toEqual([
      'idle->connecting',
      'connecting->ready',
      'ready->reconnecting',
      'reconnecting->down',
    ]);
    for (const e of h.entries) h.health.clearConnectTimer(e);
    h.stop();
  });

  it('takes the target down when its last endpoint goes down, since that moment, and up again', () => {
    const h = harness();
    const [a, b] = h.entries as [Entry, Entry];
    h.health.transition(a, 'down', 'silent');
    expect(h.group.health.state).toBe('degraded');
    h.tick(250);
    h.health.transition(b, 'down', 'silent too');
    expect(h.group.health).toMatchObject({ state: 'down', since: 1_250 });
    expect(h.group.health.reason).toBe('a: silent; b: silent too');
    expect(h.warmed).toContain('s2/'); // a group losing endpoints searches for a live twin
    h.tick(1_000);
    h.health.transition(a, 'ready', 'a call succeeded');
    expect(h.group.health).toMatchObject({ state: 'degraded', since: 2_250 });
    h.stop();
  });

  it('counts failures: failing at once, down (breaker open) at the threshold; a success clears them', () => {
    const h = harness();
    const [a] = h.entries as [Entry];
    h.health.transition(a, 'ready', 'connected');
    const unavailable = Object.assign(new Error('14 UNAVAILABLE: reset'), { code: 14 });
    h.health.onFailure(a, unavailable);
    expect([a.state, a.consecutiveFailures]).toEqual(['failing', 1]);
    h.health.onFailure(a, unavailable);
    h.health.onFailure(a, unavailable);
    expect(a.state).toBe('down');
    expect(a.stateReason).toMatch(/breaker open after 3 failures/);
    h.health.onSuccess(a, 12);
    expect([a.state, a.consecutiveFailures]).toEqual(['ready', 0]);
    a.breaker?.shutdown();
    h.stop();
  });

  it('a down endpoint that stays down for a new reason updates its target’s reason', () => {
    const h = harness();
    const [a, b] = h.entries as [Entry, Entry];
    h.health.transition(a, 'down', REASON_REFUSED);
    h.health.transition(b, 'down', REASON_REFUSED);
    h.health.transition(a, 'down', 'no connection within 500 ms');
    expect(h.group.health.reason).toContain('a: no connection within 500 ms');
    expect(h.health.entered.down).toBe(2);
    h.stop();
  });
});
