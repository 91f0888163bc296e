/**
 * The architecture, checked by `npm run lint` (dependency-cruiser), on source files (tests may use the dev
 * packages). Cycles count type-only imports too (`tsPreCompilationDeps`); the layering rules look at what
 * is loaded at run time (a type-only import is erased). Direction:
 *   proto ← iterator, connection-manager ← broker ← cli            (what the broker image holds)
 *   broker ← devfed ← bench, k8s                                    (development packages)
 * and the runtime packages never load a development package (the CLI loads them by name, on demand).
 */
const runtime = '^packages/(proto|iterator|operations|connection-manager|broker|cli)/src';
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
      to: { path: '^packages/broker/src/(server|rpc|broker|broker-servers|broker-status|reflection)\\.ts$' },
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
