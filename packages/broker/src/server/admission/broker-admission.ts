/**
 * A broker's admission, made from its topology: the {@link Admission} with its settings, caps and clients
 * (following reloads), its metrics, and the gate that admits client calls before they are decoded, with a
 * sampled log line per refusal.
 */
import { status } from '@grpc/grpc-js';
import type { Topology } from '@wanas/topology';
import type { Logger } from 'winston';
import { admissionMetrics } from '../../telemetry/admission-metrics';
import { LogSampler } from '../../telemetry/log-sampler';
import type { BrokerMetrics } from '../../telemetry/metrics';
import type { BrokerSecurity } from '../security';
import { Admission } from './admission';
import { clientGate, type ClientGate } from './client-gate';

const RESOURCE_EXHAUSTED = status.RESOURCE_EXHAUSTED;

/**
 * The broker's admission, its settings read from the topology in force, and the gate that admits client
 * calls with it (see the file's comment).
 */
export function admissionFor(
  topology: () => Topology,
  metrics: BrokerMetrics,
  security: BrokerSecurity,
  log: Logger,
): { admission: Admission; gate: ClientGate } {
  // The metrics read the admission they count for: bound once both exist.
  const counted: { decided?: ReturnType<typeof admissionMetrics> } = {};
  const admission = new Admission({
    settings: () => topology().settings.admission,
    hardCaps: () => ({
      aggregates: topology().settings.maxInFlightAggregates,
      federation: topology().settings.maxInFlightFederation,
    }),
    defaultCost: () => podsOf(topology()),
    clients: topology().clients,
    onDecision: (cls, client, refused) => counted.decided?.(cls, client, refused),
  });
  counted.decided = admissionMetrics(metrics.registry, admission);
  return { admission, gate: clientAdmission(admission, security, metrics, log) };
}

/** The gate admitting client calls, with a sampled `refused` log line per refusal. */
function clientAdmission(
  admission: Admission,
  security: BrokerSecurity,
  metrics: BrokerMetrics,
  log: Logger,
): ClientGate {
  const sampler = new LogSampler();
  const serverLog = log.child({ component: 'admission' });
  return clientGate({
    admission,
    identity: (call) => {
      if (security.mode === 'insecure') return undefined;
      try {
        return security.authorize(call, 'client');
      } catch {
        // Refused by the handler with its own status (UNAUTHENTICATED, ...); shares the peer's entry here.
        return undefined;
      }
    },
    onRefused: (path, client, refusal) => {
      // Counted with every call served (grpc_server_handled_total), though no handler ran.
      const [, service = '', method = ''] = path.split('/');
      metrics.served(
        service,
        method,
        method.startsWith('Stream') ? 'server_stream' : 'unary',
        RESOURCE_EXHAUSTED,
        0,
      );
      const out = sampler.take();
      if (out === false || !serverLog.isLevelEnabled('info')) return;
      serverLog.info('refused', {
        method: path,
        client,
        reason: refusal.reason,
        code: 'RESOURCE_EXHAUSTED',
        pushbackMs: refusal.pushbackMs,
        ...(out ? { sampledOut: out } : {}),
      });
    },
  });
}

/** Pods in the whole federation (an Aggregate's cost before it is planned). */
function podsOf(t: Topology): number {
  let n = 0;
  for (const s of t.sites) n += s.pods.length;
  return n;
}
