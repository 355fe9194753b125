// A tiny RFC 6455 server over node:http upgrade + node:crypto, for the
// tests: text frames, close frames with a code, pings; no extensions.
// (Kept out of test/ so that `node --test test/` does not run it as a test.)

import http from 'node:http';
import crypto from 'node:crypto';

const GUID = '258EAFA5-E914-47DA-95CA-C5AB0DC85B11';

/** Waits for `pred()` to be truthy, re-checking on every `notify()`; bounded. */
export class Waitable {
  constructor() {
    this._w = new Set();
  }
  notify() {
    for (const w of [...this._w]) w();
  }
  until(pred, what = 'condition', ms = 10000) {
    return new Promise((resolve, reject) => {
      const check = () => {
        let v;
        try {
          v = pred();
        } catch (e) {
          return done(e);
        }
        if (v) done(null, v);
      };
      const done = (err, v) => {
        clearTimeout(timer);
        this._w.delete(check);
        err ? reject(err) : resolve(v);
      };
      const timer = setTimeout(() => done(new Error('timed out waiting for ' + what)), ms);
      this._w.add(check);
      check();
    });
  }
}

export class MockConn {
  constructor(socket, req, server) {
    this.socket = socket;
    this.req = req;
    this.url = new URL(req.url, 'http://x');
    this.token = this.url.searchParams.get('token');
    this.received = []; // parsed JSON messages from the client
    this.closed = null; // {code} once the client sent a close or the socket ended
    this._buf = Buffer.alloc(0);
    this._server = server;
    socket.on('data', (d) => this._onData(d));
    socket.on('close', () => {
      if (!this.closed) this.closed = { code: 1006 };
      server.changed.notify();
    });
    socket.on('error', () => {});
  }

  _onData(d) {
    this._buf = Buffer.concat([this._buf, d]);
    for (;;) {
      const b = this._buf;
      if (b.length < 2) return;
      const op = b[0] & 0x0f;
      let len = b[1] & 0x7f;
      let off = 2;
      if (len === 126) {
        if (b.length < 4) return;
        len = b.readUInt16BE(2);
        off = 4;
      } else if (len === 127) {
        if (b.length < 10) return;
        len = Number(b.readBigUInt64BE(2));
        off = 10;
      }
      const masked = (b[1] & 0x80) !== 0;
      const mask = masked ? b.subarray(off, off + 4) : null;
      if (masked) off += 4;
      if (b.length < off + len) return;
      const payload = Buffer.from(b.subarray(off, off + len));
      if (mask) for (let i = 0; i < payload.length; i++) payload[i] ^= mask[i & 3];
      this._buf = b.subarray(off + len);
      if (op === 1) {
        this.received.push(JSON.parse(payload.toString('utf8')));
        this._server.changed.notify();
      } else if (op === 8) {
        const code = payload.length >= 2 ? payload.readUInt16BE(0) : 1005;
        if (!this.closed) {
          this.closed = { code };
          this._frame(8, payload.subarray(0, 2));
          this.socket.end();
        }
        this._server.changed.notify();
      } else if (op === 9) {
        this._frame(10, payload);
      }
    }
  }

  _frame(op, payload) {
    const n = payload.length;
    const head = n < 126 ? Buffer.from([0x80 | op, n]) : Buffer.alloc(4);
    if (n >= 126) {
      if (n > 0xffff) throw new Error('mock: frame too big');
      head[0] = 0x80 | op;
      head[1] = 126;
      head.writeUInt16BE(n, 2);
    }
    if (!this.socket.destroyed) this.socket.write(Buffer.concat([head, payload]));
  }

  send(obj) {
    this._frame(1, Buffer.from(typeof obj === 'string' ? obj : JSON.stringify(obj), 'utf8'));
  }

  /** Sends a close frame with `code` and ends the socket. */
  close(code = 1000, reason = '') {
    const p = Buffer.alloc(2 + Buffer.byteLength(reason));
    p.writeUInt16BE(code, 0);
    p.write(reason, 2);
    this._frame(8, p);
    this.closed = this.closed || { code };
    this.socket.end();
  }

  /** Drops the TCP connection with no close frame. */
  destroy() {
    this.socket.destroy();
  }

  /** Resolves with the first received message matching `pred` not yet taken. */
  async next(pred = () => true, what = 'a client message') {
    this._taken = this._taken || new Set();
    return this._server.changed.until(() => {
      for (let i = 0; i < this.received.length; i++) {
        if (!this._taken.has(i) && pred(this.received[i])) {
          this._taken.add(i);
          return this.received[i];
        }
      }
      return null;
    }, what);
  }
}

export class MockServer {
  /** `onConnection(conn)` is called for every upgrade; `refuse` (a status) makes upgrades fail. */
  constructor({ onConnection = () => {}, refuse = 0 } = {}) {
    this.onConnection = onConnection;
    this.refuse = refuse;
    this.conns = [];
    this.attempts = 0;
    this.changed = new Waitable();
    this.http = http.createServer((req, res) => {
      res.writeHead(404);
      res.end();
    });
    this.http.on('upgrade', (req, socket) => this._upgrade(req, socket));
  }

  listen() {
    return new Promise((resolve) => {
      this.http.listen(0, '127.0.0.1', () => {
        this.port = this.http.address().port;
        this.url = `ws://127.0.0.1:${this.port}/ws`;
        resolve(this);
      });
    });
  }

  _upgrade(req, socket) {
    this.attempts++;
    socket.on('error', () => {});
    if (this.refuse) {
      socket.end(`HTTP/1.1 ${this.refuse} Refused\r\nContent-Length: 0\r\nConnection: close\r\n\r\n`);
      this.changed.notify();
      return;
    }
    const key = req.headers['sec-websocket-key'];
    const accept = crypto.createHash('sha1').update(key + GUID).digest('base64');
    socket.write(
      'HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n' +
        `Sec-WebSocket-Accept: ${accept}\r\n\r\n`,
    );
    socket.setNoDelay(true);
    const conn = new MockConn(socket, req, this);
    this.conns.push(conn);
    this.onConnection(conn);
    this.changed.notify();
  }

  /** Resolves with the n-th (1-based) connection once it exists. */
  conn(n) {
    return this.changed.until(() => this.conns[n - 1], `connection ${n}`);
  }

  close() {
    for (const c of this.conns) c.socket.destroy();
    return new Promise((resolve) => this.http.close(() => resolve()));
  }
}

/** Collects a client's events so tests can wait on them. */
export function recorder(client, names) {
  const w = new Waitable();
  const log = [];
  for (const n of names) {
    client.on(n, (ev) => {
      log.push({ name: n, ev });
      w.notify();
    });
  }
  const rec = {
    log,
    all: (name) => log.filter((e) => e.name === name).map((e) => e.ev),
    until: (pred, what, ms) => w.until(pred, what, ms),
    /** Waits until `count` events of `name` (matching `pred`) have been seen; resolves with the last. */
    event: (name, pred = () => true, count = 1, ms) =>
      w.until(() => {
        const evs = rec.all(name).filter(pred);
        return evs.length >= count ? evs[count - 1] : null;
      }, `${count} '${name}' event(s)`, ms),
    notify: () => w.notify(),
  };
  return rec;
}

/** A JWT-shaped token (unsigned: the client never verifies) with these claims. */
export function fakeJwt(claims) {
  const b64 = (o) => Buffer.from(JSON.stringify(o)).toString('base64url');
  return `${b64({ alg: 'HS256', typ: 'JWT' })}.${b64(claims)}.c2ln`;
}

/** Manual timers: nothing fires until the test says so. */
export class FakeClock {
  constructor(start = 1_700_000_000_000) {
    this.t = start;
    this.timers = new Map();
    this.seq = 0;
    this.changed = new Waitable();
    this.setTimeout = (fn, ms) => {
      const id = ++this.seq;
      this.timers.set(id, { id, fn, ms, at: this.t + ms });
      this.changed.notify();
      return id;
    };
    this.clearTimeout = (id) => {
      this.timers.delete(id);
    };
    this.now = () => this.t;
  }
  /** Resolves with the first pending timer matching `pred` once it exists. */
  waitFor(pred, what = 'a timer') {
    return this.changed.until(() => [...this.timers.values()].find(pred), what);
  }
  /** Advances the clock to the timer and runs it. */
  fire(timer) {
    this.timers.delete(timer.id);
    if (timer.at > this.t) this.t = timer.at;
    timer.fn();
  }
}
