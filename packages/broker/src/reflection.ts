import { fromBinary, toBinary } from '@bufbuild/protobuf';
import { FileDescriptorProtoSchema, FileDescriptorSetSchema } from '@bufbuild/protobuf/wkt';
import type * as grpc from '@grpc/grpc-js';
import { ReflectionService } from '@grpc/reflection';
import { readDescriptorSet } from '@wanas/proto';

/**
 * Adds gRPC server reflection (v1 and v1alpha) for the wanas.v1 services, so grpcurl and buf curl need
 * no .proto file.
 *
 * @grpc/reflection is fed the exact FileDescriptorProtos that `buf build` wrote (well-known types
 * included, under their canonical file names), not proto-loader's re-derived descriptors: with the
 * latter, clients can list the services but calls whose messages use Struct or Duration fail with
 * "failed to find service ... in schema" (grpc-node #2958). The end-to-end tests call Aggregate through
 * `buf curl` to keep this true.
 */
export function addReflection(server: grpc.Server): void {
  const set = fromBinary(FileDescriptorSetSchema, readDescriptorSet());
  const fileDescriptorProtos = set.file.map((f) => toBinary(FileDescriptorProtoSchema, f));
  new ReflectionService({ wanas: { fileDescriptorProtos } } as never).addToServer(server);
}
