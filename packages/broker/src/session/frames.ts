/**
 * The frames of a federation session on the wire: an answer is encoded once; a large one goes in pieces
 * (SessionPart) that the other side joins again, so that the small answers beside it are not held up.
 */
import { Metadata, status, type ServiceError } from '@grpc/grpc-js';
import { SessionAnswer, codeName } from '@wanas/proto';

/** Largest piece of an answer sent in one frame, bytes: an answer larger than this goes in pieces. */
export const PART_BYTES = 64 * 1024;

/**
 * The encoded frames that carry `answer`: one frame, or, when its encoding is larger than `partBytes`,
 * pieces of at most `partBytes` (each its own SessionAnswer frame of the same id, the last marked).
 */
export function answerFrames(answer: SessionAnswer, partBytes = PART_BYTES): Buffer[] {
  const whole = asBuffer(SessionAnswer.encode(answer).finish());
  if (whole.length <= partBytes) return [whole];
  const frames: Buffer[] = [];
  for (let at = 0; at < whole.length; at += partBytes) {
    const data = whole.subarray(at, Math.min(at + partBytes, whole.length));
    const last = at + partBytes >= whole.length;
    const part = SessionAnswer.encode({ id: answer.id, answer: { $case: 'part', part: { data, last } } });
    frames.push(asBuffer(part.finish()));
  }
  return frames;
}

/** The same bytes as a Buffer, not copied. */
const asBuffer = (b: Uint8Array): Buffer => Buffer.from(b.buffer, b.byteOffset, b.length);

/** Joins the pieces of answers sent in parts, per request id. */
export class PartJoiner {
  private readonly pieces = new Map<number, Uint8Array[]>();

  /** Takes one piece; returns the whole answer once its last piece came, else undefined. */
  add(id: number, data: Uint8Array, last: boolean): SessionAnswer | undefined {
    let got = this.pieces.get(id);
    if (!got) this.pieces.set(id, (got = []));
    got.push(data);
    if (!last) return undefined;
    this.pieces.delete(id);
    return SessionAnswer.decode(Buffer.concat(got));
  }

  /** Forgets the pieces of a request that ended another way (cancelled, timed out). */
  drop(id: number): void {
    this.pieces.delete(id);
  }
}

/** The error a request of a session fails with: shaped as grpc-js's, so callers cannot tell it from a call's. */
export function sessionError(code: status, details: string, statusDetails?: Uint8Array): ServiceError {
  const metadata = new Metadata();
  if (statusDetails?.length) metadata.set('grpc-status-details-bin', Buffer.from(statusDetails));
  return Object.assign(new Error(`${code} ${codeName(code)}: ${details}`), { code, details, metadata });
}
