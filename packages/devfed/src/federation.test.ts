import { benchNodeArgs } from './federation';

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
