/**
 * The topology's `services` (backends every pod runs) and `operations` (what clients call: a method of a
 * service with a reducer, or a plug-in module) sections, and the checks that tie them to the pods'
 * `services` addresses. topology-schema.ts composes them into the whole file's schema.
 */
import { z } from 'zod';

/** Service names: like the topology's other names. */
const SERVICE_NAME = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/;
/** A gRPC method: `package.Service/Method`. */
export const GRPC_METHOD = /^([A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*)\/([A-Za-z_][A-Za-z0-9_]*)$/;
/** An HTTP method: `VERB /path` (path under the pod's base URL). */
export const HTTP_METHOD = /^(GET|POST|PUT|PATCH|DELETE) (\/[A-Za-z0-9._~!$&'()*+,;=:@%/-]*)$/;
/** A pod's gRPC backend: `host:port` or `dns:///name:port`. */
const GRPC_ADDRESS = /^(dns:\/\/\/)?(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+):([0-9]{1,5})$/;
/** Operation names: dotted lower-case words (the SDK's rule). */
const OPERATION_NAME = /^[a-z][a-z0-9_-]*(\.[a-z][a-z0-9_-]*)*$/;
/** A dotted path to a field of a pod's result, e.g. `total` or `stats.total`. */
const FIELD_PATH = /^[A-Za-z_$][A-Za-z0-9_$]*(\.[A-Za-z_$][A-Za-z0-9_$]*)*$/;
/** gRPC status names an operation may move a MODE_FIRST search on. */
const CODE_NAMES = [
  'CANCELLED',
  'UNKNOWN',
  'INVALID_ARGUMENT',
  'DEADLINE_EXCEEDED',
  'NOT_FOUND',
  'ALREADY_EXISTS',
  'PERMISSION_DENIED',
  'RESOURCE_EXHAUSTED',
  'FAILED_PRECONDITION',
  'ABORTED',
  'OUT_OF_RANGE',
  'UNIMPLEMENTED',
  'INTERNAL',
  'UNAVAILABLE',
  'DATA_LOSS',
  'UNAUTHENTICATED',
] as const;

/** Default calls one broker makes at once to one service of its pod; more are shed (RESOURCE_EXHAUSTED). */
export const DEFAULT_SERVICE_MAX_IN_FLIGHT = 64;

const fieldPath = z
  .string()
  .regex(FIELD_PATH, 'must be a field name or a dotted path, e.g. "total" or "stats.total"');
const fieldName = z.string().regex(/^[A-Za-z_][A-Za-z0-9_]*$/, 'must be a field name, e.g. "items"');
const limit = z.number().int('must be a whole number').min(1).max(100_000);

/** A backend every pod runs: gRPC (schema from a descriptor set or server reflection) or JSON over HTTP. */
export const serviceSchema = z
  .strictObject({
    grpc: z
      .strictObject({
        /** A FileDescriptorSet (`buf build -o`, `protoc --descriptor_set_out --include_imports`), relative to the topology file; unset: server reflection. */
        descriptorSet: z.string().min(1).optional(),
        /** TLS to the backend (files relative to the topology file): `caFile` (default: the system's roots), and a client certificate for mTLS. */
        tls: z
          .strictObject({
            caFile: z.string().min(1).optional(),
            certFile: z.string().min(1).optional(),
            keyFile: z.string().min(1).optional(),
          })
          .superRefine((t, ctx) => {
            if (!t.certFile !== !t.keyFile)
              ctx.addIssue({
                code: 'custom',
                path: [],
                message: 'certFile and keyFile go together (a client certificate and its key)',
              });
          })
          .optional(),
      })
      .optional(),
    http: z.strictObject({}).optional(),
    /** Calls one broker makes at once to this service of its pod; more answer RESOURCE_EXHAUSTED at once. */
    maxInFlight: z.number().int().min(1).max(100_000).default(DEFAULT_SERVICE_MAX_IN_FLIGHT),
    /** `wanas up` only: the command that starts this backend for a pod ({port}, {site}, {pod} filled in). */
    dev: z.string().min(1).optional(),
  })
  .superRefine((s, ctx) => {
    if ((s.grpc ? 1 : 0) + (s.http ? 1 : 0) !== 1)
      ctx.addIssue({ code: 'custom', path: [], message: 'needs exactly one of grpc: {...} or http: {}' });
  });

/** How a configured operation's pod results become one: exactly one reducer. */
export const reduceSchema = z
  .strictObject({
    sum: fieldPath.optional(),
    min: fieldPath.optional(),
    max: fieldPath.optional(),
    count: z.literal(true).optional(),
    concat: z.union([fieldPath, z.strictObject({ field: fieldPath, limit: limit.optional() })]).optional(),
    mergeSorted: z
      .strictObject({
        field: fieldPath,
        by: fieldPath,
        order: z.enum(['asc', 'desc']).default('asc'),
        limit: limit.optional(),
      })
      .optional(),
  })
  .superRefine((r, ctx) => {
    const set = Object.entries(r).filter(([, v]) => v !== undefined);
    if (set.length !== 1)
      ctx.addIssue({
        code: 'custom',
        path: [],
        message: `needs exactly one of sum, min, max, count, concat, mergeSorted (got ${set.length ? set.map(([k]) => k).join(', ') : 'none'})`,
      });
  });

/** An operation that calls a method of a configured service. */
const configuredOperationSchema = z
  .strictObject({
    name: z.string().regex(OPERATION_NAME, 'must be dotted lower-case words, e.g. "inventory.count"'),
    service: z.string().min(1),
    /** gRPC: `package.Service/Method` (unary); HTTP: `VERB /path`. */
    method: z.string().min(1),
    description: z.string().max(500).optional(),
    /** False for a write: it needs an idempotency key and reaches the backend once per key per pod. */
    idempotent: z.boolean().default(true),
    reduce: reduceSchema.optional(),
    /** The backend codes that send a MODE_FIRST search on to the next pod. */
    nextPodOn: z.array(z.enum(CODE_NAMES)).max(16).default([]),
    /**
     * A listing (page_size, page_token): `items` is the result field holding the list, `key` the item field
     * that orders it (a string, unique in a pod); the broker sets the request's `after` field (items from this
     * key on, inclusive; "" = from the start) and `limit` field (at most this many; 0 = all).
     */
    page: z
      .strictObject({
        items: fieldName,
        key: fieldName,
        after: fieldName.default('after'),
        limit: fieldName.default('limit'),
      })
      .optional(),
    /**
     * A whole answer may be served again from the entry's results cache for this long at most: `500ms`,
     * `2s`, `1m`, or ms as a number (at most an hour). The broker reads it with the SDK's `durationMs`.
     */
    cache: z
      .strictObject({
        maxAge: z.union([
          z.number().positive().max(3_600_000),
          z
            .string()
            .regex(
              /^\d+(\.\d+)?(ms|s|m)$/,
              'must be a duration such as "500ms", "2s" or "1m", or ms as a number',
            ),
        ]),
      })
      .optional(),
  })
  .superRefine((o, ctx) => {
    if (o.cache && !o.idempotent)
      ctx.addIssue({
        code: 'custom',
        path: ['cache'],
        message: 'a write (idempotent: false) is never cached',
      });
  });

/** Plug-in operations: a module (path relative to the topology file, or a package name). */
const moduleEntrySchema = z.strictObject({ module: z.string().min(1) });

/** One entry of `operations`: a `module:` entry, or an operation calling a service. */
export const operationEntrySchema = z.unknown().transform((v, ctx) => {
  const schema = v && typeof v === 'object' && 'module' in v ? moduleEntrySchema : configuredOperationSchema;
  const r = schema.safeParse(v);
  if (r.success) return r.data as ConfiguredOperationDoc | ModuleEntryDoc;
  for (const issue of r.error.issues) ctx.addIssue({ ...issue, code: 'custom', path: issue.path });
  return z.NEVER;
});

/** A configured operation, as written (defaults filled in). */
export type ConfiguredOperationDoc = z.infer<typeof configuredOperationSchema>;
/** A `module:` entry. */
export type ModuleEntryDoc = z.infer<typeof moduleEntrySchema>;
/** A service, as written (defaults filled in). */
export type ServiceDoc = z.infer<typeof serviceSchema>;
/** A reducer, as written. */
export type ReduceDoc = z.infer<typeof reduceSchema>;

/** What the cross-checks read of the whole document. */
interface ServicesDoc {
  services: Record<string, ServiceDoc>;
  operations: (ConfiguredOperationDoc | ModuleEntryDoc)[];
  sites: { name: string; pods: { name: string; services?: Record<string, string> | undefined }[] }[];
}

/**
 * The checks that span sections: service names, each operation's service and method form, unique names,
 * and every pod's address for every service an operation calls (in the service's form).
 */
export function checkServices(t: ServicesDoc, ctx: z.RefinementCtx): void {
  const issue = (path: (string | number)[], message: string) =>
    ctx.addIssue({ code: 'custom', path, message });
  for (const name of Object.keys(t.services)) {
    if (!SERVICE_NAME.test(name))
      issue(['services', name], `service name must be lower-case letters, digits and '-', e.g. "inventory"`);
  }
  const used = new Set<string>();
  const names = new Set<string>();
  t.operations.forEach((op, i) => {
    if ('module' in op) return;
    if (names.has(op.name)) issue(['operations', i, 'name'], `duplicate operation name "${op.name}"`);
    names.add(op.name);
    const svc = t.services[op.service];
    if (!svc) {
      const known = Object.keys(t.services);
      issue(
        ['operations', i, 'service'],
        `unknown service "${op.service}" (${known.length ? `known: ${known.join(', ')}` : 'the topology has no services section'})`,
      );
      return;
    }
    used.add(op.service);
    if (op.page && !op.idempotent)
      issue(['operations', i, 'page'], 'a listing reads: only an idempotent operation pages');
    if (op.page && op.reduce)
      issue(
        ['operations', i, 'reduce'],
        "a listing's reduction is its merged page: leave reduce out with page",
      );
    if (svc.grpc && !GRPC_METHOD.test(op.method))
      issue(
        ['operations', i, 'method'],
        `a gRPC method is "package.Service/Method", e.g. "acme.inventory.v1.Inventory/Count"`,
      );
    if (svc.http && !HTTP_METHOD.test(op.method))
      issue(
        ['operations', i, 'method'],
        `an HTTP method is "VERB /path" (GET, POST, PUT, PATCH, DELETE), e.g. "POST /v1/search"`,
      );
  });
  t.sites.forEach((site, si) =>
    site.pods.forEach((pod, pi) => {
      const at = ['sites', si, 'pods', pi, 'services'];
      for (const [svcName, address] of Object.entries(pod.services ?? {})) {
        const svc = t.services[svcName];
        if (!svc) issue([...at, svcName], `unknown service "${svcName}" (not in the services section)`);
        else if (svc.grpc && !GRPC_ADDRESS.test(address))
          issue(
            [...at, svcName],
            `a gRPC backend is "host:port" or "dns:///name:port", e.g. "127.0.0.1:19101"`,
          );
        else if (svc.http && !isHttpUrl(address))
          issue([...at, svcName], `an HTTP backend is a base URL, e.g. "http://127.0.0.1:19201"`);
      }
      for (const svcName of used) {
        if (!pod.services?.[svcName])
          issue(
            at,
            `pod ${site.name}/${pod.name} needs the address of service "${svcName}" (an operation calls it)`,
          );
      }
    }),
  );
}

function isHttpUrl(s: string): boolean {
  try {
    const u = new URL(s);
    return (u.protocol === 'http:' || u.protocol === 'https:') && !u.search && !u.hash;
  } catch {
    return false;
  }
}
