/**
 * The topology's `services` and `operations` as the brokers in Kubernetes see them: the files they name
 * (a gRPC service's descriptor set, a plug-in module given by path) travel in the topology's ConfigMap
 * beside `topology.yaml`, and the sections are rewritten to point there. `dev` commands (`wanas up` only)
 * are dropped: in a cluster the backends are the user's own Deployments and Services.
 */
import type { Topology } from '@wanas/topology';
import * as fs from 'node:fs';
import * as path from 'node:path';

/** A ConfigMap holds at most 1 MiB in all; the topology needs room too. */
const MAX_CONFIGMAP_FILES_BYTES = 900 * 1024;

/** The rewritten sections and the files they name, as ConfigMap entries. */
export interface OperationsFiles {
  services: Record<string, unknown>;
  operations: unknown[];
  /** Text files (modules), by ConfigMap key. */
  data: Record<string, string>;
  /** Binary files (descriptor sets), base64, by ConfigMap key. */
  binaryData: Record<string, string>;
}

/** A ConfigMap key for a file: `[-._a-zA-Z0-9]`, prefixed so two files cannot collide. */
function keyOf(prefix: string, file: string): string {
  return `${prefix}-${path.basename(file).replace(/[^-._a-zA-Z0-9]/g, '_')}`;
}

function read(file: string, what: string): Buffer {
  try {
    return fs.readFileSync(file);
  } catch (e) {
    throw new Error(`${what}: cannot read ${file}: ${(e as Error).message}`);
  }
}

/**
 * Rewrites `services` and `operations` for the ConfigMap mounted at `dir`, reading the files they name
 * (relative to the topology file). A module given by package name stays as it is: the package must be in
 * the image. Throws an Error naming the field when a file cannot be read or the files are too big.
 */
export function operationsFiles(t: Topology, dir: string): OperationsFiles {
  const base = t.file ? path.dirname(t.file) : process.cwd();
  const out: OperationsFiles = { services: {}, operations: [], data: {}, binaryData: {} };
  let bytes = 0;
  for (const [name, svc] of Object.entries(t.services)) {
    const { dev: _dev, ...rest } = svc;
    void _dev;
    if (rest.grpc?.descriptorSet) {
      const key = keyOf(`descriptor-${name}`, rest.grpc.descriptorSet);
      const content = read(
        path.resolve(base, rest.grpc.descriptorSet),
        `services.${name}.grpc.descriptorSet`,
      );
      bytes += content.length;
      out.binaryData[key] = content.toString('base64');
      out.services[name] = { ...rest, grpc: { ...rest.grpc, descriptorSet: `${dir}/${key}` } };
    } else out.services[name] = rest;
  }
  t.operations.forEach((op, i) => {
    const isPath = 'module' in op && (op.module.startsWith('.') || path.isAbsolute(op.module));
    if (!isPath) {
      out.operations.push(op);
      return;
    }
    const key = keyOf(`module-${i}`, op.module);
    const content = read(path.resolve(base, op.module), `operations[${i}].module`);
    bytes += content.length;
    out.data[key] = content.toString('utf8');
    out.operations.push({ module: `${dir}/${key}` });
  });
  if (bytes > MAX_CONFIGMAP_FILES_BYTES)
    throw new Error(
      `the descriptor sets and modules come to ${bytes} bytes, more than a ConfigMap holds beside the topology (${MAX_CONFIGMAP_FILES_BYTES}); ship them in an image built FROM the wanas image instead`,
    );
  return out;
}
