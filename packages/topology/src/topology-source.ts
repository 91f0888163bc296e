import * as fs from 'node:fs';
import * as path from 'node:path';
import type { Logger } from 'winston';
import { DnsDiscovery } from './discovery';
import { stableJson } from './stable-json';
import { loadTopology, withDiscovered, type BrokerInfo, type Topology } from './topology';

/** Debounce of topology file changes, ms. */
const TOPOLOGY_WATCH_DEBOUNCE_MS = 200;

/**
 * Where a {@link TopologySource} stands. `loading`: created; {@link TopologySource.resolve} runs the first
 * DNS round. `running`: watching its file and re-resolving DNS pods, telling every change. `closed`:
 * stopped; nothing runs any more.
 */
export type TopologySourceState = 'loading' | 'running' | 'closed';

/** What a topology source needs. */
export interface TopologySourceOptions {
  /** The topology as loaded (from its file, or given). */
  initial: Topology;
  /** This broker, as the topology placed it at start. */
  self: BrokerInfo;
  /** This broker in a topology (throws when it is not there). */
  whoAmI(t: Topology): BrokerInfo;
  /** Watch the file for changes (when there is one). */
  watch: boolean;
  log: Logger;
}

/**
 * The topology in force for one broker: its file (re-read on change, debounced, or on {@link reload}), with
 * the pods given as `dns:///NAME:PORT` filled in by DNS (resolved before serving, then every
 * `settings.dnsRefreshMs`). A changed file that moves this broker, or does not validate, is refused and
 * the current topology kept.
 */
export class TopologySource {
  private state: TopologySourceState = 'loading';
  private file: Topology;
  private current: Topology;
  private readonly discovery: DnsDiscovery;
  private watcher: fs.FSWatcher | undefined;
  private dnsTimer: NodeJS.Timeout | undefined;
  private dnsRound: Promise<void> | undefined;
  private onChange: (t: Topology) => void = () => undefined;

  constructor(private readonly opts: TopologySourceOptions) {
    this.file = opts.initial;
    this.current = opts.initial;
    this.discovery = new DnsDiscovery(
      opts.initial.settings.dnsServers,
      opts.log.child({ component: 'discovery' }),
    );
  }

  /** The topology in force. */
  get topology(): Topology {
    return this.current;
  }

  /** Resolves the DNS pods once, before the broker serves. */
  async resolve(): Promise<void> {
    if (hasDns(this.file)) await this.discovery.refresh(this.file);
    this.current = withDiscovered(this.file, this.discovery.discovered);
  }

  /** Starts watching the file and re-resolving DNS pods; `onChange` hears the topology in force at each change. */
  run(onChange: (t: Topology) => void): void {
    this.onChange = onChange;
    this.transition('running');
    this.watchFile();
    this.scheduleDns();
  }

  /** Re-reads the file and applies it; false (the current topology kept) when it is invalid or moves this broker. */
  reload(): boolean {
    if (!this.file.file || this.state === 'closed') return false;
    const { log } = this.opts;
    try {
      const next = loadTopology(this.file.file);
      const me = this.opts.whoAmI(next);
      const { self } = this.opts;
      if (me.site !== self.site || me.pod !== self.pod || me.address !== self.address) {
        throw new Error(`broker ${self.id} moved (site/pod/address changed); restart it to apply that`);
      }
      // The operations are built once, at start (modules loaded, schemas read): a change to them would leave
      // this broker serving other operations than its file says; refused whole, applied by a restart.
      for (const section of ['services', 'operations'] as const) {
        if (stableJson(next[section]) !== stableJson(this.file[section]))
          throw new Error(`the ${section} section changed; restart the broker to apply that`);
      }
      if (JSON.stringify(next.settings.dnsServers) !== JSON.stringify(this.file.settings.dnsServers))
        log.warn('settings.dnsServers changed; that applies at the next restart');
      const hadDns = hasDns(this.file);
      this.file = next;
      this.apply(withDiscovered(next, this.discovery.discovered));
      if (hasDns(next)) void this.rediscover();
      if (!hadDns) this.scheduleDns();
      log.info('topology reloaded', { sites: this.current.sites.length, brokers: this.current.brokers.size });
      return true;
    } catch (e) {
      log.error('topology change refused; keeping the current one', { error: (e as Error).message });
      return false;
    }
  }

  /** Stops watching and re-resolving. */
  close(): void {
    this.transition('closed');
  }

  /** The one place the state changes; `closed` stops the watcher and the DNS timer. */
  private transition(to: TopologySourceState): void {
    this.state = to;
    if (to !== 'closed') return;
    clearTimeout(this.dnsTimer);
    this.watcher?.close();
  }

  private apply(t: Topology): void {
    this.current = t;
    this.onChange(t);
  }

  private watchFile(): void {
    const file = this.file.file;
    if (!file || !this.opts.watch) return;
    let timer: NodeJS.Timeout | undefined;
    this.watcher = fs.watch(path.dirname(file), (_event, name) => {
      if (name !== path.basename(file)) return;
      clearTimeout(timer);
      timer = setTimeout(() => this.reload(), TOPOLOGY_WATCH_DEBOUNCE_MS);
      timer.unref();
    });
    this.watcher.unref();
  }

  /** One DNS round (never two at once); applies a changed target list live. */
  private rediscover(): Promise<void> {
    this.dnsRound ??= (async () => {
      try {
        if (hasDns(this.file) && (await this.discovery.refresh(this.file))) {
          this.apply(withDiscovered(this.file, this.discovery.discovered));
        }
      } catch (e) {
        this.opts.log.error('DNS discovery round failed', { error: (e as Error).message });
      } finally {
        this.dnsRound = undefined;
      }
    })();
    return this.dnsRound;
  }

  private scheduleDns(): void {
    if (!hasDns(this.file) || this.state !== 'running') return;
    this.dnsTimer = setTimeout(
      () => void this.rediscover().finally(() => this.scheduleDns()),
      this.file.settings.dnsRefreshMs,
    );
    this.dnsTimer.unref();
  }
}

function hasDns(t: Topology): boolean {
  return t.sites.some((s) => s.pods.some((p) => p.dns));
}
