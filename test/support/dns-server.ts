/**
 * A real DNS server on 127.0.0.1 (UDP, port chosen by the kernel) whose records a test changes while
 * brokers resolve against it: A records per name, NXDOMAIN for unknown names, and switches to answer
 * SERVFAIL or nothing at all (an outage).
 */
import dns2 from 'dns2';

const { Packet } = dns2;
/** Response codes (RFC 1035 §4.1.1); dns2's typings lack RCODE. */
const RCODE = { SERVFAIL: 2, NXDOMAIN: 3 } as const;

/** How the server answers. */
export type DnsMode = 'normal' | 'servfail' | 'silent';

export class TestDnsServer {
  /** A records by name (lower case, no trailing dot). */
  readonly records = new Map<string, string[]>();
  mode: DnsMode = 'normal';
  /** Queries seen, for assertions. */
  queries = 0;
  private server: ReturnType<typeof dns2.createServer> | undefined;
  port = 0;

  /** Starts listening; resolves with the port. */
  async start(): Promise<number> {
    const server = dns2.createServer({
      udp: true,
      handle: (request, send) => {
        this.queries++;
        if (this.mode === 'silent') return;
        const response = Packet.createResponseFromRequest(request);
        const [q] = request.questions;
        if (this.mode === 'servfail' || !q) {
          response.header.rcode = RCODE.SERVFAIL;
          void send(response);
          return;
        }
        const ips = this.records.get(q.name.toLowerCase().replace(/\.$/, ''));
        if (!ips) {
          response.header.rcode = RCODE.NXDOMAIN;
        } else if (q.type === Packet.TYPE.A) {
          for (const address of ips)
            (response.answers as unknown[]).push({
              name: q.name,
              type: Packet.TYPE.A,
              class: Packet.CLASS.IN,
              ttl: 1,
              address,
            });
        } // AAAA and others: NOERROR with no answers (the name exists, without such records)
        void send(response);
      },
    });
    const listening = await server.listen({ udp: { port: 0, address: '127.0.0.1' } });
    void listening;
    this.server = server;
    this.port = server.addresses().udp!.port;
    return this.port;
  }

  /** Sets the A records of a name (an empty list: the name exists with no addresses). */
  set(name: string, ips: string[]): void {
    this.records.set(name, ips);
  }

  /** Removes a name (NXDOMAIN from now on). */
  remove(name: string): void {
    this.records.delete(name);
  }

  /** `127.0.0.1:PORT`, for `settings.dnsServers`. */
  get address(): string {
    return `127.0.0.1:${this.port}`;
  }

  async close(): Promise<void> {
    await this.server?.close();
  }
}
