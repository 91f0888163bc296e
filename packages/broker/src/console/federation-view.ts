/**
 * The federation as every site sees it: this broker's own status, and AdminService/GetStatus of one broker
 * in each other site, asked over the WAN with this broker's credentials (under mTLS its certificate is a
 * client the peer accepts). A site that does not answer says so, with the error, instead of vanishing; a
 * site × site matrix of measured round trips and target states then shows a partition as the one red row
 * or column.
 */
import * as grpc from '@grpc/grpc-js';
import { AdminServiceClient, GetStatusResponse, durationToMs } from '@wanas/proto';
import type { BrokerInfo, Topology } from '@wanas/topology';
import type { BrokerSecurity } from '../server/security';

/** How long one site's broker may take to answer, ms. */
const ASK_TIMEOUT_MS = 1500;
/** Brokers tried per site before it is reported unreachable. */
const TRIES_PER_SITE = 2;
/** A view is reused this long (many open consoles cost the federation one round of calls), ms. */
const REUSE_MS = 1500;

/** One site's view: the status of the broker that answered for it, or why none did. */
export interface SiteView {
  site: string;
  /** The broker whose view this is ('' when none answered). */
  from: string;
  status?: unknown;
  error?: string;
}

/** One cell of the matrix: how site `from` sees site `to`. */
export interface MatrixCell {
  from: string;
  to: string;
  /** The target's state in `from`'s view (up, degraded, down), or unknown when `from` did not answer. */
  state: string;
  /** The lowest measured latency of `from`'s channels into `to`, ms. */
  roundTripMs: number | null;
}

/** The federation view of one broker (see the file's comment). */
export class FederationView {
  private readonly clients = new Map<string, AdminServiceClient>();
  private last: { at: number; done: boolean; views: Promise<SiteView[]> } | undefined;

  constructor(
    private readonly deps: {
      self: BrokerInfo;
      topology: () => Topology;
      security: BrokerSecurity;
      status: () => GetStatusResponse;
    },
  ) {}

  /** Every site's view (reused for a moment, see {@link REUSE_MS}, and while a round is under way). */
  views(): Promise<SiteView[]> {
    const now = Date.now();
    if (!this.last || (this.last.done && now - this.last.at > REUSE_MS)) {
      const round = { at: now, done: false, views: this.ask() };
      void round.views.finally(() => {
        round.done = true;
        round.at = Date.now();
      });
      this.last = round;
    }
    return this.last.views;
  }

  /** The site × site matrix of `views`. */
  static matrix(views: SiteView[]): MatrixCell[] {
    const cells: MatrixCell[] = [];
    for (const v of views) {
      const s = v.status as ReturnType<typeof GetStatusResponse.toJSON> | undefined;
      const st = s ? GetStatusResponse.fromJSON(s) : undefined;
      for (const to of views) {
        if (to.site === v.site) continue;
        const target = st?.targets.find((t) => t.site === to.site && !t.pod);
        const rtts = (st?.channels ?? [])
          .filter((c) => c.site === to.site && (c.roundTrip || c.latency))
          .map((c) => durationToMs(c.roundTrip ?? c.latency)!);
        cells.push({
          from: v.site,
          to: to.site,
          state: target?.state || (st ? 'unknown' : 'unreachable'),
          roundTripMs: rtts.length ? Math.min(...rtts) : null,
        });
      }
    }
    return cells;
  }

  /** Closes the channels to other sites' brokers. */
  close(): void {
    for (const c of this.clients.values()) c.close();
    this.clients.clear();
  }

  private async ask(): Promise<SiteView[]> {
    const { self, topology, status } = this.deps;
    const t = topology();
    return Promise.all(
      t.sites.map((site) =>
        site.name === self.site
          ? Promise.resolve({ site: site.name, from: self.id, status: GetStatusResponse.toJSON(status()) })
          : this.askSite(
              site.name,
              site.pods.flatMap((p) => p.brokers),
            ),
      ),
    );
  }

  private async askSite(site: string, brokers: BrokerInfo[]): Promise<SiteView> {
    const errors: string[] = [];
    for (const b of brokers.slice(0, TRIES_PER_SITE)) {
      try {
        const s = await this.getStatus(b);
        return { site, from: b.id, status: GetStatusResponse.toJSON(s) };
      } catch (e) {
        errors.push(`${b.id}: ${(e as grpc.ServiceError).details || (e as Error).message}`);
      }
    }
    return { site, from: '', error: errors.join('; ') || 'no broker in the topology' };
  }

  private getStatus(b: BrokerInfo): Promise<GetStatusResponse> {
    let client = this.clients.get(b.id);
    if (!client) {
      const { security } = this.deps;
      client = new AdminServiceClient(b.wanAddress, security.channelCredentials, {
        ...security.peerChannelOptions(b.id),
        'grpc.use_local_subchannel_pool': 1,
      });
      this.clients.set(b.id, client);
    }
    const c = client;
    return new Promise((resolve, reject) =>
      c.getStatus({}, new grpc.Metadata(), { deadline: Date.now() + ASK_TIMEOUT_MS }, (e, r) =>
        e ? reject(e) : resolve(r),
      ),
    );
  }
}
