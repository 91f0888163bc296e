/**
 * @wanas/iterator — the connection iterator: ordered attempts over a target list of equivalent
 * endpoints, per-attempt timeouts under one overall deadline, failover, hedging within a budget.
 */
export * from './attempt-loop';
export * from './connection-iterator';
export * from './hedge-budget';
