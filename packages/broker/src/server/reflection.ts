import * as grpc from '@grpc/grpc-js';
import { EventEmitter } from 'node:events';
import { readDescriptorSets } from '@wanas/proto';

/** The reflection methods served (v1 and v1alpha: grpcurl and buf curl ask either). */
export const REFLECTION_PATHS = [
  '/grpc.reflection.v1.ServerReflection/ServerReflectionInfo',
  '/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo',
] as const;

/** One reflection method as @grpc/reflection registers it: its handler and its message codec. */
export interface ReflectionMethod {
  handler: (call: EventEmitter) => void;
  deserialize: (bytes: Buffer) => unknown;
  serialize: (message: unknown) => Buffer;
}

/**
 * Adds gRPC server reflection (v1 and v1alpha) for the wanas.v1 services and grpc.health.v1, so
 * grpcurl and buf curl need no .proto file.
 *
 * @grpc/reflection is fed the exact FileDescriptorProtos that `buf build` wrote (well-known types
 * included, under their canonical file names), not proto-loader's re-derived descriptors: with the
 * latter, clients can list the services but every call fails with "failed to find service ... in
 * schema" (grpc-node #2958; protobufjs renames files, e.g. health.proto → grpc_health_v1.proto, so
 * imports do not resolve). The end-to-end tests call Aggregate and Health/Check through `buf curl`.
 *
 * The service is built on its first call, not at start-up: loading @grpc/reflection and indexing the
 * descriptors cost about 135 ms of a broker's 0.8 s start (--cpu-prof), and most brokers are never asked.
 * Until then its two methods are registered as bytes; the first call builds the service and every call
 * is handed to it through {@link asMessages}.
 */
export function addReflection(
  server: grpc.Server,
  build: () => Map<string, ReflectionMethod> = buildReflection,
): void {
  let methods: Map<string, ReflectionMethod> | undefined;
  for (const path of REFLECTION_PATHS)
    server.register<Buffer, Buffer>(
      path,
      ((call: grpc.ServerDuplexStream<Buffer, Buffer>) => {
        try {
          methods ??= build();
        } catch (e) {
          // Built at start-up, this failure stopped the broker; built on a call, it ends that call (and is
          // tried again on the next), while the broker serves on.
          return endWith(
            call,
            grpc.status.INTERNAL,
            `reflection could not be built: ${(e as Error).message}`,
          );
        }
        const m = methods.get(path)!;
        m.handler(asMessages(call, m));
      }) as grpc.handleBidiStreamingCall<Buffer, Buffer>,
      (b) => b,
      (b) => b,
      'bidi',
    );
}

/** Builds @grpc/reflection's service and reads back what it would register, by method path. */
function buildReflection(): Map<string, ReflectionMethod> {
  /* eslint-disable @typescript-eslint/no-require-imports -- loaded on the first reflection call (see above) */
  const { fromBinary, toBinary } = require('@bufbuild/protobuf') as typeof import('@bufbuild/protobuf');
  const { FileDescriptorProtoSchema, FileDescriptorSetSchema } =
    require('@bufbuild/protobuf/wkt') as typeof import('@bufbuild/protobuf/wkt');
  const { ReflectionService } = require('@grpc/reflection') as typeof import('@grpc/reflection');
  /* eslint-enable @typescript-eslint/no-require-imports */
  const fileDescriptorProtos = readDescriptorSets().flatMap((bytes) =>
    fromBinary(FileDescriptorSetSchema, bytes).file.map((f) => toBinary(FileDescriptorProtoSchema, f)),
  );
  const methods = new Map<string, ReflectionMethod>();
  const recorder = {
    addService(service: grpc.ServiceDefinition, impl: Record<string, ReflectionMethod['handler']>) {
      for (const [name, def] of Object.entries(service))
        methods.set(def.path, {
          handler: impl[name]!,
          deserialize: def.requestDeserialize,
          serialize: def.responseSerialize as (m: unknown) => Buffer,
        });
    },
  };
  new ReflectionService({ all: { fileDescriptorProtos } } as never).addToServer(recorder as never);
  return methods;
}

/**
 * A bytes call as the message stream @grpc/reflection's handler reads and writes (it listens for `data`
 * and `end`, and calls `write` and `end`).
 */
function asMessages(call: grpc.ServerDuplexStream<Buffer, Buffer>, m: ReflectionMethod): EventEmitter {
  const messages = Object.assign(new EventEmitter(), {
    write: (message: unknown) => call.write(m.serialize(message)),
    end: () => call.end(),
  });
  let failed = false;
  call.on('data', (bytes: Buffer) => {
    if (failed) return;
    let message: unknown;
    try {
      message = m.deserialize(bytes);
    } catch (e) {
      failed = true;
      endWith(
        call,
        grpc.status.INVALID_ARGUMENT,
        `the reflection request could not be decoded: ${(e as Error).message}`,
      );
      return;
    }
    messages.emit('data', message);
  });
  call.on('end', () => {
    if (!failed) messages.emit('end');
  });
  // A caller that goes away ends the stream; there is nothing to clean up.
  call.on('error', () => undefined);
  return messages;
}

/** Ends a server stream with a status: grpc-js sends the status of an error emitted on it (destroy ends nothing). */
function endWith(call: grpc.ServerDuplexStream<Buffer, Buffer>, code: grpc.status, details: string): void {
  call.emit('error', Object.assign(new Error(details), { code, details }));
}
