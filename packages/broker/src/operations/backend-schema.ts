/**
 * The request and response types of a configured gRPC operation: read from a FileDescriptorSet file, or
 * from the backend's own server reflection (grpc.reflection.v1, then v1alpha), and turned into a
 * protobuf-es registry that encodes proto3 JSON params and decodes responses to proto3 JSON.
 */
import { createFileRegistry, fromBinary, type DescMethod, type FileRegistry } from '@bufbuild/protobuf';
import {
  FileDescriptorProtoSchema,
  FileDescriptorSetSchema,
  type FileDescriptorProto,
} from '@bufbuild/protobuf/wkt';
import { create } from '@bufbuild/protobuf';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import * as fs from 'node:fs';
import * as path from 'node:path';

/** Most files one reflection walk fetches (a method's file and its imports): a bound on a broken server. */
const MAX_REFLECTED_FILES = 256;

/** A unary method and the registry its types (and those they refer to) live in. */
export interface MethodSchema {
  method: DescMethod;
  registry: FileRegistry;
}

/** Finds `pkg.Service/Method` in a registry; an Error naming what is missing. */
export function methodIn(registry: FileRegistry, fullMethod: string, where: string): MethodSchema {
  const slash = fullMethod.indexOf('/');
  const serviceName = fullMethod.slice(0, slash);
  const methodName = fullMethod.slice(slash + 1);
  const service = registry.getService(serviceName);
  if (!service) throw new Error(`${where} has no service ${serviceName}`);
  const method = service.methods.find((m) => m.name === methodName);
  if (!method) {
    const known = service.methods.map((m) => m.name).join(', ');
    throw new Error(`service ${serviceName} (${where}) has no method ${methodName} (it has: ${known})`);
  }
  if (method.methodKind !== 'unary')
    throw new Error(`${fullMethod} is a ${method.methodKind} method; only unary methods can be operations`);
  return { method, registry };
}

/** Reads a FileDescriptorSet file (binary, as `buf build -o x.binpb` or `protoc --descriptor_set_out` write). */
export function registryFromFile(file: string): FileRegistry {
  let bytes: Buffer;
  try {
    bytes = fs.readFileSync(file);
  } catch (e) {
    throw new Error(`cannot read descriptor set ${file}: ${(e as Error).message}`);
  }
  try {
    return createFileRegistry(fromBinary(FileDescriptorSetSchema, bytes));
  } catch (e) {
    throw new Error(
      `${file} is not a complete FileDescriptorSet (build it with imports included): ${(e as Error).message}`,
    );
  }
}

/** The reflection protos' location in @grpc/reflection. */
function reflectionProto(version: 'v1' | 'v1alpha'): string {
  const root = path.dirname(require.resolve('@grpc/reflection/package.json'));
  return path.join(root, 'build/proto/grpc/reflection', version, 'reflection.proto');
}

type ReflectionClient = grpc.Client & {
  ServerReflectionInfo(
    md: grpc.Metadata,
    opts: grpc.CallOptions,
  ): grpc.ClientDuplexStream<object, ReflectionResponse>;
};
interface ReflectionResponse {
  fileDescriptorResponse?: { fileDescriptorProto: Buffer[] };
  errorResponse?: { errorCode: number; errorMessage: string };
}

const reflectionClients = new Map<string, grpc.ServiceClientConstructor>();
function reflectionClientClass(version: 'v1' | 'v1alpha'): grpc.ServiceClientConstructor {
  let ctor = reflectionClients.get(version);
  if (!ctor) {
    const def = protoLoader.loadSync(reflectionProto(version), { longs: String, defaults: false });
    const pkg = grpc.loadPackageDefinition(def) as unknown as {
      grpc: { reflection: Record<string, { ServerReflection: grpc.ServiceClientConstructor }> };
    };
    ctor = pkg.grpc.reflection[version]!.ServerReflection;
    reflectionClients.set(version, ctor);
  }
  return ctor;
}

/**
 * Asks a backend's server reflection for the file that defines `symbol` and every file it imports
 * (v1, then v1alpha when the server lacks v1), within `deadline` (epoch ms).
 */
export async function registryFromReflection(
  address: string,
  symbol: string,
  deadline: number,
  credentials: grpc.ChannelCredentials,
): Promise<FileRegistry> {
  try {
    return await reflect('v1', address, symbol, deadline, credentials);
  } catch (e) {
    if ((e as { code?: number }).code !== grpc.status.UNIMPLEMENTED) throw e;
    return reflect('v1alpha', address, symbol, deadline, credentials);
  }
}

async function reflect(
  version: 'v1' | 'v1alpha',
  address: string,
  symbol: string,
  deadline: number,
  credentials: grpc.ChannelCredentials,
) {
  const Client = reflectionClientClass(version);
  const client = new Client(address, credentials) as unknown as ReflectionClient;
  const files = new Map<string, FileDescriptorProto>();
  try {
    const call = client.ServerReflectionInfo(new grpc.Metadata(), { deadline });
    const ask = async (req: object): Promise<Buffer[]> => {
      const res = await nextResponse(call, req);
      if (res.errorResponse)
        throw Object.assign(new Error(`reflection: ${res.errorResponse.errorMessage}`), {
          code: res.errorResponse.errorCode,
        });
      return res.fileDescriptorResponse?.fileDescriptorProto ?? [];
    };
    const add = (protos: Buffer[]) => {
      for (const b of protos) {
        const f = fromBinary(FileDescriptorProtoSchema, b);
        files.set(f.name, f);
      }
    };
    add(await ask({ fileContainingSymbol: symbol }));
    // Servers differ in whether they send imports along: fetch the missing ones by name.
    for (let missing = missingImports(files); missing.length; missing = missingImports(files)) {
      if (files.size > MAX_REFLECTED_FILES)
        throw new Error(`reflection: more than ${MAX_REFLECTED_FILES} files`);
      for (const name of missing) add(await ask({ fileByFilename: name }));
      for (const name of missing)
        if (!files.has(name)) throw new Error(`reflection: the server did not send ${name}`);
    }
    call.end();
    return createFileRegistry(create(FileDescriptorSetSchema, { file: [...files.values()] }));
  } finally {
    client.close();
  }
}

function missingImports(files: Map<string, FileDescriptorProto>): string[] {
  const missing = new Set<string>();
  for (const f of files.values()) for (const d of f.dependency) if (!files.has(d)) missing.add(d);
  return [...missing];
}

/** Writes one request on the reflection stream and waits for its answer (or the stream's error). */
function nextResponse(
  call: grpc.ClientDuplexStream<object, ReflectionResponse>,
  req: object,
): Promise<ReflectionResponse> {
  return new Promise((resolve, reject) => {
    const cleanup = () => {
      call.off('data', onData);
      call.off('error', onError);
      call.off('end', onEnd);
    };
    const onData = (res: ReflectionResponse) => {
      cleanup();
      resolve(res);
    };
    const onError = (e: Error) => {
      cleanup();
      reject(e);
    };
    const onEnd = () => {
      cleanup();
      reject(new Error('reflection: the server ended the stream'));
    };
    call.on('data', onData);
    call.on('error', onError);
    call.on('end', onEnd);
    call.write(req);
  });
}
