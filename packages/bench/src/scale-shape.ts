/**
 * The product's shape for the `scale` part — pods spread over sites as the published limits give them (50
 * pods in 15 sites: 5 sites of 4, 10 of 3) — and the same call graph made with bare grpc-js over the same
 * emulated WAN (one `bare-fanout.js` process per pod, a WAN link in front of each remote site's first pod).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import * as path from 'node:path';
import { WanEmulator, freePorts, stopProcess, type FederationSpec } from '@wanas/devfed';
import { bareCall, bareClients, type BareCall } from './bare-fanout';
import { firstLine, processCpuMs } from './part-cpu';

/** `pods` pods spread over `sites` sites (the first sites get one more), `brokersPerPod` brokers each. */
export function productSpec(pods: number, sites: number, brokersPerPod: number): FederationSpec {
  const spec: FederationSpec = {};
  for (let s = 0; s < sites; s++) {
    const count = Math.floor(pods / sites) + (s < pods % sites ? 1 : 0);
    spec[`s${s + 1}`] = Object.fromEntries(
      Array.from({ length: count }, (_, p) => [`p${p + 1}`, brokersPerPod]),
    );
  }
  return spec;
}

/** A bare grpc-js federation of a spec's shape behind its own WAN emulator. */
export interface BareWanFederation {
  /** One fan-out from the entry (s1's first pod): every pod answers `payload`. */
  aggregate(): Promise<Buffer>;
  /** Every node's CPU so far, ms. */
  cpuMs(): number;
  stop(): Promise<void>;
}

/**
 * Starts one bare node per pod of `spec` and a WAN emulator (`wanLatencyMs` one way) in front of every
 * remote site's first node; the entry calls its site's pods over the LAN and each remote site's first node
 * over the WAN, which calls its site's other pods over its LAN — a wanas aggregate's call graph.
 */
export async function startBareWan(
  spec: FederationSpec,
  wanLatencyMs: number,
  payload: string,
): Promise<BareWanFederation> {
  const script = path.join(__dirname, 'bare-fanout.js');
  const nodes: ChildProcess[] = [];
  const stopNodes = () => Promise.all(nodes.map((n) => stopProcess(n)));
  const sites: string[][] = [];
  try {
    for (const pods of Object.values(spec)) {
      const addresses: string[] = [];
      for (let p = 0; p < Object.keys(pods).length; p++) {
        const node = spawn(process.execPath, [script], { stdio: ['ignore', 'pipe', 'inherit'] });
        nodes.push(node);
        addresses.push(`127.0.0.1:${await firstLine(node)}`);
      }
      sites.push(addresses);
    }
  } catch (e) {
    await stopNodes();
    throw e;
  }
  const ports = await freePorts(sites.length);
  const wan = new WanEmulator(
    sites.slice(1).map((site, i) => ({
      brokerId: `bare-s${i + 2}`,
      site: `s${i + 2}`,
      listen: `127.0.0.1:${ports[i]}`,
      target: site[0]!,
    })),
    { latencyMs: wanLatencyMs },
  );
  await wan.start();
  const podsOf = (site: string[]) => site.slice(1).map((address) => ({ address, payload }));
  const tree: BareCall = {
    address: sites[0]![0]!,
    calls: [
      ...podsOf(sites[0]!),
      ...sites.slice(1).map((site, i) => ({ address: `127.0.0.1:${ports[i]}`, calls: podsOf(site) })),
    ],
  };
  const client = bareClients();
  return {
    aggregate: () => bareCall(client, tree),
    cpuMs: () => nodes.reduce((n, node) => n + processCpuMs(node.pid), 0),
    stop: async () => {
      client.close();
      await wan.close();
      await stopNodes();
    },
  };
}
