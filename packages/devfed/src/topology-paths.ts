/**
 * A topology `up` rewrites (for mTLS, metrics or a private PostgreSQL) is written to its state folder,
 * not beside the user's file: every path in it that was relative to the user's file is made absolute first
 * (data, certificates, descriptor sets, a gRPC backend's TLS files, plug-in modules given by path).
 */
import * as path from 'node:path';

type Doc = Record<string, unknown>;

const abs = (base: string, v: unknown) => (typeof v === 'string' ? path.resolve(base, v) : v);

/** The same document with its file paths absolute (relative ones resolved against `baseDir`). */
export function withAbsolutePaths(doc: Doc, baseDir: string): Doc {
  const out: Doc = structuredClone(doc);
  const settings = (out.settings ?? {}) as Doc;
  settings.dataDir = abs(baseDir, settings.dataDir ?? '.wanas/data');
  if (typeof settings.store === 'string' && settings.store.startsWith('sqlite:'))
    settings.store = `sqlite:${path.resolve(baseDir, settings.store.slice('sqlite:'.length))}`;
  out.settings = settings;
  const security = out.security as Doc | undefined;
  for (const f of ['caFile', 'certFile', 'keyFile'])
    if (security?.[f]) security[f] = abs(baseDir, security[f]);
  for (const svc of Object.values((out.services ?? {}) as Record<string, Doc>)) {
    const grpc = svc.grpc as Doc | undefined;
    if (grpc?.descriptorSet) grpc.descriptorSet = abs(baseDir, grpc.descriptorSet);
    const tls = grpc?.tls as Doc | undefined;
    for (const f of ['caFile', 'certFile', 'keyFile']) if (tls?.[f]) tls[f] = abs(baseDir, tls[f]);
  }
  for (const op of (out.operations ?? []) as Doc[]) {
    const m = op.module;
    if (typeof m === 'string' && (m.startsWith('.') || path.isAbsolute(m)))
      op.module = path.resolve(baseDir, m);
  }
  return out;
}
