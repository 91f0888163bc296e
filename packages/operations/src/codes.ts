/**
 * gRPC status codes by name, without depending on a gRPC library: an operation's errors and `nextPodOn`
 * use them. The numbers are gRPC's (https://grpc.github.io/grpc/core/md_doc_statuscodes.html).
 */
export const Code = {
  OK: 0,
  CANCELLED: 1,
  UNKNOWN: 2,
  INVALID_ARGUMENT: 3,
  DEADLINE_EXCEEDED: 4,
  NOT_FOUND: 5,
  ALREADY_EXISTS: 6,
  PERMISSION_DENIED: 7,
  RESOURCE_EXHAUSTED: 8,
  FAILED_PRECONDITION: 9,
  ABORTED: 10,
  OUT_OF_RANGE: 11,
  UNIMPLEMENTED: 12,
  INTERNAL: 13,
  UNAVAILABLE: 14,
  DATA_LOSS: 15,
  UNAUTHENTICATED: 16,
} as const;

/** A gRPC status code's name, e.g. `RESOURCE_EXHAUSTED`. */
export type CodeName = keyof typeof Code;

/** The number of a code name; undefined for a name gRPC does not have. */
export function codeOf(name: string): number | undefined {
  return Object.prototype.hasOwnProperty.call(Code, name) ? Code[name as CodeName] : undefined;
}

/** The name of a code number, e.g. 14 → `UNAVAILABLE`. */
export function nameOfCode(code: number): string {
  for (const [name, n] of Object.entries(Code)) if (n === code) return name;
  return `CODE_${code}`;
}
