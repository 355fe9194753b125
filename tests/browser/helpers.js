// Shared by the browser tests: wshub and redis-server processes on free
// loopback ports (stopped by their pids), headless Debian chromium through
// puppeteer-core, HS256 tokens minted with node:crypto, and waits on the
// demo page's log. Every wait is bounded and event-driven.

import { spawn } from 'node:child_process';
import { createHmac } from 'node:crypto';
import { existsSync, mkdirSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import puppeteer from 'puppeteer-core';

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
export const BIN = process.env.WSHUB_BIN || path.join(ROOT, 'build', 'wshub');
export const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
export const ARTIFACTS = process.env.BROWSER_ARTIFACTS || path.join(ROOT, 'build', 'browser');
export const WAIT = 30000; // ms: the longest any single wait may take (2 noisy cores)

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

export function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.on('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

/** A child process started by a test, stopped by its pid. */
class Proc {
  constructor(name) {
    this.name = name;
    this.log = '';
    this.proc = null;
  }
  _spawn(bin, args) {
    const p = spawn(bin, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    this.proc = p;
    this.exited = new Promise((resolve) => p.on('exit', (code, sig) => resolve({ code, sig })));
    p.on('error', (e) => (this.log += `spawn ${bin}: ${e.message}\n`));
    p.stdout.on('data', (d) => (this.log += d));
    p.stderr.on('data', (d) => (this.log += d));
    return p;
  }
  get running() {
    return this.proc !== null && this.proc.exitCode === null && this.proc.signalCode === null;
  }
  async _ready(check) {
    const deadline = Date.now() + WAIT;
    while (Date.now() < deadline) {
      if (!this.running) throw new Error(`${this.name} exited at start:\n${this.log}`);
      if (await check().catch(() => false)) return;
      await sleep(50);
    }
    throw new Error(`${this.name} not ready after ${WAIT} ms:\n${this.log}`);
  }
  /** Stops the process by its pid: `sig`, then SIGKILL after 15 s. */
  async stop(sig = 'SIGTERM') {
    if (!this.running) return;
    process.kill(this.proc.pid, sig);
    let timer;
    const r = await Promise.race([this.exited, new Promise((res) => (timer = setTimeout(res, 15000, null)))]);
    clearTimeout(timer);
    if (!r) {
      process.kill(this.proc.pid, 'SIGKILL');
      await this.exited;
    }
  }
}

/** build/wshub on 127.0.0.1:port with the given flags. */
export class Wshub extends Proc {
  constructor(port, args = [], name = 'wshub') {
    super(name);
    this.port = port;
    this.args = args;
  }
  static async create(args = [], name) {
    return new Wshub(await freePort(), args, name);
  }
  async start() {
    if (!existsSync(BIN)) throw new Error(`${BIN} not found: build it with make (or set WSHUB_BIN)`);
    this._spawn(BIN, ['--listen', `127.0.0.1:${this.port}`, ...this.args]);
    await this._ready(async () => {
      const r = await fetch(`${this.http}/healthz`, { signal: AbortSignal.timeout(1000) });
      return r.status === 200;
    });
    return this;
  }
  get http() {
    return `http://127.0.0.1:${this.port}`;
  }
  /** POST /publish; resolves with {status, body}. */
  async publish(channel, data, apiKey) {
    const headers = { 'content-type': 'application/json' };
    if (apiKey) headers.authorization = `Bearer ${apiKey}`;
    const r = await fetch(`${this.http}/publish`, {
      method: 'POST',
      headers,
      body: JSON.stringify({ channel, data }),
      signal: AbortSignal.timeout(10000),
    });
    return { status: r.status, body: await r.json() };
  }
}

/** redis-server on 127.0.0.1:port, nothing saved to disk. */
export class Redis extends Proc {
  constructor(port) {
    super('redis-server');
    this.port = port;
  }
  static async create() {
    return new Redis(await freePort());
  }
  async start() {
    const args = ['--port', String(this.port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'];
    this._spawn('redis-server', args);
    await this._ready(
      () =>
        new Promise((resolve) => {
          const s = net.connect(this.port, '127.0.0.1');
          s.setTimeout(1000);
          s.on('connect', () => s.write('PING\r\n'));
          s.on('data', (d) => {
            s.destroy();
            resolve(String(d).startsWith('+PONG'));
          });
          s.on('error', () => resolve(false));
          s.on('timeout', () => {
            s.destroy();
            resolve(false);
          });
        }),
    );
    return this;
  }
  get url() {
    return `redis://127.0.0.1:${this.port}`;
  }
}

const b64url = (x) => Buffer.from(typeof x === 'string' ? x : JSON.stringify(x)).toString('base64url');

/** An HS256 JWT signed with `secret`. */
export function mintToken(secret, claims) {
  const head = b64url({ alg: 'HS256', typ: 'JWT' });
  const body = b64url(claims);
  const sig = createHmac('sha256', secret).update(`${head}.${body}`).digest('base64url');
  return `${head}.${body}.${sig}`;
}

/** Headless chromium; `close()` ends it (by its pid if it will not close). */
export async function launchBrowser() {
  if (!existsSync(CHROMIUM)) throw new Error(`${CHROMIUM} not found: make deps installs Debian's chromium`);
  const browser = await puppeteer.launch({
    executablePath: CHROMIUM,
    headless: true,
    protocolTimeout: 60000,
    args: [
      '--headless=new',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-dev-shm-usage',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
      '--disable-quic',
      '--no-first-run',
      '--no-default-browser-check',
    ],
  });
  const pid = browser.process()?.pid;
  return {
    browser,
    async close() {
      let timer;
      try {
        await Promise.race([
          browser.close(),
          new Promise((_, reject) => (timer = setTimeout(reject, 15000, new Error('close timed out')))),
        ]);
      } catch {
        if (pid) {
          try {
            process.kill(pid, 'SIGKILL');
          } catch {
            /* already gone */
          }
        }
      } finally {
        clearTimeout(timer);
      }
    },
  };
}

/**
 * Opens a page in a fresh browser context, recording what must not
 * happen: console errors, page errors, failed requests, HTTP errors.
 */
export async function openPage(browser, { width = 1280, height = 800 } = {}) {
  const context = await browser.createBrowserContext();
  const page = await context.newPage();
  page.setDefaultTimeout(WAIT);
  await page.setViewport({ width, height });
  const problems = [];
  const requests = [];
  page.on('console', (m) => {
    if (m.type() === 'error') problems.push(`console error: ${m.text()}`);
  });
  page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
  page.on('requestfailed', (r) => problems.push(`request failed: ${r.url()} ${r.failure()?.errorText}`));
  page.on('request', (r) => requests.push(r.url()));
  page.on('response', (r) => {
    if (r.status() >= 400) problems.push(`HTTP ${r.status()}: ${r.url()}`);
  });
  return { page, context, problems, requests, close: () => context.close().catch(() => {}) };
}

/** Waits until the page's connection state badge says `state`. */
export function waitState(page, state) {
  return page.waitForFunction((s) => document.getElementById('state').dataset.state === s, {}, state);
}

/** The log's entries as {kind, channel, offset, text}. */
export function logEntries(page) {
  return page.$$eval('#log li', (lis) =>
    lis.map((li) => ({
      kind: li.dataset.kind,
      channel: li.dataset.channel ?? null,
      offset: li.dataset.offset != null ? Number(li.dataset.offset) : null,
      time: li.querySelector('time')?.textContent ?? '',
      text: li.querySelector('.text')?.textContent ?? '',
    })),
  );
}

/** Waits for `count` log entries matching {kind, channel, offset, text (substring)}. */
export function waitLog(page, match, count = 1) {
  return page.waitForFunction(
    (m, n) => {
      let k = 0;
      for (const li of document.querySelectorAll('#log li')) {
        if (m.kind && li.dataset.kind !== m.kind) continue;
        if (m.channel && li.dataset.channel !== m.channel) continue;
        if (m.offset != null && li.dataset.offset !== String(m.offset)) continue;
        if (m.text && !(li.querySelector('.text')?.textContent ?? '').includes(m.text)) continue;
        k++;
      }
      return k >= n;
    },
    {},
    match,
    count,
  );
}

/** Subscribes through the form; waits until every channel is active. */
export async function subscribeUI(page, channels) {
  await page.locator('#sub-channel').fill(channels.join(', '));
  await page.click('#sub-button');
  await page.waitForFunction(
    (cs) => cs.every((c) => document.querySelector(`#subs li[data-channel="${c}"]`)?.dataset.status === 'active'),
    {},
    channels,
  );
}

export function artifact(name) {
  mkdirSync(ARTIFACTS, { recursive: true });
  return path.join(ARTIFACTS, name);
}
