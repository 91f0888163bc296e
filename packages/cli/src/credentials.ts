import * as grpc from '@grpc/grpc-js';
import type { Command } from 'commander';
import * as fs from 'node:fs';

/** Connection flags shared by the client commands. */
export interface ConnectionFlags {
  ca?: string;
  cert?: string;
  key?: string;
  tokenFile?: string;
  serverName?: string;
}

/** Adds --ca, --cert, --key, --token-file, --server-name to a client command. */
export function addConnectionFlags(cmd: Command): Command {
  return cmd
    .option('--ca <file>', 'CA certificate (PEM): connect with TLS')
    .option('--cert <file>', 'client certificate (PEM) for mTLS')
    .option('--key <file>', 'client private key (PEM) for mTLS')
    .option('--token-file <file>', 'file holding a bearer token (or set WANAS_TOKEN); needs --ca')
    .option(
      '--server-name <name>',
      "the name the broker's certificate must carry (default: the address's host)",
    );
}

function read(file: string, flag: string): Buffer {
  try {
    return fs.readFileSync(file);
  } catch (e) {
    throw new Error(`${flag} ${file}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }
}

/** Channel credentials and options from the flags; plaintext when no --ca is given. */
export function clientChannel(o: ConnectionFlags): {
  credentials: grpc.ChannelCredentials;
  options: grpc.ChannelOptions;
} {
  const token = o.tokenFile
    ? read(o.tokenFile, '--token-file').toString('utf8').trim()
    : process.env.WANAS_TOKEN;
  if (!o.ca) {
    if (o.cert || o.key) throw new Error('--cert and --key need --ca');
    if (o.tokenFile) throw new Error('a bearer token is only sent over TLS: add --ca');
    return { credentials: grpc.credentials.createInsecure(), options: {} };
  }
  if (!!o.cert !== !!o.key) throw new Error('--cert and --key go together');
  let creds = grpc.credentials.createSsl(
    read(o.ca, '--ca'),
    o.key ? read(o.key, '--key') : null,
    o.cert ? read(o.cert, '--cert') : null,
  );
  if (token) {
    creds = grpc.credentials.combineChannelCredentials(
      creds,
      grpc.credentials.createFromMetadataGenerator((_params, cb) => {
        const md = new grpc.Metadata();
        md.set('authorization', `Bearer ${token}`);
        cb(null, md);
      }),
    );
  }
  return {
    credentials: creds,
    options: o.serverName ? { 'grpc.ssl_target_name_override': o.serverName } : {},
  };
}
