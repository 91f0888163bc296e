/**
 * A configured JSON-over-HTTP backend of this broker's pod: `params` is the request body (the query for
 * GET and DELETE), the response body (a JSON object) is the pod's result, and an HTTP status other than
 * 2xx is mapped to a gRPC code as gRPC's own HTTP mapping does.
 */
import { status } from '@grpc/grpc-js';
import type { JsonObject } from '@wanas/operations';
import { BrokerError } from '../errors';
import { backendHeaders, stoppedByUs, type BackendCallContext } from './backend-call';

/** Largest response body read from a backend, bytes (a pod's result must fit in a gRPC message). */
export const MAX_HTTP_BODY_BYTES = 4 * 1024 * 1024;
/** Longest error text kept from a failed response's body, characters. */
const MAX_ERROR_TEXT = 300;

/** HTTP statuses → gRPC codes (gRPC's HTTP mapping); other 4xx: FAILED_PRECONDITION... see {@link codeOfHttp}. */
const HTTP_TO_GRPC: Record<number, number> = {
  400: status.INVALID_ARGUMENT,
  401: status.UNAUTHENTICATED,
  403: status.PERMISSION_DENIED,
  404: status.NOT_FOUND,
  409: status.ABORTED,
  429: status.RESOURCE_EXHAUSTED,
  501: status.UNIMPLEMENTED,
  503: status.UNAVAILABLE,
  504: status.DEADLINE_EXCEEDED,
};

/** The gRPC code of a non-2xx HTTP status: the table, other 5xx INTERNAL, other 4xx FAILED_PRECONDITION, else UNKNOWN. */
export function codeOfHttp(httpStatus: number): number {
  const mapped = HTTP_TO_GRPC[httpStatus];
  if (mapped !== undefined) return mapped;
  if (httpStatus >= 500) return status.INTERNAL;
  if (httpStatus >= 400) return status.FAILED_PRECONDITION;
  return status.UNKNOWN;
}

/** One service's HTTP backend as this broker calls it. */
export class HttpBackend {
  constructor(
    /** The topology's service name. */
    readonly service: string,
    /** The backend's base URL in this broker's pod (read per call: a reload may move it). */
    private readonly baseUrl: () => string,
  ) {}

  /** Calls `VERB /path` with the params; the response body as the pod's result. */
  async call(
    verb: string,
    path: string,
    params: JsonObject,
    ctx: BackendCallContext,
    write: boolean,
  ): Promise<JsonObject> {
    const url = new URL(this.baseUrl().replace(/\/$/, '') + path);
    const hasBody = verb !== 'GET' && verb !== 'DELETE';
    if (!hasBody) {
      for (const [k, v] of Object.entries(params))
        url.searchParams.set(k, typeof v === 'string' ? v : JSON.stringify(v));
    }
    const leftMs = ctx.deadline - Date.now();
    if (leftMs <= 0) throw stoppedByUs(ctx);
    const timeout = AbortSignal.timeout(Math.max(1, Math.floor(leftMs)));
    let res: Response;
    try {
      res = await fetch(url, {
        method: verb,
        headers: {
          accept: 'application/json',
          ...(hasBody ? { 'content-type': 'application/json' } : {}),
          ...backendHeaders(ctx, write),
        },
        body: hasBody ? JSON.stringify(params) : undefined,
        signal: AbortSignal.any([ctx.signal, timeout]),
      });
    } catch (e) {
      if (ctx.signal.aborted || timeout.aborted) throw stoppedByUs(ctx);
      const cause = (e as { cause?: { code?: string; message?: string } }).cause;
      throw new BrokerError(
        status.UNAVAILABLE,
        `service ${this.service} at ${url.origin}: unreachable (${cause?.code ?? cause?.message ?? (e as Error).message})`,
      );
    }
    let text: string;
    try {
      text = await readCapped(res);
    } catch (e) {
      if (ctx.signal.aborted || timeout.aborted) throw stoppedByUs(ctx);
      throw e instanceof BrokerError
        ? e
        : new BrokerError(
            status.UNAVAILABLE,
            `service ${this.service}: the answer broke off: ${(e as Error).message}`,
          );
    }
    if (!res.ok) throw new BrokerError(codeOfHttp(res.status), `HTTP ${res.status}: ${errorText(text)}`);
    let body: unknown;
    try {
      body = JSON.parse(text);
    } catch {
      throw new BrokerError(
        status.INTERNAL,
        `service ${this.service} answered ${verb} ${path} with a body that is not JSON`,
      );
    }
    if (!body || typeof body !== 'object' || Array.isArray(body))
      throw new BrokerError(
        status.INTERNAL,
        `service ${this.service} answered ${verb} ${path} with JSON that is not an object`,
      );
    return body as JsonObject;
  }
}

/** The message of a failed answer: its JSON `message` or `error` field, else its text, cut short. */
function errorText(text: string): string {
  try {
    const j = JSON.parse(text) as { message?: unknown; error?: unknown };
    const m = typeof j.message === 'string' ? j.message : typeof j.error === 'string' ? j.error : undefined;
    if (m) return m.slice(0, MAX_ERROR_TEXT);
  } catch {
    // not JSON: the text itself
  }
  return text.trim().slice(0, MAX_ERROR_TEXT) || '(no body)';
}

/** The body as text, refusing more than {@link MAX_HTTP_BODY_BYTES}. */
async function readCapped(res: Response): Promise<string> {
  if (!res.body) return '';
  const chunks: Uint8Array[] = [];
  let size = 0;
  for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
    size += chunk.byteLength;
    if (size > MAX_HTTP_BODY_BYTES) {
      await res.body.cancel();
      throw new BrokerError(
        status.RESOURCE_EXHAUSTED,
        `the backend's answer is over ${MAX_HTTP_BODY_BYTES} bytes`,
      );
    }
    chunks.push(chunk);
  }
  return Buffer.concat(chunks).toString('utf8');
}
