import { Mode } from '@wanas/proto';
import { parseMode } from './request-mode';

const SITES = ['us', 'eu', 'ap'];
const SCOPED = [
  { site: 'us', pod: 'p1' },
  { site: 'us', pod: 'p2' },
  { site: 'eu', pod: 'p1' },
];
const req = (o: Partial<Parameters<typeof parseMode>[0]> = {}) => ({
  mode: Mode.MODE_UNSPECIFIED,
  preferSites: [],
  minOk: 0,
  requiredSites: [],
  ...o,
});

describe('parseMode', () => {
  it('reads MODE_ALL with a quorum and required sites, and MODE_FIRST with preferred sites', () => {
    expect(parseMode(req({ minOk: 2, requiredSites: ['eu'] }), SITES, SCOPED)).toEqual({
      kind: 'all',
      minOk: 2,
      requiredSites: new Set(['eu']),
    });
    expect(parseMode(req({ mode: Mode.MODE_FIRST, preferSites: ['eu', 'us'] }), SITES, SCOPED)).toEqual({
      kind: 'first',
      preferSites: ['eu', 'us'],
    });
  });

  it.each([
    [req({ preferSites: ['eu'] }), /prefer_sites: applies to MODE_FIRST only/],
    [
      req({ mode: Mode.MODE_FIRST, preferSites: ['mars'] }),
      /prefer_sites\[0\]: unknown site "mars" \(known: us, eu, ap\)/,
    ],
    [
      req({ mode: Mode.MODE_FIRST, preferSites: ['ap'] }),
      /prefer_sites\[0\]: site "ap" is not in the request's scope/,
    ],
    [
      req({ mode: Mode.MODE_FIRST, preferSites: ['eu', 'eu'] }),
      /prefer_sites\[1\]: site "eu" is listed twice/,
    ],
    [req({ mode: Mode.MODE_FIRST, minOk: 1 }), /min_ok: applies to MODE_ALL only/],
    [req({ mode: Mode.MODE_FIRST, requiredSites: ['us'] }), /required_sites: applies to MODE_ALL only/],
    [req({ minOk: 4 }), /min_ok: 4 is more than the 3 pod\(s\) in scope/],
    [req({ requiredSites: ['x'] }), /required_sites\[0\]: unknown site "x"/],
    [req({ mode: 7 as Mode }), /mode: unknown value 7/],
  ])('refuses a bad combination with INVALID_ARGUMENT naming the field (%#)', (r, message) => {
    expect(() => parseMode(r, SITES, SCOPED)).toThrow(
      expect.objectContaining({ code: 3, details: expect.stringMatching(message) }),
    );
  });
});
