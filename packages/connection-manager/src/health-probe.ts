import * as grpc from '@grpc/grpc-js';
import { service as healthService } from 'grpc-health-check';

/** A grpc.health.v1 client on an existing channel (no extra connection). */
export interface HealthProbe {
  /** Resolves true when the peer answers SERVING within `timeoutMs`, false otherwise. */
  check(timeoutMs: number): Promise<boolean>;
  /** Releases the client (the channel belongs to its owner). */
  close(): void;
}

type HealthClient = grpc.Client & {
  check(
    req: { service: string },
    opts: grpc.CallOptions,
    cb: (err: grpc.ServiceError | null, res?: { status: string | number }) => void,
  ): grpc.ClientUnaryCall;
};

const HealthClientCtor = grpc.makeClientConstructor(
  healthService as unknown as grpc.ServiceDefinition,
  'grpc.health.v1.Health',
) as unknown as new (
  address: string,
  creds: grpc.ChannelCredentials,
  opts: grpc.ClientOptions,
) => HealthClient;

/** Creates a probe that asks the overall health ("" service) of the peer behind `channel`. */
export function createHealthProbe(channel: ReturnType<grpc.Client['getChannel']>): HealthProbe {
  const client = new HealthClientCtor('unused', grpc.credentials.createInsecure(), {
    channelOverride: channel,
  });
  return {
    check(timeoutMs: number): Promise<boolean> {
      return new Promise((resolve) => {
        client.check({ service: '' }, { deadline: Date.now() + timeoutMs }, (err, res) => {
          resolve(!err && (res?.status === 'SERVING' || res?.status === 1));
        });
      });
    },
    close(): void {
      // The channel is shared with the owner's client; closing it is the owner's job.
    },
  };
}
