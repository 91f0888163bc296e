/**
 * A configured gRPC backend of this broker's pod: one channel to its address, the method schemas (from a
 * descriptor set, or read once through the backend's reflection), and unary calls whose params and
 * results are proto3 JSON.
 */
import { fromBinary, fromJson, toBinary, toJson, type FileRegistry } from '@bufbuild/protobuf';
import * as grpc from '@grpc/grpc-js';
import { codeName } from '@wanas/proto';
import type { JsonObject } from '@wanas/operations';
import { BrokerError } from '../errors';
import { backendHeaders, stoppedByUs, type BackendCallContext } from './backend-call';
import { methodIn, registryFromFile, registryFromReflection, type MethodSchema } from './backend-schema';

/** How long a reflection walk may take when no request gives a deadline (start-up), ms. */
const REFLECTION_TIMEOUT_MS = 5000;
/** The grpc-js channel options of a backend channel: a dead backend is noticed in ~keepalive time. */
const CHANNEL_OPTIONS: grpc.ChannelOptions = {
  'grpc.keepalive_time_ms': 10_000,
  'grpc.keepalive_timeout_ms': 2_000,
  'grpc.initial_reconnect_backoff_ms': 200,
  'grpc.max_reconnect_backoff_ms': 2_000,
};

/**
 * Where a backend's schema stands. `file`: read from a descriptor set at start. `unknown`: reflection not
 * asked yet, or its last walk failed (the next call asks again). `reflecting`: a walk is running.
 * `reflected`: known from the backend's reflection.
 */
type SchemaState =
  | { kind: 'file' | 'reflected'; registry: FileRegistry }
  | { kind: 'unknown'; lastError?: string }
  | { kind: 'reflecting'; walk: Promise<FileRegistry> };

/** One service's gRPC backend as this broker calls it. */
export class GrpcBackend {
  private schemaState: SchemaState;
  private client: grpc.Client | undefined;
  private clientAddress = '';

  constructor(
    /** The topology's service name. */
    readonly service: string,
    /** The backend's address in this broker's pod (read per call: a reload may move it). */
    private readonly address: () => string,
    /** An absolute path to a FileDescriptorSet; undefined: server reflection. */
    descriptorSet: string | undefined,
    /** Plaintext (the default: a backend in the pod, on its own network) or TLS. */
    private readonly credentials: grpc.ChannelCredentials = grpc.credentials.createInsecure(),
  ) {
    this.schemaState = descriptorSet
      ? { kind: 'file', registry: registryFromFile(descriptorSet) }
      : { kind: 'unknown' };
  }

  /** The method's schema if known now (a descriptor set, or reflection done): what the entry checks params with. */
  knownMethod(fullMethod: string): MethodSchema | undefined {
    const s = this.schemaState;
    return s.kind === 'file' || s.kind === 'reflected'
      ? methodIn(s.registry, fullMethod, this.where())
      : undefined;
  }

  /** Checks at start that the method is in the descriptor set (an Error naming what is missing). */
  checkMethod(fullMethod: string): void {
    this.knownMethod(fullMethod);
  }

  /** The method's schema, reading the backend's reflection when it is not known yet. */
  async method(fullMethod: string, deadline = Date.now() + REFLECTION_TIMEOUT_MS): Promise<MethodSchema> {
    const known = this.knownMethod(fullMethod);
    if (known) return known;
    if (this.schemaState.kind !== 'reflecting') {
      const symbol = fullMethod.slice(0, fullMethod.indexOf('/'));
      const walk = registryFromReflection(this.address(), symbol, deadline, this.credentials);
      this.schemaState = { kind: 'reflecting', walk };
      walk.then(
        (registry) => (this.schemaState = { kind: 'reflected', registry }),
        (e: unknown) => (this.schemaState = { kind: 'unknown', lastError: (e as Error).message }),
      );
    }
    let registry: FileRegistry;
    try {
      registry = await this.schemaState.walk;
    } catch (e) {
      const code = (e as { code?: number }).code;
      throw new BrokerError(
        code === grpc.status.DEADLINE_EXCEEDED ? code : grpc.status.UNAVAILABLE,
        `${this.where()}: cannot read the schema of ${fullMethod} through server reflection: ${(e as Error).message}`,
      );
    }
    try {
      return methodIn(registry, fullMethod, this.where());
    } catch (e) {
      throw new BrokerError(grpc.status.UNIMPLEMENTED, (e as Error).message);
    }
  }

  /** Calls a unary method: params (proto3 JSON) in, the response as proto3 JSON (defaults included) out. */
  async call(
    fullMethod: string,
    params: JsonObject,
    ctx: BackendCallContext,
    write: boolean,
  ): Promise<JsonObject> {
    const { method, registry } = await this.method(fullMethod, ctx.deadline);
    let request: Uint8Array;
    try {
      request = toBinary(method.input, fromJson(method.input, params as never, { registry }));
    } catch (e) {
      throw new BrokerError(grpc.status.INVALID_ARGUMENT, `params: ${(e as Error).message}`);
    }
    const response = await this.unary(`/${fullMethod}`, request, ctx, write);
    try {
      return toJson(method.output, fromBinary(method.output, response), {
        alwaysEmitImplicit: true,
        registry,
      }) as JsonObject;
    } catch (e) {
      throw new BrokerError(
        grpc.status.INTERNAL,
        `${this.where()}: the answer of ${fullMethod} does not decode as ${method.output.typeName}: ${(e as Error).message}`,
      );
    }
  }

  /** Closes the channel. */
  close(): void {
    this.client?.close();
    this.client = undefined;
  }

  private where(): string {
    return `service ${this.service} at ${this.address()}`;
  }

  /** The channel to the backend's current address (a new one when a reload moved it). */
  private channel(): grpc.Client {
    const address = this.address();
    if (!this.client || this.clientAddress !== address) {
      this.client?.close();
      this.client = new grpc.Client(address, this.credentials, CHANNEL_OPTIONS);
      this.clientAddress = address;
    }
    return this.client;
  }

  private unary(path: string, request: Uint8Array, ctx: BackendCallContext, write: boolean): Promise<Buffer> {
    const md = new grpc.Metadata();
    for (const [k, v] of Object.entries(backendHeaders(ctx, write))) md.set(k, v);
    return new Promise((resolve, reject) => {
      if (ctx.signal.aborted) return reject(stoppedByUs(ctx));
      const onAbort = () => call.cancel();
      const call = this.channel().makeUnaryRequest<Uint8Array, Buffer>(
        path,
        (b) => Buffer.from(b.buffer, b.byteOffset, b.byteLength),
        (b) => b,
        request,
        md,
        { deadline: ctx.deadline },
        (err, res) => {
          ctx.signal.removeEventListener('abort', onAbort);
          if (!err) return resolve(res!);
          reject(this.failure(err, ctx));
        },
      );
      ctx.signal.addEventListener('abort', onAbort, { once: true });
    });
  }

  /** The pod's error for a failed call: ours (cancel, deadline), the transport's, or the backend's own status. */
  private failure(err: grpc.ServiceError, ctx: BackendCallContext): BrokerError {
    if (err.code === grpc.status.CANCELLED && ctx.signal.aborted) return stoppedByUs(ctx);
    if (err.code === grpc.status.DEADLINE_EXCEEDED || err.code === grpc.status.UNAVAILABLE)
      return new BrokerError(err.code, `${this.where()}: ${codeName(err.code)}: ${err.details}`);
    return new BrokerError(err.code, err.details);
  }
}
