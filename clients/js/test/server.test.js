// The client against the real build/wshub (embedded backplane) on a free
// loopback port; the server is stopped by its pid. Every wait is bounded.

import test from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { WshubClient } from '../wshub.js';
import { recorder } from '../test-helpers/mock-server.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');
const BIN = process.env.WSHUB_BIN || path.join(ROOT, 'build', 'wshub');
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

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

class Server {
  constructor(port) {
    this.port = port;
    this.log = '';
  }
  async start() {
    const p = spawn(BIN, ['--listen', `127.0.0.1:${this.port}`], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    this.proc = p;
    this.exited = new Promise((resolve) => p.on('exit', (code, sig) => resolve({ code, sig })));
    p.stdout.on('data', (d) => (this.log += d));
    p.stderr.on('data', (d) => (this.log += d));
    let gone = false;
    this.exited.then(() => (gone = true));
    for (let i = 0; i < 200; i++) {
      if (gone) throw new Error(`wshub exited at start:\n${this.log}`);
      try {
        const r = await fetch(`http://127.0.0.1:${this.port}/healthz`, { signal: AbortSignal.timeout(1000) });
        if (r.status === 200) return;
      } catch {
        /* not listening yet */
      }
      await sleep(50);
    }
    throw new Error(`wshub did not answer /healthz on port ${this.port}:\n${this.log}`);
  }
  async stop(sig = 'SIGKILL') {
    if (!this.proc || this.proc.exitCode !== null || this.proc.signalCode !== null) return;
    process.kill(this.proc.pid, sig);
    let timer;
    const r = await Promise.race([this.exited, new Promise((res) => (timer = setTimeout(res, 15000, null)))]);
    clearTimeout(timer);
    if (!r) {
      process.kill(this.proc.pid, 'SIGKILL');
      await this.exited;
    }
  }
  async publish(channel, data) {
    const r = await fetch(`http://127.0.0.1:${this.port}/publish`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ channel, data }),
      signal: AbortSignal.timeout(5000),
    });
    return { status: r.status, body: await r.json() };
  }
  get url() {
    return `ws://127.0.0.1:${this.port}/ws`;
  }
}

let srv;
test.before(async () => {
  assert.ok(existsSync(BIN), `${BIN} not found: build it with make (or set WSHUB_BIN)`);
  srv = new Server(await freePort());
  await srv.start();
});
test.after(async () => {
  if (srv) await srv.stop();
});

function client(t) {
  const c = new WshubClient(srv.url, { initialDelay: 20, maxDelay: 250, stableAfter: 1000 });
  t.after(() => c.close());
  return c;
}

/** Resolves with the first 'message' event on `channel` matching `pred`. */
function nextMessage(rec, channel, pred = () => true, count = 1) {
  return rec.event('message', (m) => m.channel === channel && pred(m), count, 15000);
}

test('subscribe, then a POST /publish reaches the handler', async (t) => {
  const c = client(t);
  const rec = recorder(c, ['message']);
  await c.connect();
  const got = [];
  const info = await c.subscribe('news', (d) => got.push(d));
  assert.deepEqual(info, { channel: 'news', offset: null, epoch: null, recovered: undefined, resubscribe: false });
  const r = await srv.publish('news', { hello: 'world' });
  assert.equal(r.status, 200);
  assert.equal(r.body.ok, true);
  const m = await nextMessage(rec, 'news');
  assert.deepEqual(m.data, { hello: 'world' });
  assert.deepEqual(got, [{ hello: 'world' }]);
});

test('several requests in flight are matched by id; error replies reject the right promises', async (t) => {
  const c = client(t);
  const rec = recorder(c, ['message']);
  await c.connect();
  const ops = [
    ['sub', 'a'],
    ['sub', 'bad channel!'],
    ['sub', 'b'],
    ['pub', 'a', { n: 1 }],
    ['pub', 'bad channel!', { n: 0 }],
    ['pub', 'b', { n: 2 }],
    ['pub', 'c', { n: 3 }],
    ['pub', 'x'.repeat(129), 1],
    ['pub', 'a', { n: 4 }],
  ];
  const res = await Promise.allSettled(
    ops.map(([op, ch, data]) => (op === 'sub' ? c.subscribe(ch, () => {}) : c.publish(ch, data))),
  );
  const ids = new Set();
  res.forEach((r, i) => {
    const [op, ch] = ops[i];
    const bad = ch === 'bad channel!' || ch.length > 128;
    if (bad) {
      assert.equal(r.status, 'rejected', `${op} ${ch} rejected`);
      assert.equal(r.reason.code, 'ESERVER');
      assert.ok(r.reason.message.length > 0);
      ids.add(r.reason.reply.id);
    } else {
      assert.equal(r.status, 'fulfilled', `${op} ${ch} fulfilled: ${r.reason}`);
      assert.equal(r.value.channel, ch);
      if (op === 'pub') {
        assert.equal(r.value.type, 'published');
        ids.add(r.value.id);
      }
    }
  });
  assert.equal(ids.size, 7, 'every publish and failed subscribe had its own id');
  // a publisher subscribed to the channel receives its own messages, in order
  assert.deepEqual((await nextMessage(rec, 'a', () => true, 2)).data, { n: 4 });
  assert.deepEqual(rec.all('message').filter((m) => m.channel === 'a').map((m) => m.data.n), [1, 4]);
  assert.deepEqual((await nextMessage(rec, 'b')).data, { n: 2 });
});

test('unsubscribe stops delivery', async (t) => {
  const c = client(t);
  const rec = recorder(c, ['message']);
  await c.connect();
  await c.subscribe('u1', () => {});
  await c.subscribe('u2', () => {});
  await c.unsubscribe('u1');
  assert.equal((await srv.publish('u1', { n: 1 })).status, 200);
  assert.equal((await srv.publish('u2', { n: 2 })).status, 200);
  await nextMessage(rec, 'u2');
  assert.deepEqual(rec.all('message').map((m) => m.channel), ['u2'], 'nothing on u1 after unsubscribe');
});

test('server restart: the client reconnects, resubscribes and receives new publishes', async (t) => {
  const c = client(t);
  const rec = recorder(c, ['message', 'subscribed', 'disconnected', 'connected']);
  await c.connect();
  await c.subscribe('r', () => {});
  const rounds = [
    ['SIGKILL', 1006],
    ['SIGTERM', 1001],
  ];
  for (let i = 0; i < rounds.length; i++) {
    const [sig, code] = rounds[i];
    await srv.stop(sig);
    const d = await rec.event('disconnected', (e) => e.wasConnected, i + 1, 15000);
    assert.equal(d.code, code, `close code after ${sig}`);
    assert.equal(d.willReconnect, true);
    await assert.rejects(c.publish('r', 0), (e) => e.code === 'ENOTCONNECTED');
    await srv.start();
    const s = await rec.event('subscribed', (e) => e.channel === 'r' && e.resubscribe, i + 1, 15000);
    assert.equal(s.resubscribe, true);
    const r = await srv.publish('r', { round: i });
    assert.equal(r.status, 200);
    assert.deepEqual((await nextMessage(rec, 'r', (m) => m.data.round === i)).data, { round: i });
    assert.equal((await c.publish('r', { own: i })).channel, 'r');
  }
});
