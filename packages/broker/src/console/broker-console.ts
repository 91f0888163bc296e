/**
 * A broker's console: what it remembers of the Aggregates it served as entry (the journal, and the rolling
 * health windows per site) and the routes that show it with the rest of the broker's view.
 */
import { durationToMs, type AggregateRequest } from '@wanas/proto';
import type { BrokerInfo, Topology } from '@wanas/topology';
import type { HttpRoute } from '../server/http-listener';
import type { AggregateOutcome } from '../server/server';
import { consoleRoutes, type ConsoleDeps } from './console-http';
import { FederationView } from './federation-view';
import { RequestJournal } from './journal';
import { HealthWindows } from './windows';

/** The series of every Aggregate, beside one per site. */
export const ALL_SERIES = '*';

/** See the file's comment. */
export class BrokerConsole {
  readonly journal: RequestJournal;
  readonly windows = new HealthWindows();
  private closers: (() => void)[] = [];

  constructor(private readonly topology: () => Topology) {
    this.journal = new RequestJournal(() => this.settings());
  }

  /** The console's settings in force. */
  settings(): Topology['settings']['console'] {
    return this.topology().settings.console;
  }

  /** An Aggregate this broker served as entry (the server's hook). */
  readonly aggregateServed = (
    req: AggregateRequest,
    client: string,
    latencyMs: number,
    outcome: AggregateOutcome,
  ): void => {
    if (!this.settings().enabled) return;
    this.journal.record(req, client, latencyMs, outcome);
    const res = 'res' in outcome ? outcome.res : undefined;
    this.windows.record(ALL_SERIES, !!res && !res.summary?.podsFailed, latencyMs);
    for (const p of res?.pods ?? []) this.windows.record(p.site, p.code === 0, durationToMs(p.latency) ?? 0);
  };

  /** The console's routes over the broker's parts (undefined when the console is off). */
  routes(
    deps: Omit<ConsoleDeps, 'journal' | 'windows' | 'federation' | 'settings'> & { self: BrokerInfo },
  ): HttpRoute | undefined {
    if (!this.settings().enabled) return undefined;
    const federation = new FederationView(deps);
    const routes = consoleRoutes({
      ...deps,
      journal: this.journal,
      windows: this.windows,
      federation,
      settings: () => this.settings(),
    });
    this.closers.push(
      () => federation.close(),
      () => routes.close(),
    );
    return routes.route;
  }

  /** Closes the channels the console opened. */
  close(): void {
    for (const c of this.closers) c();
    this.closers = [];
  }
}
