const { DevFederation } = require('./packages/devfed/dist');
(async () => {
  const f = await DevFederation.start({ sites: 3, podsPerSite: 2, brokersPerPod: 1, wanLatencyMs: 5 });
  try {
    const agg = f.aggregator(f.brokers[0].id);
    const res = await agg({ operation: 'echo', minOk: 5, params: { sleepMs: 3000, sleepPod: 's3/p2' } }, 10000);
    console.log(JSON.stringify(res.pods.map(p => [p.site, p.pod, p.code, p.message, p.answeredBy])));
  } finally { await f.stop(); }
})();
