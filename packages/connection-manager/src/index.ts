/**
 * @wanas/connection-manager — warm grpc-js channels to peer brokers, per-endpoint health (opossum
 * breaker + connectivity + grpc.health.v1 probe), and the best-first order of a target list.
 */
export * from './connection-manager';
export * from './options';
export { SEARCH_WIDTH } from './group-warmth';
export { targetStateOf } from './target-health';
export * from './types';
export { LatencyWindow } from './latency-window';
export { createHealthProbe, type HealthProbe } from './health-probe';
