#!/usr/bin/env node
// The test tiers, one command each, ending with the plain line CI reads: `N passed, N failed`.
//
//   node scripts/run-tests.js          every tier (npm test; what CI runs)
//   node scripts/run-tests.js unit     tests that start no process: seconds, for every change (npm run test:unit)
//   node scripts/run-tests.js e2e      the rest: real broker processes, PostgreSQL, the CLI, promtool, buf,
//                                      then the transport pass (npm run test:e2e)
//
// The transport pass runs the multi-process tests whose paths differ between the two federation
// transports again with sessions off (every broker calls and is called the unary way, as an older version
// does): failures (kill, freeze, partition), deadlines, cancels, hedges, streaming and paging, request modes,
// authorization per request, trace context, overload. Tests that do not touch the transport (the CLI,
// configuration, Explain, the image, the manifests, DNS discovery, the stores, Prometheus) run once, and
// so do the chaos soaks: the random faults they mix (kill, freeze, cut) are each driven on both
// transports by failure-paths.e2e, request-modes.e2e and hedging.e2e, and a soak costs a minute a pass.
// More arguments go to jest (e.g. a path). WANAS_TEST_PASSES=sessions (or unary) runs one of the two passes.
'use strict';
const { spawnSync } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

const jest = require.resolve('jest/bin/jest');
const argv = process.argv.slice(2);
const TIERS = ['unit', 'e2e', 'all'];
const tier = TIERS.includes(argv[0]) ? argv.shift() : 'all';
const args = argv;

/** Unit tests beside the code that start a process (a PostgreSQL server, a Node child): e2e tier. */
const PROCESS_UNIT_TESTS = [
  'store/pod-state\\.test',
  'store/postgres-failover\\.test',
  'store/sqlite-inventory\\.test',
  'operations/catalog\\.test',
];
/** Multi-process tests run again with sessions off (see the comment at the top). */
const TRANSPORT_TESTS = [
  'broker\\.e2e',
  'failure-paths\\.e2e',
  'first-fit-partition\\.e2e',
  'hedging\\.e2e',
  'listing\\.e2e',
  'request-modes\\.e2e',
  'security\\.e2e',
  'tracing\\.e2e',
  'overload\\.e2e',
  'mixed-versions',
];

/** One jest run; its counts (a run whose results cannot be read counts as failed). */
function pass(name, env, extra) {
  const out = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'wanas-jest-')), 'results.json');
  console.log(`\n== tests: ${name} ==`);
  const r = spawnSync(process.execPath, [jest, '--json', `--outputFile=${out}`, ...extra, ...args], {
    stdio: 'inherit',
    env: { ...process.env, ...env },
  });
  try {
    const res = JSON.parse(fs.readFileSync(out, 'utf8'));
    const failed = res.numFailedTests + res.numRuntimeErrorTestSuites;
    return { passed: res.numPassedTests, failed: r.status === 0 ? failed : Math.max(failed, 1) };
  } catch (e) {
    console.error(`could not read jest results: ${e.message}`);
    return { passed: 0, failed: 1 };
  }
}

const ignore = (patterns) => ['--testPathIgnorePatterns', '/node_modules/', '/dist/', ...patterns];
const results = [];
const only = process.env.WANAS_TEST_PASSES;
if (tier === 'unit')
  results.push(pass('unit: no process started', {}, ['packages', ...ignore(PROCESS_UNIT_TESTS)]));
else if (tier === 'e2e') {
  if (only !== 'unary')
    results.push(
      pass('e2e: processes, federation sessions on (the default)', {}, [
        '--testPathPatterns',
        '/test/',
        ...PROCESS_UNIT_TESTS,
      ]),
    );
  if (only !== 'sessions')
    results.push(
      pass('e2e: the transport pass, federation sessions off (unary calls)', { WANAS_SESSIONS: 'off' }, [
        '--testPathPatterns',
        ...TRANSPORT_TESTS,
      ]),
    );
} else {
  // Everything in one jest run (one start-up), then the transport pass.
  if (only !== 'unary') results.push(pass('every test, federation sessions on (the default)', {}, []));
  if (only !== 'sessions')
    results.push(
      pass('the transport pass, federation sessions off (unary calls)', { WANAS_SESSIONS: 'off' }, [
        '--testPathPatterns',
        ...TRANSPORT_TESTS,
      ]),
    );
}
const passed = results.reduce((n, r) => n + r.passed, 0);
const failed = results.reduce((n, r) => n + r.failed, 0);
console.log(`${passed} passed, ${failed} failed`);
process.exit(failed === 0 ? 0 : 1);
