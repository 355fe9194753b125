// The demo page at GET / (clients/demo/, on clients/js/wshub.js) in
// headless Debian chromium against a real build/wshub (embedded
// backplane), one server per test on a free loopback port, stopped by its
// pid. Run by `make browser-test` (part of `make test` when chromium is
// installed).

import test from 'node:test';
import assert from 'node:assert/strict';
import { Wshub, launchBrowser, openPage, waitState, waitLog, logEntries, subscribeUI, mintToken, artifact, WAIT } from './helpers.js';

const T = { timeout: 4 * WAIT }; // per test

let chrome;
test.before(async () => {
  chrome = await launchBrowser();
});
test.after(async () => {
  if (chrome) await chrome.close();
});

/** A server with `args`, stopped by its pid after the test. */
async function server(t, args = []) {
  const s = await Wshub.create(args);
  t.after(() => s.stop());
  await s.start();
  return s;
}

async function page(t, opts) {
  const p = await openPage(chrome.browser, opts);
  t.after(() => p.close());
  return p;
}

test('the page loads with no console error and no failed request, everything same-origin', T, async (t) => {
  const srv = await server(t, ['--history-size', '100']);
  const { page: pg, problems, requests } = await page(t);
  const res = await pg.goto(`${srv.http}/`, { waitUntil: 'load' });
  assert.equal(res.status(), 200);
  assert.match(res.headers()['content-type'], /^text\/html/);
  await waitState(pg, 'connected');
  await waitLog(pg, { kind: 'state', text: 'connected' });
  assert.deepEqual(problems, []);
  const origin = new URL(srv.http).origin;
  assert.deepEqual(
    requests.filter((u) => new URL(u).origin !== origin),
    [],
    'no request leaves the server (works offline)',
  );
  const paths = requests.map((u) => new URL(u).pathname).sort();
  assert.deepEqual(paths, ['/', '/demo.js', '/wshub.js']);
  assert.equal(
    await pg.$eval('meta[name=viewport]', (m) => m.content),
    'width=device-width, initial-scale=1',
  );
  // The client module the page imports is the library itself, usable from the console.
  assert.equal(await pg.evaluate(() => typeof globalThis.wshub.subscribe), 'function');
});

test('subscribe in the UI, a POST /publish shows with its offset, unsubscribe stops it', T, async (t) => {
  const srv = await server(t, ['--history-size', '100']);
  const { page: pg, problems } = await page(t);
  await pg.goto(`${srv.http}/`);
  await waitState(pg, 'connected');
  await subscribeUI(pg, ['news', 'other']);
  assert.deepEqual(
    await pg.$$eval('#subs li', (lis) => lis.map((li) => li.dataset.channel)),
    ['news', 'other'],
    'the list of subscriptions',
  );

  // Message data is text, never HTML.
  const data = { hello: 'world', html: '<img src=x onerror=alert(1)><b>bold?</b>' };
  const r = await srv.publish('news', data);
  assert.equal(r.status, 200);
  assert.equal(typeof r.body.offset, 'number');
  await waitLog(pg, { kind: 'message', channel: 'news', offset: r.body.offset });
  const m = (await logEntries(pg)).find((e) => e.kind === 'message');
  assert.deepEqual(JSON.parse(m.text), data);
  assert.match(m.time, /^\d\d:\d\d:\d\d\.\d\d\d$/, 'a timestamp');
  assert.equal(await pg.$('#log img, #log b'), null, 'no element made from message data');
  assert.match(
    await pg.$eval('#subs li[data-channel="news"] .pos', (e) => e.textContent),
    new RegExp(`offset ${r.body.offset} · epoch [A-Za-z0-9]{16}`),
  );

  // Publish through the page's form (WebSocket publish): the reply's offset is shown.
  await pg.locator('#pub-channel').fill('news');
  await pg.locator('#pub-data').fill('{"from":"page"}');
  await pg.click('#pub-button');
  await waitLog(pg, { kind: 'message', channel: 'news', offset: r.body.offset + 1, text: '"from":"page"' });
  await waitLog(pg, { kind: 'published', channel: 'news', offset: r.body.offset + 1 });
  assert.equal(await pg.$eval('#pub-result', (e) => e.textContent), `published at offset ${r.body.offset + 1}`);

  // Unsubscribe: gone from the list; a later publish to it is not shown.
  await pg.click('#subs li[data-channel="news"] button');
  await waitLog(pg, { kind: 'unsubscribed', channel: 'news' });
  assert.deepEqual(await pg.$$eval('#subs li', (lis) => lis.map((li) => li.dataset.channel)), ['other']);
  assert.equal((await srv.publish('news', { after: 'unsubscribe' })).status, 200);
  // `other` is published after it on the same server: once it shows, the
  // news message would have shown before it.
  assert.equal((await srv.publish('other', { marker: 1 })).status, 200);
  await waitLog(pg, { kind: 'message', channel: 'other', text: '"marker":1' });
  const news = (await logEntries(pg)).filter((e) => e.kind === 'message' && e.channel === 'news');
  assert.deepEqual(
    news.map((e) => e.offset),
    [r.body.offset, r.body.offset + 1],
    'nothing on news after the unsubscribe',
  );
  assert.deepEqual(problems, []);
});

test('server restart (embedded backplane): the page resubscribes, shows the gap, and gets new publishes', T, async (t) => {
  const srv = await server(t, ['--history-size', '100']);
  const { page: pg } = await page(t);
  await pg.goto(`${srv.http}/`);
  await waitState(pg, 'connected');
  await subscribeUI(pg, ['news']);
  const before = await srv.publish('news', { n: 1 });
  await waitLog(pg, { kind: 'message', channel: 'news', offset: before.body.offset });
  const epoch1 = (await pg.evaluate(() => globalThis.wshub.position('news'))).epoch;

  for (const [round, sig, code, reason] of [
    [1, 'SIGTERM', 1001, 'server shutting down'],
    [2, 'SIGKILL', 1006, ''],
  ]) {
    // The log line of the server's close: its code and reason.
    const lost = { kind: 'state', text: `disconnected ${code}${reason ? ' ' + reason : ''}, reconnecting in` };
    const seen = (await logEntries(pg)).filter((e) => e.kind === 'state' && e.text.includes(lost.text)).length;
    await srv.stop(sig);
    await waitLog(pg, lost, seen + 1);
    // Until the server is back: disconnected (each failed attempt 1006), or connecting.
    assert.match(await pg.$eval('#state', (e) => e.textContent), /^(disconnected \(\d+.*reconnecting in|connecting)/);
    assert.equal(await pg.$eval('#subs li[data-channel="news"]', (e) => e.dataset.status), 'pending');
    await srv.start(); // same port; a new process: history and epoch start over
    // The resubscribe carried `since`; the new epoch cannot recover it: a gap, shown.
    await waitLog(pg, { kind: 'gap', channel: 'news', text: 'not recovered' }, round);
    await waitLog(pg, { kind: 'subscribed', channel: 'news', text: 'not recovered' }, round);
    await pg.waitForFunction(() => document.querySelector('#subs li[data-channel="news"]').dataset.status === 'gap');
    assert.equal(await pg.$eval('#state', (e) => e.dataset.state), 'connected');
    const pos = await pg.evaluate(() => globalThis.wshub.position('news'));
    assert.notEqual(pos.epoch, epoch1);
    assert.equal(pos.offset, 0);
    // Not a silent loss: the subscription is live again.
    const after = await srv.publish('news', { round });
    assert.equal(after.body.offset, 1);
    await waitLog(pg, { kind: 'message', channel: 'news', text: `"round":${round}` });
  }
  await pg.screenshot({ path: artifact('demo-restart-gap.png'), fullPage: true });
});

test('a token about to expire is refreshed without a disconnect', T, async (t) => {
  const secret = 'browser-test-secret';
  const apiKey = 'browser-test-key';
  const srv = await server(t, ['--token-secret', secret, '--api-key', apiKey]);
  const now = Math.floor(Date.now() / 1000);
  const grants = { sub: 'demo', subscribe: ['news'], publish: ['news'] };
  const life = 14; // s: the client refreshes at half of it (less than its 30 s refreshBefore)
  const first = mintToken(secret, { ...grants, exp: now + life });
  const { page: pg, problems } = await page(t);
  // The token goes in the fragment (never sent to the server) and fills the token field.
  await pg.goto(`${srv.http}/#token=${first}`);
  await waitState(pg, 'connected');
  // The client asks getToken (the field) again at half the remaining
  // lifetime: put a newer token there now.
  const second = mintToken(secret, { ...grants, exp: now + 120 });
  await pg.locator('#token').fill(second);
  assert.equal(await pg.evaluate(() => location.hash), '', 'the token left the address bar');
  await subscribeUI(pg, ['news']);
  await waitLog(pg, { kind: 'refreshed' });
  // Past the first token's exp, when the server would have closed with 4001.
  await pg.waitForFunction((ms) => Date.now() > ms, { timeout: WAIT }, (now + life + 1.5) * 1000);
  const r = await srv.publish('news', { still: 'here' }, apiKey);
  assert.equal(r.status, 200);
  await waitLog(pg, { kind: 'message', channel: 'news', text: '"still":"here"' });
  const log = await logEntries(pg);
  assert.deepEqual(
    log.filter((e) => e.kind === 'state').map((e) => e.text),
    ['connected'],
    'one connection, never disconnected',
  );
  assert.deepEqual(log.filter((e) => e.kind === 'error'), []);
  assert.equal(await pg.$eval('#state', (e) => e.dataset.state), 'connected');
  assert.deepEqual(problems, []);
});

test('screenshots: desktop and a 390 px phone, no horizontal overflow', T, async (t) => {
  const srv = await server(t, ['--history-size', '100']);
  for (const [name, viewport] of [
    ['desktop', { width: 1280, height: 900 }],
    ['phone', { width: 390, height: 844 }],
  ]) {
    const { page: pg, problems } = await page(t, viewport);
    await pg.goto(`${srv.http}/`);
    await waitState(pg, 'connected');
    const long = 'c'.repeat(128);
    await subscribeUI(pg, ['news', 'user:42', long]);
    await srv.publish('news', { hello: 'world', items: [1, 2, 3] });
    await srv.publish('news', { unbroken: 'x'.repeat(300) });
    await srv.publish(long, 'a message on a channel with a 128-byte name');
    await srv.publish('user:42', { text: 'Hi there, this line wraps on a narrow screen instead of running off it.' });
    await waitLog(pg, { kind: 'message', channel: 'user:42' });
    const [scrollW, innerW] = await pg.evaluate(() => [document.documentElement.scrollWidth, innerWidth]);
    assert.ok(scrollW <= innerW, `${name}: page ${scrollW} px wide in a ${innerW} px viewport`);
    const wide = await pg.$$eval('body *', (els) =>
      els.filter((e) => e.getBoundingClientRect().right > innerWidth + 0.5).map((e) => e.tagName + '#' + e.id),
    );
    assert.deepEqual(wide, [], `${name}: elements past the right edge`);
    await pg.screenshot({ path: artifact(`demo-${name}.png`), fullPage: true });
    assert.deepEqual(problems, []);
  }
});
