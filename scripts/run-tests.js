#!/usr/bin/env node
// Runs every jest test, then the multi-process tests again with federation sessions off (every broker
// calls and is called the unary way, as an older version: both must hold), and ends with the plain line CI
// reads: `N passed, N failed`. WANAS_TEST_PASSES=sessions (or unary) runs one pass only.
'use strict';
const { spawnSync } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

const jest = require.resolve('jest/bin/jest');
const args = process.argv.slice(2);

/** One jest run; its counts (a run whose results cannot be read counts as failed). */
function pass(name, env, extra) {
  const out = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'wanas-jest-')), 'results.json');
  console.log(`\n== tests: ${name} ==`);
  const r = spawnSync(process.execPath, [jest, '--json', `--outputFile=${out}`, ...args, ...extra], {
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

const only = process.env.WANAS_TEST_PASSES;
const results = [];
if (only !== 'unary') results.push(pass('every test, federation sessions on (the default)', {}, []));
if (only !== 'sessions') {
  // The multi-process tests only (unit tests set what they test themselves); the bench smoke has its own
  // --sessions flag, and the sessions tests choose per broker.
  const ignore = ['/node_modules/', '/dist/', '/packages/', 'bench-smoke', 'sessions\\.e2e'];
  results.push(
    pass('multi-process tests, federation sessions off (unary calls)', { WANAS_SESSIONS: 'off' }, [
      '--testPathIgnorePatterns',
      ...ignore,
    ]),
  );
}
const passed = results.reduce((n, r) => n + r.passed, 0);
const failed = results.reduce((n, r) => n + r.failed, 0);
console.log(`${passed} passed, ${failed} failed`);
process.exit(failed === 0 ? 0 : 1);
