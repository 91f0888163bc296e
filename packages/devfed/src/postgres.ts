/**
 * A private PostgreSQL server for development and tests: Debian's `postgresql` binaries (`initdb`,
 * `pg_ctl`), a data folder of its own, a free loopback port, its socket in the same folder; stopped (and the
 * folder removed) by {@link PrivatePostgres.stop}. No system service is used. As root, the server runs as the
 * `postgres` user (PostgreSQL refuses to run as root).
 */
import { execFile } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { freePorts } from './ports';

/** Where Debian puts the server's programs. */
const PG_BIN_DIRS = [
  '/usr/lib/postgresql/17/bin',
  '/usr/lib/postgresql/16/bin',
  '/usr/lib/postgresql/15/bin',
];
/** How long `pg_ctl start` may take, s. */
const START_TIMEOUT_S = 30;

/** Runs a PostgreSQL program (as `postgres` when this process is root); rejects with its output. */
function runPg(bin: string, args: string[], asPostgres: boolean): Promise<string> {
  const [cmd, argv] = asPostgres ? ['runuser', ['-u', 'postgres', '--', bin, ...args]] : [bin, args];
  return new Promise((resolve, reject) =>
    execFile(cmd, argv, { encoding: 'utf8', timeout: 60_000 }, (e, stdout, stderr) =>
      e
        ? reject(new Error(`${path.basename(bin)} failed: ${stderr || stdout || e.message}`))
        : resolve(stdout),
    ),
  );
}

/** The folder of the server's programs; an Error saying what to install when there is none. */
export function postgresBinDir(): string {
  const dir = PG_BIN_DIRS.find((d) => fs.existsSync(path.join(d, 'pg_ctl')));
  if (!dir)
    throw new Error(
      `no PostgreSQL server here (looked for pg_ctl in ${PG_BIN_DIRS.join(', ')}): install Debian's postgresql package`,
    );
  return dir;
}

/** A running private server. */
export class PrivatePostgres {
  private constructor(
    readonly dir: string,
    readonly port: number,
    private readonly bin: string,
    private readonly asPostgres: boolean,
    /** Whether it listens on 127.0.0.1 as well as on its socket (a standby on the same port does not). */
    private readonly tcp = true,
  ) {}

  /** The folder of its socket (`.s.PGSQL.<port>`): a connection URL's host may name it, or a link to it. */
  get socketDir(): string {
    return this.dir;
  }

  /** A connection URL for a database of this server (`postgres` by default), as the `postgres` superuser. */
  url(database = 'postgres'): string {
    return `postgresql://postgres@127.0.0.1:${this.port}/${database}`;
  }

  /** initdb in a new folder (under `parent`, default the system's temp folder), then start on a free port. */
  static async start(parent = os.tmpdir()): Promise<PrivatePostgres> {
    const [port] = await freePorts(1);
    const pg = await PrivatePostgres.inNewDir(parent, port!, true);
    await pg.create([
      path.join(pg.bin, 'initdb'),
      ['-D', pg.data, '-U', 'postgres', '-A', 'trust', '--no-sync', '-E', 'UTF8'],
    ]);
    return pg;
  }

  /**
   * A streaming standby of this server (pg_basebackup), on the same port number but only on a socket in its
   * own folder — so that a link naming "the database" can be moved from one to the other, as a DNS name is
   * in a real failover. `synchronous`: the primary's commits wait for it, so a promotion loses nothing
   * acknowledged.
   */
  async startStandby(synchronous: boolean): Promise<PrivatePostgres> {
    const standby = await PrivatePostgres.inNewDir(path.dirname(this.dir), this.port, false);
    await standby.create([
      path.join(this.bin, 'pg_basebackup'),
      ['-D', standby.data, '-h', this.dir, '-p', String(this.port), '-U', 'postgres', '-R', '-X', 'stream'],
    ]);
    if (synchronous) {
      await runPg(
        path.join(this.bin, 'psql'),
        [
          '-h',
          this.dir,
          '-p',
          String(this.port),
          '-U',
          'postgres',
          '-c',
          "ALTER SYSTEM SET synchronous_standby_names = '*'",
        ],
        this.asPostgres,
      );
      await this.ctl(['reload']);
    }
    return standby;
  }

  /** Makes a standby the primary (`pg_ctl promote`), waiting until it accepts writes. */
  async promote(): Promise<void> {
    await this.ctl(['promote', '-w', '-t', String(START_TIMEOUT_S)]);
  }

  /** A new instance in its own folder (reachable by `postgres`, owned by it when root); not created yet. */
  private static async inNewDir(parent: string, port: number, tcp: boolean): Promise<PrivatePostgres> {
    const bin = postgresBinDir();
    const asPostgres = process.getuid?.() === 0;
    // The server runs as `postgres`: its folder must be reachable by that user (a 0700 parent is not).
    const base = asPostgres && !othersCanReach(parent) ? os.tmpdir() : parent;
    const dir = fs.mkdtempSync(path.join(base, 'wanas-pg-'));
    fs.chmodSync(dir, 0o700);
    if (asPostgres) {
      const { uid, gid } = await postgresIds();
      fs.chownSync(dir, uid, gid);
    }
    return new PrivatePostgres(dir, port, bin, asPostgres, tcp);
  }

  /** Fills the data folder with `program`, then starts; removes the folder when either fails. */
  private async create([program, args]: [string, string[]]): Promise<void> {
    try {
      await runPg(program, args, this.asPostgres);
      await this.startServer();
    } catch (e) {
      fs.rmSync(this.dir, { recursive: true, force: true });
      throw e;
    }
  }

  private get data(): string {
    return path.join(this.dir, 'data');
  }

  /** `pg_ctl` on this server's data folder. */
  ctl(args: string[]): Promise<string> {
    return runPg(path.join(this.bin, 'pg_ctl'), ['-D', this.data, ...args], this.asPostgres);
  }

  /**
   * Freezes the server (SIGSTOP to the postmaster and every backend; `false`: SIGCONT): connections stay
   * open and are never answered, as with a hung host or a partition.
   */
  freeze(frozen = true): void {
    const pid = Number(fs.readFileSync(path.join(this.data, 'postmaster.pid'), 'utf8').split('\n')[0]);
    for (const p of [pid, ...childrenOf(pid)]) process.kill(p, frozen ? 'SIGSTOP' : 'SIGCONT');
  }

  /** Stops the server now (`-m immediate`: a crash, as a failure test wants) or cleanly. */
  async stopServer(mode: 'fast' | 'immediate' = 'fast'): Promise<void> {
    await this.ctl(['stop', '-w', '-m', mode]);
  }

  /** Starts the server (again: on the same port, with the same socket folder). */
  async startServer(): Promise<void> {
    const listen = this.tcp ? '127.0.0.1' : "''";
    const options = `-p ${this.port} -k ${this.dir} -c listen_addresses=${listen} -c fsync=off`;
    await this.ctl([
      'start',
      '-w',
      '-t',
      String(START_TIMEOUT_S),
      '-l',
      path.join(this.dir, 'server.log'),
      '-o',
      options,
    ]);
  }

  /** Stops the server and removes its folder. */
  async stop(): Promise<void> {
    await this.stopServer('immediate').catch(() => undefined); // already stopped: nothing to do
    fs.rmSync(this.dir, { recursive: true, force: true });
  }
}

/** The processes whose parent is `pid` (from /proc: Linux). */
function childrenOf(pid: number): number[] {
  return fs
    .readdirSync('/proc')
    .filter((d) => /^\d+$/.test(d))
    .filter((d) => {
      try {
        // pid (comm) state ppid …: comm may hold spaces, so read after its closing parenthesis.
        const stat = fs.readFileSync(`/proc/${d}/stat`, 'utf8');
        return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]) === pid;
      } catch {
        return false; // gone meanwhile
      }
    })
    .map(Number);
}

/** True when every folder from the root to `dir` lets other users through (o+x). */
function othersCanReach(dir: string): boolean {
  for (let d = path.resolve(dir); ; d = path.dirname(d)) {
    if ((fs.statSync(d).mode & 0o001) === 0) return false;
    if (path.dirname(d) === d) return true;
  }
}

/** The `postgres` user's ids (the server's files must be its). */
async function postgresIds(): Promise<{ uid: number; gid: number }> {
  const out = await new Promise<string>((resolve, reject) =>
    execFile('id', ['postgres'], { encoding: 'utf8' }, (e, stdout) =>
      e ? reject(new Error("no postgres user: install Debian's postgresql package")) : resolve(stdout),
    ),
  );
  const uid = /uid=(\d+)/.exec(out);
  const gid = /gid=(\d+)/.exec(out);
  if (!uid || !gid) throw new Error(`cannot read the postgres user's ids from "${out.trim()}"`);
  return { uid: Number(uid[1]), gid: Number(gid[1]) };
}
