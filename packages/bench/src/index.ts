/** @wanas/bench — the benchmarks of BENCHMARKS.md (`wanas bench`), on a {@link DevFederation} from @wanas/devfed. */
export * from './part-failure';
export * from './part-placement';
export * from './part-scale';
export * from './parts';
export * from './part-latency';
export * from './run';
export * from './stats';
export * from './svg';
