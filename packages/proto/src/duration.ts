import type { Duration } from './gen/google/protobuf/duration';

/** Converts milliseconds to a `google.protobuf.Duration` (negative values keep their sign). */
export function msToDuration(ms: number): Duration {
  const seconds = Math.trunc(ms / 1000);
  const nanos = Math.round((ms - seconds * 1000) * 1e6);
  return { seconds, nanos };
}

/** Converts a `google.protobuf.Duration` to milliseconds; `undefined` when the field is unset. */
export function durationToMs(d: Duration | undefined): number | undefined {
  if (!d) return undefined;
  return d.seconds * 1000 + d.nanos / 1e6;
}
