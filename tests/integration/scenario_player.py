"""Plays a scenario file (CONTRACT.md's scenario language) against real
build/wshub processes and a real redis-server, checking the same
`expect` lines the simulator checks.

Mapping onto real processes:
  instances N          N wshub processes, --instance-id 0..N-1, --redis
  config X V           --X V for every instance
  client a on I        a WebSocket client of instance I (asyncio, raw
                       RFC 6455, answering pings unless no-pong)
  ... read-rate 0      a raw socket with a 4 KiB SO_RCVBUF that never reads
  redis publish C D    PUBLISH ws:chan:C D
  redis fcall wshub_publish C D N T M
                       FCALL wshub_publish 3 ws:history:C ws:meta:C
                       ws:chan:C D N T M (the instances loaded the library)
  X subscribe C recover
                       subscribe with since = the last offset and epoch X
                       saw on C (subscribed, message or gap frame)
  expect X offsets C A..B / recovered C yes|no / received-gap C
                       from the offsets of X's message frames on C, its
                       latest subscribed reply for C, its gap frames
  expect redis-history C N
                       XLEN ws:history:C (0 when missing)
  expect redis-reads N not checked: how many reads real clients need
                       depends on how real time spreads their requests
                       (the simulator's exact count; `make bench`'s
                       reconnect storm measures it at scale)
  run D                real time passes
  shutdown I / crash I SIGTERM / SIGKILL;  restart I: a new process, id I.r
  partition/heal I redis
                       each instance reaches Redis through its own TCP
                       proxy; a partition cuts its connections and refuses
                       new ones until healed
  redis restart        the redis-server is killed and started again on its
                       port (no persistence: all data lost)
  X reconnect on I     X's socket is closed, a new WebSocket opens on
                       instance I; X keeps what it received (plain clients)
  redis-subscribed I C Redis's view: instance I's subscriber connection
                       (found by CLIENT SETNAME in CLIENT LIST) issued a
                       SUBSCRIBE to ws:chan:C more recently than an
                       UNSUBSCRIBE (seen through MONITOR) and is still
                       connected, and PUBSUB NUMSUB agrees.

Clients that read set TCP_QUICKACK after every read: with a 4 KiB send
buffer (config sndbuf) the server's socket otherwise waits for delayed
ACKs (40 ms each) and even a client that reads at once looks slow.
"""
import asyncio
import base64
import json
import math
import os
import re
import signal
import socket
import struct
import sys
import threading
import time

from conftest import Wshub

DUR_RE = re.compile(r"^(\d+(?:\.\d+)?)(us|ms|s)$")

# An `expect` without `within` must hold "now".  Real processes and a
# real Redis need a little real time for anything to happen (a crash to
# be noticed by Redis, a reply to travel), so "now" gets this much.
GRACE_S = 0.3


class ScenarioError(Exception):
    pass


class TimingInvalid(ScenarioError):
    """Real time did not keep the order the scenario relies on: an
    `expect X received C DATA` failed, but DATA was published into Redis
    before X held `subscribed` for C, so the contract did not owe it (in
    the simulator the order is exact; on two busy cores one stall of the
    player can swap it).  The caller replays the file; this is never
    treated as a pass."""


def parse_duration(s):
    m = DUR_RE.match(s)
    if not m:
        raise ScenarioError("bad duration %r" % s)
    v = float(m.group(1))
    return v * {"us": 1e-6, "ms": 1e-3, "s": 1.0}[m.group(2)]


def compact(text):
    return json.dumps(json.loads(text), separators=(",", ":"),
                      ensure_ascii=False)


def strip_comment(line):
    in_str = False
    esc = False
    for i, ch in enumerate(line):
        if in_str:
            if esc:
                esc = False
            elif ch == "\\":
                esc = True
            elif ch == '"':
                in_str = False
        elif ch == '"':
            in_str = True
        elif ch == "#":
            return line[:i]
    return line


# ------------------------------------------------------------ clients

def mask_payload(payload, mask):
    n = len(payload)
    k = (mask * (n // 4 + 1))[:n]
    return (int.from_bytes(payload, "big") ^
            int.from_bytes(k, "big")).to_bytes(n, "big")


def frame(op, payload):
    mask = os.urandom(4)
    n = len(payload)
    if n < 126:
        hdr = struct.pack("!BB", 0x80 | op, 0x80 | n)
    elif n < 65536:
        hdr = struct.pack("!BBH", 0x80 | op, 0x80 | 126, n)
    else:
        hdr = struct.pack("!BBQ", 0x80 | op, 0x80 | 127, n)
    return hdr + mask + mask_payload(payload, mask)


def track_position(c, m):
    """Keeps c.offsets (the offsets of its message frames) and c.pos
    (channel: the offset and epoch a `recover` subscribe sends)."""
    ch, typ = m.get("channel"), m.get("type")
    if typ == "message" and "offset" in m:
        c.offsets.append((ch, m["offset"]))
        if ch in c.pos:
            c.pos[ch] = (m["offset"], c.pos[ch][1])
    elif typ in ("subscribed", "gap") and "epoch" in m:
        c.pos[ch] = (m["offset"], m["epoch"])


class WsClient:
    """A reading WebSocket client on a raw socket.  A thread reads as soon
    as bytes arrive (acknowledging at once, TCP_QUICKACK), the way the
    simulator's clients read at once."""

    def __init__(self, name, port, no_pong, rate=None, path="/ws"):
        self.name = name
        self.no_pong = no_pong
        self.rate = rate  # frames per second, None: at once
        self.messages = []  # (channel, compact data)
        self.replies = []
        self.offsets = []  # (channel, offset): track_position
        self.pos = {}
        self.subscribed_at = {}  # channel: monotonic time of `subscribed`
        self.closed = False
        self.close_code = None
        self.send_lock = threading.Lock()
        self.sock = socket.socket()
        if rate is not None:
            # A reader that is slow on purpose gets little kernel buffer.
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        self.sock.settimeout(5)
        self.sock.connect(("127.0.0.1", port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        key = base64.b64encode(os.urandom(16))
        self.sock.sendall(
            b"GET " + path.encode() + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Upgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Key: " + key +
            b"\r\nSec-WebSocket-Version: 13\r\n\r\n")
        self.buf = b""
        while b"\r\n\r\n" not in self.buf:
            d = self.sock.recv(65536)
            if not d:
                raise ScenarioError("upgrade failed")
            self.buf += d
        i = self.buf.index(b"\r\n\r\n")
        head, self.buf = self.buf[:i + 4], self.buf[i + 4:]
        if b" 101 " not in head.split(b"\r\n", 1)[0]:
            raise ScenarioError("upgrade refused: %r" % head[:40])
        self.sock.settimeout(None)
        self.thread = threading.Thread(target=self._reader, daemon=True)
        self.thread.start()

    def _reader(self):
        try:
            self._parse()
            while True:
                d = self.sock.recv(262144 if self.rate is None else 512)
                if not d:
                    break
                try:
                    self.sock.setsockopt(socket.IPPROTO_TCP,
                                         socket.TCP_QUICKACK, 1)
                except OSError:
                    pass
                self.buf += d
                self._parse()
        except OSError:
            pass
        self.closed = True

    def _parse(self):
        while len(self.buf) >= 2:
            b0, b1 = self.buf[0], self.buf[1]
            n = b1 & 0x7F
            off = 2
            if n == 126:
                if len(self.buf) < 4:
                    return
                n = struct.unpack("!H", self.buf[2:4])[0]
                off = 4
            elif n == 127:
                if len(self.buf) < 10:
                    return
                n = struct.unpack("!Q", self.buf[2:10])[0]
                off = 10
            if len(self.buf) < off + n:
                return
            payload = self.buf[off:off + n]
            self.buf = self.buf[off + n:]
            op = b0 & 0x0F
            if self.rate is not None and op == 1:
                time.sleep(1.0 / self.rate)
            if op == 1:
                m = json.loads(payload)
                track_position(self, m)
                if m.get("type") == "message":
                    self.messages.append(
                        (m["channel"], json.dumps(
                            m["data"], separators=(",", ":"),
                            ensure_ascii=False)))
                else:
                    if m.get("type") == "subscribed" and \
                            m.get("channel") not in self.subscribed_at:
                        self.subscribed_at[m.get("channel")] = \
                            time.monotonic()
                    self.replies.append(m)
            elif op == 9 and not self.no_pong:
                self.send_frame(10, payload)
            elif op == 8:
                if len(payload) >= 2:
                    self.close_code = struct.unpack("!H", payload[:2])[0]
                if not self.closed:
                    self.send_frame(8, payload[:2])
                self.closed = True

    def send_frame(self, op, payload):
        try:
            with self.send_lock:
                self.sock.sendall(frame(op, payload))
        except OSError:
            self.closed = True

    def send_json(self, obj):
        self.send_frame(1, json.dumps(obj, separators=(",", ":")).encode())

    def send_text(self, text):
        self.send_frame(1, text.encode())

    def close(self):
        # shutdown() first: close() alone neither wakes the reader thread
        # nor sends a FIN while that thread sits in recv().
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        try:
            self.sock.close()
        except OSError:
            pass

    # What `expect` looks at.
    def is_closed(self):
        return self.closed

    def closed_with(self, code):
        # Dropped without a close frame counts too; the player then checks
        # the instance's eviction counters for the code.
        return self.closed and (code is None or self.close_code in
                                (code, None))


def upgrade_status(port):
    """The status line's code of a token-less upgrade."""
    with socket.create_connection(("127.0.0.1", port), 5) as s:
        s.sendall(b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                  b"Upgrade: websocket\r\nConnection: Upgrade\r\n"
                  b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                  b"Sec-WebSocket-Version: 13\r\n\r\n")
        return int(s.recv(4096).split(b" ")[1])


class RefusedClient:
    """A client whose upgrade was answered 401 (authentication on, no
    token): as in the simulator, it is closed without a code."""

    def __init__(self, name, status):
        assert status == 401, status
        self.name = name
        self.messages = []
        self.replies = []
        self.closed = True
        self.close_code = None

    def is_closed(self):
        return True

    def closed_with(self, code):
        return code is None

    def send_json(self, obj):
        pass

    def close(self):
        pass


# `config auth on`: the instances get this HS256 secret, and `claims` /
# `refresh` statements become tokens signed with it (exp = now + the
# statement's expires-in, rounded up to a whole second).
AUTH_SECRET = "scenario-player-secret"


def mint_token(text):
    import jwt
    m = re.match(r"\s*(\{.*\})\s*(?:expires-in\s+(\S+))?\s*$", text)
    if m is None:
        raise ScenarioError("claims need a JSON object: %r" % text)
    claims = json.loads(m.group(1))
    if m.group(2):
        claims["exp"] = math.ceil(time.time() + parse_duration(m.group(2)))
    return jwt.encode(claims, AUTH_SECRET, algorithm="HS256")


class MuteClient:
    """read-rate 0: a socket with a small receive buffer that is never
    read after the handshake.  Whether it was closed is learned from its
    TCP state (TCP_INFO), which does not consume anything; the close
    frame, if one got through, is found by draining it then."""

    def __init__(self, name, port):
        self.name = name
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        self.sock.settimeout(5)
        self.sock.connect(("127.0.0.1", port))
        key = base64.b64encode(os.urandom(16))
        self.sock.sendall(
            b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Key: " + key +
            b"\r\nSec-WebSocket-Version: 13\r\n\r\n")
        head = b""
        while not head.endswith(b"\r\n\r\n"):
            ch = self.sock.recv(1)
            if not ch:
                raise ScenarioError("upgrade failed")
            head += ch
        if b" 101 " not in head.split(b"\r\n", 1)[0]:
            raise ScenarioError("upgrade refused")
        self.sock.setblocking(False)
        self.messages = []
        self.closed = False
        self.close_code = None
        self.drained = False

    def send_frame(self, op, payload):
        self.sock.setblocking(True)
        self.sock.sendall(frame(op, payload))
        self.sock.setblocking(False)

    def send_json(self, obj):
        self.send_frame(1, json.dumps(obj, separators=(",", ":")).encode())

    def send_text(self, text):
        self.send_frame(1, text.encode())

    def close(self):
        self.sock.close()
        self.closed = True

    def _tcp_state(self):
        info = self.sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 8)
        return info[0]

    def _check(self):
        if self.closed:
            return
        # 1 = ESTABLISHED; CLOSE_WAIT (8) after a FIN, CLOSE (7) after RST.
        if self._tcp_state() == 1:
            return
        self.closed = True
        buf = b""
        try:
            while True:
                d = self.sock.recv(65536)
                if not d:
                    break
                buf += d
        except (BlockingIOError, ConnectionResetError):
            pass
        # Find a close frame among the frames that made it.
        while len(buf) >= 2:
            n = buf[1] & 0x7F
            off = 2
            if n == 126:
                if len(buf) < 4:
                    break
                n = struct.unpack("!H", buf[2:4])[0]
                off = 4
            elif n == 127:
                if len(buf) < 10:
                    break
                n = struct.unpack("!Q", buf[2:10])[0]
                off = 10
            if len(buf) < off + n:
                break
            if buf[0] & 0x0F == 8 and n >= 2:
                self.close_code = struct.unpack("!H", buf[off:off + 2])[0]
            buf = buf[off + n:]

    def is_closed(self):
        self._check()
        return self.closed

    def closed_with(self, code):
        self._check()
        # Dropped without a close frame: the code is not visible to the
        # client; the player checks the instance's eviction counters.
        return self.closed and (code is None or self.close_code in
                                (code, None))


# ------------------------------------------------------------ Redis

class RedisProxy:
    """A TCP proxy between one instance and redis-server, so that one
    instance can be partitioned from Redis."""

    def __init__(self, redis_port):
        self.redis_port = redis_port
        self.partitioned = False
        self.pairs = []
        self.server = None
        self.port = None

    async def start(self):
        self.server = await asyncio.start_server(self._handle, "127.0.0.1",
                                                 0)
        self.port = self.server.sockets[0].getsockname()[1]

    async def _pipe(self, r, w):
        try:
            while True:
                d = await r.read(65536)
                if not d:
                    break
                w.write(d)
                await w.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            w.close()

    async def _handle(self, r, w):
        if self.partitioned:
            w.close()
            return
        try:
            rr, rw = await asyncio.open_connection("127.0.0.1",
                                                   self.redis_port)
        except OSError:
            w.close()
            return
        pair = (w, rw)
        self.pairs.append(pair)
        await asyncio.gather(self._pipe(r, rw), self._pipe(rr, w))
        if pair in self.pairs:
            self.pairs.remove(pair)

    def partition(self):
        self.partitioned = True
        for a, b in self.pairs:
            a.close()
            b.close()
        self.pairs = []

    def heal(self):
        self.partitioned = False

    def close(self):
        self.partition()
        if self.server:
            self.server.close()


class RedisView:
    """Which instance's subscriber connection holds which channel, as
    Redis sees it (MONITOR + CLIENT LIST + PUBSUB NUMSUB)."""

    def __init__(self, redis_server):
        self.r = redis_server.client()
        self.events = []
        self.lock = threading.Lock()
        self.mon_conn = redis_server.client()
        self.monitor = self.mon_conn.monitor()
        self.monitor.__enter__()
        self.stop = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        try:
            for cmd in self.monitor.listen():
                if self.stop:
                    break
                parts = cmd["command"].split(" ")
                op = parts[0].upper()
                if op in ("SUBSCRIBE", "UNSUBSCRIBE"):
                    addr = "%s:%s" % (cmd["client_address"],
                                      cmd["client_port"])
                    with self.lock:
                        for ch in parts[1:]:
                            self.events.append((addr, op, ch))
        except Exception:
            pass

    def close(self):
        self.stop = True
        try:
            self.monitor.connection.disconnect()
        except Exception:
            pass

    def subscribed(self, instance_id, channel):
        full = "ws:chan:" + channel
        addr = None
        for c in self.r.client_list():
            if c.get("name") == "wshub:%s:sub" % instance_id:
                addr = c["addr"]
        if addr is None:
            return False
        state = False
        with self.lock:
            for a, op, ch in self.events:
                if a == addr and ch == full:
                    state = op == "SUBSCRIBE"
        if state and dict(self.r.pubsub_numsub(full))[full.encode()] < 1:
            return False
        return state


# ------------------------------------------------------------ the player

class Player:
    def __init__(self, path, redis_server, tmpdir):
        # Reader threads get the GIL back quickly while the player sends.
        sys.setswitchinterval(0.0005)
        self.path = path
        self.redis = redis_server
        self.tmpdir = tmpdir
        self.ninstances = 1
        self.config = []
        self.instances = {}  # index -> Wshub
        self.ids = {}        # index -> current instance id
        self.restarts = {}
        self.proxies = {}
        self.clients = {}
        self.started = False
        self.t0 = None
        self.scheduled = []
        self.redis_published = {}  # (channel, data): when it was sent
        self.view = None
        self.lineno = 0
        self.run_elapsed = 0.0
        self.clock_started = False

    # -- processes

    async def _start_instance(self, k):
        if k not in self.proxies:
            p = RedisProxy(self.redis.port)
            await p.start()
            self.proxies[k] = p
        iid = str(k) if not self.restarts.get(k) else "%d.%d" % (
            k, self.restarts[k])
        args = ["--redis", "redis://127.0.0.1:%d" % self.proxies[k].port,
                "--instance-id", iid] + self.config
        log = os.path.join(self.tmpdir, "wshub-%s.log" % iid)
        loop = asyncio.get_running_loop()
        w = await loop.run_in_executor(None, lambda: Wshub(args, log=log))
        self.instances[k] = w
        self.ids[k] = iid
        # Ready means serving with its backplane up.
        await self._wait(lambda: w.http("GET", "/healthz")[0] == 200, 5,
                         "instance %s backplane up" % iid)

    async def _ensure_started(self):
        if self.started:
            return
        self.started = True
        self.view = RedisView(self.redis)
        for k in range(self.ninstances):
            await self._start_instance(k)
        self.t0 = time.monotonic()

    async def _wait(self, pred, timeout, what):
        loop = asyncio.get_running_loop()
        deadline = time.monotonic() + timeout
        while True:
            if await loop.run_in_executor(None, pred):
                return
            if time.monotonic() > deadline:
                raise ScenarioError("timed out: %s" % what)
            await asyncio.sleep(0.02)

    def close(self):
        for c in self.clients.values():
            c.close()
        for w in self.instances.values():
            w.stop()
        for p in self.proxies.values():
            p.close()
        if self.view:
            self.view.close()

    # -- statements

    def fail(self, msg):
        raise ScenarioError("line %d: %s" % (self.lineno, msg))

    async def run_file(self):
        with open(self.path) as f:
            lines = f.readlines()
        for i, raw in enumerate(lines, 1):
            line = strip_comment(raw).strip()
            if not line:
                continue
            self.lineno = i
            await self.statement(line)
        for t in self.scheduled:
            await t

    async def statement(self, line, i=None):
        if i is not None:
            line = line.replace("$i", str(i))
        tok = line.split()
        head = tok[0]
        if head == "seed":
            return
        if head in ("invariants", "check"):
            return  # the simulator's own invariant checks: not observable
        if head == "instances":
            self.ninstances = int(tok[1])
            return
        if head == "config":
            if self.started:
                self.fail("config after the instances started")
            if tok[1] == "auth":
                self.auth = tok[2] == "on"
                if self.auth:
                    self.config += ["--token-secret", AUTH_SECRET]
                return
            self.config += ["--" + tok[1], tok[2]]
            return
        await self._ensure_started()
        if head == "run":
            d = parse_duration(tok[1])
            if not self.clock_started:
                self.run_elapsed += d
            await asyncio.sleep(d)
        elif head == "client":
            await self._client(tok, line)
        elif head == "repeat":
            n = int(tok[1])
            rest = line.split(None, 2)[2]
            for k in range(n):
                await self.statement(rest, k)
                if k % 20 == 19 and not rest.startswith("at "):
                    # One Python process plays every client: give the
                    # reader threads the GIL, or the readers look slow.
                    await asyncio.sleep(0.001)
        elif head == "at":
            when = parse_duration(tok[1])
            if not self.clock_started:
                # Scenario time 0 is the first moment time matters; real
                # connects are not instantaneous as simulated ones are.
                self.t0 = time.monotonic() - self.run_elapsed
                self.clock_started = True
            rest = line.split(None, 2)[2]
            lineno = self.lineno

            async def later():
                await asyncio.sleep(max(0, self.t0 + when - time.monotonic()))
                self.lineno = lineno
                await self.statement(rest)
            self.scheduled.append(asyncio.ensure_future(later()))
        elif head == "redis" and tok[1:] == ["restart"]:
            # Redis drops every connection and loses all its data: a new
            # redis-server (no persistence) on the same port.  The view's
            # MONITOR connection goes with it.
            self.view.close()
            self.redis.kill()
            self.redis.start()
            self.view = RedisView(self.redis)
        elif head == "redis" and tok[1:3] == ["fcall", "wshub_publish"]:
            # An outside publisher, through the library the instances
            # loaded: C DATA N TTL META_TTL (DATA has no spaces).
            ch, data, n, ttl, mttl = tok[3:8]
            try:
                key = (ch, compact(data))
            except ValueError:
                key = (ch, data)
            self.redis_published.setdefault(key, time.monotonic())
            self.view.r.execute_command(
                "FCALL", "wshub_publish", 3, "ws:history:" + ch,
                "ws:meta:" + ch, "ws:chan:" + ch, data, n, ttl, mttl)
        elif head == "redis":
            if tok[1] != "publish":
                self.fail("unknown redis statement")
            _, _, ch, data = line.split(None, 3)
            try:
                key = (ch, compact(data))
            except ValueError:
                key = (ch, data)  # not JSON: the hub relays it as a string
            self.redis_published.setdefault(key, time.monotonic())
            self.view.r.publish("ws:chan:" + ch, data)
        elif head == "crash":
            self.instances[int(tok[1])].signal(signal.SIGKILL)
        elif head == "shutdown":
            self.instances[int(tok[1])].signal(signal.SIGTERM)
        elif head == "restart":
            k = int(tok[1])
            old = self.instances.get(k)
            if old is not None:
                old.stop()
            self.restarts[k] = self.restarts.get(k, 0) + 1
            await self._start_instance(k)
        elif head == "partition":
            self.proxies[int(tok[1])].partition()
        elif head == "heal":
            self.proxies[int(tok[1])].heal()
        elif head == "expect":
            await self._expect(line)
        elif head in self.clients and tok[1:3] == ["reconnect", "on"]:
            await self._reconnect(head, int(tok[3]))
        elif head in self.clients:
            self._client_action(line)
        else:
            self.fail("unknown statement %r" % line)

    async def _client(self, tok, line=""):
        name, k = tok[1], int(tok[3])
        opts = tok[4:]
        w = self.instances[k]
        if getattr(self, "auth", False):
            loop = asyncio.get_running_loop()
            if " claims " not in line:
                status = await loop.run_in_executor(None, upgrade_status,
                                                    w.port)
                self.clients[name] = RefusedClient(name, status)
                return
            path = "/ws?token=" + mint_token(line.split(" claims ", 1)[1])
            c = await loop.run_in_executor(None, lambda: WsClient(
                name, w.port, "no-pong" in opts, None, path))
            c.instance = k
            self.clients[name] = c
            return
        if "read-rate" in opts:
            rate = float(opts[opts.index("read-rate") + 1])
            loop = asyncio.get_running_loop()
            if rate == 0:
                c = await loop.run_in_executor(None, MuteClient, name,
                                               w.port)
            else:
                c = await loop.run_in_executor(None, WsClient, name, w.port,
                                               "no-pong" in opts, rate)
            c.instance = k
        else:
            loop = asyncio.get_running_loop()
            c = await loop.run_in_executor(None, WsClient, name, w.port,
                                           "no-pong" in opts)
            c.instance = k
        self.clients[name] = c

    async def _reconnect(self, name, k):
        """`X reconnect on I`: X's socket is closed and a new WebSocket
        opens on instance I; what X received stays in its lists."""
        old = self.clients[name]
        if type(old) is not WsClient or old.rate is not None or \
                getattr(self, "auth", False):
            self.fail("the player reconnects plain clients only")
        old.close()
        await asyncio.sleep(0.01)  # the old reader has what arrived
        loop = asyncio.get_running_loop()
        c = await loop.run_in_executor(None, WsClient, name,
                                       self.instances[k].port, old.no_pong)
        c.messages[:0] = old.messages
        c.replies[:0] = old.replies
        c.offsets[:0] = old.offsets
        c.pos = dict(old.pos, **c.pos)
        c.instance = k
        self.clients[name] = c

    def _client_action(self, line):
        parts = line.split(None, 3)
        name, verb = parts[0], parts[1]
        c = self.clients[name]
        if verb == "subscribe" and parts[3:] == ["recover"]:
            req = {"type": "subscribe", "channel": parts[2]}
            pos = getattr(c, "pos", {}).get(parts[2])
            if pos is not None:
                req["since"] = {"offset": pos[0], "epoch": pos[1]}
            # `expect X recovered` looks at the replies after this one.
            c.recover_mark = len(c.replies)
            c.send_json(req)
        elif verb in ("subscribe", "unsubscribe"):
            c.send_json({"type": verb, "channel": parts[2]})
        elif verb == "publish":
            c.send_text('{"type":"publish","channel":%s,"data":%s}' % (
                json.dumps(parts[2]), parts[3]))
        elif verb == "send":
            c.send_frame(1, line.split(None, 2)[2].encode())
        elif verb == "send-binary":
            c.send_frame(2, line.split(None, 2)[2].encode())
        elif verb == "send-hex":
            c.send_frame(1, bytes.fromhex("".join(line.split()[2:])))
        elif verb == "send-big":
            n = int(parts[2])
            head = b'{"type":"publish","channel":"big","data":"'
            c.send_frame(1, head + b"x" * (n - len(head) - 2) + b'"}')
        elif verb == "disconnect":
            c.close()
        elif verb == "refresh":
            self.refreshes = getattr(self, "refreshes", 0) + 1
            c.send_json({"type": "refresh", "id": self.refreshes,
                         "token": mint_token(line.split(None, 2)[2])})
        else:
            self.fail("unknown client action %r" % verb)

    # -- expectations

    def _predicate(self, body):
        tok = body.split()
        if tok[0] == "redis-subscribed":
            k, ch, yn = int(tok[1]), tok[2], tok[3]
            want = yn == "yes"
            return (lambda: self.view.subscribed(self.ids[k], ch) == want,
                    "redis-subscribed %s %s %s" % (k, ch, yn))
        if tok[0] == "redis-reads":
            return (lambda: True, "redis-reads (not checked)")
        if tok[0] == "redis-history":
            ch, n = tok[1], int(tok[2])
            return (lambda: self.view.r.xlen("ws:history:" + ch) == n,
                    "redis-history %s %d" % (ch, n))
        if tok[0] == "redis-key":
            key, pa = tok[1], tok[2]
            return (lambda: bool(self.view.r.exists(key)) == (pa == "present"),
                    "redis-key %s %s" % (key, pa))
        name = tok[0]
        if name not in self.clients:
            self.fail("unknown client %s" % name)
        c = self.clients[name]
        if tok[1] == "received":
            ch = tok[2]
            data = compact(body.split(None, 3)[3])
            return (lambda: (ch, data) in c.messages,
                    "%s received %s %s" % (name, ch, data))
        if tok[1] == "received-reply":
            typ = tok[2]
            return (lambda: any(r.get("type") == typ for r in
                                list(getattr(c, "replies", []))),
                    "%s received-reply %s" % (name, typ))
        if tok[1] == "received-reply-count":
            typ, n = tok[2], int(tok[3])
            return (lambda: sum(1 for r in list(getattr(c, "replies", []))
                                if r.get("type") == typ) == n,
                    "%s received-reply-count %s %d" % (name, typ, n))
        if tok[1] == "offsets":
            ch, rng = tok[2], tok[3]
            lo, _, hi = rng.partition("..")
            want = list(range(int(lo), int(hi or lo) + 1))
            return (lambda: [o for k, o in list(getattr(c, "offsets", []))
                             if k == ch] == want,
                    "%s offsets %s %s" % (name, ch, rng))
        if tok[1] == "recovered":
            ch, want = tok[2], tok[3] == "yes"

            def latest():
                mark = getattr(c, "recover_mark", 0)
                subs = [r for r in list(getattr(c, "replies", []))[mark:]
                        if r.get("type") == "subscribed" and
                        r.get("channel") == ch]
                return bool(subs) and \
                    subs[-1].get("recovered", False) is want
            return (latest, "%s recovered %s %s" % (name, ch, tok[3]))
        if tok[1] == "received-gap":
            ch = tok[2]
            return (lambda: any(r.get("type") == "gap" and
                                r.get("channel") == ch
                                for r in list(getattr(c, "replies", []))),
                    "%s received-gap %s" % (name, ch))
        if tok[1] == "received-count":
            ch, n = tok[2], int(tok[3])
            return (lambda: sum(1 for m in c.messages if m[0] == ch) == n,
                    "%s received-count %s %d" % (name, ch, n))
        if tok[1] == "closed":
            code = int(tok[2]) if len(tok) > 2 else None
            return (lambda: c.closed_with(code),
                    "%s closed %s" % (name, code or ""))
        self.fail("unknown expectation %r" % body)

    def _describe(self, body):
        tok = body.split()
        if tok[0] in self.clients:
            c = self.clients[tok[0]]
            if len(tok) > 2 and tok[1].startswith("received"):
                msgs = [m for m in c.messages if m[0] == tok[2]]
                return "%d messages on %s, last %s" % (
                    len(msgs), tok[2], msgs[-1][1] if msgs else None)
            if tok[1] == "closed":
                return "closed=%s code=%s" % (c.is_closed(), c.close_code)
        return "it did not"

    async def _expect(self, line):
        body = line[len("expect"):].strip()
        never = body.startswith("never ")
        if never:
            body = body[len("never "):]
        m = re.search(r"\s+(within|for)\s+(\S+)$", body)
        dur = None
        if m:
            dur = parse_duration(m.group(2))
            body = body[:m.start()]
        pred, what = self._predicate(body)
        loop = asyncio.get_running_loop()
        if never:
            deadline = time.monotonic() + (dur or 0)
            while True:
                if await loop.run_in_executor(None, pred):
                    self.fail("expected never %s, but it happened" % what)
                if time.monotonic() >= deadline:
                    return
                await asyncio.sleep(0.01)
        deadline = time.monotonic() + (dur if dur is not None else GRACE_S)
        while True:
            if await loop.run_in_executor(None, pred):
                break
            if time.monotonic() >= deadline:
                self._check_owed(body)
                self.fail("expected %s%s; %s" % (
                    what, " within %s" % m.group(2) if dur is not None
                    else "",
                    self._describe(body)))
            await asyncio.sleep(0.01)
        await self._check_drop_reason(body)

    def _check_owed(self, body):
        """Raises TimingInvalid when a failed `X received C DATA` was not
        owed in this run (see TimingInvalid)."""
        tok = body.split()
        if len(tok) < 4 or tok[1] != "received" or tok[0] not in self.clients:
            return
        ch = tok[2]
        try:
            sent = self.redis_published.get(
                (ch, compact(body.split(None, 3)[3])))
        except ValueError:
            return
        got = getattr(self.clients[tok[0]], "subscribed_at", {}).get(ch)
        if sent is not None and (got is None or got >= sent):
            raise TimingInvalid(
                "line %d: %s was published into Redis before %s held "
                "`subscribed` for %s: not owed in this run" % (
                    self.lineno, body.split(None, 3)[3], tok[0], ch))

    async def _check_drop_reason(self, body):
        """A `closed CODE` that the client saw as a bare drop is checked
        against the instance's eviction counters instead."""
        tok = body.split()
        if len(tok) < 3 or tok[1] != "closed":
            return
        c = self.clients[tok[0]]
        if c.close_code is not None:
            return
        code = int(tok[2])
        reasons = {1008: ("slow_msgs", "slow_bytes", "write_timeout",
                          "pong_timeout"),
                   1001: ("shutdown",), 1009: ("too_big",),
                   1003: ("binary",), 1007: ("bad_utf8",)}.get(code, ())
        w = self.instances[c.instance]
        loop = asyncio.get_running_loop()
        try:
            m = await loop.run_in_executor(None, w.metrics)
        except OSError:
            self.fail("%s was dropped without a close frame and its "
                      "instance cannot say why" % tok[0])
        if not any(m.get('wshub_evictions_total{reason="%s"}' % r, 0) > 0
                   for r in reasons):
            self.fail("%s was dropped without a close frame and no "
                      "eviction with code %d was counted" % (tok[0], code))
