/**
 * The suite as `npm test` runs it (scripts/run-tests.js): the projects below in two jest runs, the first two
 * files at a time, the second alone. `npx jest <path>` still uses jest.config.js (one project, sessions on).
 *
 * - `unit`: tests that start no process (seconds; `npm run test:unit`).
 * - `e2e`: the rest, federation sessions on (the default): real broker processes, PostgreSQL, the CLI,
 *   promtool, buf, a browser.
 * - `e2e-unary`: the multi-process tests whose paths differ between the two federation transports, again
 *   with sessions off (every broker calls and is called the unary way, as an older version does): failures
 *   (kill, freeze, partition), deadlines, cancels, hedges, streaming and paging, request modes,
 *   authorization per request, trace context. Tests that do not touch the transport (the CLI,
 *   configuration, Explain, the image, the manifests, DNS discovery, the stores, Prometheus) run once, and
 *   so do the chaos soaks: the random faults they mix (kill, freeze, cut) are each driven on both
 *   transports by failure-paths.e2e, request-modes.e2e and hedging.e2e.
 * - `alone`, `alone-unary`: tests that load both cores or measure what the machine gives them (listed at
 *   ALONE_TESTS): run with nothing beside them, on both transports where the transport matters.
 */
const base = require('./jest.config.js');

/** Unit tests beside the code that start a process (a PostgreSQL server, a Node child). */
const PROCESS_UNIT_TESTS = [
  'store/pod-state\\.test',
  'store/postgres-failover\\.test',
  'store/sqlite-inventory\\.test',
  'operations/catalog\\.test',
];
/** Multi-process tests run again with sessions off (see above). */
const TRANSPORT_TESTS = [
  'broker\\.e2e',
  'failure-paths\\.e2e',
  'first-fit-partition\\.e2e',
  'hedging\\.e2e',
  'listing\\.e2e',
  'request-modes\\.e2e',
  'security\\.e2e',
  'tracing\\.e2e',
  'mixed-versions',
  'overload\\.e2e',
];
/**
 * Tests that load both cores or measure what the machine gives them (see above): alone. The overload test
 * compares goodput with the capacity it measured; the bench's load parts saturate the machine; a listing of
 * 20,000 sessions holds every pod's event loop for a while, and a partition it detects must be its own;
 * failure-paths times its claims on the product's own short budgets (250 ms attempts, an 800 ms deadline,
 * keepalive finding a cut), and beside another file a starved broker can take a live peer for a cut one
 * (seen once in a fresh clone: s2's pods failed while only s3 was cut).
 */
const ALONE_TESTS = ['overload\\.e2e', 'listing\\.e2e', 'failure-paths\\.e2e', 'bench-smoke-load\\.e2e'];
const TRANSPORT_ALONE = ALONE_TESTS.filter((t) => TRANSPORT_TESTS.includes(t));

const any = (patterns) => `(${patterns.join('|')})`;
const project = (displayName, o) => {
  const { maxWorkers: _, testMatch: __, testTimeout: ___, ...shared } = base;
  return { ...shared, displayName, ...o };
};
const SESSIONS_OFF = ['<rootDir>/test/support/sessions-off.js'];

module.exports = {
  // A global option: jest reads it here, not from a project.
  testTimeout: base.testTimeout,
  projects: [
    project('unit', {
      testRegex: ['/packages/.*\\.test\\.ts$'],
      testPathIgnorePatterns: [...base.testPathIgnorePatterns, ...PROCESS_UNIT_TESTS],
    }),
    project('e2e', {
      testRegex: ['/test/.*\\.test\\.ts$', `${any(PROCESS_UNIT_TESTS)}\\.ts$`],
      testPathIgnorePatterns: [...base.testPathIgnorePatterns, ...ALONE_TESTS],
    }),
    project('e2e-unary', {
      testRegex: [`/test/${any(TRANSPORT_TESTS)}\\.test\\.ts$`],
      testPathIgnorePatterns: [...base.testPathIgnorePatterns, ...ALONE_TESTS],
      setupFiles: SESSIONS_OFF,
    }),
    project('alone', { testRegex: [`/test/${any(ALONE_TESTS)}\\.test\\.ts$`] }),
    project('alone-unary', {
      testRegex: [`/test/${any(TRANSPORT_ALONE)}\\.test\\.ts$`],
      setupFiles: SESSIONS_OFF,
    }),
  ],
};
