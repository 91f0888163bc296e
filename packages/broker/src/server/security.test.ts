import * as grpc from '@grpc/grpc-js';
import winston from 'winston';
import { hashToken, parseTopology } from '@wanas/topology';
import { createSecurity } from './security';

const log = winston.createLogger({ silent: true });
const topo = (address: string, security: Record<string, unknown> = {}) =>
  parseTopology({
    federation: 'f',
    security,
    sites: [{ name: 's', pods: [{ name: 'p', brokers: [{ id: 'a', address }] }] }],
  });

describe('createSecurity', () => {
  it('allows insecure mode on loopback only, unless forced', () => {
    expect(createSecurity(() => topo('127.0.0.1:1'), topo('127.0.0.1:1').brokers.get('a')!, log).mode).toBe(
      'insecure',
    );
    const t = topo('10.1.2.3:7000');
    expect(() => createSecurity(() => t, t.brokers.get('a')!, log)).toThrow(
      /refusing insecure mode on non-loopback address 10.1.2.3:7000/,
    );
    const forced = topo('10.1.2.3:7000', { allowInsecureNonLoopback: true });
    expect(createSecurity(() => forced, forced.brokers.get('a')!, log).mode).toBe('insecure');
  });

  it('requires the CA, certificate and key files in mtls mode, naming the missing one', () => {
    expect(() => topo('127.0.0.1:1', { mode: 'mtls' })).toThrow(
      /security\.caFile: required when mode is mtls/,
    );
    const t = topo('127.0.0.1:1', {
      mode: 'mtls',
      caFile: '/nonexistent/ca.crt',
      certFile: '/nonexistent/{id}.crt',
      keyFile: '/nonexistent/{id}.key',
    });
    expect(() => createSecurity(() => t, t.brokers.get('a')!, log)).toThrow(
      /security\.caFile: cannot read \/nonexistent\/ca\.crt/,
    );
  });

  it('keeps tokens as sha256 digests and refuses malformed ones in the topology', () => {
    expect(hashToken('abc')).toBe('ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad');
    expect(() => topo('127.0.0.1:1', { clientTokens: [{ name: 'ops', sha256: 'plaintext-token' }] })).toThrow(
      /clientTokens\[0\]\.sha256: must be 64 lower-case hex/,
    );
  });

  it('lets every caller through in insecure mode (development only)', () => {
    const t = topo('127.0.0.1:1');
    const sec = createSecurity(() => t, t.brokers.get('a')!, log);
    expect(sec.authorize({ metadata: new grpc.Metadata(), getAuthContext: () => ({}) }, 'broker')).toBe(
      'anonymous',
    );
  });
});
