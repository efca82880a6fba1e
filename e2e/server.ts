// The real server binary (`gotalk-e2e serve`: `gotalk serve` with the demo and the fixture
// operations, from crates/tests) as a child process, for the tests' fixtures.

import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import * as path from 'node:path';
import * as readline from 'node:readline';

/** The repository's root, which `GOTALK_BIN` is resolved against. */
export const repoRoot = path.resolve(__dirname, '..');

/** The server binary: `$GOTALK_BIN`, or the debug build of `gotalk-e2e`. */
export const gotalkBin = path.resolve(repoRoot, process.env.GOTALK_BIN || 'target/debug/gotalk-e2e');

/** The benchmark binary (its hidden `bench-crowd`): `$GOTALK_BENCH_BIN`, or the debug build. */
export const benchBin = path.resolve(
  repoRoot,
  process.env.GOTALK_BENCH_BIN || 'target/debug/gotalk-bench',
);

/** How long the server may take to print its addresses, or to exit once asked. */
const WAIT_MS = 10_000;

/** The last lines a server wrote, to show when a test fails. */
const LOG_LINES = 400;

/**
 * One `gotalk serve` process on 127.0.0.1. The first start takes ports the system picks; the
 * ports are kept, so a later `start()` (after `stop()`) serves on the same ones and a page
 * can reconnect to it.
 */
export class GotalkServer {
  /** The HTTP port: the demo at `/`, gotalk over WebSocket at `/gotalk/`. */
  httpPort = 0;
  /** The gotalk-over-TCP port. */
  tcpPort = 0;
  /** The server's recent stdout and stderr lines, oldest first. */
  readonly log: string[] = [];
  /** How many lines the server has written in all, so `logSince` can find a test's lines. */
  logged = 0;

  private child: ChildProcess | null = null;
  private exited: Promise<void> = Promise.resolve();

  constructor(private readonly extraArgs: string[] = []) {}

  /** `http://127.0.0.1:PORT/`, where the demo page is. */
  get http(): string {
    return `http://127.0.0.1:${this.httpPort}/`;
  }

  /** `tcp://127.0.0.1:PORT`. */
  get tcp(): string {
    return `tcp://127.0.0.1:${this.tcpPort}`;
  }

  /** Starts the server and waits for its banner. */
  async start(): Promise<void> {
    if (this.child) throw new Error('gotalk serve is already running');
    if (!existsSync(gotalkBin)) {
      throw new Error(`${gotalkBin} does not exist: run \`cargo build -p gotalk-tests\` (or set GOTALK_BIN)`);
    }
    const args = [
      'serve',
      '--http', `127.0.0.1:${this.httpPort}`,
      '--tcp', `127.0.0.1:${this.tcpPort}`,
      ...this.extraArgs,
    ];
    const child = spawn(gotalkBin, args, { cwd: repoRoot, stdio: ['ignore', 'pipe', 'pipe'] });
    this.child = child;
    this.exited = new Promise((resolve) => child.once('exit', () => resolve()));
    readline.createInterface({ input: child.stderr! }).on('line', (line) => this.record(line));

    const banner = new Promise<{ http: string; tcp: string }>((resolve, reject) => {
      const found: { http?: string; tcp?: string } = {};
      readline.createInterface({ input: child.stdout! }).on('line', (line) => {
        this.record(line);
        const demo = /^gotalk demo:\s+(\S+)/.exec(line);
        const tcp = /^gotalk tcp:\s+(\S+)/.exec(line);
        if (demo) found.http = demo[1];
        if (tcp) found.tcp = tcp[1];
        if (found.http && found.tcp) resolve({ http: found.http, tcp: found.tcp });
      });
      child.once('error', reject);
      child.once('exit', (code, signal) =>
        reject(new Error(`gotalk serve exited (${signal ?? code}) before printing its addresses`)),
      );
    });
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`gotalk serve printed no addresses in ${WAIT_MS} ms`)), WAIT_MS);
    });
    try {
      const urls = await Promise.race([banner, timeout]);
      this.httpPort = Number(new URL(urls.http).port);
      this.tcpPort = Number(new URL(urls.tcp).port);
    } catch (err) {
      await this.stop();
      throw new Error(`${(err as Error).message}\n${gotalkBin} ${args.join(' ')}\n${this.log.join('\n')}`);
    } finally {
      clearTimeout(timer);
    }
  }

  /** Stops the server with SIGTERM (its graceful shutdown), or SIGKILL if that takes too long. */
  async stop(): Promise<void> {
    const child = this.child;
    if (!child) return;
    this.child = null;
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGTERM');
      // A server frozen by pause() would only act on it once running again.
      child.kill('SIGCONT');
      const timer = setTimeout(() => child.kill('SIGKILL'), WAIT_MS);
      await this.exited;
      clearTimeout(timer);
    }
  }

  /**
   * Kills the server with SIGKILL, as a crash would: no graceful close, so its peers see
   * their connections drop. A later `start()` serves on the same ports again.
   */
  async kill(): Promise<void> {
    const child = this.child;
    if (!child) return;
    this.child = null;
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGKILL');
      await this.exited;
    }
  }

  /**
   * Freezes the server with SIGSTOP, as a hung process or a sleeping host: its sockets stay
   * open but nothing is read or written, so its peers hear only silence. `resume()` undoes it.
   */
  pause(): void {
    this.child?.kill('SIGSTOP');
  }

  /** Lets a server frozen by `pause()` run again (SIGCONT). */
  resume(): void {
    this.child?.kill('SIGCONT');
  }

  /** The lines written since `logged` was `mark` (as many as are still kept). */
  logSince(mark: number): string[] {
    return this.log.slice(Math.max(0, this.log.length - (this.logged - mark)));
  }

  private record(line: string): void {
    this.logged += 1;
    this.log.push(line);
    if (this.log.length > LOG_LINES) this.log.shift();
  }
}
