"""The fault suite (issue 14, points 2-6): real redis-server and wshub
processes, a loopback proxy (tcpproxy.py) in front of Redis where the
link must stall, slow down or be cut, and clients that misbehave.

Each test reproduces one fault of the issue and asserts the fixed
behaviour; run against a build of the old main (WSHUB_BIN=...) the tests
of points 2-6 fail.  Waits are bounded and generous (two noisy cores);
assertions are on events (a 503, a close code, a counter), timing only
where the contract gives a bound (detection within twice the deadline).

Every test appends its figures (detection time, messages lost, memory
held) as one JSON line to build/fault-figures.jsonl.
"""
import http.client as httpclient
import json
import os
import signal
import socket
import subprocess
import threading
import time

import pytest

from conftest import ROOT, WSHUB, wait_for, http, metrics
from tcpproxy import TcpProxy
from wsraw import RawWS, Closed

REDIS_TIMEOUT = 3.0  # the default --redis-timeout
FIGURES = os.path.join(ROOT, "build", "fault-figures.jsonl")


def figure(test, **kw):
    kw["test"] = test
    kw["binary"] = WSHUB
    os.makedirs(os.path.dirname(FIGURES), exist_ok=True)
    with open(FIGURES, "a") as f:
        f.write(json.dumps(kw, sort_keys=True) + "\n")


def rss_kb(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def healthz(port, timeout=2.0):
    try:
        return http(port, "GET", "/healthz", timeout=timeout)[0]
    except (OSError, httpclient.HTTPException):
        return None


def sub(c, channel):
    c.send_text({"type": "subscribe", "channel": channel})
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        r = c.recv_json()
        if r.get("type") == "subscribed":
            return r
    raise AssertionError("no subscribed reply")


class Counter(threading.Thread):
    """Reads a RawWS in the background: message frames whose data has
    "n", and whether the server closed it (close code)."""

    def __init__(self, ws):
        super().__init__(daemon=True)
        self.ws = ws
        self.ns = []
        self.close_code = None
        self.eof = False
        self.stop = False
        self.ws.sock.settimeout(0.2)
        self.start()

    def run(self):
        while not self.stop:
            try:
                op, payload = self.ws.recv_frame()
            except socket.timeout:
                continue
            except (Closed, OSError):
                self.eof = True
                return
            if op == 8:
                self.close_code = (payload[0] << 8 | payload[1]
                                   if len(payload) >= 2 else 1005)
                return
            if op == 1:
                m = json.loads(payload)
                if m.get("type") == "message" and isinstance(
                        m.get("data"), dict):
                    self.ns.append(m["data"].get("n"))


class Publisher:
    """POST /publish over one keep-alive connection."""

    def __init__(self, port, timeout=5.0):
        self.port = port
        self.timeout = timeout
        self.c = None

    def publish(self, channel, data):
        body = json.dumps({"channel": channel, "data": data})
        for _ in range(2):
            try:
                if self.c is None:
                    self.c = httpclient.HTTPConnection(
                        "127.0.0.1", self.port, timeout=self.timeout)
                self.c.request("POST", "/publish", body)
                r = self.c.getresponse()
                return r.status, r.read()
            except (OSError, httpclient.HTTPException):
                if self.c is not None:
                    self.c.close()
                self.c = None
        return None, b""


# ------------------------------------------------------------ point 2

def _hung_redis(wshub, redis_server, stop, resume, label, redis_url=None):
    """Stops the backplane link with |stop|, checks detection, local
    delivery and recovery; |resume| undoes it."""
    w = wshub("--redis", redis_url or redis_server.url, "--instance-id",
              "hung")
    wait_for(lambda: healthz(w.port) == 200, 10, what="backplane up")
    reader = RawWS(w.port)
    sub(reader, "news")
    cnt = Counter(reader)
    pub = Publisher(w.port)
    pad = "x" * 4000
    assert pub.publish("news", {"n": -1, "pad": pad})[0] == 200
    wait_for(lambda: -1 in cnt.ns, 5, what="delivery through Redis")
    rss0 = rss_kb(w.proc.pid)
    t0 = time.monotonic()
    stop()
    detected = None
    sent_before = 0
    oks_before = 0
    try:
        # Publish while waiting for /healthz to say 503: what is sent
        # before the detection is what a hung Redis can cost.
        deadline = t0 + 2 * REDIS_TIMEOUT + 6
        while time.monotonic() < deadline:
            st, _ = pub.publish("news", {"n": sent_before, "pad": pad})
            sent_before += 1
            oks_before += st == 200
            if sent_before % 10 == 0 and healthz(w.port) == 503:
                detected = time.monotonic() - t0
                break
            time.sleep(0.005)
        rss1 = rss_kb(w.proc.pid)
        assert detected is not None, \
            "/healthz still 200 %.1f s after the link hung" % (
                time.monotonic() - t0)
        # Local delivery while down: every publish reaches the local
        # subscriber, and a subscribe is answered at once.
        base = 100000
        for i in range(50):
            assert pub.publish("news", {"n": base + i})[0] == 200
        wait_for(lambda: all(base + i in cnt.ns for i in range(50)), 10,
                 what="local delivery while Redis hangs")
        # No flapping: reconnect attempts reach a TCP listener that
        # answers nothing, and that is not "up".
        flaps = 0
        for _ in range(12):
            flaps += healthz(w.port) != 503
            time.sleep(0.5)
        assert flaps == 0, "/healthz left 503 while Redis still hangs"
        other = RawWS(w.port)
        t_sub = time.monotonic()
        sub(other, "other")
        sub_wait = time.monotonic() - t_sub
        other.close()
    finally:
        resume()
    wait_for(lambda: healthz(w.port) == 200, 20, what="backplane back")
    m = w.metrics()
    assert m["wshub_backplane_reconnects_total"] >= 1
    # Back through Redis, and nobody was evicted by a burst.
    assert pub.publish("news", {"n": -2})[0] == 200
    wait_for(lambda: -2 in cnt.ns, 10, what="delivery after recovery")
    time.sleep(0.5)
    assert cnt.close_code is None and not cnt.eof
    ev = sum(v for k, v in w.metrics().items()
             if k.startswith("wshub_evictions_total"))
    got_before = len([n for n in cnt.ns
                      if isinstance(n, int) and 0 <= n < sent_before])
    figure(label, detection_s=round(detected, 2),
           published_before_detection=sent_before,
           answered_200_before_detection=oks_before,
           lost_before_detection=sent_before - got_before,
           lost_after_detection=0, subscribe_wait_s=round(sub_wait, 3),
           rss_growth_kb=rss1 - rss0, evictions=ev)
    assert detected <= 2 * REDIS_TIMEOUT + 2.0, detected
    assert sub_wait < 2.0
    assert ev == 0


def test_sigstopped_redis_is_down_within_twice_the_timeout(wshub,
                                                           redis_server):
    pid = redis_server.proc.pid  # the redis-server this test started
    _hung_redis(wshub, redis_server,
                lambda: os.kill(pid, signal.SIGSTOP),
                lambda: os.kill(pid, signal.SIGCONT), "sigstop")


def test_stalled_link_is_down_within_twice_the_timeout(wshub, redis_server):
    p = TcpProxy(redis_server.port)
    try:
        _hung_redis(wshub, redis_server, p.stall, p.resume, "proxy_stall",
                    redis_url="redis://127.0.0.1:%d" % p.port)
    finally:
        p.close()


def test_cut_link_reconnects(wshub, redis_server):
    p = TcpProxy(redis_server.port)
    try:
        w = wshub("--redis", "redis://127.0.0.1:%d" % p.port)
        wait_for(lambda: healthz(w.port) == 200, 10, what="backplane up")
        reader = RawWS(w.port)
        sub(reader, "news")
        cnt = Counter(reader)
        t0 = time.monotonic()
        p.cut()
        wait_for(lambda: w.metrics()["wshub_backplane_reconnects_total"] >= 1,
                 15, what="reconnect after a cut")
        back = time.monotonic() - t0
        assert w.publish("news", '{"n":7}')[0] == 200
        wait_for(lambda: 7 in cnt.ns, 10, what="delivery after the cut")
        figure("proxy_cut", reconnect_s=round(back, 2))
    finally:
        p.close()


def test_slow_redis_refuses_publishes_instead_of_queueing(wshub,
                                                          redis_server):
    """A Redis link that drains slowly: the bytes queued for it stay
    bounded and publishes past the cap get 503 (or, if the link is too
    slow to answer its health check, it is declared down)."""
    p = TcpProxy(redis_server.port)
    try:
        w = wshub("--redis", "redis://127.0.0.1:%d" % p.port)
        wait_for(lambda: healthz(w.port) == 200, 10, what="backplane up")
        rss0 = rss_kb(w.proc.pid)
        p.slow(2 * 1024 * 1024)
        pub = Publisher(w.port, timeout=10)
        pad = "y" * (256 * 1024)
        statuses = {}
        refused_body = b""
        sent = 0
        rss_max = rss0
        deadline = time.monotonic() + 30
        # 400 x 256 KiB = 100 MiB offered; the cap is 16 MiB.
        while sent < 400 and time.monotonic() < deadline:
            st, body = pub.publish("slow", {"n": sent, "pad": pad})
            sent += 1
            statuses[st] = statuses.get(st, 0) + 1
            if st == 503 and not refused_body:
                refused_body = body
            if sent % 20 == 0:
                rss_max = max(rss_max, rss_kb(w.proc.pid))
        rss_max = max(rss_max, rss_kb(w.proc.pid))
        m = w.metrics()
        figure("slow_redis", offered_mb=round(sent * 0.25, 1),
               statuses=statuses, rss_growth_kb=rss_max - rss0,
               congested_total=m.get("wshub_backplane_congested_total"),
               timeouts_total=m.get("wshub_backplane_timeouts_total"))
        assert statuses.get(503, 0) > 0 or \
            m.get("wshub_backplane_timeouts_total", 0) > 0, statuses
        if refused_body:
            assert b"backplane unavailable" in refused_body, refused_body
        # Memory stays near the cap, not near the 100 MiB offered.
        assert rss_max - rss0 < 60 * 1024, rss_max - rss0
        p.resume()
        wait_for(lambda: pub.publish("slow", {"n": -1})[0] == 200 and
                 healthz(w.port) == 200, 60, interval=0.5,
                 what="publishes accepted again")
    finally:
        p.close()


# ------------------------------------------------------------ point 3

def test_flooding_publisher_cannot_get_readers_evicted(wshub):
    w = wshub()
    readers = []
    for _ in range(30):
        r = RawWS(w.port, rcvbuf=65536)
        sub(r, "flood")
        readers.append(r)
    byte_counts = [0] * len(readers)
    eofs = [False] * len(readers)
    stop = threading.Event()

    def drain(i):
        # A healthy reader: 1 MB/s (some 15,000 of these messages a
        # second), far more than the channel's fair share.
        s = readers[i].sock
        s.settimeout(0.2)
        t_next = time.monotonic()
        while not stop.is_set():
            wait = t_next - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            try:
                d = s.recv(1 << 20)
            except socket.timeout:
                continue
            except OSError:
                eofs[i] = True
                return
            if not d:
                eofs[i] = True
                return
            byte_counts[i] += len(d)
            t_next = max(t_next, time.monotonic() - 0.1) + len(d) / 1e6

    ths = [threading.Thread(target=drain, args=(i,), daemon=True)
           for i in range(len(readers))]
    for t in ths:
        t.start()
    # An unrelated channel, timed: a publish every 50 ms.
    calm_sub = RawWS(w.port)
    sub(calm_sub, "calm")
    calm_pub = RawWS(w.port)
    lat = []
    calm_stop = threading.Event()

    def calm():
        calm_sub.sock.settimeout(2)
        i = 0
        while not calm_stop.is_set():
            t = time.monotonic()
            calm_pub.send_text({"type": "publish", "channel": "calm",
                                "data": {"i": i}})
            try:
                while True:
                    m = calm_sub.recv_json()
                    if m.get("type") == "message":
                        break
                lat.append(time.monotonic() - t)
            except (socket.timeout, Closed, OSError):
                lat.append(2.0)
            i += 1
            time.sleep(0.05)

    calm_t = threading.Thread(target=calm, daemon=True)
    calm_t.start()
    # The flooder: publishes back to back for 4 s, its replies drained.
    flooder = RawWS(w.port)
    errors = {"rate": 0, "published": 0, "last": False, "eof": False}
    fl_stop = threading.Event()

    def flood_reader():
        flooder.sock.settimeout(0.5)
        buf = b""
        while not fl_stop.is_set():
            try:
                d = flooder.sock.recv(1 << 20)
            except socket.timeout:
                continue
            except OSError:
                errors["eof"] = True
                return
            if not d:
                errors["eof"] = True
                return
            buf += d
            errors["rate"] += buf.count(b"rate limited")
            errors["published"] += buf.count(b'"published"')
            errors["last"] = errors["last"] or b'"id":"last"' in buf
            buf = buf[-64:]

    fr = threading.Thread(target=flood_reader, daemon=True)
    fr.start()
    frame = None
    sent = 0
    t_end = time.monotonic() + 4
    payload = json.dumps({"type": "publish", "channel": "flood",
                          "data": {"x": "z" * 40}}).encode()
    while time.monotonic() < t_end:
        # 100 frames per sendall (a flood, not a polite client).
        if frame is None:
            import struct
            key = b"\x00\x00\x00\x00"
            frame = struct.pack("!BB", 0x81, 0x80 | len(payload)) + key + \
                payload
        try:
            flooder.sock.sendall(frame * 100)
        except OSError:
            break
        sent += 100
    time.sleep(1.5)
    calm_stop.set()
    calm_t.join(5)
    m = w.metrics()
    evicted = sum(v for k, v in m.items()
                  if k.startswith("wshub_evictions_total")
                  and ("slow" in k or "write" in k))
    stop.set()
    lat.sort()
    p99 = lat[int(len(lat) * 0.99) - 1] if lat else None
    figure("flood", sent=sent, rate_limited=m.get(
        "wshub_publishes_rate_limited_total"), readers_evicted=evicted,
        readers_eof=sum(eofs), calm_p99_ms=round(p99 * 1000, 1)
        if p99 is not None else None, calm_samples=len(lat))
    assert evicted == 0, m
    assert not any(eofs)
    assert m.get("wshub_publishes_rate_limited_total", 0) > 0
    # The flooder is still connected and can publish again.
    # (Its reader goes on draining the error replies queued for it.)
    flooder.send_text({"type": "publish", "channel": "flood", "data": 1,
                       "id": "last"})
    wait_for(lambda: errors["last"] or errors["eof"], 30,
             what="the flooder's last reply")
    fl_stop.set()
    assert errors["last"] and not errors["eof"]


# ------------------------------------------------------------ point 4

def test_poison_payload_from_redis_is_dropped_not_delivered(wshub,
                                                            redis_server):
    w = wshub("--redis", redis_server.url)
    wait_for(lambda: healthz(w.port) == 200, 10, what="backplane up")
    readers = []
    for _ in range(5):
        r = RawWS(w.port)
        sub(r, "c")
        readers.append(Counter(r))
    rc = redis_server.client()
    rc.publish("ws:chan:c", "\"" + "p" * (4 * 1024 * 1024) + "\"")
    rc.publish("ws:chan:c", '{"n":1}')
    wait_for(lambda: all(1 in c.ns for c in readers), 10,
             what="the next message after the poison one")
    m = w.metrics()
    figure("poison_4mib", evicted=sum(c.close_code is not None
                                      for c in readers),
           dropped=m.get("wshub_backplane_dropped_oversize_total"))
    assert all(c.close_code is None and not c.eof for c in readers)
    assert m["wshub_backplane_dropped_oversize_total"] == 1


# ------------------------------------------------------------ point 5

class LimitedWshub:
    """wshub with a low open-file limit (prlimit), stopped by pid."""

    def __init__(self, nofile, *args):
        from conftest import free_port
        self.port = free_port()
        self.proc = subprocess.Popen(
            ["prlimit", "--nofile=%d:%d" % (nofile, nofile), WSHUB,
             "--listen", "127.0.0.1:%d" % self.port] + list(args),
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(lambda: healthz(self.port) == 200, 10, what="wshub")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def _idle(n, src="127.0.0.1", port=None):
    socks = []
    for _ in range(n):
        s = socket.socket()
        s.bind((src, 0))
        s.settimeout(2)
        try:
            s.connect(("127.0.0.1", port))
        except OSError:
            s.close()
            continue
        socks.append(s)
    return socks


def _health_checks(port, n=20):
    """(answered, refused at once, timed out, worst wait): a refusal is
    an answer too (a 503, or a close at EMFILE); a wait in the accept
    queue until the client gives up is the fault."""
    answered = refused = timed_out = 0
    waits = []
    for _ in range(n):
        t = time.monotonic()
        try:
            st = http(port, "GET", "/healthz", timeout=2.0)[0]
            answered += 1
        except socket.timeout:
            timed_out += 1
        except (OSError, httpclient.HTTPException) as e:
            if "timed out" in str(e):
                timed_out += 1
            else:
                refused += 1
        waits.append(time.monotonic() - t)
    return answered, refused, timed_out, max(waits)


@pytest.mark.parametrize("extra", [[], ["--max-connections", "100000"]],
                         ids=["max_connections_default", "emfile_spare_fd"])
def test_idle_sockets_at_the_fd_limit_do_not_lock_health_checks_out(extra):
    w = LimitedWshub(256, *extra)
    idle = []
    try:
        idle = _idle(400, port=w.port)
        time.sleep(0.5)
        answered, refused, timed_out, worst = _health_checks(w.port)
        figure("fd_limit_" + ("emfile" if extra else "default"),
               idle_sockets=len(idle), health_answered=answered,
               health_refused_at_once=refused, health_timed_out=timed_out,
               worst_wait_s=round(worst, 2))
        assert timed_out == 0, (answered, refused, timed_out)
    finally:
        for s in idle:
            s.close()
        w.stop()


def test_max_connections_per_ip(wshub):
    w = wshub("--max-connections-per-ip", "8")
    time.sleep(0.3)  # the start-up probe's socket is gone
    idle = _idle(10, port=w.port)
    try:
        time.sleep(0.3)
        t = time.monotonic()
        st = healthz(w.port, timeout=3)
        wait = time.monotonic() - t
        # Another address is not affected (127.0.0.2 is loopback too).
        s = socket.create_connection(("127.0.0.1", w.port), 3,
                                     source_address=("127.0.0.2", 0))
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        other = s.recv(100)
        s.close()
        figure("per_ip", ninth_status=st, wait_s=round(wait, 3))
        assert st == 503 and wait < 2.0
        assert other.startswith(b"HTTP/1.1 200")
    finally:
        for s in idle:
            s.close()
    wait_for(lambda: healthz(w.port) == 200, 5, what="a slot after close")


def test_every_socket_counts_against_max_connections(wshub):
    w = wshub("--max-connections", "10")
    time.sleep(0.3)  # the start-up probe's socket is gone
    idle = _idle(12, port=w.port)
    try:
        time.sleep(0.3)
        st = healthz(w.port, timeout=3)
        assert st == 503
        assert w.metrics  # the server is alive
    finally:
        for s in idle:
            s.close()
    wait_for(lambda: healthz(w.port) == 200, 5, what="a slot after close")
    assert metrics(w.port)["wshub_connections_refused_total"] >= 1


# ------------------------------------------------------------ point 6

def raw_request(port, data, timeout=3.0, shut=False):
    s = socket.create_connection(("127.0.0.1", port), timeout)
    s.sendall(data)
    if shut:
        s.shutdown(socket.SHUT_WR)
    out = b""
    try:
        while True:
            d = s.recv(65536)
            if not d:
                break
            out += d
            if not shut and b"\r\n\r\n" in out:
                break
    except socket.timeout:
        pass
    s.close()
    return out


def test_close_reason_invalid_utf8_is_1007(wshub):
    w = wshub()
    c = RawWS(w.port)
    c.send_frame(8, b"\x03\xe8" + b"\xff\xfe bad")
    op, payload = c.recv_frame()
    assert op == 8
    assert payload[:2] == b"\x03\xef"  # 1007


@pytest.mark.parametrize("req", [
    b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
    b"Connection: Upgrade\r\nSec-WebSocket-Key: abcd\r\n"
    b"Sec-WebSocket-Version: 13\r\n\r\n",
    b"GET /ws HTTP/1.0\r\nHost: x\r\nUpgrade: websocket\r\n"
    b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    b"Sec-WebSocket-Version: 13\r\n\r\n",
    b"GET /ws HTTP/1.1\r\nUpgrade: websocket\r\n"
    b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    b"Sec-WebSocket-Version: 13\r\n\r\n",
], ids=["short_key", "http10", "no_host"])
def test_bad_upgrade_is_refused_400(wshub, req):
    w = wshub()
    out = raw_request(w.port, req)
    assert out.startswith(b"HTTP/1.1 400"), out[:80]


def test_content_length_4gib_is_413_at_once(wshub):
    w = wshub()
    t = time.monotonic()
    out = raw_request(w.port, b"POST /publish HTTP/1.1\r\nHost: x\r\n"
                      b"Content-Length: 4294967296\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 413"), out[:80]
    assert time.monotonic() - t < 2.0


def test_keepalive_request_then_shut_wr_gets_its_answer(wshub):
    w = wshub()
    got = 0
    for _ in range(20):
        out = raw_request(w.port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n",
                          shut=True)
        got += out.startswith(b"HTTP/1.1 200")
    figure("shut_wr", answered_of_20=got)
    assert got == 20


def test_deep_json_error_keeps_the_id(wshub):
    w = wshub()
    c = RawWS(w.port)
    c.send_text('{"id":7,"type":"publish","channel":"x","data":' +
                "[" * 100 + "]" * 100 + "}")
    r = c.recv_json()
    assert r["type"] == "error" and r.get("id") == 7, r
