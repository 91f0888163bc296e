import * as net from 'node:net';

/** One emulated WAN link: a listener at a broker's `wanAddress` forwarding to its `address`. */
export interface WanLink {
  /** Broker behind the link. */
  brokerId: string;
  /** Site of that broker (cutting a site blackholes all links into it). */
  site: string;
  /** host:port the proxy listens on (the broker's wanAddress). */
  listen: string;
  /** host:port it forwards to (the broker's address). */
  target: string;
}

/** Options of {@link WanEmulator}. */
export interface WanEmulatorOptions {
  /** Delay added in each direction, ms (a round trip costs twice this). */
  latencyMs: number;
  /** Uniform random extra delay per chunk, 0..jitterMs ms (order is kept). */
  jitterMs?: number;
  /** Random source (injectable for tests). */
  random?: () => number;
}

/** Counters of one link. */
export interface WanLinkStats {
  brokerId: string;
  site: string;
  listen: string;
  connections: number;
  openConnections: number;
  bytesIn: number;
  bytesOut: number;
  cut: boolean;
}

function split(hostPort: string): { host: string; port: number } {
  const i = hostPort.lastIndexOf(':');
  return { host: hostPort.slice(0, i).replace(/^\[|\]$/g, ''), port: Number(hostPort.slice(i + 1)) };
}

interface Pipe {
  site: string;
  client: net.Socket;
  upstream: net.Socket;
}

/**
 * A delaying TCP proxy per WAN link, so one machine shows real wide-area behaviour: every chunk waits
 * `latencyMs` (+ jitter) in each direction, in order, and a new connection's first bytes also wait one
 * round trip (the TCP handshake a real WAN charges before any data). A site can be cut off (its inbound links are
 * blackholed: bytes are dropped silently, new connections are accepted and never answered, as in a
 * partition) and healed (blackholed connections are reset so peers reconnect at once).
 */
export class WanEmulator {
  private readonly servers: net.Server[] = [];
  private readonly pipes = new Set<Pipe>();
  private readonly cutSites = new Set<string>();
  private readonly stats = new Map<string, WanLinkStats>();
  private latencyMs: number;
  private jitterMs: number;
  private readonly random: () => number;

  constructor(
    private readonly links: WanLink[],
    opts: WanEmulatorOptions,
  ) {
    this.latencyMs = opts.latencyMs;
    this.jitterMs = opts.jitterMs ?? 0;
    this.random = opts.random ?? Math.random;
  }

  /** Listens on every link's address. Rejects (and closes what it opened) if one is taken. */
  async start(): Promise<void> {
    try {
      for (const link of this.links) await this.listen(link);
    } catch (e) {
      await this.close();
      throw e;
    }
  }

  private listen(link: WanLink): Promise<void> {
    const st: WanLinkStats = {
      brokerId: link.brokerId,
      site: link.site,
      listen: link.listen,
      connections: 0,
      openConnections: 0,
      bytesIn: 0,
      bytesOut: 0,
      cut: false,
    };
    this.stats.set(link.brokerId, st);
    const server = net.createServer((client) => {
      st.connections++;
      st.openConnections++;
      const { host, port } = split(link.target);
      const upstream = net.connect({ host, port });
      const pipe: Pipe = { site: link.site, client, upstream };
      this.pipes.add(pipe);
      client.setNoDelay(true);
      upstream.setNoDelay(true);
      // A new connection pays the TCP handshake (one round trip) before its first byte crosses.
      // (SYN and SYN-ACK: the client's first bytes leave one round trip late, and arrive a one-way later.)
      this.forward(pipe, client, upstream, (n) => (st.bytesIn += n), Date.now() + 3 * this.latencyMs);
      this.forward(pipe, upstream, client, (n) => (st.bytesOut += n), 0);
      const end = () => {
        if (!this.pipes.delete(pipe)) return;
        st.openConnections--;
        client.destroy();
        upstream.destroy();
      };
      client.on('close', end);
      upstream.on('close', end);
      client.on('error', end);
      upstream.on('error', end);
    });
    this.servers.push(server);
    const { host, port } = split(link.listen);
    return new Promise((resolve, reject) => {
      server.once('error', (e) =>
        reject(
          new Error(
            `WAN emulator cannot listen on ${link.listen} (wanAddress of ${link.brokerId}): ${e.message}`,
          ),
        ),
      );
      server.listen(port, host, () => resolve());
    });
  }

  /**
   * Copies `from` → `to` after the link delay, preserving order; drops bytes while the site is cut.
   * Nothing is released before `notBefore` (epoch ms).
   */
  private forward(
    pipe: Pipe,
    from: net.Socket,
    to: net.Socket,
    count: (n: number) => void,
    notBefore: number,
  ): void {
    // One FIFO per direction and one timer for its head: chunks leave strictly in arrival order (separate
    // timers per chunk with different delays may fire out of order and corrupt the HTTP/2 stream).
    const queue: { release: number; chunk: Buffer }[] = [];
    let lastRelease = notBefore;
    let timer: NodeJS.Timeout | undefined;
    let ended = false;
    const flush = () => {
      timer = undefined;
      const now = Date.now();
      while (queue.length && queue[0]!.release <= now) {
        const { chunk } = queue.shift()!;
        if (!this.cutSites.has(pipe.site) && !to.destroyed) to.write(chunk);
      }
      if (queue.length <= 16 && from.isPaused()) from.resume();
      if (queue.length) timer = setTimeout(flush, queue[0]!.release - now);
      else if (ended && !to.destroyed) to.end();
    };
    from.on('data', (chunk: Buffer) => {
      if (this.cutSites.has(pipe.site)) return; // blackholed
      count(chunk.length);
      const delay = this.latencyMs + (this.jitterMs > 0 ? this.random() * this.jitterMs : 0);
      lastRelease = Math.max(Date.now() + delay, lastRelease);
      queue.push({ release: lastRelease, chunk });
      if (queue.length > 64) from.pause(); // backpressure while chunks wait in the "wire"
      timer ??= setTimeout(flush, lastRelease - Date.now());
    });
    from.on('end', () => {
      ended = true;
      if (!queue.length && !timer) to.end();
    });
  }

  /** Blackholes every WAN link into `site`. */
  cut(site: string): void {
    this.cutSites.add(site);
    for (const st of this.stats.values()) if (st.site === site) st.cut = true;
  }

  /** Restores `site`'s links; connections that were blackholed are reset so peers reconnect now. */
  heal(site: string): void {
    if (!this.cutSites.delete(site)) return;
    for (const st of this.stats.values()) if (st.site === site) st.cut = false;
    for (const p of [...this.pipes]) {
      if (p.site === site) {
        p.client.destroy();
        p.upstream.destroy();
      }
    }
  }

  /** Changes the delay of new chunks. */
  setLatency(latencyMs: number, jitterMs = this.jitterMs): void {
    this.latencyMs = latencyMs;
    this.jitterMs = jitterMs;
  }

  /** Per-link counters. */
  snapshot(): { latencyMs: number; jitterMs: number; cutSites: string[]; links: WanLinkStats[] } {
    return {
      latencyMs: this.latencyMs,
      jitterMs: this.jitterMs,
      cutSites: [...this.cutSites],
      links: [...this.stats.values()],
    };
  }

  /** Closes every listener and connection. */
  async close(): Promise<void> {
    for (const p of this.pipes) {
      p.client.destroy();
      p.upstream.destroy();
    }
    this.pipes.clear();
    await Promise.all(this.servers.map((s) => new Promise((r) => s.close(r))));
  }
}
