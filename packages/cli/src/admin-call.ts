import * as grpc from '@grpc/grpc-js';
import { AdminServiceClient } from '@wanas/proto';
import type { Command } from 'commander';
import { clientChannel, type ConnectionFlags } from './credentials';

/** The flags every AdminService command takes. */
export type AdminFlags = { address: string; json?: boolean; timeout: number } & ConnectionFlags;

/**
 * One AdminService call for a command: the client from the connection flags (a bad flag: exit 2), the call
 * within `--timeout`, `print` of the answer on stdout; a failed call is `error: cannot WHAT from ADDRESS:
 * details` on stderr and exit code 1.
 */
export async function adminCall<Res>(
  program: Command,
  o: AdminFlags,
  what: string,
  call: (
    client: AdminServiceClient,
    deadline: grpc.CallOptions,
    cb: (e: grpc.ServiceError | null, r: Res) => void,
  ) => void,
  print: (res: Res) => string,
): Promise<void> {
  let channel;
  try {
    channel = clientChannel(o);
  } catch (e) {
    program.error(`error: ${(e as Error).message}`, { exitCode: 2 });
  }
  const client = new AdminServiceClient(o.address, channel.credentials, channel.options);
  try {
    const res = await new Promise<Res>((resolve, reject) =>
      call(client, { deadline: Date.now() + o.timeout }, (e, r) => (e ? reject(e) : resolve(r))),
    );
    process.stdout.write(`${print(res)}\n`);
  } catch (e) {
    const err = e as grpc.ServiceError;
    process.stderr.write(`error: cannot ${what} from ${o.address}: ${err.details || err.message}\n`);
    process.exitCode = 1;
  } finally {
    client.close();
  }
}
