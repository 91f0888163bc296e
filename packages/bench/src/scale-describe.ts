import { table } from '@wanas/devfed';
import type { ScaleResult } from './part-scale';
import type { ListingResult } from './scale-listing';

const x = (a: number, b: number) => `${(a / b).toFixed(2)}×`;
const kib = (b: number) => `${(b / 1024).toFixed(0)} KiB`;

function listingLine(l: ListingResult): string {
  return (
    `${l.sessions} of ${l.expected} sessions in ${l.pages} pages; once and in order: ${l.onceInOrder ? 'yes' : 'NO'}; ` +
    `page p50 ${l.pageP50Ms} ms, p99 ${l.pageP99Ms} ms; largest page ${kib(l.largestPageBytes)}; ` +
    `entry process peak RSS ${l.entryPeakRssMb} MB${l.pagesRetried ? `; pages sent again ${l.pagesRetried}` : ''}`
  );
}

/** Human lines for the scale part's result. */
export function describeScale(sc: ScaleResult): string {
  const s = sc.shape;
  const first = sc.growth[0]!;
  const lat = (name: string, l: { p50Ms: number; p99Ms: number }) => [name, String(l.p50Ms), String(l.p99Ms)];
  return [
    `${s.pods} pods in ${s.sites} sites, ${s.brokers} brokers in ${s.processes} processes, ${s.sessionsPerPod} sessions a pod; 25 ms one way`,
    `idle CPU: ${sc.idle.perBrokerPct.toFixed(2)}% of a core per broker, ${sc.idle.perProcessPct.toFixed(2)}% per process (over ${sc.idle.seconds} s; keepalive 5 s); with the default keepalive (600 ms): ${sc.idleDefaults.perBrokerPct.toFixed(2)}% per broker, ${sc.idleDefaults.perProcessPct.toFixed(2)}% per process`,
    table(
      ['SCALE (ms)', 'P50', 'P99'],
      [
        lat('1 warm WAN call (the limit)', sc.limit),
        lat(`sessions.find over ${s.pods} pods`, sc.find),
        lat(`bare grpc-js, same call graph`, sc.bare),
        ...sc.growth.map((g) => lat(`growth: ${g.pods} pod(s) in ${g.sites} site(s)`, g)),
        lat('one pod reads a page of the listing (LAN)', sc.podPage),
      ],
    ),
    `sessions.find p50: ${x(sc.find.p50Ms, sc.limit.p50Ms)} the limit, ${x(sc.find.p50Ms, sc.bare.p50Ms)} bare grpc-js (target ≤ 1.1×); p99 ${x(sc.find.p99Ms, sc.bare.p99Ms)} bare`,
    `CPU per pod asked: wanas ${sc.cpuPerPodMs.wanas.toFixed(3)} ms, bare ${sc.cpuPerPodMs.bare.toFixed(3)} ms (${x(sc.cpuPerPodMs.wanas, sc.cpuPerPodMs.bare)})`,
    `growth of p50: ${sc.growth.map((g) => `${g.pods} pods ${x(g.p50Ms, first.p50Ms)}`).join(', ')} (from 1 pod)`,
    `listing: ${listingLine(sc.listing)}`,
    `  page p50 / (limit p50 + one pod's page read p50) = ${x(sc.listing.pageP50Ms, sc.limit.p50Ms + sc.podPage.p50Ms)} (target ≤ 1.2×)`,
    `listing with faults (${sc.listingWithFaults.faults.join('; ')}): ${listingLine(sc.listingWithFaults)}`,
    `one broker holding the ${sc.bigTopology.brokers}-broker topology: RSS ${sc.bigTopology.rssMb} MB with every peer answering (target ≤ 120 MB), ${sc.bigTopology.deadPeersRssMb} MB with every peer gone; ${sc.bigTopology.channels} channels, ${sc.bigTopology.warmChannels} kept warm`,
  ].join('\n');
}
