#!/usr/bin/env node
// CPU per aggregate of one checkout, for bisecting a CPU regression across commits (BENCHMARKS.md, stop
// 17): a 4 sites × 3 pods × 1 broker federation of that checkout (its own built packages) under a 5 ms
// WAN, 800 sequential echo Aggregates through one entry after a warm-up; prints every broker's CPU per
// aggregate (from /proc) and the wall time. Run checkouts in alternating order: one run swings ±3 ms here.
//   git worktree add /tmp/old COMMIT && (cd /tmp/old && npm ci)
//   node scripts/cpu-one.js /tmp/old old; node scripts/cpu-one.js . new; node scripts/cpu-one.js /tmp/old old
'use strict';
const root = require('node:path').resolve(process.argv[2] ?? '.');
const { DevFederation } = require(root + '/packages/devfed');
const fs = require('fs');
const cpuMs = (pid) => {
  const f = fs.readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ');
  return (Number(f[11]) + Number(f[12])) * 10;
};
(async () => {
  const f = await DevFederation.start({
    spec: {
      s1: { p1: 1, p2: 1, p3: 1 },
      s2: { p1: 1, p2: 1, p3: 1 },
      s3: { p1: 1, p2: 1, p3: 1 },
      s4: { p1: 1, p2: 1, p3: 1 },
    },
    wanLatencyMs: 5,
    logLevel: 'info',
  });
  try {
    const ask = f.aggregator('s1-p1-a');
    for (let i = 0; i < 40; i++) {
      const r = await ask({ operation: 'echo' });
      if (r.summary?.podsFailed === 0) break;
      await new Promise((r) => setTimeout(r, 300));
    }
    for (let i = 0; i < 200; i++) await ask({ operation: 'echo', params: { w: i } });
    const pids = [...new Set(f.brokers.map((b) => b.proc.pid))];
    const c0 = pids.reduce((s, p) => s + cpuMs(p), 0);
    const t0 = Date.now();
    const N = 800;
    for (let i = 0; i < N; i++) await ask({ operation: 'echo', params: { i } });
    const c1 = pids.reduce((s, p) => s + cpuMs(p), 0);
    console.log(
      `${(process.argv[3] ?? root).padEnd(12)} ${((c1 - c0) / N).toFixed(2)} ms CPU per aggregate, ${((Date.now() - t0) / N).toFixed(1)} ms wall`,
    );
  } finally {
    await f.stop();
  }
})();
