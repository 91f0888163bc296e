/**
 * The `upstream` part's pod backend and its bare client: acme.inventory.v1.Inventory/Count served by
 * grpc-js over raw bytes (a fixed CountResponse, no protobuf work: the cost of the backend itself is not
 * what the part measures). `node upstream-backend.js server --port N` listens on 127.0.0.1:N;
 * `node upstream-backend.js client ADDRESS CALLS` warms up, makes CALLS sequential calls and prints one
 * JSON line: its own CPU per call (what calling the backend costs a caller with nothing else around it).
 */
import * as grpc from '@grpc/grpc-js';
import { identity } from './bare-echo';

/** `Count` of the example's inventory.proto. */
export const COUNT_METHOD = 'acme.inventory.v1.Inventory/Count';

/** CountRequest { sku: "widget" }, encoded. */
export const COUNT_REQUEST = Buffer.concat([Buffer.from([0x0a, 6]), Buffer.from('widget')]);

/** CountResponse { total: 467, warehouses: 2, min_price: 15.5 }, encoded. */
function countResponse(): Buffer {
  const price = Buffer.alloc(8);
  price.writeDoubleLE(15.5);
  return Buffer.concat([Buffer.from([0x08, 0xd3, 0x03, 0x10, 0x02, 0x19]), price]);
}

const SERVICE: grpc.ServiceDefinition = {
  Count: { path: `/${COUNT_METHOD}`, requestStream: false, responseStream: false, ...identity },
};

/** What the bare client prints. */
export interface BareCallResult {
  calls: number;
  clientMsPerCall: number;
  wallMsPerCall: number;
}

async function serve(port: number): Promise<void> {
  const server = new grpc.Server();
  const answer = countResponse();
  server.addService(SERVICE, {
    Count: (_call: grpc.ServerUnaryCall<Buffer, Buffer>, cb: grpc.sendUnaryData<Buffer>) => cb(null, answer),
  });
  await new Promise<number>((resolve, reject) =>
    server.bindAsync(`127.0.0.1:${port}`, grpc.ServerCredentials.createInsecure(), (e, p) =>
      e ? reject(e) : resolve(p),
    ),
  );
  process.once('SIGTERM', () => server.forceShutdown());
}

async function client(address: string, calls: number): Promise<void> {
  const Client = grpc.makeGenericClientConstructor(SERVICE, 'Inventory');
  const c = new Client(address, grpc.credentials.createInsecure()) as unknown as {
    Count(
      req: Buffer,
      md: grpc.Metadata,
      opts: grpc.CallOptions,
      cb: (e: grpc.ServiceError | null) => void,
    ): void;
  };
  // As the broker calls it: metadata and a deadline on every call.
  const call = () =>
    new Promise<void>((resolve, reject) => {
      const md = new grpc.Metadata();
      md.set('x-correlation-id', '0f0e8d6c-4c1e-4f7a-9d2b-3c5a7e9b1d2f');
      c.Count(COUNT_REQUEST, md, { deadline: Date.now() + 5000 }, (e) => (e ? reject(e) : resolve()));
    });
  for (let i = 0; i < Math.min(500, calls); i++) await call();
  const u0 = process.cpuUsage();
  const t0 = performance.now();
  for (let i = 0; i < calls; i++) await call();
  const wall = performance.now() - t0;
  const u = process.cpuUsage(u0);
  const result: BareCallResult = {
    calls,
    clientMsPerCall: (u.user + u.system) / 1000 / calls,
    wallMsPerCall: wall / calls,
  };
  process.stdout.write(`${JSON.stringify(result)}\n`);
  (c as unknown as grpc.Client).close();
}

if (require.main === module) {
  const [mode, ...args] = process.argv.slice(2);
  const run = mode === 'server' ? serve(Number(args[1])) : client(args[0]!, Number(args[1]));
  run.catch((e: unknown) => {
    process.stderr.write(`upstream-backend: ${(e as Error).message}\n`);
    process.exit(1);
  });
}
