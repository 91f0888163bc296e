import { fromBinary, toBinary } from '@bufbuild/protobuf';
import { FileDescriptorProtoSchema, FileDescriptorSetSchema } from '@bufbuild/protobuf/wkt';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { ReflectionService } from '@grpc/reflection';
import { createTlsDir } from '@wanas/devfed';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { GrpcBackend } from './backend-grpc';

const EXAMPLE = path.resolve(__dirname, '../../../../examples/inventory');
const DESCRIPTORS = path.join(EXAMPLE, 'inventory.binpb');
const COUNT = 'acme.inventory.v1.Inventory/Count';

/** What a test opened (servers, backends' channels): closed after it, passed or not. */
const opened: (() => void)[] = [];
afterEach(() => opened.splice(0).forEach((close) => close()));

/** A backend whose channel is closed after the test. */
function backend(...args: ConstructorParameters<typeof GrpcBackend>): GrpcBackend {
  const b = new GrpcBackend(...args);
  opened.push(() => b.close());
  return b;
}

interface Seen {
  method: string;
  metadata: grpc.Metadata;
  cancelled: Promise<void>;
}

/**
 * A real grpc-js Inventory server on 127.0.0.1:0 (with server reflection unless `reflection` is false);
 * Count answers at once unless the SKU is "slow" (never answers), Reserve answers NOT_FOUND.
 */
async function inventoryServer(
  reflection = true,
  serverCredentials = grpc.ServerCredentials.createInsecure(),
) {
  const def = protoLoader.loadSync(path.join(EXAMPLE, 'inventory.proto'), { longs: String, defaults: true });
  const pkg = grpc.loadPackageDefinition(def) as unknown as {
    acme: { inventory: { v1: { Inventory: grpc.ServiceClientConstructor } } };
  };
  const seen: Seen[] = [];
  let onCall: () => void = () => undefined;
  const called = new Promise<void>((r) => (onCall = r));
  const server = new grpc.Server();
  const handler =
    (method: string, answer: (req: { sku: string }, cb: grpc.sendUnaryData<object>) => void) =>
    (call: grpc.ServerUnaryCall<{ sku: string }, object>, cb: grpc.sendUnaryData<object>) => {
      seen.push({
        method,
        metadata: call.metadata,
        cancelled: new Promise((r) => call.on('cancelled', () => r())),
      });
      onCall();
      answer(call.request, cb);
    };
  server.addService(pkg.acme.inventory.v1.Inventory.service, {
    Count: handler('Count', (req, cb) => {
      if (req.sku !== 'slow') cb(null, { total: '9007199254740993', warehouses: 0, minPrice: 1.5 });
    }),
    List: handler('List', (_req, cb) => cb(null, { items: [] })),
    Reserve: handler('Reserve', (_req, cb) =>
      cb({ code: grpc.status.NOT_FOUND, details: 'no such sku here' }),
    ),
  });
  if (reflection) {
    const fileDescriptorProtos = fromBinary(FileDescriptorSetSchema, fs.readFileSync(DESCRIPTORS)).file.map(
      (f) => toBinary(FileDescriptorProtoSchema, f),
    );
    new ReflectionService({ all: { fileDescriptorProtos } } as never).addToServer(server);
  }
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync('127.0.0.1:0', serverCredentials, (e, p) => (e ? reject(e) : resolve(p))),
  );
  opened.push(() => server.forceShutdown());
  return { address: `127.0.0.1:${port}`, seen, called, stop: () => server.forceShutdown() };
}

const ctx = (over: Partial<Parameters<GrpcBackend['call']>[2]> = {}) => ({
  correlationId: 'c-1',
  headers: { 'x-team': 'a', 'grpc-timeout': '1S', authorization: 'secret' },
  idempotencyKey: 'k-1',
  deadline: Date.now() + 3000,
  signal: new AbortController().signal,
  traceparent: undefined,
  ...over,
});

describe('GrpcBackend (a real grpc-js server)', () => {
  it('reads the schema through server reflection, then calls with proto3 JSON in and out', async () => {
    const s = await inventoryServer();
    const b = backend('inventory', () => s.address, undefined);
    expect(b.knownMethod(COUNT)).toBeUndefined();
    const out = await b.call(COUNT, { sku: 'widget' }, ctx(), false);
    // int64 as a string, exact; a field at its default (0) included.
    expect(out).toEqual({ total: '9007199254740993', warehouses: 0, minPrice: 1.5 });
    expect(b.knownMethod(COUNT)?.method.input.typeName).toBe('acme.inventory.v1.CountRequest');
    const md = s.seen[0]!.metadata;
    expect(md.get('x-correlation-id')).toEqual(['c-1']);
    expect(md.get('x-team')).toEqual(['a']);
    expect(md.get('authorization')).toEqual([]);
    expect(md.get('idempotency-key')).toEqual([]); // a read carries no key
    b.close();
    s.stop();
  });

  it('sends the idempotency key with a write, and answers the backend status as the error', async () => {
    const s = await inventoryServer(false);
    const b = backend('inventory', () => s.address, DESCRIPTORS);
    const e = (await b
      .call('acme.inventory.v1.Inventory/Reserve', { sku: 'x', quantity: '2' }, ctx(), true)
      .catch((x: unknown) => x)) as { code: number; details: string };
    expect([e.code, e.details]).toEqual([grpc.status.NOT_FOUND, 'no such sku here']);
    expect(s.seen[0]!.metadata.get('idempotency-key')).toEqual(['k-1']);
    b.close();
    s.stop();
  });

  it('refuses params the request type cannot hold, naming the field', async () => {
    const b = backend('inventory', () => '127.0.0.1:1', DESCRIPTORS);
    const e = (await b.call(COUNT, { sku: 12 }, ctx(), false).catch((x: unknown) => x)) as {
      code: number;
      details: string;
    };
    expect(e.code).toBe(grpc.status.INVALID_ARGUMENT);
    expect(e.details).toContain('acme.inventory.v1.CountRequest.sku');
    b.close();
  });

  it('names what is missing: a method the service lacks, a missing descriptor set', () => {
    const b = backend('inventory', () => '127.0.0.1:1', DESCRIPTORS);
    expect(() => b.checkMethod('acme.inventory.v1.Inventory/Nope')).toThrow(
      'has no method Nope (it has: Count, List, Reserve)',
    );
    expect(() => b.checkMethod('acme.other.v1.Other/Count')).toThrow('has no service acme.other.v1.Other');
    expect(() => backend('inventory', () => 'x:1', '/nonexistent.binpb')).toThrow(
      'cannot read descriptor set /nonexistent.binpb',
    );
  });

  it('answers UNAVAILABLE naming the service and address when the backend is down', async () => {
    const s = await inventoryServer(false);
    s.stop();
    const b = backend('inventory', () => s.address, DESCRIPTORS);
    const e = (await b.call(COUNT, { sku: 'a' }, ctx(), false).catch((x: unknown) => x)) as {
      code: number;
      details: string;
    };
    expect(e.code).toBe(grpc.status.UNAVAILABLE);
    expect(e.details).toContain(`service inventory at ${s.address}`);
    b.close();
  });

  it('passes a cancel on: the backend sees its call cancelled, and the pod answers CANCELLED', async () => {
    const s = await inventoryServer(false);
    const b = backend('inventory', () => s.address, DESCRIPTORS);
    const ac = new AbortController();
    const p = b.call(COUNT, { sku: 'slow' }, ctx({ signal: ac.signal }), false).catch((x: unknown) => x);
    await s.called;
    ac.abort();
    expect(((await p) as { code: number }).code).toBe(grpc.status.CANCELLED);
    await s.seen[0]!.cancelled; // resolves only when the server saw the cancel
    b.close();
    s.stop();
  });

  it('sends the deadline: a backend slower than it is DEADLINE_EXCEEDED', async () => {
    const s = await inventoryServer(false);
    const b = backend('inventory', () => s.address, DESCRIPTORS);
    const e = (await b
      .call(COUNT, { sku: 'slow' }, ctx({ deadline: Date.now() + 300 }), false)
      .catch((x: unknown) => x)) as { code: number; details: string };
    expect(e.code).toBe(grpc.status.DEADLINE_EXCEEDED);
    expect(e.details).toContain('service inventory at');
    b.close();
    s.stop();
  });

  it('says why when the backend has no server reflection and no descriptor set is given', async () => {
    const s = await inventoryServer(false);
    const b = backend('inventory', () => s.address, undefined);
    const e = (await b.call(COUNT, { sku: 'a' }, ctx(), false).catch((x: unknown) => x)) as {
      details: string;
    };
    expect(e.details).toMatch(/cannot read the schema of .*Count through server reflection/);
    b.close();
    s.stop();
  });

  it('calls a backend over mTLS with the configured CA and client certificate', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'wanas-backend-tls-'));
    try {
      await createTlsDir(dir, ['backend']);
      const read = (f: string) => fs.readFileSync(path.join(dir, f));
      const s = await inventoryServer(
        true,
        grpc.ServerCredentials.createSsl(
          read('ca.crt'),
          [{ private_key: read('backend.key'), cert_chain: read('backend.crt') }],
          true,
        ),
      );
      try {
        const tls = grpc.credentials.createSsl(read('ca.crt'), read('client.key'), read('client.crt'));
        const b = backend('inventory', () => s.address, undefined, tls);
        expect(await b.call(COUNT, { sku: 'a' }, ctx(), false)).toMatchObject({ total: '9007199254740993' });
        b.close();
        // Without a client certificate the backend refuses the connection: the pod's UNAVAILABLE.
        const noCert = backend(
          'inventory',
          () => s.address,
          DESCRIPTORS,
          grpc.credentials.createSsl(read('ca.crt')),
        );
        const e = (await noCert.call(COUNT, { sku: 'a' }, ctx(), false).catch((x: unknown) => x)) as {
          code: number;
        };
        expect(e.code).toBe(grpc.status.UNAVAILABLE);
        noCert.close();
      } finally {
        s.stop();
      }
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
