// wshub-client: a dependency-free client for the wshub WebSocket pub/sub
// hub, for browsers and Node 20+. The wire protocol is the one in the
// project's CONTRACT.md: subscribe / unsubscribe / publish with ids,
// `since` recovery on history channels, `gap`, token `refresh`, 4001.

const DEFAULTS = {
  initialDelay: 500, // ms: backoff cap of the first reconnect
  maxDelay: 30000, // ms: largest backoff cap
  factor: 2, // cap multiplier per failed attempt
  stableAfter: 5000, // ms open after which the backoff starts over
  connectTimeout: 10000, // ms for a socket to open (0: none)
  requestTimeout: 30000, // ms for a publish/unsubscribe/refresh reply (0: none)
  refreshBefore: 30000, // ms before `exp` to send a refresh (at most half the lifetime)
  maxPending: 1000, // publishes/unsubscribes/refreshes awaiting a reply
  maxSubscriptions: 10000,
  maxBufferedBytes: 1 << 22, // socket bufferedAmount past which publish is refused
  reconnect: true,
};

/** Errors the client rejects promises with or emits; `code` says which. */
export class WshubError extends Error {
  constructor(message, code, extra) {
    super(message);
    this.name = 'WshubError';
    this.code = code;
    if (extra) Object.assign(this, extra);
  }
}

/** The `exp` claim (Unix seconds) of a JWT, read without verifying; null if none. */
export function tokenExp(token) {
  try {
    let p = String(token).split('.')[1].replace(/-/g, '+').replace(/_/g, '/');
    p += '='.repeat((4 - (p.length % 4)) % 4);
    const bytes = Uint8Array.from(atob(p), (c) => c.charCodeAt(0));
    const exp = JSON.parse(new TextDecoder().decode(bytes)).exp;
    return typeof exp === 'number' && Number.isFinite(exp) ? exp : null;
  } catch {
    return null;
  }
}

/** Full-jitter exponential backoff: uniform in [0, min(max, initial*factor^attempt)). */
export function backoffDelay(attempt, initial, max, factor, random = Math.random) {
  return Math.floor(random() * Math.min(max, initial * Math.pow(factor, attempt)));
}

export class WshubClient {
  constructor(url, options = {}) {
    const o = { ...DEFAULTS, ...options };
    this.url = url;
    this._o = o;
    this._WS = o.WebSocket || globalThis.WebSocket;
    if (typeof this._WS !== 'function') {
      throw new TypeError('wshub: no global WebSocket; pass one as options.WebSocket');
    }
    this._setT = o.setTimeout || ((f, ms) => setTimeout(f, ms));
    this._clrT = o.clearTimeout || ((t) => clearTimeout(t));
    this._rand = o.random || Math.random;
    this._now = o.now || Date.now;
    this._ls = new Map(); // event -> Set of listeners
    this._subs = new Map(); // channel -> subscription record
    this._pending = new Map(); // request id -> request record
    this._inflight = 0; // pending requests other than subscribes
    this._id = 0;
    this._ws = null;
    this._gen = 0; // bumped per connection attempt: stale callbacks check it
    this._state = 'disconnected';
    this._want = false; // connect() called, close() not
    this._attempt = 0;
    this._openedAt = 0;
    this._token = null;
    this._t = {}; // named timers: reconnect, connect, refresh
    this._waiters = []; // connect() promises
  }

  /** 'disconnected' | 'connecting' | 'connected' */
  get state() {
    return this._state;
  }

  on(event, fn) {
    let s = this._ls.get(event);
    if (!s) this._ls.set(event, (s = new Set()));
    s.add(fn);
    return () => this.off(event, fn);
  }

  off(event, fn) {
    const s = this._ls.get(event);
    if (s) s.delete(fn);
  }

  _emit(event, arg) {
    const s = this._ls.get(event);
    if (!s) return;
    for (const fn of [...s]) {
      try {
        fn(arg);
      } catch (e) {
        if (event !== 'error') this._fail('listener of ' + event + ' threw', 'ELISTENER', { cause: e });
      }
    }
  }

  _fail(message, code, extra) {
    this._emit('error', new WshubError(message, code, extra));
  }

  _timer(name, ms, fn) {
    this._clear(name);
    this._t[name] = this._setT(() => {
      this._t[name] = null;
      fn();
    }, ms);
  }

  _clear(name) {
    if (this._t[name] != null) {
      this._clrT(this._t[name]);
      this._t[name] = null;
    }
  }

  /** Resolves once connected; reconnects with backoff until close(). */
  connect() {
    if (this._state === 'connected') return Promise.resolve();
    const p = new Promise((resolve, reject) => this._waiters.push({ resolve, reject }));
    if (!this._want) {
      this._want = true;
      this._attempt = 0;
      this._open('connect');
    }
    return p;
  }

  /** Closes the socket and stops reconnecting. Subscriptions stay registered. */
  close() {
    const was = this._state;
    this._want = false;
    this._gen++;
    for (const n of Object.keys(this._t)) this._clear(n);
    const ws = this._ws;
    this._ws = null;
    if (ws) this._detach(ws, 1000, 'client closed');
    this._reset(new WshubError('client closed', 'ECLOSED'));
    for (const sub of this._subs.values()) this._settle(sub, new WshubError('client closed', 'ECLOSED'));
    this._state = 'disconnected';
    const w = this._waiters.splice(0);
    for (const x of w) x.reject(new WshubError('client closed', 'ECLOSED'));
    if (was !== 'disconnected') {
      this._emit('disconnected', { code: 1000, reason: 'client closed', willReconnect: false });
    }
  }

  async _open(reason) {
    const gen = ++this._gen;
    this._state = 'connecting';
    this._emit('connecting', { attempt: this._attempt });
    if (gen !== this._gen) return;
    if (this._o.connectTimeout > 0) {
      // Covers getToken and the upgrade.
      this._timer('connect', this._o.connectTimeout, () => {
        if (gen !== this._gen) return;
        if (this._ws) this._detach(this._ws, 1000, 'connect timeout');
        this._lost(gen, 1006, 'connect timeout');
      });
    }
    let token = null;
    if (this._o.getToken) {
      try {
        token = await this._o.getToken({ reason });
      } catch (e) {
        if (gen !== this._gen) return;
        this._fail('getToken failed', 'ETOKEN', { cause: e });
        return this._lost(gen, 1006, 'getToken failed');
      }
      if (gen !== this._gen) return;
    }
    let ws;
    try {
      ws = new this._WS(this._urlWith(token));
    } catch (e) {
      this._fail('cannot open WebSocket: ' + e.message, 'ESOCKET', { cause: e });
      return this._lost(gen, 1006, 'cannot open');
    }
    this._ws = ws;
    this._token = token;
    ws.onopen = () => gen === this._gen && this._onOpen(gen);
    ws.onmessage = (ev) => gen === this._gen && this._onFrame(ev.data);
    ws.onclose = (ev) => gen === this._gen && this._lost(gen, ev.code, ev.reason);
    // Browsers follow an error with a close event; Node 20's WebSocket may
    // not when the upgrade is refused, so an error before open ends the attempt.
    ws.onerror = () => {
      if (gen !== this._gen || this._state === 'connected') return;
      this._detach(ws, 1000, 'connection failed');
      this._lost(gen, 1006, 'connection failed');
    };
  }

  _urlWith(token) {
    const loc = globalThis.location;
    const u = new URL(this.url, loc && loc.href ? loc.href : undefined);
    if (u.protocol === 'http:') u.protocol = 'ws:';
    else if (u.protocol === 'https:') u.protocol = 'wss:';
    if (token != null && token !== '') u.searchParams.set('token', String(token));
    return u.href;
  }

  _detach(ws, code, reason) {
    ws.onopen = ws.onmessage = ws.onclose = null;
    ws.onerror = () => {};
    try {
      ws.close(code, reason);
    } catch {
      /* already closed */
    }
  }

  _onOpen(gen) {
    this._clear('connect');
    this._state = 'connected';
    this._openedAt = this._now();
    for (const sub of this._subs.values()) this._sendSubscribe(sub);
    this._scheduleRefresh(gen);
    this._emit('connected', { url: this.url });
    if (gen !== this._gen) return;
    const w = this._waiters.splice(0);
    for (const x of w) x.resolve();
  }

  _lost(gen, code, reason) {
    if (gen !== this._gen) return;
    this._gen++;
    const wasConnected = this._state === 'connected';
    this._ws = null;
    this._clear('connect');
    this._clear('refresh');
    this._state = 'disconnected';
    this._reset(new WshubError('disconnected', 'EDISCONNECTED', { closeCode: code }));
    if (wasConnected && this._now() - this._openedAt >= this._o.stableAfter) this._attempt = 0;
    const again = this._want && this._o.reconnect;
    let delay;
    if (again) {
      const o = this._o;
      delay = backoffDelay(this._attempt++, o.initialDelay, o.maxDelay, o.factor, this._rand);
      this._timer('reconnect', delay, () => this._open(code === 4001 ? 'expired' : 'reconnect'));
    } else {
      this._want = false;
      const w = this._waiters.splice(0);
      for (const x of w) x.reject(new WshubError('connection failed', 'EDISCONNECTED', { closeCode: code }));
    }
    this._emit('disconnected', { code, reason: reason || '', wasConnected, willReconnect: again, delay });
  }

  // Settles what waits on the connection that is gone: subscribes are
  // sent again on the next one, unsubscribes are done, the rest fail.
  _reset(err) {
    const reqs = [...this._pending.values()];
    this._pending.clear();
    this._inflight = 0;
    for (const r of reqs) {
      if (r.timer != null) this._clrT(r.timer);
      if (r.kind === 'unsubscribe') r.resolve(undefined);
      else if (r.kind !== 'subscribe') r.reject(err);
    }
    for (const sub of this._subs.values()) sub.state = 'pending';
  }

  _settle(sub, err, info) {
    const w = sub.waiters.splice(0);
    for (const x of w) (err ? x.reject(err) : x.resolve(info));
  }

  _send(msg) {
    this._ws.send(JSON.stringify(msg));
  }

  /** Subscribes; resolves with {channel, offset, epoch, recovered} on `subscribed`. */
  subscribe(channel, onMessage) {
    if (typeof channel !== 'string' || channel === '') {
      return Promise.reject(new TypeError('wshub: channel must be a non-empty string'));
    }
    let sub = this._subs.get(channel);
    if (!sub) {
      if (this._subs.size >= this._o.maxSubscriptions) {
        return Promise.reject(new WshubError('too many subscriptions', 'ELIMIT'));
      }
      sub = { channel, handlers: new Set(), state: 'pending', pos: null, reqId: 0, waiters: [], info: null, confirmed: false };
      this._subs.set(channel, sub);
      if (this._state === 'connected') this._sendSubscribe(sub);
    }
    if (typeof onMessage === 'function') sub.handlers.add(onMessage);
    if (sub.state === 'active') return Promise.resolve(sub.info);
    const p = new Promise((resolve, reject) => sub.waiters.push({ resolve, reject }));
    p.catch(() => {}); // not awaiting a subscribe is fine: failures are also 'error' events
    return p;
  }

  _sendSubscribe(sub) {
    const id = ++this._id;
    const msg = { type: 'subscribe', channel: sub.channel, id };
    let since = null;
    if (sub.pos && sub.pos.epoch != null) msg.since = since = { offset: sub.pos.offset, epoch: sub.pos.epoch };
    sub.reqId = id;
    sub.state = 'pending';
    this._pending.set(id, { kind: 'subscribe', sub, since });
    this._send(msg);
  }

  /** Unsubscribes (only `onMessage` if given and others remain). */
  unsubscribe(channel, onMessage) {
    const sub = this._subs.get(channel);
    if (!sub) return Promise.resolve();
    if (onMessage) {
      sub.handlers.delete(onMessage);
      if (sub.handlers.size > 0) return Promise.resolve();
    }
    this._subs.delete(channel);
    this._settle(sub, new WshubError('unsubscribed before confirmation', 'EUNSUBSCRIBED', { channel }));
    if (this._state !== 'connected') return Promise.resolve();
    return this._request({ type: 'unsubscribe', channel }, true).then(() => undefined);
  }

  /** Publishes; resolves with the `published` reply ({channel, id, offset?}). */
  publish(channel, data) {
    if (data === undefined) return Promise.reject(new TypeError('wshub: publish needs data'));
    return this._request({ type: 'publish', channel, data });
  }

  _request(msg, force) {
    if (this._state !== 'connected') {
      return Promise.reject(new WshubError('not connected', 'ENOTCONNECTED'));
    }
    if (!force && this._inflight >= this._o.maxPending) {
      return Promise.reject(new WshubError('too many requests in flight', 'ELIMIT'));
    }
    if (!force && this._ws.bufferedAmount > this._o.maxBufferedBytes) {
      return Promise.reject(new WshubError('send buffer full', 'ELIMIT'));
    }
    const id = ++this._id;
    let text;
    try {
      text = JSON.stringify({ ...msg, id });
    } catch (e) {
      return Promise.reject(e);
    }
    return new Promise((resolve, reject) => {
      const r = { kind: msg.type, resolve, reject, timer: null };
      if (this._o.requestTimeout > 0) {
        r.timer = this._setT(() => {
          if (this._pending.get(id) !== r) return;
          this._pending.delete(id);
          this._inflight--;
          reject(new WshubError(msg.type + ' timed out', 'ETIMEDOUT'));
        }, this._o.requestTimeout);
      }
      this._pending.set(id, r);
      this._inflight++;
      this._ws.send(text);
    });
  }

  _onFrame(data) {
    let m;
    try {
      m = JSON.parse(typeof data === 'string' ? data : new TextDecoder().decode(data));
    } catch {
      return this._fail('unparsable frame from server', 'EPROTO');
    }
    if (!m || typeof m !== 'object') return;
    if (m.type === 'message') return this._onMessage(m);
    if (m.type === 'gap') return this._onGap(m);
    const r = m.id != null ? this._pending.get(m.id) : undefined;
    if (r) {
      this._pending.delete(m.id);
      if (r.kind === 'subscribe') return this._onSubReply(r, m);
      this._inflight--;
      if (r.timer != null) this._clrT(r.timer);
      if (m.type === 'error') return r.reject(new WshubError(String(m.error), 'ESERVER', { reply: m }));
      return r.resolve(m);
    }
    if (m.type === 'unsubscribed' && typeof m.channel === 'string' && m.id == null) {
      // The server ended a subscription (e.g. a refreshed token no longer grants it).
      const sub = this._subs.get(m.channel);
      if (sub) {
        this._subs.delete(m.channel);
        this._settle(sub, new WshubError(String(m.reason || 'unsubscribed'), 'EUNSUBSCRIBED', { channel: m.channel }));
      }
      return this._emit('unsubscribed', { channel: m.channel, reason: m.reason || '' });
    }
    if (m.type === 'error') this._fail(String(m.error), 'ESERVER', { reply: m });
  }

  _onSubReply(r, m) {
    const sub = r.sub;
    if (this._subs.get(sub.channel) !== sub || sub.reqId !== m.id) return; // unsubscribed since
    if (m.type === 'error') {
      this._subs.delete(sub.channel);
      const err = new WshubError(String(m.error), 'ESERVER', { reply: m, channel: sub.channel });
      this._settle(sub, err);
      return this._emit('error', err);
    }
    if (m.type !== 'subscribed') return;
    const since = r.since;
    const hasPos = typeof m.offset === 'number' && typeof m.epoch === 'string';
    const recovered = typeof m.recovered === 'boolean' ? m.recovered : undefined;
    let pos = hasPos ? { offset: m.offset, epoch: m.epoch } : null;
    if (since && recovered === true && hasPos && m.epoch === since.epoch) {
      pos = { offset: Math.min(since.offset, m.offset), epoch: since.epoch };
    }
    if (since && recovered !== true && (!pos || pos.epoch !== since.epoch || pos.offset !== since.offset)) {
      this._emit('gap', { channel: sub.channel, offset: m.offset ?? null, epoch: m.epoch ?? null, previous: since, recovered: false });
    }
    sub.pos = pos;
    sub.state = 'active';
    const info = { channel: sub.channel, offset: pos ? pos.offset : null, epoch: pos ? pos.epoch : null, recovered, resubscribe: sub.confirmed };
    sub.confirmed = true;
    sub.info = info;
    this._settle(sub, null, info);
    this._emit('subscribed', info);
  }

  _onMessage(m) {
    const sub = this._subs.get(m.channel);
    // Before `subscribed`, a frame is from an earlier subscription: the
    // server sends the reply first.
    if (!sub || sub.state !== 'active') return;
    const offset = typeof m.offset === 'number' ? m.offset : undefined;
    if (offset !== undefined && sub.pos) {
      if (offset <= sub.pos.offset) return; // duplicate
      sub.pos = { offset, epoch: sub.pos.epoch };
    }
    const meta = { channel: m.channel, offset };
    for (const fn of [...sub.handlers]) {
      try {
        fn(m.data, meta);
      } catch (e) {
        this._fail('message handler threw', 'ELISTENER', { cause: e, channel: m.channel });
      }
    }
    this._emit('message', { channel: m.channel, data: m.data, offset });
  }

  _onGap(m) {
    const sub = this._subs.get(m.channel);
    if (!sub || sub.state !== 'active' || typeof m.offset !== 'number') return;
    const previous = sub.pos;
    sub.pos = { offset: m.offset, epoch: typeof m.epoch === 'string' ? m.epoch : previous && previous.epoch };
    this._emit('gap', { channel: m.channel, offset: m.offset, epoch: sub.pos.epoch, previous });
  }

  /** The last offset and epoch seen on a channel, or null. */
  position(channel) {
    const sub = this._subs.get(channel);
    return sub && sub.pos ? { ...sub.pos } : null;
  }

  _scheduleRefresh(gen) {
    this._clear('refresh');
    const exp = this._o.getToken && this._token ? tokenExp(this._token) : null;
    if (exp == null) return;
    const left = exp * 1000 - this._now();
    if (left <= 0) return;
    const ms = Math.max(0, left - Math.min(this._o.refreshBefore, left / 2));
    this._timer('refresh', ms, () => this._refresh(gen));
  }

  async _refresh(gen) {
    let token;
    try {
      token = await this._o.getToken({ reason: 'refresh' });
    } catch (e) {
      if (gen === this._gen) this._fail('getToken failed', 'ETOKEN', { cause: e });
      return;
    }
    if (gen !== this._gen) return;
    const oldExp = tokenExp(this._token);
    const exp = tokenExp(token);
    if (!token || (exp != null && exp <= oldExp)) {
      return this._fail('getToken gave no newer token to refresh with', 'ETOKEN');
    }
    try {
      await this._request({ type: 'refresh', token: String(token) }, true);
    } catch (e) {
      if (gen === this._gen) this._emit('error', e);
      return;
    }
    if (gen !== this._gen) return;
    this._token = token;
    this._emit('refreshed', { exp });
    this._scheduleRefresh(gen);
  }
}

export default WshubClient;
