/**
 * The architecture, checked by `npm run lint` (dependency-cruiser), on source files (tests may use the dev
 * packages). Cycles count type-only imports too (`tsPreCompilationDeps`); the layering rules look at what
 * is loaded at run time (a type-only import is erased). Direction:
 *   proto ← iterator, connection-manager ← broker ← cli            (what the broker image holds)
 *   topology ← broker, cli, devfed, k8s                              (the topology, without the broker runtime)
 *   topology ← devfed ← bench, k8s                                  (development packages: never the broker)
 * and the runtime packages never load a development package (the CLI loads them by name, on demand).
 */
const runtime = '^packages/(proto|iterator|operations|topology|connection-manager|broker|cli)/src';
const dev = '^packages/(devfed|bench|k8s)/';
const notTests = '\\.test\\.ts$';

module.exports = {
  forbidden: [
    { name: 'no-circular', severity: 'error', from: {}, to: { circular: true } },
    {
      name: 'runtime-not-to-dev',
      comment: 'the broker image holds the runtime packages only',
      severity: 'error',
      from: { path: runtime, pathNot: notTests },
      to: { path: dev, dependencyTypesNot: ['type-only', 'type-import'] },
    },
    {
      name: 'proto-is-the-base',
      severity: 'error',
      from: { path: '^packages/proto/src', pathNot: notTests },
      to: { path: '^packages/(?!proto/)[^/]+/' },
    },
    {
      name: 'operations-sdk-stands-alone',
      comment: "a user's plug-in module depends on @wanas/operations alone",
      severity: 'error',
      from: { path: '^packages/operations/src', pathNot: notTests },
      to: { path: '^packages/(?!operations/)[^/]+/' },
    },
    {
      name: 'topology-stands-alone',
      comment: 'tools read a topology without loading the broker runtime',
      severity: 'error',
      from: { path: '^packages/topology/src', pathNot: notTests },
      to: { path: '^packages/(?!topology/)[^/]+/' },
    },
    {
      name: 'dev-packages-not-on-the-broker',
      comment: 'devfed, bench and k8s run brokers as processes; they read topologies through @wanas/topology',
      severity: 'error',
      from: { path: dev, pathNot: notTests },
      to: { path: '^packages/broker/' },
    },
    {
      name: 'iterator-and-connection-manager-on-proto-only',
      severity: 'error',
      from: { path: '^packages/(iterator|connection-manager)/src', pathNot: notTests },
      to: { path: '^packages/(?!(proto|$1)/)[^/]+/' },
    },
    {
      name: 'broker-below-the-cli',
      severity: 'error',
      from: { path: '^packages/broker/src', pathNot: notTests },
      to: { path: '^packages/(cli|devfed|bench|k8s)/' },
    },
    {
      name: 'engine-below-the-server',
      comment:
        'the engine plans and runs requests; the gRPC server and the broker process use it, not the reverse',
      severity: 'error',
      from: { path: '^packages/broker/src/engine/', pathNot: notTests },
      to: { path: '^packages/broker/src/(server/|broker\\.ts|broker-status\\.ts)' },
    },
    {
      name: 'console-on-top',
      comment:
        'the operator console reads the broker (server, engine, connection manager) and is assembled by broker.ts only; nothing serving requests depends on it',
      severity: 'error',
      from: {
        path: '^packages/broker/src/',
        pathNot: `^packages/broker/src/(console/|broker\\.ts)|${notTests}`,
      },
      to: { path: '^packages/broker/src/console/' },
    },
    {
      name: 'sessions-are-transport',
      comment:
        'federation sessions carry requests as frames, both ways; they know nothing of how requests are planned or served',
      severity: 'error',
      from: { path: '^packages/broker/src/session/', pathNot: notTests },
      to: {
        path: '^packages/broker/src/(engine|server|operations|store|ledger)/|^packages/broker/src/broker',
      },
    },
    {
      name: 'telemetry-below-everything',
      comment: 'logs, metrics and traces are told what happens; they decide nothing and call nothing back',
      severity: 'error',
      from: { path: '^packages/broker/src/telemetry/', pathNot: notTests },
      to: {
        path: '^packages/broker/src/(engine|server|operations|store|ledger)/|^packages/broker/src/broker',
      },
    },
    {
      name: 'operations-and-store-below-the-engine',
      comment: 'the built-in operations and the pod store know nothing of how requests are planned or served',
      severity: 'error',
      from: { path: '^packages/broker/src/(operations|store)/', pathNot: notTests },
      to: { path: '^packages/broker/src/(engine|server)/|^packages/broker/src/broker' },
    },
    {
      name: 'ledger-below-the-store',
      comment:
        "the exactly-once ledger (claim, settle, replay) is a room of its own: the stores hold it, it knows no store's inventory, nor operations, engine or server",
      severity: 'error',
      from: { path: '^packages/broker/src/ledger/', pathNot: notTests },
      to: {
        path: '^packages/broker/src/(engine|server|operations|session)/|^packages/broker/src/store/(?!postgres-tx\\.ts$)|^packages/broker/src/broker',
      },
    },
    {
      name: 'engine-model-stands-alone',
      comment: "the engine's vocabulary: every engine file may use it, it uses none of them",
      severity: 'error',
      from: { path: '^packages/broker/src/engine/model\\.ts$' },
      to: { path: '^packages/broker/src/(?!operations/types)' },
    },
    {
      name: 'dev-packages-not-on-the-cli',
      severity: 'error',
      from: { path: dev, pathNot: notTests },
      to: { path: '^packages/cli/' },
    },
  ],
  options: {
    doNotFollow: { path: 'node_modules' },
    exclude: { path: '(^|/)dist/|/gen/' },
    tsPreCompilationDeps: true,
    tsConfig: { fileName: 'tsconfig.json' },
    enhancedResolveOptions: { exportsFields: ['exports'], conditionNames: ['require', 'node', 'default'] },
  },
};
