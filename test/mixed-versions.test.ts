/**
 * A federation in the middle of a rolling upgrade: a remote site whose representative is of an older
 * version (SiteRequest only, no StreamSiteRequest, `first` unknown). A quorum or streamed Aggregate still
 * gets its pods (asked the unary way); a first-fit write is never sent there (an older representative
 * would act in every pod listed): the site is skipped as UNIMPLEMENTED and the search moves on.
 */
import * as grpc from '@grpc/grpc-js';
import { Mode } from '@wanas/proto';
import { Federation } from './support/federation';
// eslint-disable-next-line @typescript-eslint/no-require-imports
const { startPeer } = require('./support/peer-server') as {
  startPeer(o: { id: string; port: number }): Promise<{ stop(): Promise<void>; calls(): number }>;
};

describe('mixed versions (real broker processes, an older representative)', () => {
  let f: Federation;
  let old: Awaited<ReturnType<typeof startPeer>>;
  const ENTRY = 'east-pod-1-a';

  beforeAll(async () => {
    f = await Federation.start({ east: { 'pod-1': 1, 'pod-2': 1 }, west: { 'pod-1': 1 } });
    const west = f.brokers.get('west-pod-1-a')!;
    await f.signal(west.id, 'SIGTERM');
    old = await startPeer({ id: west.id, port: Number(west.address.split(':')[1]) });
  }, 60_000);
  afterAll(async () => {
    await old?.stop();
    await f?.stop();
  });

  it('asks an older representative the unary way when the entry would stream (min_ok)', async () => {
    const deadline = Date.now() + 10_000;
    let res;
    do {
      res = await f.aggregate(ENTRY, { operation: 'echo', minOk: 3 });
    } while (res.summary?.podsOk !== 3 && Date.now() < deadline);
    expect(res.pods.find((p) => p.site === 'west')).toMatchObject({ code: 0, answeredBy: 'west-pod-1-a' });
  });

  it('never sends a first-fit write to an older representative: UNIMPLEMENTED, then the next site', async () => {
    const callsBefore = old.calls();
    const res = await f.aggregate(ENTRY, {
      operation: 'desktops.provision',
      params: { user: 'ulla', pool: 'standard' },
      mode: Mode.MODE_FIRST,
      preferSites: ['west'],
      idempotencyKey: 'k-ulla',
    });
    expect(res.pods.map((p) => [`${p.site}/${p.pod}`, p.code])).toEqual([
      ['west/pod-1', grpc.status.UNIMPLEMENTED],
      ['east/pod-1', 0],
    ]);
    expect(old.calls()).toBe(callsBefore);
  });
});
