import { benchNodeArgs } from './federation';
import { processGroups, type DevBroker } from './supervisor';

describe('benchNodeArgs', () => {
  it('gives the flags to every broker, or only to those whose id matches', () => {
    const flags = '--cpu-prof  --cpu-prof-dir=/tmp/p';
    expect(benchNodeArgs({ WANAS_BENCH_NODE_ARGS: flags })('s1-p1-a')).toEqual([
      '--cpu-prof',
      '--cpu-prof-dir=/tmp/p',
    ]);
    const some = benchNodeArgs({ WANAS_BENCH_NODE_ARGS: flags, WANAS_BENCH_NODE_ARGS_FOR: '^s2-p2-a$' });
    expect(some('s2-p2-a')).toEqual(['--cpu-prof', '--cpu-prof-dir=/tmp/p']);
    expect(some('s2-p2-b')).toBeUndefined();
    expect(benchNodeArgs({})('s1-p1-a')).toBeUndefined();
  });

  it('refuses a bad expression, naming the variable', () => {
    expect(() => benchNodeArgs({ WANAS_BENCH_NODE_ARGS_FOR: '(' })).toThrow(
      /WANAS_BENCH_NODE_ARGS_FOR: "\(" is not a regular expression/,
    );
  });
});

describe('processGroups', () => {
  const broker = (site: string, pod: string, x: string): DevBroker => ({
    id: `${site}-${pod}-${x}`,
    site,
    pod,
    address: '',
    wanAddress: '',
    proc: undefined,
  });
  const ids = (groups: DevBroker[][]) => groups.map((g) => g.map((b) => b.id).join(','));

  it("groups a site's brokers, at most n a process, twins of a pod in different processes", () => {
    const brokers = ['p1', 'p2', 'p3'].flatMap((pod) => ['a', 'b'].map((x) => broker('s1', pod, x)));
    brokers.push(broker('s2', 'p1', 'a'), broker('s2', 'p1', 'b'));
    expect(ids(processGroups(brokers, 3))).toEqual([
      's1-p1-a,s1-p2-a,s1-p3-a',
      's1-p1-b,s1-p2-b,s1-p3-b',
      's2-p1-a',
      's2-p1-b',
    ]);
    expect(ids(processGroups(brokers, 1))).toHaveLength(8);
  });
});
