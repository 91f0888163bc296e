import * as grpc from '@grpc/grpc-js';
import { GetStatusResponse, durationToMs } from '@wanas/proto';
import type { Command } from 'commander';
import { adminCall, type AdminFlags } from './admin-call';
import { addConnectionFlags } from './credentials';
import { table } from './format';
import { parseAddress } from './parse';

/** Formats a status answer for a terminal. */
export function formatStatus(s: GetStatusResponse): string {
  const b = s.broker;
  const head = [
    `broker ${b?.id} (site ${b?.site}, pod ${b?.pod}) at ${b?.address}${b?.wanAddress !== b?.address ? `, WAN ${b?.wanAddress}` : ''}`,
    `federation ${s.federation}, up ${((durationToMs(s.uptime) ?? 0) / 1000).toFixed(0)} s, hedges ${s.hedges}/${s.hedgeRequests} requests`,
    ...(s.store
      ? [
          `store: ${s.store.kind} ${s.store.where}: ${s.store.state} for ${((durationToMs(s.store.stateAge) ?? 0) / 1000).toFixed(0)} s${s.store.reason ? ` (${s.store.reason})` : ''}`,
        ]
      : []),
    `topology: ${s.sites.map((site) => `${site.name}[${site.pods.map((p) => `${p.name}:${p.brokerIds.length}`).join(' ')}]`).join('  ')}`,
    ...(s.admission
      ? [
          `admission${s.admission.adaptive ? ' (adaptive)' : ''}: ${Math.round(s.admission.inFlight)}/${Math.round(s.admission.limit)} pods in flight, ${s.admission.federationInFlight} federation requests, ${s.admission.refused} refused since start`,
        ]
      : []),
    ...(s.sessions ? [`sessions: ${s.sessions.open} open to peers, ${s.sessions.served} served`] : []),
  ];
  const ago = (d: Parameters<typeof durationToMs>[0]) => `${((durationToMs(d) ?? 0) / 1000).toFixed(1)} s`;
  const targets = s.targets.map((t) => [
    t.pod ? `${t.site}/${t.pod}` : t.site,
    t.state,
    ago(t.stateAge),
    t.reason,
  ]);
  const rows = s.channels.map((c) => [
    c.brokerId,
    `${c.site}/${c.pod}`,
    c.address,
    `${c.state} ${ago(c.stateAge)}`,
    c.connectivity,
    c.breaker,
    c.warm ? 'warm' : '',
    c.latency ? `${durationToMs(c.latency)!.toFixed(1)} ms` : '',
    String(c.inFlight),
    `${c.calls}/${c.failures}`,
  ]);
  const targetTable = table(['TARGET', 'STATE', 'FOR', 'WHY'], targets);
  const channelTable = table(
    [
      'PEER',
      'SITE/POD',
      'ADDRESS',
      'STATE',
      'CHANNEL',
      'BREAKER',
      'WARM',
      'LATENCY',
      'IN FLIGHT',
      'CALLS/FAILED',
    ],
    rows,
  );
  return `${head.join('\n')}\n\n${targetTable}\n\n${channelTable}`;
}

/** `wanas status --address HOST:PORT`: that broker's view of topology, channels and health. */
export function registerStatus(program: Command): void {
  const cmd = program
    .command('status')
    .description("a broker's view: identity, topology, channels and health per endpoint")
    .requiredOption('-a, --address <host:port>', 'the broker', parseAddress)
    .option('--json', 'print proto3 JSON')
    .option('--timeout <ms>', 'deadline, ms', (v) => Number(v), 3000);
  addConnectionFlags(cmd).action((o: AdminFlags) =>
    adminCall<GetStatusResponse>(
      program,
      o,
      'get status',
      (c, opts, cb) => c.getStatus({}, new grpc.Metadata(), opts, cb),
      (s) => (o.json ? JSON.stringify(GetStatusResponse.toJSON(s), null, 2) : formatStatus(s)),
    ),
  );
}
