// The demo page across a server restart with the Redis backplane: a real
// redis-server and two wshub instances with history, the page on
// instance A. A is stopped (by its pid), messages are published
// through B while A is away, A starts again on the same port, and the
// page reconnects, resubscribes with `since` and shows exactly the missed
// messages: recovered, no gap, no duplicate. Needs history with the Redis
// backplane (`make browser-test-redis`).

import test from 'node:test';
import assert from 'node:assert/strict';
import { Wshub, Redis, launchBrowser, openPage, waitState, waitLog, logEntries, subscribeUI, artifact, WAIT } from './helpers.js';

let chrome;
test.before(async () => {
  chrome = await launchBrowser();
});
test.after(async () => {
  if (chrome) await chrome.close();
});

test('restart with Redis: the page recovers exactly what was published while its server was away', { timeout: 6 * WAIT }, async (t) => {
  const redis = await Redis.create();
  t.after(() => redis.stop());
  await redis.start();
  const flags = (id) => ['--redis', redis.url, '--instance-id', id, '--history-size', '100'];
  const b = await Wshub.create(flags('b'), 'wshub b');
  t.after(() => b.stop());
  await b.start();
  let a = await Wshub.create(flags('a'), 'wshub a');
  t.after(() => a.stop());
  await a.start();

  const p = await openPage(chrome.browser);
  t.after(() => p.close());
  const pg = p.page;
  await pg.goto(`${a.http}/`);
  await waitState(pg, 'connected');
  await subscribeUI(pg, ['news']);

  const first = await b.publish('news', { n: 1 });
  assert.equal(first.status, 200, JSON.stringify(first.body));
  assert.equal(typeof first.body.offset, 'number');
  await waitLog(pg, { kind: 'message', channel: 'news', offset: first.body.offset });
  const epoch = (await pg.evaluate(() => globalThis.wshub.position('news'))).epoch;
  let n = 1;

  // A graceful stop (1001; the same instance id may start again at once),
  // then a crash (1006; its id's registry key outlives it, so the new
  // process takes another id, as an orchestrator would).
  for (const [round, sig, code, id] of [
    [1, 'SIGTERM', 1001, 'a'],
    [2, 'SIGKILL', 1006, 'a2'],
  ]) {
    const lost = { kind: 'state', text: `disconnected ${code}` };
    const seen = (await logEntries(pg)).filter((e) => e.kind === 'state' && e.text.startsWith(lost.text)).length;
    await a.stop(sig);
    await waitLog(pg, lost, seen + 1);
    const missed = [];
    for (let k = 0; k < 3; k++) {
      const r = await b.publish('news', { n: ++n });
      assert.equal(r.status, 200, JSON.stringify(r.body));
      missed.push(r.body.offset);
    }
    assert.deepEqual(missed, [n - 2, n - 1, n].map((x) => first.body.offset + x - 1));
    a = new Wshub(a.port, flags(id), `wshub ${id}`); // the same port
    t.after(() => a.stop());
    await a.start();
    await waitLog(pg, { kind: 'subscribed', channel: 'news', text: 'recovered, missed messages follow' }, round);
    await waitLog(pg, { kind: 'message', channel: 'news', offset: missed[2] });
    const live = await b.publish('news', { n: ++n });
    assert.equal(live.status, 200);
    await waitLog(pg, { kind: 'message', channel: 'news', offset: live.body.offset });
  }

  const log = await logEntries(pg);
  const news = log.filter((e) => e.kind === 'message' && e.channel === 'news');
  assert.deepEqual(
    news.map((e) => [e.offset, JSON.parse(e.text).n]),
    Array.from({ length: n }, (_, i) => [first.body.offset + i, i + 1]),
    'every message once, in order',
  );
  assert.deepEqual(log.filter((e) => e.kind === 'gap'), [], 'no gap');
  assert.equal((await pg.evaluate(() => globalThis.wshub.position('news'))).epoch, epoch, 'same epoch');
  assert.equal(await pg.$eval('#subs li[data-channel="news"]', (e) => e.dataset.status), 'active');
  await pg.screenshot({ path: artifact('demo-restart-redis.png'), fullPage: true });
});
