import { dataDirOf, loadTopology, type Topology } from '@wanas/topology';
import * as fs from 'node:fs';
import * as path from 'node:path';
import YAML from 'yaml';
import { freePorts } from './ports';
import { withAbsolutePaths } from './topology-paths';

/** The shipped alerting and recording rules (docker/prometheus/wanas-rules.yml in the repository). */
export const RULES_FILE = path.resolve(__dirname, '../../../docker/prometheus/wanas-rules.yml');

/** What `wanas up --metrics` made: the topology brokers run with, and the Prometheus config beside it. */
export interface UpMetrics {
  topology: Topology;
  /** Every broker's /metrics address, by broker id. */
  targets: Record<string, string>;
  /** A Prometheus config scraping every broker, with the shipped rules (`prometheus --config.file=`). */
  prometheusConfig: string;
}

/**
 * Gives every broker without a `metricsAddress` one on a free loopback port, writes that topology to
 * `dir/topology.yaml` (paths of the original made absolute: data, certificates) and a Prometheus config
 * to `dir/prometheus.yml` that scrapes them all every 5 s and loads the shipped rules.
 */
export async function withMetrics(t: Topology, dir: string): Promise<UpMetrics> {
  const doc = withAbsolutePaths(
    YAML.parse(fs.readFileSync(t.file!, 'utf8')) as Record<string, unknown>,
    path.dirname(t.file!),
  ) as TopologyDoc;
  doc.settings = { ...doc.settings, dataDir: dataDirOf(t) };
  const brokers = (doc.sites ?? []).flatMap((s) => (s.pods ?? []).flatMap((p) => p.brokers ?? []));
  const ports = await freePorts(brokers.filter((b) => !b.metricsAddress).length);
  for (const b of brokers) b.metricsAddress ??= `127.0.0.1:${ports.pop()}`;
  fs.mkdirSync(dir, { recursive: true });
  const file = path.join(dir, 'topology.yaml');
  fs.writeFileSync(file, YAML.stringify(doc));
  const targets = Object.fromEntries(brokers.map((b) => [b.id, b.metricsAddress!]));
  const prometheusConfig = YAML.stringify({
    global: { scrape_interval: '5s', evaluation_interval: '5s' },
    rule_files: [RULES_FILE],
    scrape_configs: [
      {
        job_name: 'wanas',
        static_configs: [{ targets: Object.values(targets), labels: { federation: t.federation } }],
      },
    ],
  });
  fs.writeFileSync(path.join(dir, 'prometheus.yml'), prometheusConfig);
  return { topology: loadTopology(file), targets, prometheusConfig };
}

/** The parts of a topology file `withMetrics` rewrites. */
interface TopologyDoc {
  settings?: Record<string, unknown>;
  sites?: { pods?: { brokers?: { id: string; metricsAddress?: string }[] }[] }[];
}
