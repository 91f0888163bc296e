/**
 * The shipped Prometheus rules (docker/prometheus/wanas-rules.yml) are valid and do what their unit tests
 * say, checked by Prometheus's own promtool (Debian's `prometheus` package; .ci/run installs it).
 */
import { spawnSync } from 'node:child_process';
import * as path from 'node:path';
import { ROOT } from './support/federation';

const dir = path.join(ROOT, 'docker/prometheus');
const promtool = (...args: string[]) => spawnSync('promtool', args, { cwd: dir, encoding: 'utf8' });

describe('Prometheus rules (promtool)', () => {
  it('pass promtool check rules', () => {
    const r = promtool('check', 'rules', 'wanas-rules.yml');
    expect(r.error).toBeUndefined();
    expect(r.stdout).toMatch(/SUCCESS: \d+ rules found/);
    expect(r.status).toBe(0);
  });

  it('pass their unit tests (promtool test rules): every alert fires when it should, and only then', () => {
    const r = promtool('test', 'rules', 'wanas-rules.test.yml');
    expect(r.stdout + r.stderr).toContain('SUCCESS');
    expect(r.status).toBe(0);
  });
});
