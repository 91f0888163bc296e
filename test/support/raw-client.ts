/** A gRPC client that sends arbitrary bytes as a method's request body (hostile-input tests). */
import * as grpc from '@grpc/grpc-js';

const identity = (b: Buffer) => b;

/** Raw unary calls to one address; `send` resolves with the call's error (null when it succeeded). */
export function rawClient(address: string): {
  send(path: string, bytes: Buffer, deadlineMs?: number): Promise<grpc.ServiceError | null>;
  close(): void;
} {
  const client = new grpc.Client(address, grpc.credentials.createInsecure());
  return {
    send: (path, bytes, deadlineMs = 3000) =>
      new Promise((resolve) =>
        client.makeUnaryRequest(
          path,
          identity,
          identity,
          bytes,
          new grpc.Metadata(),
          { deadline: Date.now() + deadlineMs },
          (e) => resolve(e),
        ),
      ),
    close: () => client.close(),
  };
}
