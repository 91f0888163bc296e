import { stagesOf, type CpuProfile } from './cpu-stages';

/** A profile of frames (innermost last) sampled `ms` each, 1 ms apart. */
function profile(stacks: { frames: [string, string][]; ms: number }[]): CpuProfile {
  const nodes: CpuProfile['nodes'] = [
    { id: 1, callFrame: { functionName: '(root)', url: '' }, children: [] },
  ];
  const samples: number[] = [];
  for (const { frames, ms } of stacks) {
    let parent = nodes[0]!;
    for (const [functionName, url] of frames) {
      const node = { id: nodes.length + 1, callFrame: { functionName, url }, children: [] as number[] };
      parent.children!.push(node.id);
      nodes.push(node);
      parent = node;
    }
    for (let i = 0; i < ms; i++) samples.push(parent.id);
  }
  return { nodes, startTime: 0, samples, timeDeltas: samples.map(() => 1000) };
}

describe('cpu stages: each sample to the stage of its innermost named frame', () => {
  const rpc: [string, string] = ['serve', 'file:///w/packages/broker/dist/server/rpc.js'];
  const p = profile([
    // JSON.stringify (no url) under winston under the middleware: logging.
    { frames: [rpc, ['log', 'file:///w/node_modules/winston/lib/logger.js'], ['stringify', '']], ms: 3 },
    // grpc-js under the fan-out: transport.
    {
      frames: [
        rpc,
        ['send', 'file:///w/packages/broker/dist/engine/legs.js'],
        ['call', 'file:///w/node_modules/@grpc/grpc-js/build/src/client.js'],
      ],
      ms: 2,
    },
    { frames: [rpc, ['decode', 'file:///w/packages/proto/dist/gen/wanas/v1/federation.js']], ms: 4 },
    { frames: [rpc, ['encode', 'file:///w/packages/proto/dist/gen/wanas/v1/federation.js']], ms: 1 },
    { frames: [rpc], ms: 2 },
    { frames: [['(garbage collector)', '']], ms: 5 },
    { frames: [['(idle)', '']], ms: 50 },
    { frames: [['somethingElse', 'node:internal/timers']], ms: 1 },
  ]);

  it('gives every busy sample to one stage, and leaves idle out', () => {
    const s = stagesOf(p, 0, Infinity);
    expect(s).toMatchObject({ log: 3, transport: 2, decode: 4, encode: 1, middleware: 2, gc: 5, other: 1 });
    expect(Object.values(s).reduce((a, b) => a + b, 0)).toBe(18);
  });

  it('counts only the window asked for', () => {
    // The first 3 ms are the logging stack's samples; from 3 ms on, none of them.
    expect(stagesOf(p, 3.5, Infinity).log).toBe(0);
    expect(stagesOf(p, 0, 3).log).toBe(3);
  });
});
