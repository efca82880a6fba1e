// The browser client as an npm package in a bundler, and where its wasm comes from.
//
// `npm pack` turns crates/gateway/client/ into a tarball; the tests install it into a copy of
// bundler-app/ (a page written against the package), type-check the page with tsc, build it
// with Vite (from npm) and serve the result from a static server of their own on another
// port, which the real `gotalk serve` lets in with --allow-origin. The page finds its server
// through configure({ address }) and gotalk_bg.wasm where Vite emitted it. Then: the ES
// module's named exports against gotalk.d.mts, and a wasm that cannot load (in the bundle and
// in the classic script), which the page hears of, and configure({ wasm }) in a page's own
// script after gotalk.js.

import { execFile } from 'node:child_process';
import { promises as fs } from 'node:fs';
import * as http from 'node:http';
import type { AddressInfo } from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { promisify } from 'node:util';
import type { Page } from '@playwright/test';
import * as ts from 'typescript';
import { test, expect } from '../fixtures';
import { repoRoot } from '../server';

// The client's global, as gotalk.d.ts declares it (types only: nothing is imported).
declare const gotalk: typeof import('../../crates/gateway/client/gotalk').default;

const e2eDir = path.resolve(__dirname, '..');
const clientDir = path.join(repoRoot, 'crates/gateway/client');
const wasmFile = path.join(clientDir, 'gotalk_bg.wasm');

/** Runs a command to its end; fails with its output when it fails. */
async function run(command: string, args: string[], cwd: string): Promise<string> {
  try {
    const { stdout } = await promisify(execFile)(command, args, { cwd, maxBuffer: 16 << 20 });
    return stdout;
  } catch (err) {
    const e = err as { stdout?: string; stderr?: string; message: string };
    throw new Error(`${command} ${args.join(' ')} (in ${cwd}) failed: ${e.message}\n${e.stdout ?? ''}\n${e.stderr ?? ''}`);
  }
}

const CONTENT_TYPES: Record<string, string> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.wasm': 'application/wasm',
};

/** A static file server for `root` on 127.0.0.1, on a port the system picks. */
async function serveFolder(root: string): Promise<{ origin: string; close(): Promise<void> }> {
  const server = http.createServer(async (req, res) => {
    const pathname = decodeURIComponent(new URL(req.url ?? '/', 'http://any').pathname);
    const file = path.join(root, pathname === '/' ? 'index.html' : pathname);
    try {
      if (!file.startsWith(root + path.sep)) throw new Error('outside the folder');
      const body = await fs.readFile(file);
      res.writeHead(200, { 'content-type': CONTENT_TYPES[path.extname(file)] ?? 'application/octet-stream' });
      res.end(body);
    } catch {
      res.writeHead(404, { 'content-type': 'text/plain' });
      res.end('not found');
    }
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    origin: `http://127.0.0.1:${port}`,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

/** The folder the tests build in; the static server of the built page, and what the pack held. */
let work: string;
let site: { origin: string; close(): Promise<void> };
let packed: string[];

test.beforeAll(async () => {
  test.setTimeout(180_000);
  work = await fs.mkdtemp(path.join(os.tmpdir(), 'gotalk-bundler-'));
  const pack = JSON.parse(await run('npm', ['pack', clientDir, '--json', '--pack-destination', work], work));
  packed = pack[0].files.map((f: { path: string }) => f.path).sort();
  const app = path.join(work, 'app');
  await fs.cp(path.join(e2eDir, 'bundler-app'), app, { recursive: true });
  // Offline: a package with no dependencies needs nothing from the registry.
  await run('npm', ['install', '--offline', '--no-audit', '--no-fund', path.join(work, pack[0].filename)], app);
  await run(process.execPath, [path.join(e2eDir, 'node_modules/typescript/bin/tsc'), '-p', app], app);
  await run(process.execPath, [path.join(e2eDir, 'node_modules/vite/bin/vite.js'), 'build'], app);
  site = await serveFolder(path.join(app, 'dist'));
});

test.afterAll(async () => {
  await site?.close();
  if (work) await fs.rm(work, { recursive: true, force: true });
});

test('npm pack makes a package whose page Vite builds with the wasm, and the page talks to the server', async ({
  page,
  startServer,
}) => {
  expect(packed).toEqual([
    'README.md',
    'gotalk.d.mts',
    'gotalk.d.ts',
    'gotalk.js',
    'gotalk.mjs',
    'gotalk_bg.wasm',
    'package.json',
  ]);
  // Vite emitted the wasm as an asset of its own, byte for byte.
  const assets = await fs.readdir(path.join(work, 'app/dist/assets'));
  const wasm = assets.filter((name) => name.endsWith('.wasm'));
  expect(wasm).toHaveLength(1);
  expect(await fs.readFile(path.join(work, 'app/dist/assets', wasm[0]))).toEqual(await fs.readFile(wasmFile));

  const server = await startServer(['--allow-origin', site.origin]);
  const wasmRequests: string[] = [];
  page.on('request', (request) => {
    if (request.url().endsWith('.wasm')) wasmRequests.push(request.url());
  });
  await page.goto(`${site.origin}/?gotalk=${encodeURIComponent(new URL('/gotalk/', server.http).href)}`);
  await expect(page.locator('#echo')).toHaveText('hello from a bundle 😀');
  const { version } = JSON.parse(await fs.readFile(path.join(clientDir, 'package.json'), 'utf8'));
  await expect(page.locator('#ready')).toHaveText(`gotalk ${version}`);
  await expect(page.locator('#close')).toHaveText('closed');
  expect(wasmRequests).toEqual([`${site.origin}/assets/${wasm[0]}`]);
});

test('a bundled page whose wasm cannot load hears it: ready rejects, the socket closes with the error', async ({
  page,
  browserErrors,
  startServer,
}) => {
  browserErrors.allow(/Failed to load resource: the server responded with a status of 404/);
  const server = await startServer(['--allow-origin', site.origin]);
  const address = new URL('/gotalk/', server.http).href;
  // The 404 waits until the page's request is answered: a request made while the wasm loads
  // goes out on the early socket and is answered without it; then the load fails, and the
  // socket (which the page has ended meanwhile) closes with why.
  let answered!: () => void;
  const echoed = new Promise<void>((resolve) => (answered = resolve));
  await page.route('**/nowhere/gotalk_bg.wasm', async (route) => {
    await Promise.race([echoed, new Promise((resolve) => setTimeout(resolve, 10_000))]);
    await route.continue();
  });
  await page.goto(`${site.origin}/?gotalk=${encodeURIComponent(address)}&wasm=/nowhere/gotalk_bg.wasm`);
  await expect(page.locator('#echo')).toHaveText('hello from a bundle 😀');
  answered();
  const failed = /^error: gotalk: could not load \/nowhere\/gotalk_bg\.wasm: .+/;
  await expect(page.locator('#ready')).toHaveText(failed);
  await expect(page.locator('#close')).toHaveText(failed);
});

test('gotalk.mjs exports exactly the values gotalk.d.mts declares', async ({ page, baseURL }) => {
  const declarations = path.join(clientDir, 'gotalk.d.mts');
  const program = ts.createProgram([declarations], {
    strict: true,
    noEmit: true,
    target: ts.ScriptTarget.ES2022,
    module: ts.ModuleKind.ESNext,
    moduleResolution: ts.ModuleResolutionKind.Bundler,
    lib: ['lib.es2022.d.ts', 'lib.dom.d.ts'],
    types: [],
  });
  expect(ts.getPreEmitDiagnostics(program).map((d) => ts.flattenDiagnosticMessageText(d.messageText, '\n'))).toEqual([]);
  const checker = program.getTypeChecker();
  const module = checker.getSymbolAtLocation(program.getSourceFile(declarations)!)!;
  const declared = checker
    .getExportsOfModule(module)
    .filter((symbol) => {
      const target = symbol.flags & ts.SymbolFlags.Alias ? checker.getAliasedSymbol(symbol) : symbol;
      return (target.flags & ts.SymbolFlags.Value) !== 0;
    })
    .map((symbol) => symbol.name)
    .sort();

  await openQuiet(page, baseURL!);
  const exported = await page.evaluate(async () => Object.keys(await import('/gotalk/gotalk.mjs' as string)).sort());
  expect(exported).toEqual(declared);
  expect(exported).toContain('configure');
});

/** The demo page on `origin` with its own script replaced by `script`, so gotalk.js is all it runs. */
async function openQuiet(page: Page, origin: string, script = ''): Promise<void> {
  await page.route(new URL('/demo.js', origin).href, (route) =>
    route.fulfill({ contentType: 'text/javascript; charset=utf-8', body: script }),
  );
  await page.goto(origin);
}

test('gotalk.js whose wasm cannot load: ready rejects, sockets close with the error, calls fail', async ({
  page,
  baseURL,
  browserErrors,
}) => {
  browserErrors.allow(/Failed to load resource: the server responded with a status of 404/);
  // ready's rejection, which this page handles only after the fact.
  browserErrors.allow(/could not load/);
  // The wasm fails only once the page has made its first socket, so that socket waits for it;
  // the second is made after the failure.
  let socketMade!: () => void;
  const made = new Promise<void>((resolve) => (socketMade = resolve));
  await page.exposeFunction('socketMade', () => socketMade());
  await page.route('**/gotalk/gotalk_bg.wasm*', async (route) => {
    await made;
    await route.fulfill({ status: 404, contentType: 'text/plain', body: 'not here' });
  });
  await openQuiet(page, baseURL!);
  const got = await page.evaluate(async () => {
    const watch = (s: ReturnType<typeof gotalk.connection>) => {
      const events: string[] = [];
      s.on('state', (state) => events.push(`state ${state}`));
      const closed = new Promise<string>((resolve) => s.on('close', (err) => resolve(String(err?.message))));
      return { s, events, closed };
    };
    const early = watch(gotalk.connection());
    // An operation the server does not have: its ErrorResult is left to the Core, so the call
    // waits for the wasm and fails with it. An echo could be answered on the early socket
    // before the wasm's 404 arrives, as the early path means it to be (see the bundled
    // page's test above).
    const earlyRequest = early.s.request('no-such-op', 1).then(() => 'answered', (err: Error) => err.message);
    (window as any).socketMade();
    const ready = await gotalk.ready.then(() => 'loaded', (err: Error) => err.message);
    const late = watch(gotalk.connection());
    const opened = await new Promise<string>((resolve) => gotalk.open((err) => resolve(String(err?.message))));
    const stream = gotalk.connection().streamRequest('stream-echo');
    const streamEnd = new Promise<string>((resolve) => stream.on('end', (err) => resolve(String(err?.message))));
    stream.write('part');
    return {
      ready,
      early: { close: await early.closed, events: early.events, state: early.s.state, request: await earlyRequest },
      late: { close: await late.closed, events: late.events, state: late.s.state },
      opened,
      stream: await streamEnd,
    };
  });
  const failed = expect.stringMatching(/^gotalk: could not load http:\/\/127\.0\.0\.1:\d+\/gotalk\/gotalk_bg\.wasm\?v=[0-9a-f]{16}: .+/);
  expect(got).toEqual({
    ready: failed,
    early: { close: failed, events: ['state closed'], state: 'closed', request: failed },
    late: { close: failed, events: ['state closed'], state: 'closed' },
    opened: failed,
    stream: failed,
  });
});

test('configure({ wasm }) in the page script after gotalk.js: the wasm comes from there', async ({
  page,
  baseURL,
}) => {
  const wasmRequests: string[] = [];
  page.on('request', (request) => {
    if (request.url().endsWith('.wasm')) wasmRequests.push(new URL(request.url()).pathname);
  });
  await page.route('**/elsewhere/gotalk_bg.wasm', (route) => route.fulfill({ path: wasmFile, contentType: 'application/wasm' }));
  await openQuiet(page, baseURL!, "gotalk.configure({ wasm: '/elsewhere/gotalk_bg.wasm' });");
  const got = await page.evaluate(async () => {
    await gotalk.ready;
    const s = gotalk.connection();
    const echo = new TextDecoder().decode(await s.bufferRequest('echo', 'from elsewhere'));
    s.end();
    let late = 'accepted';
    try {
      gotalk.configure({ wasm: '/gotalk/gotalk_bg.wasm' });
    } catch (err) {
      late = (err as Error).message;
    }
    return { echo, late };
  });
  expect(got).toEqual({
    echo: 'from elsewhere',
    late: 'gotalk: configure({ wasm }) comes too late: the wasm is loading already',
  });
  expect(wasmRequests).toEqual(['/elsewhere/gotalk_bg.wasm']);
});
