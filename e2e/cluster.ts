// A cluster for the specs: `gotalk-cluster-fixture` (from crates/tests) starts a bus
// (redis-server or nats-server), three `gotalk-e2e serve --redis URL` (or `--nats URL`)
// instances and haproxy in front of them, all on free ports; this drives it over its stdin.
// Everything it started dies with it, even when it is killed.

import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import * as path from 'node:path';
import * as readline from 'node:readline';
import { expect, type BrowserContext, type Page } from '@playwright/test';
import { gotalkBin, repoRoot } from './server';
import { visit } from './chat';

/** The fixture binary: `$GOTALK_CLUSTER_FIXTURE_BIN`, or the one beside the server binary. */
export const fixtureBin = process.env.GOTALK_CLUSTER_FIXTURE_BIN
  ? path.resolve(repoRoot, process.env.GOTALK_CLUSTER_FIXTURE_BIN)
  : path.join(path.dirname(gotalkBin), 'gotalk-cluster-fixture');

/** The buses the cluster specs run on. */
export const BUSES = ['redis', 'nats'] as const;
export type BusKind = (typeof BUSES)[number];

/** True when `GOTALK_CLUSTER_TESTS=skip`: a local run without the servers. CI never sets it. */
export const skipCluster = process.env.GOTALK_CLUSTER_TESTS === 'skip';

/** How long the fixture may take to start everything, or to answer one command. */
const START_MS = 60_000;
const COMMAND_MS = 30_000;

export type InstanceInfo = { url: string; tcp: string; pid: number | null; log: string };
export type Backend = { addr: string; status: string; check: string; up: boolean };
type Started = {
  lb: string;
  bus: string;
  bus_kind: BusKind;
  health: string;
  instances: InstanceInfo[];
};

/** A running cluster. */
export class Cluster {
  /** The fixture's stderr (the instances' logs are in files, read by `logs()`). */
  readonly stderr: string[] = [];
  private waiting: ((line: string) => void)[] = [];
  private lines: string[] = [];
  private exited: Promise<void>;
  private info!: Started;

  private constructor(private readonly child: ChildProcess) {
    this.exited = new Promise((resolve) => child.once('exit', () => resolve()));
    readline.createInterface({ input: child.stdout! }).on('line', (line) => {
      const next = this.waiting.shift();
      if (next) next(line);
      else this.lines.push(line);
    });
    readline.createInterface({ input: child.stderr! }).on('line', (line) => this.stderr.push(line));
  }

  /** Starts a cluster of `instances` on `bus`, `serveArgs` added to every instance's flags. */
  static async start(bus: BusKind, instances = 3, serveArgs: string[] = []): Promise<Cluster> {
    if (!existsSync(fixtureBin)) {
      throw new Error(`${fixtureBin} does not exist: run \`cargo build -p gotalk-tests\``);
    }
    const args = ['--bus', bus, '--instances', String(instances), '--server', gotalkBin, '--', ...serveArgs];
    const child = spawn(fixtureBin, args, { cwd: repoRoot, stdio: ['pipe', 'pipe', 'pipe'] });
    const cluster = new Cluster(child);
    try {
      cluster.info = JSON.parse(await cluster.next(START_MS));
    } catch (err) {
      await cluster.stop();
      throw new Error(`${(err as Error).message}\n${fixtureBin} ${args.join(' ')}\n${cluster.stderr.join('\n')}`);
    }
    return cluster;
  }

  /** `http://127.0.0.1:PORT/`, haproxy. */
  get lb(): string {
    return this.info.lb;
  }

  /** The bus's URL. */
  get bus(): string {
    return this.info.bus;
  }

  /** The path haproxy checks (`/readyz`, or `/` on a server without it). */
  get health(): string {
    return this.info.health;
  }

  /** Each instance's `http://127.0.0.1:PORT/`. */
  get urls(): string[] {
    return this.info.instances.map((i) => i.url);
  }

  /** Sends one command; resolves with its answer, or throws the fixture's error. */
  async command(line: string): Promise<Record<string, any>> {
    this.child.stdin!.write(`${line}\n`);
    const answer = JSON.parse(await this.next(COMMAND_MS));
    if (!answer.ok) throw new Error(`cluster fixture: ${line}: ${answer.error}`);
    return answer;
  }

  /** SIGKILL instance `i`. */
  async kill(i: number): Promise<void> {
    await this.command(`kill ${i}`);
  }

  /** Starts instance `i` again on its ports. */
  async start(i: number): Promise<void> {
    await this.command(`start ${i}`);
  }

  /** haproxy's view of the instances. */
  async backends(): Promise<Backend[]> {
    return (await this.command('backends')).backends;
  }

  /** Waits until haproxy sees exactly the instances `up` (indexes) up. */
  async waitUntilUp(up: number[], timeout = 20_000): Promise<void> {
    await expect
      .poll(async () => (await this.backends()).map((b, i) => (b.up ? i : -1)).filter((i) => i >= 0), {
        timeout,
        intervals: [100],
      })
      .toEqual([...up].sort());
  }

  /** Each instance's open WebSocket count, from its `/stats` (-1 for one that does not answer). */
  async websockets(): Promise<number[]> {
    return Promise.all(
      this.urls.map(async (url) => {
        try {
          const stats = await (await fetch(new URL('/stats', url), { signal: AbortSignal.timeout(2_000) })).json();
          return stats.websocket as number;
        } catch {
          return -1;
        }
      }),
    );
  }

  /**
   * Opens the demo through the load balancer as `name` and finds which instance its WebSocket
   * is on, from the instances' connection counts. Retries (closing the page) until it is on
   * none of `avoid`. Pages must not come or go elsewhere meanwhile.
   */
  async visitAvoiding(context: BrowserContext, name: string, avoid: number[] = []): Promise<{ page: Page; on: number }> {
    for (let attempt = 0; attempt < 8; attempt++) {
      const before = await this.websockets();
      const page = await visit(context, this.lb, name);
      const on = await this.grew(before);
      if (!avoid.includes(on)) return { page, on };
      await page.close();
      await expect.poll(() => this.websockets()).toEqual(before);
      // Round robin: a page makes about the same number of requests each time (how many
      // depends on the browser's cache and timing), so with a fixed number in between it
      // could land where it did every time; one more request each attempt moves it on.
      for (let extra = 0; extra <= attempt; extra++) {
        await fetch(this.lb, { signal: AbortSignal.timeout(2_000) }).then((r) => r.arrayBuffer());
      }
    }
    throw new Error(`${name}: the load balancer never put the page on an instance other than ${avoid}`);
  }

  /** Waits until one instance has one WebSocket more than in `before`; returns which. */
  async grew(before: number[]): Promise<number> {
    let on = -1;
    await expect
      .poll(
        async () => {
          const now = await this.websockets();
          const grown = now.map((n, i) => (n > before[i] ? i : -1)).filter((i) => i >= 0);
          on = grown.length === 1 ? grown[0] : -1;
          return on;
        },
        { message: 'the new page is on exactly one instance', intervals: [50] },
      )
      .toBeGreaterThanOrEqual(0);
    return on;
  }

  /** The fixture's stderr and every instance's log, to attach to a failed test's report. */
  async logs(): Promise<string> {
    const { readFile } = await import('node:fs/promises');
    const parts = [`--- fixture stderr ---\n${this.stderr.join('\n')}`];
    for (const [i, instance] of this.info?.instances.entries() ?? []) {
      const text = await readFile(instance.log, 'utf8').catch((e) => String(e));
      parts.push(`--- instance ${i} (${instance.url}) ---\n${text.split('\n').slice(-300).join('\n')}`);
    }
    return parts.join('\n');
  }

  /** Stops everything: closes the fixture's stdin, then kills it if it lingers. */
  async stop(): Promise<void> {
    if (this.child.exitCode !== null || this.child.signalCode !== null) return;
    this.child.stdin!.end();
    const timer = setTimeout(() => this.child.kill('SIGKILL'), 10_000);
    await this.exited;
    clearTimeout(timer);
  }

  private next(timeoutMs: number): Promise<string> {
    const ready = this.lines.shift();
    if (ready !== undefined) return Promise.resolve(ready);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`the cluster fixture said nothing in ${timeoutMs} ms`)), timeoutMs);
      const onExit = () => reject(new Error(`the cluster fixture exited (${this.child.exitCode ?? this.child.signalCode})`));
      this.child.once('exit', onExit);
      this.waiting.push((line) => {
        clearTimeout(timer);
        this.child.off('exit', onExit);
        resolve(line);
      });
    });
  }
}
