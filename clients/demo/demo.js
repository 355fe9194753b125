// The demo page at GET / of a wshub server: a live channel viewer built on
// the client library (served beside it as /wshub.js). Message data only
// ever reaches the page as text (textContent), never as HTML.

import { WshubClient, tokenExp } from './wshub.js';

const $ = (id) => document.getElementById(id);
const LOG_MAX = 500; // entries kept in the log
const DATA_MAX = 2000; // characters of a message shown

const stateEl = $('state');
const logEl = $('log');
const subsEl = $('subs');
const tokenEl = $('token');

// A token in the page's fragment (#token=<JWT>) fills the token field;
// the fragment is never sent to the server, and is removed from the address bar.
const frag = new URLSearchParams(location.hash.slice(1));
if (frag.get('token')) {
  tokenEl.value = frag.get('token');
  $('auth').open = true;
  history.replaceState(null, '', location.pathname + location.search);
}

// Relative URLs throughout ('ws', 'demo.js', './wshub.js'): the page also
// works behind a proxy that serves the hub under a path prefix.
const client = new WshubClient('ws', {
  // Read at every connect and before the token's exp (refresh): paste a
  // newer token into the field and it is used without a disconnect.
  getToken: () => tokenEl.value.trim() || null,
});
globalThis.wshub = client; // for the browser console

function two(n, w = 2) {
  return String(n).padStart(w, '0');
}

function clock(d = new Date()) {
  return `${two(d.getHours())}:${two(d.getMinutes())}:${two(d.getSeconds())}.${two(d.getMilliseconds(), 3)}`;
}

function span(cls, text) {
  const s = document.createElement('span');
  s.className = cls;
  s.textContent = text;
  return s;
}

/** Appends a log line: time, kind, then [channel], [#offset], text. */
function log(kind, text, { channel, offset } = {}) {
  const stick = logEl.scrollHeight - logEl.scrollTop - logEl.clientHeight < 40;
  const li = document.createElement('li');
  li.dataset.kind = kind;
  const t = document.createElement('time');
  const now = new Date();
  t.dateTime = now.toISOString();
  t.textContent = clock(now);
  li.append(t, ' ', span('kind', kind));
  if (channel != null) {
    li.dataset.channel = channel;
    li.append(' ', span('ch', channel));
  }
  if (offset != null) {
    li.dataset.offset = String(offset);
    li.append(' ', span('off', '#' + offset));
  }
  if (text) li.append(' ', span('text', text));
  logEl.append(li);
  while (logEl.children.length > LOG_MAX) logEl.firstElementChild.remove();
  if (stick) logEl.scrollTop = logEl.scrollHeight;
  return li;
}

function shown(data) {
  let s;
  try {
    s = JSON.stringify(data);
  } catch {
    s = String(data);
  }
  return s.length > DATA_MAX ? s.slice(0, DATA_MAX) + '…' : s;
}

function setState(state, text) {
  stateEl.dataset.state = state;
  stateEl.textContent = text;
}

// ------------------------------------------------------ subscriptions list
const subs = new Map(); // channel -> { li, pos }

function renderSubs() {
  $('subs-empty').hidden = subs.size > 0;
  const names = $('sub-names');
  names.replaceChildren(
    ...[...subs.keys()].map((c) => {
      const o = document.createElement('option');
      o.value = c;
      return o;
    }),
  );
}

function subRow(channel) {
  let s = subs.get(channel);
  if (s) return s;
  const li = document.createElement('li');
  li.dataset.channel = channel;
  const btn = document.createElement('button');
  btn.type = 'button';
  btn.className = 'secondary';
  btn.textContent = 'Unsubscribe';
  btn.setAttribute('aria-label', 'Unsubscribe from ' + channel);
  btn.addEventListener('click', () => unsubscribe(channel));
  li.append(span('name', channel), span('pos', ''), btn);
  subsEl.append(li);
  s = { li, note: '' };
  subs.set(channel, s);
  renderSubs();
  return s;
}

/** Shows a subscription's status (kept when undefined), position and note. */
function setSub(channel, status, note) {
  const s = subs.get(channel);
  if (!s) return;
  if (status === undefined) status = s.li.dataset.status;
  s.li.dataset.status = status;
  if (note !== undefined) s.note = note;
  const pos = client.position(channel);
  const where = pos ? `offset ${pos.offset} · epoch ${pos.epoch}` : status === 'active' ? 'live (no history)' : '';
  const what = status === 'pending' ? 'subscribing' : '';
  s.li.querySelector('.pos').textContent = [what, where, s.note].filter(Boolean).join(' · ');
}

function dropSub(channel) {
  const s = subs.get(channel);
  if (!s) return;
  s.li.remove();
  subs.delete(channel);
  renderSubs();
}

function onMessage(data, { channel, offset }) {
  log('message', shown(data), { channel, offset });
  if (offset != null) setSub(channel); // the position moved
}

function subscribe(channel) {
  if (subs.has(channel)) return;
  subRow(channel);
  setSub(channel, 'pending');
  client.subscribe(channel, onMessage).catch((e) => {
    // An error reply (already logged through the 'error' event) or an
    // unsubscribe before the reply.
    if (e.code !== 'EUNSUBSCRIBED') dropSub(channel);
  });
}

function unsubscribe(channel) {
  dropSub(channel);
  client.unsubscribe(channel).then(
    () => log('unsubscribed', '', { channel }),
    (e) => log('error', `unsubscribe: ${e.code} ${e.message}`, { channel }),
  );
}

// ----------------------------------------------------------- client events
client.on('connecting', ({ attempt }) => {
  setState('connecting', attempt ? `connecting (attempt ${attempt + 1})` : 'connecting');
});

client.on('connected', () => {
  setState('connected', 'connected');
  log('state', 'connected');
});

client.on('disconnected', ({ code, reason, willReconnect, delay }) => {
  const why = `${code}${reason ? ' ' + reason : ''}`;
  const again = willReconnect ? `, reconnecting in ${(delay / 1000).toFixed(1)} s` : '';
  setState('disconnected', `disconnected (${why})${again}`);
  log('state', `disconnected ${why}${again}`);
  for (const c of subs.keys()) setSub(c, 'pending', '');
});

client.on('subscribed', ({ channel, offset, epoch, recovered, resubscribe }) => {
  if (!subs.has(channel)) return;
  let text = resubscribe ? 'resubscribed' : 'subscribed';
  if (offset != null) text += ` at offset ${offset}, epoch ${epoch}`;
  if (resubscribe && recovered === true) text += ': recovered, missed messages follow';
  if (resubscribe && recovered === false && offset != null) text += ': not recovered';
  log('subscribed', text, { channel });
  if (resubscribe && recovered === false && offset != null) setSub(channel, 'gap', 'not recovered: messages lost');
  else setSub(channel, 'active', resubscribe && recovered ? 'recovered' : '');
});

client.on('gap', ({ channel, offset, epoch, previous, recovered }) => {
  const was = previous ? ` (had #${previous.offset} of epoch ${previous.epoch})` : '';
  const cause = recovered === false ? 'not recovered after reconnect' : 'messages were lost';
  log('gap', `${cause}${was}; delivery continues after #${offset} of epoch ${epoch}`, { channel });
  setSub(channel, 'gap', 'messages lost');
});

client.on('unsubscribed', ({ channel, reason }) => {
  dropSub(channel);
  log('unsubscribed', `by the server${reason ? ': ' + reason : ''}`, { channel });
});

client.on('refreshed', ({ exp }) => {
  log('refreshed', `token refreshed${exp ? ', now valid until ' + clock(new Date(exp * 1000)) : ''}`);
});

client.on('error', (e) => {
  const hint = e.code === 'ETOKEN' ? ' (put a newer token in the Token field)' : '';
  log('error', `${e.code}: ${e.message}${hint}`, e.channel ? { channel: e.channel } : {});
});

// ------------------------------------------------------------------ forms
$('sub-form').addEventListener('submit', (ev) => {
  ev.preventDefault();
  const input = $('sub-channel');
  for (const c of input.value.split(/[\s,]+/).filter(Boolean)) subscribe(c);
  input.value = '';
});

$('pub-form').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  const out = $('pub-result');
  const channel = $('pub-channel').value.trim();
  let data;
  try {
    data = JSON.parse($('pub-data').value);
  } catch (e) {
    out.className = 'bad';
    out.textContent = 'data is not JSON: ' + e.message;
    return;
  }
  out.className = '';
  out.textContent = 'publishing…';
  try {
    const r = await client.publish(channel, data);
    out.textContent = r.offset != null ? `published at offset ${r.offset}` : 'published';
    log('published', '', { channel, offset: r.offset });
  } catch (e) {
    out.className = 'bad';
    out.textContent = `not published: ${e.code === 'ESERVER' ? e.message : e.code}`;
  }
});

$('token-form').addEventListener('submit', (ev) => {
  ev.preventDefault();
  const t = tokenEl.value.trim();
  const exp = t ? tokenExp(t) : null;
  log('state', t ? `reconnecting with a token${exp ? ' valid until ' + clock(new Date(exp * 1000)) : ''}` : 'reconnecting without a token');
  client.close();
  client.connect().catch(() => {});
});

$('log-clear').addEventListener('click', () => logEl.replaceChildren());

renderSubs();
client.connect().catch(() => {}); // retries until close(); failures are in the log
