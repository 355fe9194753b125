// The client against a mock server (test-helpers/mock-server.js) for what
// build/wshub does not do yet: since recovery, offsets, gap, refresh, 4001;
// and backoff timing on a fake clock. Every wait is on an event, bounded.

import test from 'node:test';
import assert from 'node:assert/strict';
import { WshubClient, WshubError, tokenExp, backoffDelay } from '../wshub.js';
import { MockServer, Waitable, recorder, fakeJwt, FakeClock } from '../test-helpers/mock-server.js';

const FAST = { initialDelay: 5, maxDelay: 20, stableAfter: 60000 };

async function setup(t, opts = {}, srvOpts = {}) {
  const srv = await new MockServer(srvOpts).listen();
  const c = new WshubClient(srv.url, { ...FAST, ...opts });
  t.after(async () => {
    c.close();
    await srv.close();
  });
  return { srv, c };
}

const isSub = (ch) => (m) => m.type === 'subscribe' && m.channel === ch;

test('tokenExp reads exp without verifying; backoffDelay is full jitter capped at max', () => {
  assert.equal(tokenExp(fakeJwt({ sub: 'a', exp: 1234567890 })), 1234567890);
  assert.equal(tokenExp(fakeJwt({ sub: 'ü', exp: 5 })), 5);
  assert.equal(tokenExp(fakeJwt({ sub: 'a' })), null);
  assert.equal(tokenExp('not a jwt'), null);
  assert.equal(tokenExp('a.%%%.b'), null);
  assert.equal(backoffDelay(0, 100, 1000, 2, () => 0), 0);
  assert.equal(backoffDelay(0, 100, 1000, 2, () => 0.999), 99);
  assert.equal(backoffDelay(3, 100, 1000, 2, () => 0.5), 400);
  assert.equal(backoffDelay(10, 100, 1000, 2, () => 0.5), 500);
  assert.equal(backoffDelay(1000, 100, 1000, 2, () => 0.999), 999);
});

test('the library imports nothing and takes a WebSocket constructor when there is no global one', async (t) => {
  const fs = await import('node:fs');
  const src = fs.readFileSync(new URL('../wshub.js', import.meta.url), 'utf8');
  assert.doesNotMatch(src, /^\s*import\s/m);
  assert.doesNotMatch(src, /\brequire\(/);
  const saved = globalThis.WebSocket;
  try {
    delete globalThis.WebSocket;
    assert.throws(() => new WshubClient('ws://127.0.0.1:1/ws'), /WebSocket/);
    let made = 0;
    const Ctor = class extends saved {
      constructor(url) {
        super(url);
        made++;
      }
    };
    const srv = await new MockServer().listen();
    const c = new WshubClient(srv.url.replace('ws:', 'http:'), { WebSocket: Ctor });
    t.after(() => srv.close());
    await c.connect();
    assert.equal(made, 1);
    assert.equal((await srv.conn(1)).req.url, '/ws');
    c.close();
  } finally {
    globalThis.WebSocket = saved;
  }
});

test('requests in flight are matched by id; an error reply rejects the right one', async (t) => {
  const { srv, c } = await setup(t);
  const rec = recorder(c, ['error', 'connecting', 'connected']);
  assert.equal(c.state, 'disconnected');
  await c.connect();
  assert.equal(c.state, 'connected');
  assert.equal(rec.all('connecting').length, 1);
  const conn = await srv.conn(1);
  const ps = [];
  for (let i = 0; i < 10; i++) ps.push(c.publish('ch' + i, { i }));
  await srv.changed.until(() => conn.received.length === 10, '10 publishes');
  const frames = conn.received;
  assert.equal(new Set(frames.map((f) => f.id)).size, 10, 'ids are distinct');
  frames.forEach((f, i) => assert.deepEqual(f, { type: 'publish', channel: 'ch' + i, data: { i }, id: f.id }));
  for (const f of [...frames].reverse()) {
    if (f.channel === 'ch4') conn.send({ type: 'error', id: f.id, error: 'rate limited' });
    else conn.send({ type: 'published', channel: f.channel, id: f.id, offset: 100 + f.data.i });
  }
  const res = await Promise.allSettled(ps);
  res.forEach((r, i) => {
    if (i === 4) {
      assert.equal(r.status, 'rejected');
      assert.ok(r.reason instanceof WshubError);
      assert.equal(r.reason.code, 'ESERVER');
      assert.equal(r.reason.message, 'rate limited');
    } else {
      assert.equal(r.status, 'fulfilled');
      assert.equal(r.value.channel, 'ch' + i);
      assert.equal(r.value.offset, 100 + i);
    }
  });
  conn.send({ type: 'error', error: 'bad json' });
  const e = await rec.event('error');
  assert.equal(e.code, 'ESERVER');
  assert.equal(e.message, 'bad json');
});

test('a subscribe error rejects its promise and drops the subscription', async (t) => {
  const { srv, c } = await setup(t);
  await c.connect();
  const conn = await srv.conn(1);
  const good = c.subscribe('good', () => {});
  const bad = c.subscribe('bad!', () => {});
  const sg = await conn.next(isSub('good'));
  const sb = await conn.next(isSub('bad!'));
  conn.send({ type: 'error', id: sb.id, error: 'bad channel name' });
  conn.send({ type: 'subscribed', channel: 'good', id: sg.id });
  await assert.rejects(bad, (e) => e.code === 'ESERVER' && e.channel === 'bad!' && e.reply.id === sb.id);
  assert.deepEqual(await good, { channel: 'good', offset: null, epoch: null, recovered: undefined, resubscribe: false });
  conn.destroy();
  const conn2 = await srv.conn(2);
  await conn2.next(isSub('good'));
  assert.equal(conn2.received.filter(isSub('bad!')).length, 0, 'a rejected subscription is not re-sent');
});

test('disconnect rejects pending publishes, keeps subscriptions; nothing is queued while disconnected', async (t) => {
  const { srv, c } = await setup(t, { maxPending: 2 });
  await assert.rejects(c.publish('x', 1), (e) => e.code === 'ENOTCONNECTED');
  const early = c.subscribe('x', () => {}); // registered now, sent on connect
  await c.connect();
  const conn = await srv.conn(1);
  await conn.next(isSub('x'));
  const p1 = c.publish('x', 1);
  const p2 = c.publish('x', 2);
  await assert.rejects(c.publish('x', 3), (e) => e.code === 'ELIMIT');
  await assert.rejects(c.publish('x', undefined), TypeError);
  await srv.changed.until(() => conn.received.length === 3, 'two publishes');
  conn.destroy();
  await assert.rejects(p1, (e) => e.code === 'EDISCONNECTED');
  await assert.rejects(p2, (e) => e.code === 'EDISCONNECTED');
  await assert.rejects(c.publish('x', 4), (e) => e.code === 'ENOTCONNECTED');
  const conn2 = await srv.conn(2);
  const s = await conn2.next(isSub('x'));
  conn2.send({ type: 'subscribed', channel: 'x', id: s.id });
  assert.equal((await early).channel, 'x');
  assert.equal(conn2.received.filter((m) => m.type === 'publish').length, 0, 'no publish was replayed');
});

test('a request with no reply times out', async (t) => {
  const { srv, c } = await setup(t, { requestTimeout: 50 });
  await c.connect();
  await srv.conn(1);
  await assert.rejects(c.publish('x', 1), (e) => e.code === 'ETIMEDOUT');
});

test('unsubscribe: before confirmation rejects the subscribe; frames before subscribed are dropped', async (t) => {
  const { srv, c } = await setup(t);
  await c.connect();
  const conn = await srv.conn(1);
  const got = [];
  const w = new Waitable();
  const p = c.subscribe('a', (d) => {
    got.push(d);
    w.notify();
  });
  const s1 = await conn.next(isSub('a'));
  const u = c.unsubscribe('a');
  await assert.rejects(p, (e) => e.code === 'EUNSUBSCRIBED');
  const un = await conn.next((m) => m.type === 'unsubscribe');
  assert.equal(un.channel, 'a');
  const p2 = c.subscribe('a', (d) => {
    got.push(d);
    w.notify();
  });
  const s2 = await conn.next(isSub('a'));
  conn.send({ type: 'subscribed', channel: 'a', id: s1.id });
  conn.send({ type: 'message', channel: 'a', data: 'old' });
  conn.send({ type: 'unsubscribed', channel: 'a', id: un.id });
  await u;
  conn.send({ type: 'subscribed', channel: 'a', id: s2.id });
  conn.send({ type: 'message', channel: 'a', data: 'new' });
  await p2;
  await w.until(() => got.length >= 1, 'a message');
  assert.deepEqual(got, ['new']);
  // one handler of two removed: no unsubscribe frame
  const h = () => {};
  c.subscribe('a', h);
  await c.unsubscribe('a', h);
  assert.equal(conn.received.filter((m) => m.type === 'unsubscribe').length, 1);
});

test('the server ending a subscription is surfaced and it is not re-sent', async (t) => {
  const { srv, c } = await setup(t);
  const rec = recorder(c, ['unsubscribed']);
  await c.connect();
  const conn = await srv.conn(1);
  c.subscribe('p', () => {});
  const s = await conn.next(isSub('p'));
  conn.send({ type: 'subscribed', channel: 'p', id: s.id });
  conn.send({ type: 'unsubscribed', channel: 'p', reason: 'permission denied' });
  assert.deepEqual(await rec.event('unsubscribed'), { channel: 'p', reason: 'permission denied' });
  c.subscribe('q', () => {});
  conn.destroy();
  const conn2 = await srv.conn(2);
  await conn2.next(isSub('q'));
  assert.equal(conn2.received.filter(isSub('p')).length, 0);
});

test('resubscribe with since recovers; dedupe by offset; gap and recovered:false surfaced', async (t) => {
  const { srv, c } = await setup(t);
  const rec = recorder(c, ['gap', 'subscribed', 'message', 'disconnected']);
  const got = [];
  const w = new Waitable();
  c.connect();
  const p = c.subscribe('news', (d, meta) => {
    assert.equal(d.n, meta.offset);
    got.push(meta.offset);
    w.notify();
  });
  const msg = (conn, o) => conn.send({ type: 'message', channel: 'news', offset: o, data: { n: o } });

  const c1 = await srv.conn(1);
  const s1 = await c1.next(isSub('news'));
  assert.equal(s1.since, undefined, 'a first subscribe has no since');
  c1.send({ type: 'subscribed', channel: 'news', id: s1.id, offset: 0, epoch: 'E1' });
  assert.deepEqual(await p, { channel: 'news', offset: 0, epoch: 'E1', recovered: undefined, resubscribe: false });
  for (const o of [1, 2, 3]) msg(c1, o);
  await w.until(() => got.length === 3, 'messages 1..3');
  assert.deepEqual(c.position('news'), { offset: 3, epoch: 'E1' });
  c1.destroy(); // no close frame

  const c2 = await srv.conn(2);
  const s2 = await c2.next(isSub('news'));
  assert.deepEqual(s2.since, { offset: 3, epoch: 'E1' });
  c2.send({ type: 'subscribed', channel: 'news', id: s2.id, offset: 3, epoch: 'E1', recovered: true });
  for (const o of [2, 3, 4, 5, 4, 5, 6]) msg(c2, o);
  await w.until(() => got.length === 6, 'messages 4..6');
  assert.deepEqual(got, [1, 2, 3, 4, 5, 6]);
  const sub2 = await rec.event('subscribed', (e) => e.resubscribe);
  assert.deepEqual(sub2, { channel: 'news', offset: 3, epoch: 'E1', recovered: true, resubscribe: true });
  assert.equal(rec.all('gap').length, 0);

  c2.send({ type: 'gap', channel: 'news', epoch: 'E2', offset: 10 });
  assert.deepEqual(await rec.event('gap'), { channel: 'news', offset: 10, epoch: 'E2', previous: { offset: 6, epoch: 'E1' } });
  msg(c2, 10); // duplicate of the gap position
  msg(c2, 11);
  await w.until(() => got.length === 7, 'message 11');
  assert.equal(got[6], 11);
  c2.close(1001, 'going away');
  assert.equal((await rec.event('disconnected', () => true, 2)).code, 1001);

  const c3 = await srv.conn(3);
  const s3 = await c3.next(isSub('news'));
  assert.deepEqual(s3.since, { offset: 11, epoch: 'E2' });
  c3.send({ type: 'subscribed', channel: 'news', id: s3.id, offset: 40, epoch: 'E3', recovered: false });
  assert.deepEqual(await rec.event('gap', () => true, 2), {
    channel: 'news',
    offset: 40,
    epoch: 'E3',
    previous: { offset: 11, epoch: 'E2' },
    recovered: false,
  });
  msg(c3, 40);
  msg(c3, 41);
  c3.send({ type: 'message', channel: 'news', data: { n: undefined } }); // no offset: delivered as is
  await w.until(() => got.length === 9, 'message 41 and one without offset');
  assert.deepEqual(got.slice(6), [11, 41, undefined]);
  assert.deepEqual(c.position('news'), { offset: 41, epoch: 'E3' });
  assert.deepEqual(
    rec.all('message').map((m) => m.offset),
    [1, 2, 3, 4, 5, 6, 11, 41, undefined],
  );
});

test('a channel without offsets is resubscribed without since', async (t) => {
  const { srv, c } = await setup(t);
  await c.connect();
  const c1 = await srv.conn(1);
  c.subscribe('plain', () => {});
  const s1 = await c1.next(isSub('plain'));
  c1.send({ type: 'subscribed', channel: 'plain', id: s1.id });
  c1.send({ type: 'message', channel: 'plain', data: 1 });
  c1.destroy();
  const c2 = await srv.conn(2);
  const s2 = await c2.next(isSub('plain'));
  assert.equal(s2.since, undefined);
});

test('the token is sent at connect and refreshed before exp', async (t) => {
  const clock = new FakeClock();
  const t0 = clock.now() / 1000;
  const tokens = [fakeJwt({ sub: 'u', exp: t0 + 120 }), fakeJwt({ sub: 'u', exp: t0 + 300 }), fakeJwt({ sub: 'u', exp: t0 + 600 })];
  const reasons = [];
  let n = 0;
  const { srv, c } = await setup(t, {
    setTimeout: clock.setTimeout,
    clearTimeout: clock.clearTimeout,
    now: clock.now,
    connectTimeout: 0,
    getToken: async (ctx) => {
      reasons.push(ctx.reason);
      return tokens[n++];
    },
  });
  const rec = recorder(c, ['refreshed', 'error']);
  await c.connect();
  const conn = await srv.conn(1);
  assert.equal(conn.token, tokens[0]);
  // 120 s left: refresh 30 s (refreshBefore) before exp
  const r1 = await clock.waitFor((x) => x.ms === 90000, 'the refresh timer');
  clock.fire(r1);
  const f1 = await conn.next((m) => m.type === 'refresh');
  assert.deepEqual(f1, { type: 'refresh', token: tokens[1], id: f1.id });
  conn.send({ type: 'refreshed', id: f1.id });
  assert.deepEqual(await rec.event('refreshed'), { exp: t0 + 300 });
  // now t0+90: 210 s left of the new token, next refresh 30 s before its exp
  const r2 = await clock.waitFor((x) => x.ms === 180000, 'the next refresh timer');
  clock.fire(r2);
  const f2 = await conn.next((m) => m.type === 'refresh');
  assert.equal(f2.token, tokens[2]);
  conn.send({ type: 'error', id: f2.id, error: 'sub differs' });
  const e = await rec.event('error');
  assert.equal(e.code, 'ESERVER');
  assert.deepEqual(reasons, ['connect', 'refresh', 'refresh']);
});

test('a short-lived token is refreshed at half its lifetime', async (t) => {
  const clock = new FakeClock();
  const t0 = clock.now() / 1000;
  const { srv, c } = await setup(t, {
    setTimeout: clock.setTimeout,
    clearTimeout: clock.clearTimeout,
    now: clock.now,
    connectTimeout: 0,
    getToken: () => fakeJwt({ sub: 'u', exp: t0 + 10 }),
  });
  await c.connect();
  await srv.conn(1);
  await clock.waitFor((x) => x.ms === 5000, 'a refresh timer at 5 s');
});

test('a 4001 close reconnects with a fresh token and resubscribes', async (t) => {
  const reasons = [];
  let n = 0;
  const { srv, c } = await setup(t, {
    getToken: (ctx) => {
      reasons.push(ctx.reason);
      n++;
      return fakeJwt({ sub: 'u', exp: Math.floor(Date.now() / 1000) + 3600, n });
    },
  });
  const rec = recorder(c, ['disconnected', 'subscribed']);
  await c.connect();
  const c1 = await srv.conn(1);
  c.subscribe('a', () => {});
  const s1 = await c1.next(isSub('a'));
  c1.send({ type: 'subscribed', channel: 'a', id: s1.id });
  await rec.event('subscribed');
  c1.close(4001, 'token expired');
  const d = await rec.event('disconnected');
  assert.equal(d.code, 4001);
  assert.equal(d.reason, 'token expired');
  assert.equal(d.willReconnect, true);
  const c2 = await srv.conn(2);
  assert.notEqual(c2.token, c1.token);
  assert.equal(JSON.parse(Buffer.from(c2.token.split('.')[1], 'base64url')).n, 2);
  const s2 = await c2.next(isSub('a'));
  c2.send({ type: 'subscribed', channel: 'a', id: s2.id });
  assert.equal((await rec.event('subscribed', (e) => e.resubscribe)).channel, 'a');
  assert.deepEqual(reasons, ['connect', 'expired']);
});

test('backoff: full jitter, exponential, capped, reset after a stable connection', async (t) => {
  const clock = new FakeClock();
  const { srv, c } = await setup(
    t,
    {
      setTimeout: clock.setTimeout,
      clearTimeout: clock.clearTimeout,
      now: clock.now,
      random: () => 0.5,
      initialDelay: 100,
      maxDelay: 1000,
      factor: 2,
      stableAfter: 5000,
      connectTimeout: 0,
    },
    { refuse: 503 },
  );
  const rec = recorder(c, ['disconnected', 'connecting', 'connected']);
  const connected = c.connect();
  const expected = [50, 100, 200, 400, 500, 500];
  for (let i = 0; i < expected.length; i++) {
    const d = await rec.event('disconnected', () => true, i + 1);
    assert.equal(d.delay, expected[i], `delay after failure ${i + 1}`);
    assert.equal(d.wasConnected, false);
    const timer = await clock.waitFor((x) => x.ms === expected[i], `reconnect timer ${expected[i]}`);
    assert.equal(clock.timers.size, 1, 'only the reconnect timer is pending');
    if (i === expected.length - 1) srv.refuse = 0;
    clock.fire(timer);
  }
  const c1 = await srv.conn(1);
  await rec.event('connected');
  await connected;
  assert.equal(srv.attempts, 7);
  clock.t += 5000; // stable
  c1.close(1011, 'internal error');
  const d1 = await rec.event('disconnected', () => true, 7);
  assert.equal(d1.delay, 50, 'reset after a stable connection');
  assert.equal(d1.wasConnected, true);
  clock.fire(await clock.waitFor((x) => x.ms === 50));
  const c2 = await srv.conn(2);
  c2.close(1011, 'internal error'); // not stable: the backoff grows
  const d2 = await rec.event('disconnected', () => true, 8);
  assert.equal(d2.delay, 100);
  // close() stops it
  const timer = await clock.waitFor((x) => x.ms === 100);
  c.close();
  assert.equal(clock.timers.has(timer.id), false, 'close() cancels the reconnect');
  assert.equal(c.state, 'disconnected');
});

test('close() while connecting rejects connect(); with reconnect:false a failure rejects it', async (t) => {
  const { srv, c } = await setup(t, {}, { refuse: 503 });
  const p = c.connect();
  c.close();
  await assert.rejects(p, (e) => e.code === 'ECLOSED');
  const c2 = new WshubClient(srv.url, { reconnect: false });
  await assert.rejects(c2.connect(), (e) => e.code === 'EDISCONNECTED');
  assert.equal(c2.state, 'disconnected');
});

test('a throwing message handler is reported, not fatal', async (t) => {
  const { srv, c } = await setup(t);
  const rec = recorder(c, ['error', 'message']);
  await c.connect();
  const conn = await srv.conn(1);
  c.subscribe('h', () => {
    throw new Error('boom');
  });
  const s = await conn.next(isSub('h'));
  conn.send({ type: 'subscribed', channel: 'h', id: s.id });
  conn.send({ type: 'message', channel: 'h', data: 1 });
  conn.send({ type: 'message', channel: 'h', data: 2 });
  await rec.event('message', () => true, 2);
  const e = await rec.event('error');
  assert.equal(e.code, 'ELISTENER');
  assert.equal(e.cause.message, 'boom');
});

test('a getToken that hangs or throws counts as a failed attempt', async (t) => {
  const clock = new FakeClock();
  let calls = 0;
  const { srv, c } = await setup(t, {
    setTimeout: clock.setTimeout,
    clearTimeout: clock.clearTimeout,
    now: clock.now,
    random: () => 0.5,
    initialDelay: 100,
    maxDelay: 1000,
    connectTimeout: 10000,
    getToken: () => {
      calls++;
      if (calls === 1) return new Promise(() => {}); // never settles
      if (calls === 2) throw new Error('no session');
      return 'opaque-token';
    },
  });
  const rec = recorder(c, ['disconnected', 'error']);
  const connected = c.connect();
  clock.fire(await clock.waitFor((x) => x.ms === 10000, 'the connect timer'));
  clock.fire(await clock.waitFor((x) => x.ms === 50, 'the first reconnect timer'));
  clock.fire(await clock.waitFor((x) => x.ms === 100, 'the second reconnect timer'));
  await connected;
  const d = rec.all('disconnected');
  assert.deepEqual(d.map((e) => e.reason), ['connect timeout', 'getToken failed']);
  assert.equal(rec.all('error')[0].code, 'ETOKEN');
  assert.equal(rec.all('error')[0].cause.message, 'no session');
  assert.equal((await srv.conn(1)).token, 'opaque-token');
  assert.equal(srv.attempts, 1);
});
