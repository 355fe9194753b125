"""CONTRACT.md "History and recovery" with the Redis backplane: two real
wshub instances on one real redis-server, clients on both.  Offsets and
epochs on the wire, `since` recovery in every case the contract names,
a client that reconnects after missing messages published on the other
instance, a Redis outage of one instance while the other publishes
(filled from history with no gap and no duplicate), publishes refused
while Redis is down, GET /history, outside publishers (FCALL and plain
PUBLISH), the exact Redis keys, and the HTTP API's waiting requests
(pipelined, abandoned, at shutdown).

Assertions wait for events (frames, status codes, log lines) with
generous deadlines; every process is started by a fixture or a
TcpProxy here and stopped by its pid."""
import asyncio
import json
import re
import signal
import socket
import subprocess
import threading
import time

import websockets

from conftest import wait_for
from tcpproxy import TcpProxy

SIZE = 5


def run(coro, timeout=60):
    return asyncio.run(asyncio.wait_for(coro, timeout))


async def recv_json(ws, timeout=10):
    return json.loads(await asyncio.wait_for(ws.recv(), timeout))


async def recv_type(ws, typ, timeout=10):
    while True:
        m = await recv_json(ws, timeout)
        if m["type"] == typ:
            return m


class Reader:
    """Every frame of one connection, collected in the background."""

    def __init__(self, ws):
        self.ws = ws
        self.frames = []
        self.task = asyncio.ensure_future(self._run())

    async def _run(self):
        try:
            async for raw in self.ws:
                self.frames.append(json.loads(raw))
        except websockets.ConnectionClosed:
            pass

    def of(self, typ, channel="news"):
        return [f for f in self.frames
                if f["type"] == typ and f.get("channel") == channel]

    def offsets(self, channel="news"):
        return [f["offset"] for f in self.of("message", channel)]

    async def until(self, pred, timeout=20, what="frames"):
        deadline = time.monotonic() + timeout
        while not pred():
            if time.monotonic() > deadline:
                raise AssertionError("timed out waiting for %s: %s" %
                                     (what, self.frames[-20:]))
            await asyncio.sleep(0.02)


async def subscribe(ws, channel="news", since=None, id_=1):
    req = {"type": "subscribe", "channel": channel, "id": id_}
    if since is not None:
        req["since"] = since
    await ws.send(json.dumps(req))
    return await recv_type(ws, "subscribed")


def up(w):
    try:
        return w.http("GET", "/healthz")[0] == 200
    except OSError:
        return False


def hubs(wshub, redis_url, n=2, extra=(), size=SIZE):
    """Instances share their history settings (each trims the stream to
    its own --history-size when it publishes)."""
    out = []
    for i in range(n):
        w = wshub("--redis", redis_url, "--instance-id", "h%d" % i,
                  "--history-size", str(size), "--history-channels", "news*",
                  *extra)
        out.append(w)
    for w in out:
        wait_for(lambda: up(w), 15, what="backplane up")
    return out


def post(w, data, channel="news"):
    st, body = w.publish(channel, data)
    return st, json.loads(body)


def log_of(w):
    return open(w.log_path, "rb").read().decode()


def test_offsets_keys_published_and_history(wshub, redis_server):
    a, b = hubs(wshub, redis_server.url)
    r = redis_server.client()

    async def go():
        async with websockets.connect(a.ws_url) as ca, \
                websockets.connect(b.ws_url) as cb:
            sa = await subscribe(ca)
            assert sa["offset"] == 0 and "recovered" not in sa
            epoch = sa["epoch"]
            assert re.fullmatch(r"[A-Za-z0-9]{1,32}", epoch)
            # The record was created by the subscribe (wshub_read).
            assert r.hgetall("ws:meta:news") == {b"epoch": epoch.encode(),
                                                 b"offset": b"0"}
            sb = await subscribe(cb)
            assert (sb["offset"], sb["epoch"]) == (0, epoch)
            ra, rb = Reader(ca), Reader(cb)
            # A WebSocket publish on B: published with the offset.
            await cb.send('{"type":"publish","channel":"news",'
                          '"data":{"n":1},"id":3}')
            await rb.until(lambda: rb.of("published"), what="published")
            assert rb.of("published") == [{"type": "published",
                                           "channel": "news", "id": 3,
                                           "offset": 1}]
            # POST /publish on A: the answer carries the offset.
            assert post(a, '{"n":2}') == (200, {"ok": True, "offset": 2})
            for rd in (ra, rb):
                await rd.until(lambda: len(rd.offsets()) == 2)
                assert rd.of("message") == [
                    {"type": "message", "channel": "news", "offset": 1,
                     "data": {"n": 1}},
                    {"type": "message", "channel": "news", "offset": 2,
                     "data": {"n": 2}}]
            return epoch

    epoch = run(go())
    assert r.xrange("ws:history:news") == [(b"1-0", {b"d": b'{"n":1}'}),
                                           (b"2-0", {b"d": b'{"n":2}'})]
    assert r.hgetall("ws:meta:news") == {b"epoch": epoch.encode(),
                                         b"offset": b"2"}
    assert 290 <= r.ttl("ws:history:news") <= 300
    assert 86390 <= r.ttl("ws:meta:news") <= 86400
    for w in (a, b):
        st, body = w.http("GET", "/history?channel=news")
        assert st == 200
        assert json.loads(body) == {
            "channel": "news", "epoch": epoch, "offset": 2,
            "messages": [{"offset": 1, "data": {"n": 1}},
                         {"offset": 2, "data": {"n": 2}}]}
    st, body = b.http("GET", "/history?channel=news&since=1&limit=5")
    assert st == 200 and json.loads(body)["messages"] == \
        [{"offset": 2, "data": {"n": 2}}]
    st, body = b.http("GET", "/history?channel=news&limit=1")
    assert json.loads(body)["messages"] == [{"offset": 1, "data": {"n": 1}}]
    # A channel without history, and a bad name: 400.
    assert a.http("GET", "/history?channel=other")[0] == 400
    assert a.http("GET", "/history?channel=")[0] == 400
    # Publishing without history: no offset anywhere, nothing kept.
    assert post(a, '{"x":1}', channel="other") == (200, {"ok": True})
    assert r.exists("ws:history:other", "ws:meta:other") == 0


def test_since_recovery_cases(wshub, redis_server):
    a, b = hubs(wshub, redis_server.url)
    for i in range(1, 4):
        assert post(b, '{"n":%d}' % i)[1]["offset"] == i
    epoch = redis_server.client().hget("ws:meta:news", "epoch").decode()

    async def go():
        # Recovered: 2 and 3 replayed, then live ones.
        async with websockets.connect(a.ws_url) as c:
            s = await subscribe(c, since={"offset": 1, "epoch": epoch})
            assert s == {"type": "subscribed", "channel": "news", "id": 1,
                         "offset": 1, "epoch": epoch, "recovered": True}
            rd = Reader(c)
            await rd.until(lambda: len(rd.offsets()) == 2)
            assert post(b, '{"n":4}')[1]["offset"] == 4
            await rd.until(lambda: len(rd.offsets()) == 3)
            assert rd.offsets() == [2, 3, 4]
            assert [m["data"]["n"] for m in rd.of("message")] == [2, 3, 4]
        # since = the current offset: recovered, nothing to replay.
        async with websockets.connect(a.ws_url) as c:
            s = await subscribe(c, since={"offset": 4, "epoch": epoch})
            assert (s["recovered"], s["offset"], s["epoch"]) == \
                (True, 4, epoch)
            rd = Reader(c)
            assert post(b, '{"n":5}')[1]["offset"] == 5
            await rd.until(lambda: rd.offsets() == [5])
        for i in range(6, 12):
            post(b, '{"n":%d}' % i)
        # More than history-size (5) behind: not recovered, nothing
        # replayed, the current offset.
        async with websockets.connect(a.ws_url) as c:
            s = await subscribe(c, since={"offset": 5, "epoch": epoch})
            assert (s["recovered"], s["offset"], s["epoch"]) == \
                (False, 11, epoch)
            rd = Reader(c)
            assert post(b, '{"n":12}')[1]["offset"] == 12
            await rd.until(lambda: rd.offsets() == [12])
        # Exactly history-size behind: recovered.
        async with websockets.connect(a.ws_url) as c:
            s = await subscribe(c, since={"offset": 7, "epoch": epoch})
            assert s["recovered"] is True
            rd = Reader(c)
            await rd.until(lambda: rd.offsets() == [8, 9, 10, 11, 12])
        # A wrong epoch: not recovered, the current offset and epoch.
        async with websockets.connect(a.ws_url) as c:
            s = await subscribe(c, since={"offset": 3, "epoch": "Nope0"})
            assert (s["recovered"], s["offset"], s["epoch"]) == \
                (False, 12, epoch)
        # since on a channel without history: no offset, no epoch.
        async with websockets.connect(a.ws_url) as c:
            s = await subscribe(c, channel="other",
                                since={"offset": 3, "epoch": epoch})
            assert s == {"type": "subscribed", "channel": "other", "id": 1,
                         "recovered": False}
            await asyncio.sleep(0.2)  # nothing replayed on it
            rd = Reader(c)
            assert post(b, '{"o":1}', channel="other") == (200, {"ok": True})
            await rd.until(lambda: rd.of("message", "other"))
            assert "offset" not in rd.of("message", "other")[0]

    run(go())


def test_reconnect_to_other_instance_gets_exactly_the_missed(wshub,
                                                             redis_server):
    a, b = hubs(wshub, redis_server.url)

    async def go():
        async with websockets.connect(a.ws_url) as c:
            s = await subscribe(c)
            epoch = s["epoch"]
            rd = Reader(c)
            for i in range(1, 4):
                post(b, '{"n":%d}' % i)
            await rd.until(lambda: rd.offsets() == [1, 2, 3])
        # Away: B publishes 4..6.
        for i in range(4, 7):
            post(b, '{"n":%d}' % i)
        async with websockets.connect(a.ws_url) as c:
            s = await subscribe(c, since={"offset": 3, "epoch": epoch})
            assert s["recovered"] is True
            rd = Reader(c)
            await rd.until(lambda: len(rd.offsets()) >= 3)
            post(b, '{"n":7}')
            await rd.until(lambda: len(rd.offsets()) >= 4)
            await asyncio.sleep(0.3)  # a duplicate would show up by now
            assert rd.offsets() == [4, 5, 6, 7]
            assert [m["data"]["n"] for m in rd.of("message")] == [4, 5, 6, 7]
            assert rd.of("gap") == []

    run(go())


def test_outage_of_one_instance_is_filled_from_history(wshub, redis_server):
    """A's link to Redis is cut and held down while B keeps publishing;
    after the heal, A's subscriber has every offset once, in order, with
    no gap frame."""
    p = TcpProxy(redis_server.port)
    try:
        b, = hubs(wshub, redis_server.url, n=1, size=100)
        a = wshub("--redis", "redis://127.0.0.1:%d" % p.port,
                  "--instance-id", "ha", "--history-size", "100",
                  "--history-channels", "news*")
        wait_for(lambda: up(a), 15, what="A up")

        async def go():
            async with websockets.connect(a.ws_url) as c:
                await subscribe(c)
                rd = Reader(c)
                n = 0
                for _ in range(5):
                    n += 1
                    post(b, '{"n":%d}' % n)
                await rd.until(lambda: len(rd.offsets()) == 5)
                p.stall()
                p.cut()  # A's connections close; new ones hang
                await asyncio.get_running_loop().run_in_executor(
                    None, lambda: wait_for(lambda: not up(a), 15,
                                           what="A down"))
                for _ in range(20):
                    n += 1
                    post(b, '{"n":%d}' % n)
                p.resume()
                # B keeps publishing while A heals.
                deadline = time.monotonic() + 30
                while not up(a) and time.monotonic() < deadline:
                    n += 1
                    post(b, '{"n":%d}' % n)
                    await asyncio.sleep(0.05)
                assert up(a)
                for _ in range(10):
                    n += 1
                    post(b, '{"n":%d}' % n)
                await rd.until(lambda: len(rd.offsets()) >= n, 30,
                               what="all %d messages" % n)
                await asyncio.sleep(0.3)
                assert rd.offsets() == list(range(1, n + 1))
                assert [m["data"]["n"] for m in rd.of("message")] == \
                    list(range(1, n + 1))
                assert rd.of("gap") == []
                return n

        n = run(go(), timeout=120)
        assert n >= 35
    finally:
        p.close()


def test_trimmed_history_after_outage_is_a_gap(wshub, redis_server):
    p = TcpProxy(redis_server.port)
    try:
        b, = hubs(wshub, redis_server.url, n=1)
        a = wshub("--redis", "redis://127.0.0.1:%d" % p.port,
                  "--instance-id", "ha", "--history-size", str(SIZE),
                  "--history-channels", "news*")
        wait_for(lambda: up(a), 15, what="A up")

        async def go():
            async with websockets.connect(a.ws_url) as c:
                s = await subscribe(c)
                rd = Reader(c)
                post(b, '{"n":1}')
                await rd.until(lambda: rd.offsets() == [1])
                p.stall()
                p.cut()
                await asyncio.get_running_loop().run_in_executor(
                    None, lambda: wait_for(lambda: not up(a), 15,
                                           what="A down"))
                for i in range(2, 14):  # 12 missed, 5 kept: 9..13
                    post(b, '{"n":%d}' % i)
                p.resume()
                await rd.until(lambda: rd.of("gap"), 30, what="a gap")
                gap, = rd.of("gap")
                assert gap["epoch"] == s["epoch"]
                assert 1 <= gap["offset"] <= 8
                post(b, '{"n":14}')
                await rd.until(lambda: rd.offsets()[-1:] == [14], 30)
                got = rd.offsets()
                assert got == [1] + list(range(gap["offset"] + 1, 15))

        run(go(), timeout=120)
    finally:
        p.close()


def test_epoch_change_is_a_gap(wshub, redis_server):
    a, b = hubs(wshub, redis_server.url)

    async def go():
        async with websockets.connect(a.ws_url) as c:
            s = await subscribe(c)
            rd = Reader(c)
            post(b, '{"n":1}')
            await rd.until(lambda: rd.offsets() == [1])
            redis_server.client().delete("ws:meta:news")  # as if expired
            st, ans = post(b, '{"n":2}')
            assert st == 200 and ans["offset"] == 1
            await rd.until(lambda: rd.of("gap") and len(rd.offsets()) == 2)
            gap, = rd.of("gap")
            e2 = redis_server.client().hget("ws:meta:news", "epoch").decode()
            assert e2 != s["epoch"]
            assert (gap["epoch"], gap["offset"]) == (e2, 0)
            assert rd.offsets() == [1, 1]
            assert rd.of("message")[-1]["data"] == {"n": 2}

    run(go())


def test_publish_refused_while_redis_is_down(wshub, redis_server):
    a, = hubs(wshub, redis_server.url, n=1)
    redis_server.kill()
    wait_for(lambda: not up(a), 15, what="down")

    async def go():
        async with websockets.connect(a.ws_url) as c:
            # No history: local delivery goes on.
            s = await subscribe(c, channel="other")
            assert "offset" not in s
            await c.send('{"type":"publish","channel":"news","data":1,'
                         '"id":5}')
            e = await recv_type(c, "error")
            assert e["error"] == "backplane unavailable" and e["id"] == 5
            st, body = a.publish("news", "1")
            assert st == 503
            assert json.loads(body) == {"error": "backplane unavailable"}
            st, body = a.http("GET", "/history?channel=news")
            assert st == 503
            assert json.loads(body) == {"error": "backplane unavailable"}
            assert post(a, "2", channel="other") == (200, {"ok": True})
            m = await recv_type(c, "message")
            assert m["data"] == 2 and "offset" not in m
            # A subscribe to a history channel waits for Redis.
            await c.send('{"type":"subscribe","channel":"news","id":9}')
            with_timeout = asyncio.wait_for(recv_type(c, "subscribed"), 0.5)
            try:
                early = await with_timeout
            except asyncio.TimeoutError:
                early = None
            assert early is None
            redis_server.start()
            s = await recv_type(c, "subscribed", timeout=30)
            assert s["id"] == 9 and s["offset"] == 0 and s["epoch"]
            await asyncio.get_running_loop().run_in_executor(
                None, lambda: wait_for(lambda: up(a), 15, what="up"))
            assert post(a, "3")[1] == {"ok": True, "offset": 1}

    run(go(), timeout=90)


def test_outside_publishers(wshub, redis_server):
    a, b = hubs(wshub, redis_server.url)

    async def go():
        async with websockets.connect(a.ws_url) as ca, \
                websockets.connect(b.ws_url) as cb:
            await subscribe(ca)
            await subscribe(cb)
            ra, rb = Reader(ca), Reader(cb)
            post(a, '{"n":1}')
            out = subprocess.run(
                ["redis-cli", "-p", str(redis_server.port), "FCALL",
                 "wshub_publish", "3", "ws:history:news", "ws:meta:news",
                 "ws:chan:news", '{"n":2}', str(SIZE), "300", "86400"],
                capture_output=True, timeout=10)
            assert out.stdout.decode().split("\n")[0] == "2"
            post(b, '{"n":3}')
            for rd in (ra, rb):
                await rd.until(lambda: len(rd.offsets()) == 3)
                assert rd.offsets() == [1, 2, 3]
                assert rd.of("message")[1]["data"] == {"n": 2}
            # Not wshub's payload: a message without offset, not kept.
            subprocess.run(["redis-cli", "-p", str(redis_server.port),
                            "PUBLISH", "ws:chan:news", '{"plain":1}'],
                           capture_output=True, timeout=10, check=True)
            for rd in (ra, rb):
                await rd.until(lambda: len(rd.of("message")) == 4)
                m = rd.of("message")[3]
                assert m == {"type": "message", "channel": "news",
                             "data": {"plain": 1}}
            post(a, '{"n":4}')
            for rd in (ra, rb):
                await rd.until(lambda: len(rd.of("message")) == 5)
                assert rd.of("message")[4]["offset"] == 4
                assert rd.of("gap") == []

    run(go())
    st, body = a.http("GET", "/history?channel=news")
    assert [m["offset"] for m in json.loads(body)["messages"]] == [1, 2, 3, 4]


def test_refused_library_with_history_fails_the_connect(wshub, redis_server):
    r = redis_server.client()
    r.execute_command("ACL", "SETUSER", "nofn", "on", ">pw", "~*", "&*",
                      "+@all", "-function")
    w = wshub("--redis", "redis://nofn:pw@127.0.0.1:%d" % redis_server.port,
              "--instance-id", "nofn", "--history-size", "3")
    wait_for(lambda: log_of(w).count("FUNCTION LOAD refused") >= 2, 15,
             what="refused, then retried")
    assert "NOPERM" in log_of(w)
    assert not up(w)
    r.execute_command("ACL", "SETUSER", "nofn", "+function")
    wait_for(lambda: up(w), 20, what="up once FUNCTION is allowed")


def raw_http(port, payload):
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.sendall(payload)
    return s


def read_responses(s, n, timeout=20):
    s.settimeout(timeout)
    buf = b""
    out = []
    while len(out) < n:
        chunk = s.recv(65536)
        if not chunk:
            break
        buf += chunk
        while True:
            head, sep, rest = buf.partition(b"\r\n\r\n")
            if not sep:
                break
            m = re.search(rb"Content-Length: (\d+)", head)
            ln = int(m.group(1))
            if len(rest) < ln:
                break
            out.append((int(head.split(b" ")[1]), rest[:ln]))
            buf = rest[ln:]
    return out


def publish_req(data, channel="news", close=False):
    body = ('{"channel":"%s","data":%s}' % (channel, data)).encode()
    return (b"POST /publish HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n"
            b"%s\r\n" % (len(body), b"Connection: close\r\n" if close
                         else b"")) + body


class Requests:
    """Counts the HTTP requests |w| has read, not counting the /metrics
    polls made here (each is counted before it is answered)."""

    def __init__(self, w):
        self.w = w
        self.polls = 0
        self.base = self._read()

    def _read(self):
        self.polls += 1
        return self.w.metrics()["wshub_http_requests_total"] - self.polls

    def wait(self, k):
        """Waits until k more requests than at the start were read."""
        wait_for(lambda: self._read() - self.base >= k, 15,
                 what="%d requests read" % k)


def test_api_requests_wait_for_redis(wshub, redis_server):
    """A stalled Redis holds POST /publish answers: pipelined requests
    are answered in order once it moves, an abandoned one is dropped,
    and at shutdown a waiting one gets 503 (or its connection closes)."""
    p = TcpProxy(redis_server.port)
    try:
        a = wshub("--redis", "redis://127.0.0.1:%d" % p.port,
                  "--instance-id", "api", "--history-size", "5",
                  "--history-channels", "news*", "--redis-timeout", "60")
        wait_for(lambda: up(a), 15, what="up")
        p.stall()
        seen = Requests(a)
        # Pipelined, answered in request order: a history publish, a
        # request answered at once, a history read, a plain publish, a
        # second history publish.
        s1 = raw_http(a.port, publish_req("1") +
                      b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n" +
                      b"GET /history?channel=news HTTP/1.1\r\nHost: x\r\n\r\n"
                      + publish_req("2", channel="x") +
                      publish_req("3", close=True))
        seen.wait(5)
        gone = raw_http(a.port, publish_req("9"))
        seen.wait(6)
        gone.close()     # abandoned while waiting
        p.resume()
        got = read_responses(s1, 5)
        s1.close()
        assert [st for st, _ in got] == [200] * 5, got
        first = json.loads(got[0][1])
        assert first["ok"] is True and first["offset"] >= 1
        assert got[1][1] == b"ok"
        hist = json.loads(got[2][1])
        assert first["offset"] in [m["offset"] for m in hist["messages"]]
        assert json.loads(got[3][1]) == {"ok": True}
        last = json.loads(got[4][1])
        assert last["offset"] > first["offset"]
        assert up(a)
        # An upgrade pipelined behind a waiting publish: its 101 follows
        # the publish's answer.
        p.stall()
        seen = Requests(a)
        s3 = raw_http(a.port, publish_req("4") +
                      b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                      b"Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
                      b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
        seen.wait(1)
        p.resume()
        s3.settimeout(20)
        buf = b""
        while b"101 Switching Protocols" not in buf:
            chunk = s3.recv(65536)
            assert chunk, buf
            buf += chunk
        s3.close()
        assert buf.startswith(b"HTTP/1.1 200 OK"), buf
        assert buf.index(b'"offset"') < buf.index(b"101 Switching"), buf
        # Waiting at shutdown: answered 503, or closed.
        p.stall()
        seen = Requests(a)
        s2 = raw_http(a.port, publish_req("3"))
        seen.wait(1)
        a.signal(signal.SIGTERM)
        got = read_responses(s2, 1)
        s2.close()
        assert got == [] or got[0][0] == 503, got
        p.resume()
        assert a.wait(30) == 0
    finally:
        p.close()
