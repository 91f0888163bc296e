import * as fs from 'node:fs';
import * as path from 'node:path';

/**
 * Path of the contract's FileDescriptorSet, built by `buf build` (`npm run generate`) with every import
 * (the well-known types included), committed beside the generated code.
 */
export const DESCRIPTOR_SET_PATH = path.resolve(__dirname, '../descriptor/wanas.binpb');

/** The contract's FileDescriptorSet, as bytes (what server reflection serves). */
export function readDescriptorSet(): Buffer {
  return fs.readFileSync(DESCRIPTOR_SET_PATH);
}
