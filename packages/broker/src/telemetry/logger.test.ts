import { PassThrough } from 'node:stream';
import winston from 'winston';
import { BatchedStderr, createLogger } from './logger';

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

  it("keeps a child logger's fields on every line it writes", async () => {
    const { log, lines } = capture('info');
    const child = log.child({ broker: 'b1' }).child({ component: 'server' });
    child.info('served', { code: 'OK' });
    child.log('info', 'sent', { code: 'OK' });
    child.debug('hidden');
    await flush();
    expect(lines.map((l) => JSON.parse(l) as Record<string, string>)).toEqual([
      expect.objectContaining({ message: 'served', broker: 'b1', component: 'server', code: 'OK' }),
      expect.objectContaining({ message: 'sent', broker: 'b1', component: 'server' }),
    ]);
  });

  it('writes every line through the batched stderr transport, once per turn, and on flush', () => {
    const chunks: string[] = [];
    const out = { write: (c: string) => chunks.push(c) } as unknown as NodeJS.WritableStream;
    const transport = new BatchedStderr(out);
    const done = jest.fn();
    transport.log({ [Symbol.for('message')]: '{"a":1}' }, done);
    transport.log({ [Symbol.for('message')]: '{"b":2}' }, done);
    expect(chunks).toEqual([]);
    transport.flush();
    expect(chunks).toEqual(['{"a":1}\n{"b":2}\n']);
    expect(done).toHaveBeenCalledTimes(2);
    transport.close();
  });

  it('writes straight to its stderr sink the same lines winston would, level-checked, until another transport is added', async () => {
    const chunks: string[] = [];
    const out = { write: (c: string) => chunks.push(c) } as unknown as NodeJS.WritableStream;
    const log = createLogger({ level: 'info', format: 'json', out });
    const sink = log.transports[0] as BatchedStderr;
    const child = log.child({ broker: 'b1' }).child({ component: 'server' });
    const write = (l: winston.Logger) => {
      l.log('info', 'served', { correlationId: 'c1', code: 'OK', latencyMs: 3 });
      l.log('debug', 'hidden', { n: 1 });
      l.warn('careful', { n: 2 });
    };
    write(child);
    sink.flush();
    const direct = chunks.join('').trim().split('\n');
    const { log: viaStream, lines } = capture('info');
    write(viaStream.child({ broker: 'b1' }).child({ component: 'server' }));
    await flush();
    const noTime = (l: string) => ({ ...(JSON.parse(l) as object), timestamp: undefined });
    expect(direct.map(noTime)).toEqual(lines.map(noTime));
    expect(Object.keys(JSON.parse(direct[0]!) as object)).toEqual(
      Object.keys(JSON.parse(lines[0]!) as object),
    );
    expect(direct).toHaveLength(2);
    // Silent, a higher level: nothing; another transport: both get every line (winston's own path).
    log.level = 'warn';
    child.info('skipped');
    log.level = 'info';
    log.silent = true;
    child.info('silenced');
    log.silent = false;
    const extra: string[] = [];
    const stream = new PassThrough();
    stream.on('data', (b: Buffer) => extra.push(b.toString()));
    log.add(new winston.transports.Stream({ stream }));
    child.info('to both');
    await flush();
    sink.flush();
    expect(chunks.join('')).not.toMatch(/skipped|silenced/);
    expect(chunks.join('')).toMatch(/"to both"/);
    expect(extra.join('')).toMatch(/"to both"/);
    sink.close();
  });

  it('returns the logger from a skipped call, as winston does', () => {
    const { log } = capture('error');
    expect(log.info('x')).toBe(log);
  });
});
