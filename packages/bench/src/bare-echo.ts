/**
 * The bare grpc-js cost the `cpu` part compares wanas with: a unary echo of raw bytes (no protobuf, no
 * middleware) between two Node processes. `node bare-echo.js server` listens on 127.0.0.1 (port on
 * stdout) and answers `Cpu` with its own CPU time; `node bare-echo.js client ADDRESS CALLS BYTES` warms up,
 * makes CALLS sequential calls of BYTES bytes, and prints one JSON line: both processes' CPU per call.
 */
import * as grpc from '@grpc/grpc-js';

/** Raw bytes in and out: no (de)serialization cost in the bare yardsticks. */
export const identity = {
  requestSerialize: (b: Buffer) => b,
  requestDeserialize: (b: Buffer) => b,
  responseSerialize: (b: Buffer) => b,
  responseDeserialize: (b: Buffer) => b,
};
const SERVICE: grpc.ServiceDefinition = {
  Echo: { path: '/bare.Bare/Echo', requestStream: false, responseStream: false, ...identity },
  Cpu: { path: '/bare.Bare/Cpu', requestStream: false, responseStream: false, ...identity },
};

/** This process's CPU (user + system) so far, µs. */
function cpuMicros(): number {
  const u = process.cpuUsage();
  return u.user + u.system;
}

/** What the client prints. */
export interface BareEchoResult {
  calls: number;
  bytes: number;
  serverMsPerCall: number;
  clientMsPerCall: number;
  wallMsPerCall: number;
}

async function serve(): Promise<void> {
  const server = new grpc.Server();
  server.addService(SERVICE, {
    Echo: (call: grpc.ServerUnaryCall<Buffer, Buffer>, cb: grpc.sendUnaryData<Buffer>) =>
      cb(null, call.request),
    Cpu: (_call: grpc.ServerUnaryCall<Buffer, Buffer>, cb: grpc.sendUnaryData<Buffer>) =>
      cb(null, Buffer.from(String(cpuMicros()))),
  });
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (e, p) =>
      e ? reject(e) : resolve(p),
    ),
  );
  process.stdout.write(`${port}\n`);
  process.once('SIGTERM', () => server.forceShutdown());
}

async function client(address: string, calls: number, bytes: number): Promise<void> {
  const Client = grpc.makeGenericClientConstructor(SERVICE, 'Bare');
  const c = new Client(address, grpc.credentials.createInsecure()) as unknown as Record<
    'Echo' | 'Cpu',
    (req: Buffer, cb: (e: grpc.ServiceError | null, r?: Buffer) => void) => void
  >;
  const call = (method: 'Echo' | 'Cpu', req: Buffer) =>
    new Promise<Buffer>((resolve, reject) => c[method](req, (e, r) => (e ? reject(e) : resolve(r!))));
  const payload = Buffer.alloc(bytes, 0x61);
  for (let i = 0; i < Math.min(500, calls); i++) await call('Echo', payload);
  const serverBefore = Number((await call('Cpu', Buffer.alloc(0))).toString());
  const clientBefore = cpuMicros();
  const t0 = performance.now();
  for (let i = 0; i < calls; i++) await call('Echo', payload);
  const wall = performance.now() - t0;
  const clientAfter = cpuMicros();
  const serverAfter = Number((await call('Cpu', Buffer.alloc(0))).toString());
  const result: BareEchoResult = {
    calls,
    bytes,
    serverMsPerCall: (serverAfter - serverBefore) / 1000 / calls,
    clientMsPerCall: (clientAfter - clientBefore) / 1000 / calls,
    wallMsPerCall: wall / calls,
  };
  process.stdout.write(`${JSON.stringify(result)}\n`);
  (c as unknown as grpc.Client).close();
}

if (require.main === module) {
  const [mode, ...args] = process.argv.slice(2);
  const run = mode === 'server' ? serve() : client(args[0]!, Number(args[1]), Number(args[2]));
  run.catch((e: unknown) => {
    process.stderr.write(`bare-echo: ${(e as Error).message}\n`);
    process.exit(1);
  });
}
