import YAML from 'yaml';
import type { K8sOutput } from './manifests';

/** The manifests as one YAML stream after `header`, with the topology embedded in its ConfigMap. */
export function renderManifests(out: K8sOutput, header: string): string {
  const topologyYaml = YAML.stringify(out.topology, { lineWidth: 0 });
  for (const m of out.manifests)
    if (m.kind === 'ConfigMap')
      (m as unknown as { data: Record<string, string> }).data['topology.yaml'] = topologyYaml;
  return (
    header +
    out.manifests
      .map((m) => `---\n${YAML.stringify(m, { lineWidth: 0, aliasDuplicateObjects: false })}`)
      .join('')
  );
}
