import * as fs from 'node:fs';
import * as path from 'node:path';

/** Folder of the committed FileDescriptorSets built by `buf build` (`npm run generate`). */
export const DESCRIPTOR_DIR = path.resolve(__dirname, '../descriptor');

/**
 * The FileDescriptorSets a broker describes through reflection, as bytes: the wanas.v1 contract with
 * every import (the well-known types under their canonical names), and grpc.health.v1.
 */
export function readDescriptorSets(): Buffer[] {
  return ['wanas.binpb', 'health.binpb'].map((f) => fs.readFileSync(path.join(DESCRIPTOR_DIR, f)));
}
