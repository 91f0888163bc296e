/**
 * The topology's load settings (zod): `settings.admission` (how a broker admits work by measured delay) and
 * the top-level `clients:` (weights and hard quotas per client identity). See the README's "Overload".
 */
import { z } from 'zod';

/** Client identities: a certificate CN, `token:<name>`, or an `x-wanas-client` value in insecure mode. */
const CLIENT_NAME = /^[A-Za-z0-9._:@-]{1,128}$/;

/** `settings.admission`: adaptive admission at every hop (the fixed in-flight limits stay as hard caps). */
export const admissionSchema = z
  .strictObject({
    /**
     * Admit by a limit that follows measured queueing delay (default on). Off: only the fixed in-flight
     * limits refuse work, as before.
     */
    adaptive: z.boolean().default(true),
    /**
     * Queueing delay a broker tolerates before it lowers its limit, ms: how late its event loop may run
     * (a standing queue of work, CoDel's target). 10 ms: on a machine short of cores, the OS scheduler
     * alone makes a loop a few ms late; 5 ms shed work a 2-core bench could still do.
     */
    targetDelayMs: z.number().int().min(1).max(1000).default(10),
    /** Latency of admitted Aggregates may grow to this many times its unloaded level before the limit falls. */
    latencyTolerance: z.number().min(1.1).max(10).default(2),
    /**
     * Pods asked by Aggregates in flight at first, before anything is measured, and the most the limit
     * relaxes to while nothing waits; within it, an unused limit stays within twice the most in flight in
     * the last ~10 s (a burst from a quiet broker is not all admitted at once).
     */
    initialPods: z.number().int().min(1).max(1_000_000).default(512),
    /** The limit never falls below this many pods in flight (a lone large Aggregate is always admitted). */
    minPods: z.number().int().min(1).max(1_000_000).default(16),
  })
  .prefault({});

/** One client identity's weight and hard quotas. */
const clientSchema = z.strictObject({
  /** The identity: certificate CN, `token:<name>`, or (insecure mode, untrusted) the `x-wanas-client` header. */
  name: z.string().regex(CLIENT_NAME, 'must be 1-128 letters, digits and . _ : @ -'),
  /** Its share of a busy broker relative to other clients (default 1, as every unlisted client). */
  weight: z.number().min(0.01).max(1000).default(1),
  /** Aggregates it may have in flight at one broker, at most. */
  maxInFlight: z.number().int().min(1).max(1_000_000).optional(),
  /** Aggregates per second it may start at one broker, at most (a token bucket of one second's worth). */
  ratePerSecond: z.number().min(0.01).max(1_000_000).optional(),
});

/** The top-level `clients:` list (unique names). */
export const clientsSchema = z
  .array(clientSchema)
  .max(10_000)
  .default([])
  .superRefine((list, ctx) => {
    const seen = new Set<string>();
    list.forEach((c, i) => {
      if (seen.has(c.name))
        ctx.addIssue({ code: 'custom', path: [i, 'name'], message: `duplicate client "${c.name}"` });
      seen.add(c.name);
    });
  });

/** A broker's admission settings, as parsed. */
export type AdmissionSettings = z.infer<typeof admissionSchema>;
/** One configured client, as parsed. */
export type ClientSettings = z.infer<typeof clientsSchema>[number];
