import { PassThrough } from 'node:stream';
import winston from 'winston';
import { createLogger } from './logger';

function capture(level: string) {
  const log = createLogger({ level, format: 'json' });
  log.clear();
  const stream = new PassThrough();
  const lines: string[] = [];
  stream.on('data', (b: Buffer) => lines.push(...b.toString().trim().split('\n')));
  log.add(new winston.transports.Stream({ stream }));
  return { log, lines };
}

const flush = () => new Promise((r) => setImmediate(r));

describe('createLogger', () => {
  it('writes the enabled levels and skips the others, following level changes', async () => {
    const { log, lines } = capture('warn');
    log.info('hidden', { n: 1 });
    log.warn('shown', { n: 2 });
    log.level = 'info';
    log.info('now shown', { n: 3 });
    log.debug('still hidden');
    await flush();
    expect(lines.map((l) => JSON.parse(l) as { message: string; level: string })).toEqual([
      expect.objectContaining({ message: 'shown', level: 'warn' }),
      expect.objectContaining({ message: 'now shown', level: 'info' }),
    ]);
  });

  it('returns the logger from a skipped call, as winston does', () => {
    const { log } = capture('error');
    expect(log.info('x')).toBe(log);
  });
});
