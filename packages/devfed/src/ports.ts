import * as fs from 'node:fs';
import * as net from 'node:net';

/** The first port of the kernel's ephemeral range (outgoing connections take ports from it). */
function ephemeralStart(): number {
  try {
    const [lo] = fs.readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').trim().split(/\s+/);
    const n = Number(lo);
    return Number.isInteger(n) && n > 12_000 ? n : 32_768;
  } catch {
    return 32_768;
  }
}

/** Ports handed out by this process, never handed out twice. */
const handedOut = new Set<number>();

/** Whether a loopback port can be bound right now. */
function bindable(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.createServer();
    s.once('error', () => resolve(false));
    s.listen(port, '127.0.0.1', () => s.close(() => resolve(true)));
  });
}

/**
 * Free loopback ports for processes to listen on. They are chosen below the kernel's ephemeral range:
 * a port picked by binding to 0 comes from that range, and between release and the child's bind an
 * outgoing connection of any process (brokers dial each other constantly) can take it.
 */
export async function freePorts(n: number): Promise<number[]> {
  const hi = ephemeralStart() - 1;
  const lo = Math.max(10_000, hi - 20_000);
  const ports: number[] = [];
  for (let tries = 0; ports.length < n; tries++) {
    if (tries > n * 50 + 1000) throw new Error(`could not find ${n} free ports in ${lo}-${hi}`);
    const p = lo + Math.floor(Math.random() * (hi - lo));
    if (handedOut.has(p) || !(await bindable(p))) continue;
    handedOut.add(p);
    ports.push(p);
  }
  return ports;
}
