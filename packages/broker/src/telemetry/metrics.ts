import type { ConnectionManager } from '@wanas/connection-manager';
import { codeName } from '@wanas/proto';
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

/** Latency buckets in seconds: LAN (sub-ms) to slow WAN (seconds). */
const LATENCY_BUCKETS_S = [
  0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1, 2.5, 5, 10,
];

/** What the metrics read at scrape time besides the connection manager. */
export interface MetricSources {
  hedgeBudget: { stats(): { suppressed: number; denied: number } };
  /** Failovers away from a peer that refused for load: tokens spent (`hedges`) and refused (`denied`). */
  busyRetryBudget?: { stats(): { hedges: number; denied: number } };
  /** The measured round trip to a remote site, ms (undefined before any answer). */
  siteRoundTripMs(site: string): number | undefined;
  remoteSites(): string[];
}

/** What the broker counts of its backend calls (configured operations). */
export interface BackendMetrics {
  /** A call ended: its code and time. */
  called(service: string, code: number, seconds: number): void;
  /** Calls in flight now, and the limit. */
  inFlight(service: string, now: number, max: number): void;
  /** A call refused because the service's limit was reached. */
  shed(service: string): void;
}

/** What identical-reads-once reports (see {@link BrokerMetrics.sharingMetrics}). */
export interface SharingMetrics {
  /** A request joined an execution in flight. */
  joined(kind: 'aggregate' | 'site' | 'local'): void;
  /** A results-cache lookup, hit or miss. */
  lookup(hit: boolean): void;
  /** Bytes the results cache holds now. */
  bytes(now: number): void;
}

/** The kind of request a line or metric is about. */
export type RequestKind = 'aggregate' | 'site' | 'local' | 'admin';

/**
 * A broker's Prometheus metrics, in its own registry (several brokers may share a process in tests).
 * Names follow go-grpc-prometheus: `grpc_server_handled_total`, `grpc_server_handling_seconds`,
 * `grpc_client_handled_total`, `grpc_client_handling_seconds`; plus wanas_* for failovers, hedges,
 * breaker states and channels.
 */
export class BrokerMetrics {
  readonly registry = new Registry();
  private readonly serverHandled: Counter<'grpc_type' | 'grpc_service' | 'grpc_method' | 'grpc_code'>;
  private readonly serverSeconds: Histogram<'grpc_type' | 'grpc_service' | 'grpc_method'>;
  private readonly clientHandled: Counter<'kind' | 'grpc_code'>;
  private readonly clientSeconds: Histogram<'kind'>;
  private readonly podResults: Counter<'kind' | 'grpc_code'>;
  private readonly failovers: Counter<'kind'>;
  private readonly hedges: Counter<'kind'>;
  private readonly children = new Map<string, unknown>();

  constructor(
    labels: { broker: string; site: string; pod: string },
    cm: ConnectionManager,
    more?: MetricSources,
  ) {
    this.registry.setDefaultLabels(labels);
    // Node's default metrics; their event-loop-lag histogram samples once a second, not every 50 ms: each
    // sample wakes the process, and 20 wakeups a second were most of an idle broker's CPU (0.8% → 0.45%
    // of a core measured for a broker alone). Saturation is timed finely by LoopLag, while calls arrive.
    collectDefaultMetrics({ register: this.registry, eventLoopMonitoringPrecision: 1000 });
    this.serverHandled = new Counter({
      name: 'grpc_server_handled_total',
      help: 'RPCs completed on the server, by method and code.',
      labelNames: ['grpc_type', 'grpc_service', 'grpc_method', 'grpc_code'],
      registers: [this.registry],
    });
    this.serverSeconds = new Histogram({
      name: 'grpc_server_handling_seconds',
      help: 'Server handling latency of RPCs, seconds.',
      labelNames: ['grpc_type', 'grpc_service', 'grpc_method'],
      buckets: LATENCY_BUCKETS_S,
      registers: [this.registry],
    });
    this.clientHandled = new Counter({
      name: 'grpc_client_handled_total',
      help: 'Fan-out requests this broker sent (site = SiteRequest over the WAN, local = LocalRequest), by final code.',
      labelNames: ['kind', 'grpc_code'],
      registers: [this.registry],
    });
    this.clientSeconds = new Histogram({
      name: 'grpc_client_handling_seconds',
      help: 'Latency of fan-out requests including failover, seconds.',
      labelNames: ['kind'],
      buckets: LATENCY_BUCKETS_S,
      registers: [this.registry],
    });
    this.podResults = new Counter({
      name: 'wanas_pod_results_total',
      help: 'Pod results this broker answered with, by request kind and code.',
      labelNames: ['kind', 'grpc_code'],
      registers: [this.registry],
    });
    this.failovers = new Counter({
      name: 'wanas_failovers_total',
      help: 'Attempts sent to another equivalent endpoint after one failed.',
      labelNames: ['kind'],
      registers: [this.registry],
    });
    this.hedges = new Counter({
      name: 'wanas_hedges_total',
      help: 'Hedged attempts sent while an earlier attempt was still running.',
      labelNames: ['kind'],
      registers: [this.registry],
    });
    registerHealthGauges(this.registry, cm);
    if (more) registerBudgetAndDistance(this.registry, more);
  }

  /**
   * Gauges of federation sessions, read at scrape time: sessions open to peers (`out`, and `opening`) and
   * from peers (`in`), and requests in flight on this broker's sessions (waiting their turn included).
   */
  sessionGauges(out: () => { open: number; opening: number; inFlight: number }, served: () => number): void {
    new Gauge({
      name: 'wanas_sessions',
      help: 'Federation sessions: to peers open (direction out, state open) or opening, and from peers (direction in).',
      labelNames: ['direction', 'state'],
      registers: [this.registry],
      collect() {
        const o = out();
        this.set({ direction: 'out', state: 'open' }, o.open);
        this.set({ direction: 'out', state: 'opening' }, o.opening);
        this.set({ direction: 'in', state: 'open' }, served());
      },
    });
    new Gauge({
      name: 'wanas_session_requests_in_flight',
      help: "Requests in flight on this broker's sessions to peers (waiting for a turn included).",
      registers: [this.registry],
      collect() {
        this.set(out().inFlight);
      },
    });
  }

  /**
   * The metrics of calls to the pod's backends (configured operations): calls by service and code, their
   * time, calls in flight and the limit, and calls shed at the limit. Made on first use.
   */
  backendMetrics(): BackendMetrics {
    const r = this.registry;
    const called = new Counter({
      name: 'wanas_backend_calls_total',
      help: "Calls to this broker's pod backends (configured operations), by service and code.",
      labelNames: ['service', 'grpc_code'],
      registers: [r],
    });
    const seconds = new Histogram({
      name: 'wanas_backend_call_seconds',
      help: "Time of calls to this broker's pod backends, seconds.",
      labelNames: ['service'],
      buckets: LATENCY_BUCKETS_S,
      registers: [r],
    });
    const inFlight = new Gauge({
      name: 'wanas_backend_in_flight',
      help: 'Calls to a pod backend in flight from this broker.',
      labelNames: ['service'],
      registers: [r],
    });
    const maxInFlight = new Gauge({
      name: 'wanas_backend_max_in_flight',
      help: "A service's per-broker limit of calls in flight (services.NAME.maxInFlight).",
      labelNames: ['service'],
      registers: [r],
    });
    const shed = new Counter({
      name: 'wanas_backend_shed_total',
      help: "Calls refused with RESOURCE_EXHAUSTED because the service's maxInFlight was reached.",
      labelNames: ['service'],
      registers: [r],
    });
    return {
      called: (service, code, s) => {
        called.inc({ service, grpc_code: codeName(code) });
        seconds.observe({ service }, s);
      },
      inFlight: (service, now, max) => {
        inFlight.set({ service }, now);
        maxInFlight.set({ service }, max);
      },
      shed: (service) => shed.inc({ service }),
    };
  }

  /**
   * Identical reads once: `wanas_coalesced_total{kind}` (requests that joined an execution in flight, by
   * hop), and the results cache's `wanas_results_cache_lookups_total{result}` (hit or miss) and
   * `wanas_results_cache_bytes`.
   */
  sharingMetrics(): SharingMetrics {
    const r = this.registry;
    const joined = new Counter({
      name: 'wanas_coalesced_total',
      help: 'Requests answered by an identical execution already in flight, by kind (aggregate, site, local).',
      labelNames: ['kind'],
      registers: [r],
    });
    const lookups = new Counter({
      name: 'wanas_results_cache_lookups_total',
      help: "Lookups in the entry's results cache by requests that accept a cached answer (max_staleness): hit or miss.",
      labelNames: ['result'],
      registers: [r],
    });
    const bytes = new Gauge({
      name: 'wanas_results_cache_bytes',
      help: "Bytes of answers the entry's results cache holds.",
      registers: [r],
    });
    return {
      joined: (kind) => this.child(`j ${kind}`, () => joined.labels(kind)).inc(),
      lookup: (hit) => this.child(`l ${hit}`, () => lookups.labels(hit ? 'hit' : 'miss')).inc(),
      bytes: (now) => bytes.set(now),
    };
  }

  /** `wanas_store_up{kind}`: 1 while the pod's store answers (as its last use found it), 0 when not. */
  storeUp(kind: string, up: () => boolean): void {
    new Gauge({
      name: 'wanas_store_up',
      help: "1 while this broker's pod store answers (its last use reached it), 0 when it could not be reached.",
      labelNames: ['kind'],
      registers: [this.registry],
      collect() {
        this.set({ kind }, up() ? 1 : 0);
      },
    });
  }

  /** Records one RPC this broker served. */
  served(
    service: string,
    method: string,
    type: 'unary' | 'server_stream',
    code: number,
    seconds: number,
  ): void {
    this.child(`h ${type} ${service} ${method} ${code}`, () =>
      this.serverHandled.labels(type, service, method, codeName(code)),
    ).inc();
    this.child(`s ${type} ${service} ${method}`, () =>
      this.serverSeconds.labels(type, service, method),
    ).observe(seconds);
  }

  /** Records one fan-out request this broker sent, with its attempts. */
  sent(kind: 'site' | 'local', code: number, seconds: number, attempts: { hedged: boolean }[]): void {
    this.child(`ch ${kind} ${code}`, () => this.clientHandled.labels(kind, codeName(code))).inc();
    this.child(`cs ${kind}`, () => this.clientSeconds.labels(kind)).observe(seconds);
    let hedged = 0;
    for (const a of attempts) if (a.hedged) hedged++;
    const failovers = Math.max(0, attempts.length - 1 - hedged);
    if (failovers) this.failovers.inc({ kind }, failovers);
    if (hedged) this.hedges.inc({ kind }, hedged);
  }

  /** Records the pod results of an answer. */
  pods(kind: RequestKind, codes: number[]): void {
    for (const c of codes)
      this.child(`p ${kind} ${c}`, () => this.podResults.labels(kind, codeName(c))).inc();
  }

  /**
   * The labelled child of a metric, made once per label set: prom-client hashes the labels on every
   * `inc({...})`/`observe({...})`; a broker records several per call (labels are few: kinds × codes).
   */
  private child<M>(key: string, make: () => M): M {
    let c = this.children.get(key) as M | undefined;
    if (c === undefined) {
      c = make();
      this.children.set(key, c);
    }
    return c;
  }
}

/** Gauges read from the connection manager at scrape time: channels, breakers, endpoint and target states. */
function registerHealthGauges(registry: Registry, cm: ConnectionManager): void {
  new Gauge({
    name: 'wanas_open_channels',
    help: 'Channels to peer brokers that exist now.',
    registers: [registry],
    collect() {
      this.set(cm.openChannels());
    },
  });
  new Gauge({
    name: 'wanas_endpoint_breaker_open',
    help: 'Per peer endpoint: 1 when its breaker is open (or half-open: 0.5), 0 when closed.',
    labelNames: ['endpoint', 'peer_site', 'peer_pod'],
    registers: [registry],
    collect() {
      this.reset();
      for (const r of cm.snapshot()) {
        const v = r.breaker === 'open' ? 1 : r.breaker === 'half-open' ? 0.5 : 0;
        this.set({ endpoint: r.brokerId, peer_site: r.site, peer_pod: r.pod }, v);
      }
    },
  });
  new Gauge({
    name: 'wanas_endpoint_state',
    help: 'Per peer endpoint: 1 for its health state now (idle, connecting, ready, failing, down).',
    labelNames: ['endpoint', 'peer_site', 'peer_pod', 'state'],
    registers: [registry],
    collect() {
      this.reset();
      for (const r of cm.snapshot()) {
        this.set({ endpoint: r.brokerId, peer_site: r.site, peer_pod: r.pod, state: r.state }, 1);
      }
    },
  });
  new Counter({
    name: 'wanas_endpoint_transitions_total',
    help: 'Endpoint health transitions, by the state entered.',
    labelNames: ['state'],
    registers: [registry],
    collect() {
      this.reset();
      for (const [state, n] of Object.entries(cm.transitionCounts())) this.inc({ state }, n);
    },
  });
  new Gauge({
    name: 'wanas_target_down',
    help: 'Per target list (remote site, or other pod of this site): 1 when every endpoint is down (requests fail fast).',
    labelNames: ['peer_site', 'peer_pod'],
    registers: [registry],
    collect() {
      this.reset();
      for (const t of cm.targets())
        this.set({ peer_site: t.site, peer_pod: t.pod }, t.state === 'down' ? 1 : 0);
    },
  });
  new Gauge({
    name: 'wanas_endpoint_in_flight',
    help: 'Per peer endpoint: calls in flight.',
    labelNames: ['endpoint'],
    registers: [registry],
    collect() {
      this.reset();
      for (const r of cm.snapshot()) this.set({ endpoint: r.brokerId }, r.inFlight);
    },
  });
}

/** Hedges held back (budget spent, broker overloaded) and the measured round trip to each remote site. */
function registerBudgetAndDistance(registry: Registry, more: MetricSources): void {
  new Counter({
    name: 'wanas_hedges_denied_total',
    help: 'Hedges not sent: reason="budget" (the hedge budget had no token), reason="overloaded" (this broker was saturated).',
    labelNames: ['reason'],
    registers: [registry],
    collect() {
      this.reset();
      const { denied, suppressed } = more.hedgeBudget.stats();
      this.inc({ reason: 'budget' }, denied);
      this.inc({ reason: 'overloaded' }, suppressed);
    },
  });
  const retries = more.busyRetryBudget;
  if (retries)
    new Counter({
      name: 'wanas_busy_retries_total',
      help: 'Failovers after a peer refused for load (RESOURCE_EXHAUSTED): outcome="sent" (a retry token spent), outcome="denied" (no token: the refusal was the answer).',
      labelNames: ['outcome'],
      registers: [registry],
      collect() {
        this.reset();
        const { hedges, denied } = retries.stats();
        this.inc({ outcome: 'sent' }, hedges);
        this.inc({ outcome: 'denied' }, denied);
      },
    });
  new Gauge({
    name: 'wanas_site_round_trip_seconds',
    help: 'Per remote site: the fastest usual answer of any of its brokers (about one WAN round trip), seconds.',
    labelNames: ['peer_site'],
    registers: [registry],
    collect() {
      this.reset();
      for (const site of more.remoteSites()) {
        const ms = more.siteRoundTripMs(site);
        if (ms !== undefined) this.set({ peer_site: site }, ms / 1000);
      }
    },
  });
}
