import * as grpc from '@grpc/grpc-js';
import { PUSHBACK_HEADER } from '@wanas/proto';
import { Admission, type Ticket } from './admission';
import { clientGate, clientName, isTicket } from './client-gate';
import type { QueueDelay } from './queue-delay';

/** A raw unary method: bytes in, bytes out. */
const SERVICE = {
  call: {
    path: '/t.Test/Call',
    requestStream: false,
    responseStream: false,
    requestSerialize: (b: Buffer) => b,
    requestDeserialize: (b: Buffer) => b,
    responseSerialize: (b: Buffer) => b,
    responseDeserialize: (b: Buffer) => b,
  },
} as const;

describe('the client gate (a real grpc-js server)', () => {
  let server: grpc.Server;
  let client: grpc.Client & { call: (...a: unknown[]) => grpc.ClientUnaryCall };
  let handled = 0;
  /** Resolved as the handler runs (an event to wait for: on a loaded machine a first call may take a while). */
  const onHandled: (() => void)[] = [];
  const handledNow = () => new Promise<void>((resolve) => onHandled.push(resolve));
  const hold: (() => void)[] = [];
  const refused: string[] = [];
  const admission = new Admission({
    settings: () => ({ adaptive: true, targetDelayMs: 10, latencyTolerance: 2, initialPods: 2, minPods: 1 }),
    hardCaps: () => ({ aggregates: 100, federation: 100 }),
    defaultCost: () => 1,
    clients: [],
    queueDelay: { busy: () => undefined, read: () => 0, close: () => undefined } as unknown as QueueDelay,
  });

  beforeAll(async () => {
    const gate = clientGate({
      admission,
      identity: () => undefined,
      onRefused: (_path, who, r) => refused.push(`${who}:${r.reason}`),
    });
    server = new grpc.Server();
    server.addService(SERVICE as unknown as grpc.ServiceDefinition, {
      // As the broker's middleware does: the gate first, the work only once admitted; the ticket released
      // when the call is answered or its caller cancels.
      call: (call: grpc.ServerUnaryCall<Buffer, Buffer>, cb: grpc.sendUnaryData<Buffer>) => {
        const ticket = gate(call, '/t.Test/Call');
        if (!isTicket(ticket)) return cb(ticket);
        handled++;
        onHandled.splice(0).forEach((r) => r());
        const admitted: Ticket = ticket;
        call.on('cancelled', () => admitted.release());
        hold.push(() => {
          admitted.release();
          cb(null, Buffer.from('ok'));
        });
      },
    });
    const port = await new Promise<number>((res, rej) =>
      server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (e, p) =>
        e ? rej(e) : res(p),
      ),
    );
    const Ctor = grpc.makeGenericClientConstructor(SERVICE as unknown as grpc.ServiceDefinition, 'Test');
    client = new Ctor(`127.0.0.1:${port}`, grpc.credentials.createInsecure()) as unknown as typeof client;
  });
  afterAll(() => {
    client.close();
    server.forceShutdown();
  });

  const call = (who: string, deadlineMs = 5000) => {
    const md = new grpc.Metadata();
    md.set('x-wanas-client', who);
    let trailer: grpc.Metadata | undefined;
    let c: grpc.ClientUnaryCall | undefined;
    const done = new Promise<{ code: number; details: string; pushback: string | undefined }>((resolve) => {
      c = client.call(
        Buffer.from('x'),
        md,
        { deadline: Date.now() + deadlineMs },
        (e: grpc.ServiceError | null) =>
          resolve({
            code: e?.code ?? 0,
            details: e?.details ?? '',
            pushback: (e?.metadata ?? trailer)?.get(PUSHBACK_HEADER)[0] as string | undefined,
          }),
      );
      c.on('status', (s: grpc.StatusObject) => (trailer = s.metadata));
    });
    return { done, cancel: () => c!.cancel() };
  };

  /** Until the handler has run `n` times in all. */
  const handledTimes = async (n: number) => {
    while (handled < n) await handledNow();
  };
  /**
   * Until `what` holds: for a state the server reaches on an event the test cannot see (a cancel's
   * RST_STREAM read by the server). Polled; the bound only ends a test that would otherwise hang.
   */
  const waitFor = async (what: () => boolean) => {
    const end = Date.now() + 30_000;
    while (!what() && Date.now() < end) await new Promise((r) => setTimeout(r, 5));
    expect(what()).toBe(true);
  };

  it('refuses past the limit before the handler runs, with RESOURCE_EXHAUSTED and grpc-retry-pushback-ms', async () => {
    const a = call('heavy');
    const b = call('heavy');
    await handledTimes(2);
    const third = await call('heavy').done;
    expect(third.code).toBe(grpc.status.RESOURCE_EXHAUSTED);
    expect(third.details).toMatch(/^broker busy: 2 of 2 pods in flight; retry after \d+ ms/);
    expect(Number(third.pushback)).toBeGreaterThanOrEqual(20);
    expect(handled).toBe(2);
    expect(refused).toEqual(['heavy:limit']);
    // Answered: their share is free again, and the next call is admitted.
    hold.splice(0).forEach((answer) => answer());
    expect((await a.done).code).toBe(0);
    expect((await b.done).code).toBe(0);
    expect(admission.inFlight('aggregate').calls).toBe(0);
  });

  it('frees the share of a call its caller cancelled', async () => {
    const before = handled;
    const a = call('c');
    await handledTimes(before + 1); // admitted, then handled
    expect(admission.inFlight('aggregate').calls).toBe(1);
    a.cancel();
    expect((await a.done).code).toBe(grpc.status.CANCELLED);
    await waitFor(() => admission.inFlight('aggregate').calls === 0);
    hold.splice(0).forEach((answer) => answer());
  });

  it('names a client by its certificate or token first, then the header, then the peer host', () => {
    const md = new grpc.Metadata();
    let asked = 0;
    const peer = () => (asked++, 'ipv4:10.0.0.1:5000');
    expect(clientName('token:portal', md, peer)).toBe('token:portal');
    expect(clientName(undefined, md, peer)).toBe('ipv4:10.0.0.1');
    md.set('x-wanas-client', 'reports');
    expect(clientName(undefined, md, peer)).toBe('reports');
    // The peer is asked for only when nothing else names the client.
    expect(asked).toBe(1);
  });
});
