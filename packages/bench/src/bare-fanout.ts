/**
 * A bare grpc-js federation: the cpu part's second yardstick. The same processes and the same call graph
 * as a wanas aggregate — an entry that calls every other pod of its site and one representative per remote
 * site, which calls the other pods of its site — with none of wanas: raw bytes, no protobuf messages, no
 * iterator, breaker, metrics or logs. `node bare-fanout.js` listens on 127.0.0.1 (port on stdout) and serves
 * `Echo` (the bytes back) and `Fan` (a JSON list of calls to make at once; answers their bytes joined).
 */
import * as grpc from '@grpc/grpc-js';

const identity = {
  requestSerialize: (b: Buffer) => b,
  requestDeserialize: (b: Buffer) => b,
  responseSerialize: (b: Buffer) => b,
  responseDeserialize: (b: Buffer) => b,
};
/** The two methods of a bare node. */
export const BARE_SERVICE: grpc.ServiceDefinition = {
  Echo: { path: '/bare.Node/Echo', requestStream: false, responseStream: false, ...identity },
  Fan: { path: '/bare.Node/Fan', requestStream: false, responseStream: false, ...identity },
};

/** One call a `Fan` makes: to `address`, `Echo` with `payload`, or `Fan` with its own calls. */
export interface BareCall {
  address: string;
  payload?: string;
  calls?: BareCall[];
}

type NodeClient = Record<
  'Echo' | 'Fan',
  (
    req: Buffer,
    md: grpc.Metadata,
    o: grpc.CallOptions,
    cb: (e: grpc.ServiceError | null, r?: Buffer) => void,
  ) => void
>;

/** A client per address, kept (warm channels, as a broker keeps them); `close` closes them all. */
export function bareClients(): ((address: string) => NodeClient) & { close(): void } {
  const Client = grpc.makeGenericClientConstructor(BARE_SERVICE, 'Node');
  const clients = new Map<string, NodeClient>();
  const get = (address: string) => {
    let c = clients.get(address);
    if (!c) {
      c = new Client(address, grpc.credentials.createInsecure()) as unknown as NodeClient;
      clients.set(address, c);
    }
    return c;
  };
  return Object.assign(get, {
    close: () => clients.forEach((c) => (c as unknown as grpc.Client).close()),
  });
}

/** Makes one call of a fan-out (with a deadline, as every wanas hop has); resolves with its answer. */
export function bareCall(client: (address: string) => NodeClient, call: BareCall): Promise<Buffer> {
  const method = call.calls ? 'Fan' : 'Echo';
  const body = Buffer.from(call.calls ? JSON.stringify(call.calls) : (call.payload ?? ''));
  return new Promise((resolve, reject) =>
    client(call.address)[method](body, new grpc.Metadata(), { deadline: Date.now() + 5000 }, (e, r) =>
      e ? reject(e) : resolve(r!),
    ),
  );
}

async function serve(): Promise<void> {
  const client = bareClients();
  const server = new grpc.Server();
  server.addService(BARE_SERVICE, {
    Echo: (call: grpc.ServerUnaryCall<Buffer, Buffer>, cb: grpc.sendUnaryData<Buffer>) =>
      cb(null, call.request),
    Fan: (call: grpc.ServerUnaryCall<Buffer, Buffer>, cb: grpc.sendUnaryData<Buffer>) => {
      const calls = JSON.parse(call.request.toString()) as BareCall[];
      Promise.all(calls.map((c) => bareCall(client, c))).then(
        (answers) => cb(null, Buffer.concat(answers)),
        (e: grpc.ServiceError) => cb(e),
      );
    },
  });
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (e, p) =>
      e ? reject(e) : resolve(p),
    ),
  );
  process.stdout.write(`${port}\n`);
  process.once('SIGTERM', () => server.forceShutdown());
}

if (require.main === module) {
  serve().catch((e: unknown) => {
    process.stderr.write(`bare-fanout: ${(e as Error).message}\n`);
    process.exit(1);
  });
}
