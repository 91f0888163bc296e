/**
 * @wanas/broker — the wanas server: AggregationService (Aggregate, StreamAggregate), FederationService
 * (SiteRequest, LocalRequest), operations, topology, health, reflection, metrics and logs.
 */
export * from './broker';
export * from './engine/dispatcher';
export { MAX_HOPS } from './engine/checks';
export * from './errors';
export * from './telemetry/logger';
export * from './telemetry/metrics';
export * from './operations/abortable';
export * from './operations/builtin';
export * from './operations/registry';
export { exportSdk, type ExportedSdk } from './operations/sdk/export';
export * from './operations/types';
export * from './request-limits';
export * from './store/sqlite-inventory';
export * from './server/security';
export * from './call-context';
export type { FaultInjection } from './server/rpc';
export * from './ledger/ledger';
