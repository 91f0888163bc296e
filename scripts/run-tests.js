#!/usr/bin/env node
// The test tiers, one command each, ending with the plain line CI reads: `N passed, N failed`.
//
//   node scripts/run-tests.js          every tier (npm test; what CI runs)
//   node scripts/run-tests.js unit     tests that start no process: seconds, for every change (npm run test:unit)
//   node scripts/run-tests.js e2e      the rest: real broker processes, PostgreSQL, the CLI, promtool, buf,
//                                      a browser, on both federation transports (npm run test:e2e)
//
// The projects are in jest.suite.config.js, with what each covers. Two jest runs: the first runs two files
// at a time (a federation's start-up is mostly one process waiting on another, so two files share the 2
// cores well), the second runs the tests that measure the machine's capacity with nothing beside them.
// More arguments go to jest (e.g. a path).
'use strict';
const { spawnSync } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

const jest = require.resolve('jest/bin/jest');
const config = path.join(__dirname, '..', 'jest.suite.config.js');
const argv = process.argv.slice(2);
const TIERS = ['unit', 'e2e', 'all'];
const tier = TIERS.includes(argv[0]) ? argv.shift() : 'all';
const args = argv;

/** One jest run of some projects; its counts (a run whose results cannot be read counts as failed). */
function pass(name, projects, workers) {
  const out = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'wanas-jest-')), 'results.json');
  console.log(`\n== tests: ${name} ==`);
  const r = spawnSync(
    process.execPath,
    [
      jest,
      '--config',
      config,
      '--json',
      `--outputFile=${out}`,
      `--maxWorkers=${workers}`,
      // A path given to a tier may match nothing in one of its runs: that run passes nothing, fails nothing.
      ...(args.length ? ['--passWithNoTests'] : []),
      '--selectProjects',
      ...projects,
      '--',
      ...args,
    ],
    { stdio: 'inherit' },
  );
  try {
    const res = JSON.parse(fs.readFileSync(out, 'utf8'));
    const failed = res.numFailedTests + res.numRuntimeErrorTestSuites;
    return { passed: res.numPassedTests, failed: r.status === 0 ? failed : Math.max(failed, 1) };
  } catch (e) {
    console.error(`could not read jest results: ${e.message}`);
    return { passed: 0, failed: 1 };
  }
}

const results = [];
const e2e = ['e2e', 'e2e-unary'];
if (tier === 'unit') results.push(pass('unit: no process started', ['unit'], 2));
else {
  const first = tier === 'all' ? ['unit', ...e2e] : e2e;
  results.push(pass(`${first.join(', ')}: two files at a time`, first, 2));
  results.push(pass('alone, alone-unary: one file at a time', ['alone', 'alone-unary'], 1));
}
const passed = results.reduce((n, r) => n + r.passed, 0);
const failed = results.reduce((n, r) => n + r.failed, 0);
console.log(`${passed} passed, ${failed} failed`);
process.exit(failed === 0 ? 0 : 1);
