import 'reflect-metadata';
import * as x509 from '@peculiar/x509';
import { webcrypto } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';

type CryptoKey = webcrypto.CryptoKey;
type CryptoKeyPair = webcrypto.CryptoKeyPair;

x509.cryptoProvider.set(webcrypto as never);

/** Lifetime of the throwaway certificates `wanas up --tls-dir` makes, ms (30 days). */
const CERT_LIFETIME_MS = 30 * 24 * 3600 * 1000;
const ALG = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' } as const;

async function keyPem(key: CryptoKey): Promise<string> {
  return x509.PemConverter.encode(await webcrypto.subtle.exportKey('pkcs8', key), 'PRIVATE KEY');
}

let serial = Date.now();

async function issue(
  ca: { cert: x509.X509Certificate; key: CryptoKey },
  cn: string,
  sans: string[],
): Promise<{ cert: string; key: string }> {
  const keys = (await webcrypto.subtle.generateKey(ALG, true, ['sign', 'verify'])) as CryptoKeyPair;
  const cert = await x509.X509CertificateGenerator.create({
    serialNumber: (serial++).toString(16),
    subject: `CN=${cn}`,
    issuer: ca.cert.subject,
    notBefore: new Date(Date.now() - 60_000),
    notAfter: new Date(Date.now() + CERT_LIFETIME_MS),
    signingKey: ca.key,
    publicKey: keys.publicKey,
    signingAlgorithm: ALG,
    extensions: [
      new x509.BasicConstraintsExtension(false, undefined, true),
      new x509.KeyUsagesExtension(
        x509.KeyUsageFlags.digitalSignature | x509.KeyUsageFlags.keyEncipherment,
        true,
      ),
      new x509.ExtendedKeyUsageExtension([
        x509.ExtendedKeyUsage.serverAuth,
        x509.ExtendedKeyUsage.clientAuth,
      ]),
      new x509.SubjectAlternativeNameExtension(
        sans.map((s) =>
          /^[\d.]+$/.test(s) ? { type: 'ip' as const, value: s } : { type: 'dns' as const, value: s },
        ),
      ),
    ],
  });
  return { cert: cert.toString('pem'), key: await keyPem(keys.privateKey) };
}

/** What {@link createTlsDir} wrote. */
export interface TlsFiles {
  ca: string;
  clientCert: string;
  clientKey: string;
  /** Broker files use these patterns with `{id}`. */
  brokerCert: string;
  brokerKey: string;
}

/**
 * Writes a throwaway CA (`ca.crt`), a certificate per broker (`<id>.crt`/`<id>.key`, CN and SAN = the
 * broker id, SANs `localhost`, `127.0.0.1` and any `extraSans`) and one client identity (`client.crt`/`client.key`,
 * CN `client`). Keys are ECDSA P-256, files mode 0600. For demos and tests, not production PKI.
 */
export async function createTlsDir(
  dir: string,
  brokerIds: string[],
  /** Extra subject alternative names per id (e.g. Kubernetes Service names). */
  extraSans: (id: string) => string[] = () => [],
): Promise<TlsFiles> {
  fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
  const caKeys = (await webcrypto.subtle.generateKey(ALG, true, ['sign', 'verify'])) as CryptoKeyPair;
  const caCert = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: (serial++).toString(16),
    name: 'CN=wanas throwaway CA',
    notBefore: new Date(Date.now() - 60_000),
    notAfter: new Date(Date.now() + CERT_LIFETIME_MS),
    keys: caKeys,
    signingAlgorithm: ALG,
    extensions: [
      new x509.BasicConstraintsExtension(true, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
    ],
  });
  const ca = { cert: caCert, key: caKeys.privateKey };
  const write = (name: string, text: string) => fs.writeFileSync(path.join(dir, name), text, { mode: 0o600 });
  write('ca.crt', caCert.toString('pem'));
  write('ca.key', await keyPem(caKeys.privateKey));
  for (const id of brokerIds) {
    const { cert, key } = await issue(ca, id, [id, 'localhost', '127.0.0.1', ...extraSans(id)]);
    write(`${id}.crt`, cert);
    write(`${id}.key`, key);
  }
  const client = await issue(ca, 'client', ['client']);
  write('client.crt', client.cert);
  write('client.key', client.key);
  return {
    ca: path.join(dir, 'ca.crt'),
    clientCert: path.join(dir, 'client.crt'),
    clientKey: path.join(dir, 'client.key'),
    brokerCert: path.join(dir, '{id}.crt'),
    brokerKey: path.join(dir, '{id}.key'),
  };
}

/**
 * Issues a new certificate for `id` from the CA that {@link createTlsDir} wrote into `dir` (`ca.crt`,
 * `ca.key`), overwriting `<id>.crt` and `<id>.key`: a certificate rotation, as an operator would do it.
 */
export async function reissueCertificate(dir: string, id: string): Promise<void> {
  const cert = new x509.X509Certificate(fs.readFileSync(path.join(dir, 'ca.crt'), 'utf8'));
  const pkcs8 = x509.PemConverter.decodeFirst(fs.readFileSync(path.join(dir, 'ca.key'), 'utf8'));
  const key = await webcrypto.subtle.importKey('pkcs8', pkcs8, ALG, true, ['sign']);
  const issued = await issue({ cert, key }, id, [id, 'localhost', '127.0.0.1']);
  // Key first, then certificate: a reader between the two writes sees a pair that does not match and
  // keeps serving with the old one until the next refresh.
  fs.writeFileSync(path.join(dir, `${id}.key`), issued.key, { mode: 0o600 });
  fs.writeFileSync(path.join(dir, `${id}.crt`), issued.cert, { mode: 0o600 });
}
