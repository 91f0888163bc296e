import * as grpc from '@grpc/grpc-js';
import { createHash, timingSafeEqual } from 'node:crypto';
import * as fs from 'node:fs';
import type { Logger } from 'winston';
import { BrokerError } from '../errors';
import { brokerIdentities, topologyPath, type BrokerInfo, type Topology } from '@wanas/topology';

/** Who may call a method: any authenticated client, or only a broker of this federation. */
export type CallerKind = 'client' | 'broker';

/** The parts of a server call that authorization reads. */
export interface AuthorizableCall {
  metadata: grpc.Metadata;
  getAuthContext(): { sslPeerCertificate?: { subject?: { CN?: string | string[] } } };
}

/** Transport security and authorization of one broker. */
export interface BrokerSecurity {
  mode: 'insecure' | 'mtls';
  /** Credentials the gRPC server listens with. */
  serverCredentials: grpc.ServerCredentials;
  /** Credentials for channels to peer brokers. */
  channelCredentials: grpc.ChannelCredentials;
  /**
   * Per-peer channel options: under mTLS the peer's certificate must name the broker id dialled (for a
   * broker found by DNS, `<site>-<pod>@<address>`, its pod's identity `<site>-<pod>`).
   */
  peerChannelOptions(brokerId: string): grpc.ChannelOptions;
  /**
   * Throws UNAUTHENTICATED (no credentials) or PERMISSION_DENIED (credentials that do not allow this
   * call); returns the caller's identity (certificate CN or token name) for the log.
   */
  authorize(call: AuthorizableCall, need: CallerKind): string;
  /** Under mTLS: the CA, certificate and key files (PEM), for the HTTPS listener of the console and metrics. */
  tlsFiles?: { caCertificateFile: string; certificateFile: string; privateKeyFile: string };
}

/** The identity `authorize` gives every caller in insecure mode (nothing authenticates them). */
export const ANONYMOUS = 'anonymous';

const LOOPBACK = /^(127\.\d+\.\d+\.\d+|localhost|\[?::1\]?)$/;

function hostOf(address: string): string {
  return address.slice(0, address.lastIndexOf(':')).replace(/^\[|\]$/g, '');
}

const identityCache = new WeakMap<Topology, Set<string>>();
/** Broker certificate names of a topology (cached per topology object). */
function identitiesOf(t: Topology): Set<string> {
  let names = identityCache.get(t);
  if (!names) identityCache.set(t, (names = brokerIdentities(t)));
  return names;
}

function certCn(call: AuthorizableCall): string | undefined {
  const cn = call.getAuthContext().sslPeerCertificate?.subject?.CN;
  return Array.isArray(cn) ? cn[0] : cn;
}

/**
 * Builds a broker's security from the topology's `security` section.
 *
 * - `insecure`: plaintext and no authentication; logged loudly; refused on a non-loopback address unless
 *   `allowInsecureNonLoopback`.
 * - `mtls`: TLS with the CA, certificate and key files (re-read every `refreshIntervalMs` by grpc-js's
 *   file-watching certificate provider, so replaced certificates apply without a restart). Clients
 *   authenticate with a certificate signed by the CA or a bearer token (`authorization: Bearer …`,
 *   compared by SHA-256 in constant time). FederationService only accepts callers whose certificate CN
 *   is a broker id of this topology. Peer channels check that the peer's certificate names the broker id
 *   they dial.
 */
export function createSecurity(topology: () => Topology, self: BrokerInfo, log: Logger): BrokerSecurity {
  return topology().security.mode === 'insecure'
    ? insecureSecurity(topology(), self, log)
    : mtlsSecurity(topology, self, log);
}

/** Plaintext, no authentication: loopback development only (refused elsewhere unless explicitly allowed). */
function insecureSecurity(t: Topology, self: BrokerInfo, log: Logger): BrokerSecurity {
  if (!LOOPBACK.test(hostOf(self.address)) && !t.security.allowInsecureNonLoopback) {
    throw new BrokerError(
      grpc.status.FAILED_PRECONDITION,
      `refusing insecure mode on non-loopback address ${self.address}: set security.mode: mtls (or security.allowInsecureNonLoopback: true, never in production)`,
    );
  }
  log.warn(
    'INSECURE MODE: plaintext gRPC, no authentication, any caller may use FederationService; for loopback development only',
  );
  return {
    mode: 'insecure',
    serverCredentials: grpc.ServerCredentials.createInsecure(),
    channelCredentials: grpc.credentials.createInsecure(),
    peerChannelOptions: () => ({}),
    authorize: () => ANONYMOUS,
  };
}

/** The CA, certificate and key files of the topology, each checked readable (the error names the field). */
function certificateFiles(t: Topology, self: BrokerInfo) {
  const sec = t.security;
  const files = {
    caCertificateFile: topologyPath(t, sec.caFile!, self.tlsName),
    certificateFile: topologyPath(t, sec.certFile!, self.tlsName),
    privateKeyFile: topologyPath(t, sec.keyFile!, self.tlsName),
  };
  const field = {
    caCertificateFile: 'caFile',
    certificateFile: 'certFile',
    privateKeyFile: 'keyFile',
  } as const;
  for (const [what, f] of Object.entries(files) as [keyof typeof field, string][]) {
    try {
      fs.accessSync(f, fs.constants.R_OK);
    } catch {
      throw new BrokerError(grpc.status.FAILED_PRECONDITION, `security.${field[what]}: cannot read ${f}`);
    }
  }
  return files;
}

/**
 * The client token a call presents: its name, undefined without an `authorization` header, null for a
 * token that is malformed or unknown (compared by SHA-256 digest in constant time, no early exit).
 */
function tokenReader(tokens: { name: string; digest: Buffer }[]) {
  return (call: AuthorizableCall): string | undefined | null => {
    const auth = call.metadata.get('authorization')[0];
    if (auth === undefined) return undefined;
    const m = /^Bearer ([\x21-\x7e]{1,1024})$/.exec(String(auth));
    if (!m) return null;
    const digest = createHash('sha256').update(m[1]!, 'utf8').digest();
    let found: string | null = null;
    for (const tk of tokens) if (timingSafeEqual(tk.digest, digest)) found = tk.name;
    return found;
  };
}

/** mTLS with file-watched certificates; clients by certificate or token; FederationService for brokers only. */
function mtlsSecurity(topology: () => Topology, self: BrokerInfo, log: Logger): BrokerSecurity {
  const sec = topology().security;
  const files = certificateFiles(topology(), self);
  const provider = new grpc.experimental.FileWatcherCertificateProvider({
    ...files,
    refreshIntervalMs: sec.refreshIntervalMs,
  });
  const tokens = sec.clientTokens.map((tk) => ({ name: tk.name, digest: Buffer.from(tk.sha256, 'hex') }));
  log.info('mTLS on', {
    ca: files.caCertificateFile,
    cert: files.certificateFile,
    clientTokens: tokens.length,
    refreshIntervalMs: sec.refreshIntervalMs,
  });
  const tokenName = tokenReader(tokens);
  return {
    mode: 'mtls',
    serverCredentials: grpc.experimental.createCertificateProviderServerCredentials(
      provider,
      provider,
      false,
    ),
    channelCredentials: grpc.experimental.createCertificateProviderChannelCredentials(provider, provider),
    peerChannelOptions: (brokerId) => {
      const name = brokerId.split('@')[0]!;
      return { 'grpc.ssl_target_name_override': name, 'grpc.default_authority': name };
    },
    authorize: (call, need) => authorizeCall(topology(), certCn(call), tokenName(call), need),
    tlsFiles: files,
  };
}

/** Who the caller is (certificate CN or `token:<name>`), or a BrokerError saying why it may not call. */
function authorizeCall(
  now: Topology,
  cn: string | undefined,
  token: string | undefined | null,
  need: CallerKind,
): string {
  if (token === null) throw new BrokerError(grpc.status.UNAUTHENTICATED, 'the bearer token is not valid');
  if (need === 'broker') {
    if (cn && identitiesOf(now).has(cn)) return cn;
    if (cn || token) {
      throw new BrokerError(
        grpc.status.PERMISSION_DENIED,
        `FederationService accepts brokers of federation "${now.federation}" only; caller "${cn ?? token}" is not one`,
      );
    }
    throw new BrokerError(grpc.status.UNAUTHENTICATED, 'a broker certificate is required');
  }
  if (cn) return cn;
  if (token) return `token:${token}`;
  throw new BrokerError(
    grpc.status.UNAUTHENTICATED,
    'credentials required: a client certificate signed by the federation CA, or "authorization: Bearer <token>"',
  );
}
