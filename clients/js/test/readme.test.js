// The client code in the repository's README.md ("JavaScript client") runs
// as written against a real build/wshub with history: only the import path,
// the port and `fetch` (for its getToken: the server runs without auth, so
// the token is empty) are filled in. Every process is stopped by its pid.

import test from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const ROOT = path.resolve(HERE, '../../..');
const BIN = process.env.WSHUB_BIN || path.join(ROOT, 'build', 'wshub');

function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.on('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

function readmeSnippet() {
  const md = readFileSync(path.join(ROOT, 'README.md'), 'utf8');
  const sec = md.split(/^## /m).find((s) => s.startsWith('JavaScript client'));
  assert.ok(sec, 'README.md has a "JavaScript client" section');
  const m = sec.match(/```js\n([\s\S]*?)```/);
  assert.ok(m, 'with a js code block');
  return m[1];
}

/** Runs `argv` to its end (killed by pid after `ms`); resolves with {code, out}. */
function run(argv, ms) {
  return new Promise((resolve) => {
    const p = spawn(argv[0], argv.slice(1), { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    p.stdout.on('data', (d) => (out += d));
    p.stderr.on('data', (d) => (out += d));
    const timer = setTimeout(() => process.kill(p.pid, 'SIGKILL'), ms);
    p.on('exit', (code, sig) => {
      clearTimeout(timer);
      resolve({ code, sig, out });
    });
  });
}

test('the README client code runs: connect, subscribe, publish, the message arrives with its offset', { timeout: 60000 }, async (t) => {
  assert.ok(existsSync(BIN), `${BIN} not found: build it with make (or set WSHUB_BIN)`);
  const code = readmeSnippet();
  assert.ok(code.trim().split('\n').length <= 10, 'ten lines at most');
  const port = await freePort();
  const srv = spawn(BIN, ['--listen', `127.0.0.1:${port}`, '--history-size', '10'], { stdio: 'ignore' });
  t.after(() => {
    if (srv.exitCode === null && srv.signalCode === null) process.kill(srv.pid, 'SIGKILL');
  });
  for (let i = 0; ; i++) {
    try {
      if ((await fetch(`http://127.0.0.1:${port}/healthz`)).status === 200) break;
    } catch {
      /* not yet listening */
    }
    assert.ok(i < 300 && srv.exitCode === null, 'wshub answers /healthz');
    await new Promise((r) => setTimeout(r, 50));
  }
  const dir = mkdtempSync(path.join(os.tmpdir(), 'wshub-readme-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const body = code
    .replace("'./wshub.js'", JSON.stringify(pathToFileURL(path.join(ROOT, 'clients/js/wshub.js')).href))
    .replaceAll('127.0.0.1:8080', `127.0.0.1:${port}`);
  const script = [
    // getToken's fetch('/token'): an empty token (the server has no auth).
    "globalThis.fetch = async () => new Response('');",
    // Ends the script once the handler has printed the message.
    'const seen = new Promise((resolve) => { const log = console.log;',
    "  console.log = (...a) => { log(...a); if (typeof a[0] === 'number') resolve(); }; });",
    body,
    'await seen;',
    'client.close();',
    "console.log('published at offset', offset);",
  ].join('\n');
  const file = path.join(dir, 'readme.mjs');
  writeFileSync(file, script);
  const r = await run([process.execPath, '--experimental-websocket', file], 30000);
  assert.equal(r.code, 0, r.out);
  assert.match(r.out, /^1 \{ hello: 'world' \}$/m, r.out);
  assert.match(r.out, /^published at offset 1$/m, r.out);
});
