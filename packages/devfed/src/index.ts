/**
 * @wanas/devfed — a local federation of real broker processes, for `wanas up`, the benchmarks and the
 * multi-process tests: free ports, a topology file, one `wanas broker` process per broker, throwaway TLS
 * material, the WAN emulator in front of every WAN address, log files, readiness and stop.
 */
export * from './federation';
export * from './ports';
export * from './processes';
export * from './spec';
export * from './supervisor';
export * from './text';
export * from './tls';
export * from './up';
export * from './up-control';
export * from './up-metrics';
export * from './wan-emulator';
export * from './backends';
export * from './postgres';
