/**
 * @wanas/topology — the federation's topology: its schema and parsing (YAML or JSON, checked with zod),
 * the live source that reloads it and fills in DNS-discovered brokers, and the client token hash. Used by
 * the broker and by every tool that reads a topology (the CLI, the development federation, the Kubernetes
 * manifests) without loading the broker runtime.
 */
export * from './topology';
export * from './topology-schema-operations';
export * from './topology-source';
export * from './discovery';
export * from './stable-json';
export * from './token';
export * from './topology-schema-admission';
