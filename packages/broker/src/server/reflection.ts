import { fromBinary, toBinary } from '@bufbuild/protobuf';
import { FileDescriptorProtoSchema, FileDescriptorSetSchema } from '@bufbuild/protobuf/wkt';
import type * as grpc from '@grpc/grpc-js';
import { ReflectionService } from '@grpc/reflection';
import { readDescriptorSets } from '@wanas/proto';

/**
 * Adds gRPC server reflection (v1 and v1alpha) for the wanas.v1 services and grpc.health.v1, so
 * grpcurl and buf curl need no .proto file.
 *
 * @grpc/reflection is fed the exact FileDescriptorProtos that `buf build` wrote (well-known types
 * included, under their canonical file names), not proto-loader's re-derived descriptors: with the
 * latter, clients can list the services but every call fails with "failed to find service ... in
 * schema" (grpc-node #2958; protobufjs renames files, e.g. health.proto → grpc_health_v1.proto, so
 * imports do not resolve). The end-to-end tests call Aggregate and Health/Check through `buf curl`.
 */
export function addReflection(server: grpc.Server): void {
  const fileDescriptorProtos = readDescriptorSets().flatMap((bytes) =>
    fromBinary(FileDescriptorSetSchema, bytes).file.map((f) => toBinary(FileDescriptorProtoSchema, f)),
  );
  new ReflectionService({ all: { fileDescriptorProtos } } as never).addToServer(server);
}
