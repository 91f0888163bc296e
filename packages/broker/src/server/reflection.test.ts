/**
 * Reflection built on its first call (`reflection.ts`), on a real grpc-js server on 127.0.0.1, asked by a
 * reflection client made from the protocol's own .proto (as grpcurl and buf curl ask).
 */
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import * as path from 'node:path';
import { REFLECTION_PATHS, addReflection } from './reflection';

interface ReflectionResponse {
  listServicesResponse?: { service: { name: string }[] };
  fileDescriptorResponse?: { fileDescriptorProto: Buffer[] };
  errorResponse?: { errorCode: number };
}
type ReflectionClient = grpc.Client & {
  serverReflectionInfo(): grpc.ClientDuplexStream<Record<string, string>, ReflectionResponse>;
};

type Version = 'v1' | 'v1alpha';
const proto = (v: Version) =>
  path.join(
    path.dirname(require.resolve('@grpc/reflection/package.json')),
    `build/proto/grpc/reflection/${v}/reflection.proto`,
  );

describe('server reflection, built on its first call', () => {
  let server: grpc.Server;
  const clients = {} as Record<Version, ReflectionClient>;
  let address: string;

  beforeAll(async () => {
    server = new grpc.Server();
    addReflection(server);
    const port = await new Promise<number>((resolve, reject) =>
      server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (e, p) =>
        e ? reject(e) : resolve(p),
      ),
    );
    address = `127.0.0.1:${port}`;
    for (const v of ['v1', 'v1alpha'] as const) {
      const def = protoLoader.loadSync(proto(v), { keepCase: false, oneofs: true });
      const pkg = grpc.loadPackageDefinition(def) as unknown as {
        grpc: {
          reflection: Record<
            Version,
            { ServerReflection: new (a: string, c: grpc.ChannelCredentials) => ReflectionClient }
          >;
        };
      };
      clients[v] = new pkg.grpc.reflection[v].ServerReflection(address, grpc.credentials.createInsecure());
    }
  });
  afterAll(() => {
    for (const c of Object.values(clients)) c.close();
    server?.forceShutdown();
  });

  /** Sends the requests on one stream and collects one answer each. */
  const askOn = (v: Version, ...requests: Record<string, string>[]) =>
    new Promise<ReflectionResponse[]>((resolve, reject) => {
      const call = clients[v].serverReflectionInfo();
      const answers: ReflectionResponse[] = [];
      call.on('data', (r: ReflectionResponse) => answers.push(r));
      call.on('error', reject);
      call.on('end', () => resolve(answers));
      for (const r of requests) call.write(r);
      call.end();
    });
  const ask = (...requests: Record<string, string>[]) => askOn('v1', ...requests);

  it('lists the wanas services and health, and answers a symbol with its file and dependencies', async () => {
    const [list, file] = await ask(
      { listServices: '' },
      { fileContainingSymbol: 'wanas.v1.AggregationService' },
    );
    const names = list!.listServicesResponse!.service.map((s) => s.name);
    expect(names).toEqual(expect.arrayContaining(['wanas.v1.AggregationService', 'grpc.health.v1.Health']));
    expect(file!.fileDescriptorResponse!.fileDescriptorProto.length).toBeGreaterThan(1);
  });

  it('answers v1alpha as v1, and many streams at once', async () => {
    const answers = await Promise.all(
      (['v1alpha', 'v1', 'v1alpha', 'v1'] as const).map((v) => askOn(v, { listServices: '' })),
    );
    const lists = answers.map(([a]) => a!.listServicesResponse!.service.map((s) => s.name).sort());
    expect(lists[0]).toContain('wanas.v1.AggregationService');
    for (const l of lists) expect(l).toEqual(lists[0]);
  });

  it('ends a stream whose bytes are not a request with an error, and keeps serving', async () => {
    const raw = new grpc.Client(address, grpc.credentials.createInsecure());
    const status = await new Promise<grpc.StatusObject>((resolve) => {
      const call = raw.makeBidiStreamRequest(
        REFLECTION_PATHS[0],
        (b: Buffer) => b,
        (b: Buffer) => b,
      );
      call.on('data', () => undefined);
      call.on('status', resolve);
      call.on('error', () => undefined);
      call.write(Buffer.from([0xff, 0xff, 0xff, 0xff]));
      call.end();
    });
    raw.close();
    expect(status.code).toBe(grpc.status.INVALID_ARGUMENT);
    expect(status.details).toContain('the reflection request could not be decoded');
    const [list] = await ask({ listServices: '' });
    expect(list!.listServicesResponse!.service.length).toBeGreaterThan(2);
  });

  it('ends a call with INTERNAL when the service cannot be built, serves on, and builds on a later call', async () => {
    const other = new grpc.Server();
    let builds = 0;
    addReflection(other, () => {
      builds++;
      throw new Error('no descriptors');
    });
    const port = await new Promise<number>((resolve, reject) =>
      other.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (e, p) =>
        e ? reject(e) : resolve(p),
      ),
    );
    const raw = new grpc.Client(`127.0.0.1:${port}`, grpc.credentials.createInsecure());
    const ask = () =>
      new Promise<grpc.StatusObject>((resolve) => {
        const call = raw.makeBidiStreamRequest(
          REFLECTION_PATHS[1],
          (b: Buffer) => b,
          (b: Buffer) => b,
        );
        call.on('data', () => undefined);
        call.on('error', () => undefined);
        call.on('status', resolve);
        call.end();
      });
    try {
      for (const s of [await ask(), await ask()]) {
        expect(s.code).toBe(grpc.status.INTERNAL);
        expect(s.details).toBe('reflection could not be built: no descriptors');
      }
      expect(builds).toBe(2);
    } finally {
      raw.close();
      other.forceShutdown();
    }
  });
});
