"""CONTRACT.md against build/wshub with the embedded backplane (no Redis):
flags, HTTP endpoints, the WebSocket protocol, close codes, limits,
timers and graceful shutdown."""
import asyncio
import json
import os
import signal
import socket
import subprocess
import time

import pytest
import websockets

from conftest import WSHUB, wait_for
from sockdiag import sndbufs
from wsraw import Closed, RawWS

FLAGS = ["--listen", "--redis", "--redis-prefix", "--instance-id",
         "--registry", "--max-queue-msgs", "--max-queue-bytes",
         "--max-message-bytes", "--ping-interval", "--pong-timeout",
         "--write-timeout", "--heartbeat-interval", "--shutdown-timeout",
         "--max-connections", "--handshake-timeout", "--sndbuf"]


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 30))


async def recv_json(ws, timeout=5):
    return json.loads(await asyncio.wait_for(ws.recv(), timeout))


# ------------------------------------------------------------- flags

def test_help_lists_every_flag():
    out = subprocess.run([WSHUB, "--help"], capture_output=True, timeout=5)
    assert out.returncode == 0
    text = out.stdout.decode()
    for f in FLAGS:
        assert f in text, f
    assert "WSHUB_MAX_MESSAGE_BYTES" in text


def test_bad_flag_value_fails():
    for args in (["--max-queue-msgs", "x"], ["--registry", "maybe"],
                 ["--no-such-flag"], ["--ping-interval", "-1"],
                 ["--registry", "on"], ["--redis", "http://127.0.0.1:1"],
                 ["--listen", "127.0.0.1"], ["extra-argument"]):
        out = subprocess.run([WSHUB] + args, capture_output=True, timeout=5)
        assert out.returncode != 0, args


def test_env_var_sets_flag_and_command_line_wins(wshub):
    w = wshub(env={"WSHUB_MAX_MESSAGE_BYTES": "100"})
    c = RawWS(w.port)
    c.send_text('{"type":"subscribe","channel":"%s"}' % ("a" * 120))
    assert c.recv_until_closed() == 1009
    w2 = wshub("--max-message-bytes", "1000",
               env={"WSHUB_MAX_MESSAGE_BYTES": "100"})
    c2 = RawWS(w2.port)
    c2.send_text('{"type":"subscribe","channel":"%s","id":7}' % ("a" * 120))
    assert c2.recv_json() == {"type": "subscribed", "channel": "a" * 120,
                              "id": 7}


def test_listen_flag_and_env(wshub):
    w = wshub()
    assert w.http("GET", "/healthz")[0] == 200
    # WSHUB_LISTEN is overridden by the fixture's --listen.
    w2 = wshub(env={"WSHUB_LISTEN": "127.0.0.1:1"})
    assert w2.http("GET", "/healthz")[0] == 200


# ------------------------------------------------------------- HTTP

def test_healthz_root_and_unknown(wshub):
    w = wshub()
    assert w.http("GET", "/healthz") == (200, b"ok")
    status, body = w.http("GET", "/")
    assert status == 200
    assert b"WebSocket" in body and b"/ws" in body
    assert w.http("GET", "/nope")[0] == 404
    assert w.http("GET", "/ws")[0] == 426


def test_post_publish(wshub):
    w = wshub()
    assert w.publish("news", '{"a":1}') == (200, b'{"ok":true}')
    for body in (b'{"channel":"bad name","data":1}', b'not json',
                 b'{"channel":"news"}', b'{"data":1}', b'[]',
                 b'{"channel":"' + b"x" * 129 + b'","data":1}'):
        status, resp = w.http("POST", "/publish", body)
        assert status == 400, body
        assert "error" in json.loads(resp), resp
    assert w.http("GET", "/publish")[0] == 405


def test_post_publish_reaches_subscribers(wshub):
    w = wshub()

    async def go():
        async with websockets.connect(w.ws_url, max_queue=None) as a:
            await a.send('{"type":"subscribe","channel":"news"}')
            assert (await recv_json(a))["type"] == "subscribed"
            loop = asyncio.get_running_loop()
            st = await loop.run_in_executor(
                None, w.publish, "news", '{"from":"http"}')
            assert st[0] == 200
            m = await recv_json(a)
            assert m == {"type": "message", "channel": "news",
                         "data": {"from": "http"}}
    run(go())


def test_http_keepalive_pipelined(wshub):
    w = wshub()
    s = socket.create_connection(("127.0.0.1", w.port), 5)
    req = (b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
           b"POST /publish HTTP/1.1\r\nHost: x\r\nContent-Length: 29\r\n\r\n"
           b'{"channel":"n","data":[1,2]}\n')
    s.sendall(req)
    data = b""
    deadline = time.monotonic() + 5
    while data.count(b"HTTP/1.1 200") < 2 and time.monotonic() < deadline:
        data += s.recv(65536)
    assert data.count(b"HTTP/1.1 200") == 2, data
    assert b'{"ok":true}' in data
    s.close()


def test_header_size_cap(wshub):
    w = wshub()
    s = socket.create_connection(("127.0.0.1", w.port), 5)
    s.sendall(b"GET /healthz HTTP/1.1\r\nX-Big: " + b"a" * 20000 +
              b"\r\n\r\n")
    data = s.recv(65536)
    assert data.startswith(b"HTTP/1.1 431"), data[:40]
    s.close()


def test_metrics_prometheus_text(wshub):
    w = wshub()
    status, body = w.http("GET", "/metrics")
    assert status == 200
    text = body.decode()
    for name in ("wshub_connections", "wshub_subscriptions",
                 "wshub_messages_in_total", "wshub_messages_out_total",
                 "wshub_evictions_total", "wshub_backplane_subscriptions",
                 "wshub_backplane_reconnects_total"):
        assert "# TYPE " + name in text, name
    c = RawWS(w.port)
    c.send_text({"type": "subscribe", "channel": "m1"})
    c.recv_json()
    c.send_text({"type": "publish", "channel": "m1", "data": 1})
    c.recv_json()
    c.recv_json()
    m = w.metrics()
    assert m["wshub_connections"] == 1
    assert m["wshub_subscriptions"] == 1
    assert m["wshub_messages_in_total"] == 2
    assert m["wshub_messages_out_total"] == 1
    assert m["wshub_publishes_total"] == 1
    c.close()
    wait_for(lambda: w.metrics()["wshub_connections"] == 0, 3,
             what="connection count back to 0")


# ------------------------------------------------------------- messages

def test_subscribe_publish_unsubscribe_with_ids(wshub):
    w = wshub()

    async def go():
        async with websockets.connect(w.ws_url, max_queue=None) as a, \
                websockets.connect(w.ws_url, max_queue=None) as b:
            await a.send('{"type":"subscribe","channel":"news","id":1}')
            assert await recv_json(a) == {"type": "subscribed",
                                          "channel": "news", "id": 1}
            await b.send('{"type":"publish","channel":"news",'
                         '"data":{"any":"json"},"id":3}')
            assert await recv_json(b) == {"type": "published",
                                          "channel": "news", "id": 3}
            assert await recv_json(a) == {"type": "message",
                                          "channel": "news",
                                          "data": {"any": "json"}}
            # id is optional and echoed verbatim when present.
            await a.send('{"type":"unsubscribe","channel":"news","id":"x"}')
            assert await recv_json(a) == {"type": "unsubscribed",
                                          "channel": "news", "id": "x"}
            await b.send('{"type":"publish","channel":"news","data":2}')
            assert await recv_json(b) == {"type": "published",
                                          "channel": "news"}
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(a.recv(), 0.3)
    run(go())


def test_publisher_receives_its_own_message(wshub):
    w = wshub()
    c = RawWS(w.port)
    c.send_text('{"type":"subscribe","channel":"self"}')
    assert c.recv_json()["type"] == "subscribed"
    c.send_text('{"type":"publish","channel":"self","data":[1],"id":9}')
    got = [c.recv_json(), c.recv_json()]
    assert {"type": "published", "channel": "self", "id": 9} in got
    assert {"type": "message", "channel": "self", "data": [1]} in got


def test_channel_names(wshub):
    w = wshub()
    c = RawWS(w.port)
    good = ["A-Za-z0-9_-.:@/", "x" * 128, "a"]
    for i, ch in enumerate(good):
        c.send_text({"type": "subscribe", "channel": ch, "id": i})
        assert c.recv_json() == {"type": "subscribed", "channel": ch,
                                 "id": i}, ch
    bad = ["", "x" * 129, "a b", "é", "a*", "a#b", "a\"b", "a\\b", "a?"]
    for i, ch in enumerate(bad):
        c.send_text({"type": "subscribe", "channel": ch, "id": 100 + i})
        r = c.recv_json()
        assert r["type"] == "error" and r["id"] == 100 + i, (ch, r)
        assert isinstance(r["error"], str) and r["error"]
        c.send_text({"type": "publish", "channel": ch, "data": 1})
        assert c.recv_json()["type"] == "error"
    # Still open.
    c.send_text({"type": "subscribe", "channel": "ok", "id": "end"})
    assert c.recv_json()["id"] == "end"


def test_protocol_errors_keep_connection_open(wshub):
    w = wshub()
    c = RawWS(w.port)
    cases = [
        '{"type":"subscribe"',                       # malformed JSON
        '[1,2]',                                     # not an object
        '"str"',
        '{"channel":"news","id":5}',                 # missing type
        '{"type":7,"channel":"news"}',               # type not a string
        '{"type":"dance","channel":"news","id":5}',  # unknown type
        '{"type":"subscribe","id":5}',               # missing channel
        '{"type":"unsubscribe","channel":5,"id":5}',  # channel not a string
        '{"type":"publish","channel":"news","id":5}',  # missing data
    ]
    for text in cases:
        c.send_text(text)
        r = c.recv_json()
        assert r["type"] == "error", (text, r)
        assert isinstance(r.get("error"), str), r
        if '"id":5' in text:
            assert r.get("id") == 5, (text, r)
    c.send_text('{"type":"subscribe","channel":"news","id":6}')
    assert c.recv_json() == {"type": "subscribed", "channel": "news",
                             "id": 6}


def test_binary_frame_closes_1003(wshub):
    w = wshub()
    c = RawWS(w.port)
    c.send_frame(2, b"\x00\x01\x02")
    assert c.recv_until_closed() == 1003
    assert w.metrics()['wshub_evictions_total{reason="binary"}'] == 1


def test_invalid_utf8_closes_1007(wshub):
    w = wshub()
    c = RawWS(w.port)
    c.send_frame(1, b'{"type":"subscribe","channel":"\xff\xfe"}')
    assert c.recv_until_closed() == 1007
    assert w.metrics()['wshub_evictions_total{reason="bad_utf8"}'] == 1


def test_oversize_closes_1009(wshub):
    w = wshub("--max-message-bytes", "1000")
    c = RawWS(w.port)
    c.send_text("x" * 1000)  # exactly the limit: an error reply, not a close
    assert c.recv_json()["type"] == "error"
    c.send_text('{"type":"publish","channel":"a","data":"%s"}' % ("x" * 1000))
    assert c.recv_until_closed() == 1009
    # Fragmented: the parts add up past the limit.
    c2 = RawWS(w.port)
    c2.send_frame(1, b"x" * 600, fin=False)
    c2.send_frame(0, b"x" * 600, fin=True)
    assert c2.recv_until_closed() == 1009
    # A frame announcing a huge length is refused before it is buffered.
    c3 = RawWS(w.port)
    c3.sock.sendall(b"\x81\xff" + (1 << 40).to_bytes(8, "big") + b"mask" +
                     b"some payload")
    assert c3.recv_until_closed() == 1009
    assert w.metrics()['wshub_evictions_total{reason="too_big"}'] == 3


def test_fragmented_message_with_ping_between(wshub):
    w = wshub()
    c = RawWS(w.port)
    text = b'{"type":"subscribe","channel":"frag","id":1}'
    c.send_frame(1, text[:10], fin=False)
    c.send_frame(9, b"hi")  # a control frame inside a message
    c.send_frame(0, text[10:20], fin=False)
    c.send_frame(0, text[20:], fin=True)
    op, payload = c.recv_frame()
    assert (op, payload) == (10, b"hi")  # the pong
    assert c.recv_json() == {"type": "subscribed", "channel": "frag",
                             "id": 1}


def test_unmasked_frame_is_a_protocol_error(wshub):
    w = wshub()
    c = RawWS(w.port)
    c.send_frame(1, b'{"type":"subscribe","channel":"x"}', mask=False)
    assert c.recv_until_closed() == 1002


def test_client_close_handshake(wshub):
    w = wshub()
    c = RawWS(w.port)
    c.send_frame(8, b"\x03\xe8bye")
    op, payload = c.recv_frame()
    assert op == 8 and payload[:2] == b"\x03\xe8"
    assert c.wait_eof(3), "server did not close TCP after the handshake"
    wait_for(lambda: w.metrics()["wshub_connections"] == 0, 3,
             what="connection released")


def test_client_close_with_invalid_code_gets_1002(wshub):
    """RFC 6455 7.4: 1005, 1006, 1015, codes below 1000 and unassigned
    ones never appear on the wire, and a close payload of one byte is
    malformed; the server answers 1002 instead of echoing them."""
    w = wshub()
    for payload in (b"\x03\xed", b"\x03\xee", b"\x03\xf7", b"\x00\x01",
                    b"\x07\xd0", b"\x03"):
        c = RawWS(w.port)
        c.send_frame(8, payload)
        assert c.recv_until_closed(3) == 1002, payload
        c.close()
    c = RawWS(w.port)  # a private-use code is echoed
    c.send_frame(8, b"\x0f\xa0")
    assert c.recv_until_closed(3) == 4000


def test_messages_arrive_in_publish_order(wshub):
    w = wshub()

    async def go():
        async with websockets.connect(w.ws_url, max_queue=None) as a, \
                websockets.connect(w.ws_url, max_queue=None) as p:
            await a.send('{"type":"subscribe","channel":"ord"}')
            await recv_json(a)
            for i in range(300):
                await p.send(json.dumps({"type": "publish", "channel": "ord",
                                         "data": {"n": i}}))
            got = []
            while len(got) < 300:
                m = await recv_json(a)
                got.append(m["data"]["n"])
            assert got == list(range(300))
    run(go())


# ------------------------------------------------------------- timers

def test_pings_and_pong_timeout(wshub):
    w = wshub("--ping-interval", "0.3", "--pong-timeout", "1")
    good = RawWS(w.port)
    mute = RawWS(w.port, auto_pong=False)
    good.sock.settimeout(0.2)
    mute.sock.settimeout(0.2)
    deadline = time.monotonic() + 2.5
    mute_code = None
    mute_closed_at = None
    start = time.monotonic()
    while time.monotonic() < deadline:
        for c in (good, mute):
            if c is mute and mute_closed_at is not None:
                continue
            try:
                op, _ = c.recv_frame()
            except socket.timeout:
                continue
            except Closed:
                if c is mute:
                    mute_closed_at = time.monotonic()
                    continue
                raise
            if c is mute and op == 8:
                mute_code = mute.close_code
                mute_closed_at = time.monotonic()
            assert not (c is good and op == 8), "answering client closed"
    assert good.pings >= 4, good.pings
    assert mute.pings >= 2
    assert mute_code == 1008
    assert 0.9 <= mute_closed_at - start <= 2.0
    m = w.metrics()
    assert m['wshub_evictions_total{reason="pong_timeout"}'] == 1
    assert m["wshub_connections"] == 1


def test_handshake_timeout_drops_silent_client(wshub):
    w = wshub("--handshake-timeout", "0.5")
    s = socket.create_connection(("127.0.0.1", w.port), 5)
    s.sendall(b"GET /ws HTTP/1.1\r\nHost: x\r\n")  # never finishes
    t0 = time.monotonic()
    s.settimeout(3)
    assert s.recv(100) == b""
    assert 0.4 <= time.monotonic() - t0 <= 1.5
    s2 = socket.create_connection(("127.0.0.1", w.port), 5)
    s2.settimeout(3)
    assert s2.recv(100) == b""


def test_max_connections_answers_503(wshub):
    w = wshub("--max-connections", "2")
    a = RawWS(w.port)
    b = RawWS(w.port)
    assert a.status == 101 and b.status == 101
    c = RawWS(w.port)
    assert c.status == 503
    a.send_frame(8, b"\x03\xe8")
    a.recv_frame()
    a.wait_eof(3)
    wait_for(lambda: RawWS(w.port).status == 101, 3,
             what="a slot after a close")


# ------------------------------------------------------------- slow consumers

def _slow_setup(w):
    slow = RawWS(w.port, rcvbuf=4096)
    slow.send_text('{"type":"subscribe","channel":"s"}')
    assert slow.recv_json()["type"] == "subscribed"
    return slow


def test_slow_consumer_evicted_fast_client_gets_everything(wshub):
    # A fixed send buffer (no autotuning) so the non-reader's socket fills.
    w = wshub("--max-queue-msgs", "64", "--sndbuf", "16384")
    slow = _slow_setup(w)
    pad = "x" * 300
    n = 1000

    async def go():
        async with websockets.connect(w.ws_url, max_queue=None) as fast, \
                websockets.connect(w.ws_url, max_queue=None) as pub:
            await fast.send('{"type":"subscribe","channel":"s"}')
            await recv_json(fast)
            got = []
            progress = asyncio.Event()

            async def reader():
                while len(got) < n:
                    m = await recv_json(fast, 10)
                    got.append(m["data"]["n"])
                    progress.set()
            task = asyncio.ensure_future(reader())
            # Flow control, as a real publisher of a reliable feed would
            # have: never more than |window| messages ahead of the fast
            # reader.  The window is far below --max-queue-msgs (64) and
            # its bytes far below the 16 KiB socket buffer, so however
            # slowly this loop's reader is scheduled the fast client
            # cannot be a slow consumer; the non-reader still is, since
            # it falls behind by all n messages.
            window = 16
            for i in range(n):
                while i - len(got) >= window:
                    progress.clear()
                    await asyncio.wait_for(progress.wait(), 10)
                await pub.send(json.dumps(
                    {"type": "publish", "channel": "s",
                     "data": {"n": i, "pad": pad}}))
            await task
            assert got == list(range(n))
            # The fast client stays open.
            await fast.send('{"type":"subscribe","channel":"t","id":1}')
            assert (await recv_json(fast))["id"] == 1
    run(go())
    # The slow one was closed with 1008, or dropped without a close frame.
    code = slow.recv_until_closed(10)
    assert code in (1008, None)
    m = w.metrics()
    assert m['wshub_evictions_total{reason="slow_msgs"}'] == 1
    assert m["wshub_connections"] == 0


def test_sndbuf_flag_sets_so_sndbuf(wshub):
    w = wshub("--sndbuf", "4096")
    c = RawWS(w.port)
    # Linux doubles the value given.
    assert sndbufs(w.port) == [8192]
    w2 = wshub()
    c2 = RawWS(w2.port)
    bufs = sndbufs(w2.port)
    assert len(bufs) == 1 and bufs[0] != 8192, bufs
    c.close()
    c2.close()


def test_slow_consumer_queue_bytes_limit(wshub):
    w = wshub("--max-queue-bytes", "20000", "--sndbuf", "4096")
    slow = _slow_setup(w)
    pad = "y" * 1000
    for i in range(200):
        assert w.publish("s", '{"n":%d,"p":"%s"}' % (i, pad))[0] == 200
        if w.metrics()['wshub_evictions_total{reason="slow_bytes"}'] >= 1:
            break
    assert w.metrics()['wshub_evictions_total{reason="slow_bytes"}'] == 1
    assert slow.recv_until_closed(10) in (1008, None)


def test_write_timeout(wshub):
    w = wshub("--write-timeout", "1", "--sndbuf", "4096")
    slow = _slow_setup(w)
    pad = "z" * 1000
    # Far below the queue limits, far above what the sockets hold.
    for i in range(100):
        assert w.publish("s", '{"n":%d,"p":"%s"}' % (i, pad))[0] == 200
    wait_for(lambda: w.metrics()[
        'wshub_evictions_total{reason="write_timeout"}'] == 1, 4,
        what="write timeout eviction")
    assert slow.recv_until_closed(10) in (1008, None)


# ------------------------------------------------------------- shutdown

@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_graceful_shutdown_1001(wshub, sig):
    w = wshub()
    clients = [RawWS(w.port) for _ in range(3)]
    clients[0].send_text('{"type":"subscribe","channel":"x"}')
    clients[0].recv_json()
    w.signal(sig)
    for c in clients:
        assert c.recv_until_closed(5) == 1001
        c.send_frame(8, b"\x03\xe9")
    assert w.wait(10) == 0


def test_second_signal_stops_waiting(wshub):
    w = wshub("--shutdown-timeout", "30")
    mute = RawWS(w.port)  # never answers the close
    w.signal(signal.SIGTERM)
    assert mute.recv_frame()[0] == 8 and mute.close_code == 1001
    time.sleep(0.2)
    assert w.proc.poll() is None  # still waiting for the peer
    t0 = time.monotonic()
    w.signal(signal.SIGTERM)
    assert w.wait(3) == 0
    # Well before the peer's 2 s close-wait would have run out.
    assert time.monotonic() - t0 < 1.0


def test_shutdown_closes_listener_at_once(wshub):
    w = wshub("--shutdown-timeout", "3")
    mute = RawWS(w.port)  # never completes the close handshake
    w.signal(signal.SIGTERM)
    assert mute.recv_frame()[0] == 8 and mute.close_code == 1001

    def refused():
        try:
            socket.create_connection(("127.0.0.1", w.port), 0.5).close()
            return False
        except ConnectionRefusedError:
            return True
    wait_for(refused, 1, what="listener closed")
    # The peer never answers; the process still exits within the timeout.
    t0 = time.monotonic()
    assert w.wait(6) == 0
    assert time.monotonic() - t0 < 4.5


def test_http_connection_close_and_unread_responses(wshub):
    w = wshub()
    s = socket.create_connection(("127.0.0.1", w.port), 5)
    s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    data = b""
    while True:
        d = s.recv(65536)
        if not d:
            break
        data += d
    assert data.startswith(b"HTTP/1.1 200") and data.endswith(b"ok")
    # Requests whose answers are never read: the connection is cut once
    # its unread answers pass a bound, and the server stays healthy.
    s2 = socket.create_connection(("127.0.0.1", w.port), 5)
    s2.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s2.settimeout(5)
    req = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" * 200
    cut = False
    deadline = time.monotonic() + 5
    try:
        while time.monotonic() < deadline:
            s2.sendall(req)
    except (BrokenPipeError, ConnectionResetError):
        cut = True
    assert cut
    assert w.http("GET", "/healthz") == (200, b"ok")


def test_idle_connections_hold_no_parser_and_no_queue(wshub):
    """The memory design: a wslay frame context is lent only while a
    frame is partly read, an out-queue exists only while bytes wait."""
    w = wshub("--sndbuf", "4096")
    cs = [RawWS(w.port) for _ in range(50)]
    for i, c in enumerate(cs):
        c.send_text({"type": "subscribe", "channel": "idle%d" % (i % 5)})
        c.recv_json()
    m = w.metrics()
    assert m["wshub_connections"] == 50
    assert m["wshub_frame_parsers_lent"] == 0
    assert m["wshub_out_queues"] == 0
    # Half a frame: that connection borrows a parser until the rest comes.
    text = b'{"type":"subscribe","channel":"half","id":1}'
    key = b"\x01\x02\x03\x04"
    masked = bytes(b ^ key[i % 4] for i, b in enumerate(text))
    frame = bytes([0x81, 0x80 | len(text)]) + key + masked
    cs[0].sock.sendall(frame[:10])
    wait_for(lambda: w.metrics()["wshub_frame_parsers_lent"] == 1, 2,
             what="a parser lent for the partial frame")
    cs[0].sock.sendall(frame[10:])
    assert cs[0].recv_json()["id"] == 1
    wait_for(lambda: w.metrics()["wshub_frame_parsers_lent"] == 0, 2,
             what="the parser returned")
    # A client that does not read keeps a queue; it goes when drained.
    slow = RawWS(w.port, rcvbuf=4096)
    slow.send_text('{"type":"subscribe","channel":"q"}')
    slow.recv_json()
    for i in range(30):
        w.publish("q", '"%s"' % ("z" * 2000))
    wait_for(lambda: w.metrics()["wshub_out_queues"] >= 1, 3,
             what="an out-queue for the backlog")
    n = 0
    slow.sock.settimeout(5)
    while n < 30:
        slow.recv_json()
        n += 1
    wait_for(lambda: w.metrics()["wshub_out_queues"] == 0, 3,
             what="the out-queue freed once drained")


def test_garbage_never_takes_the_process_down(wshub):
    """Seeded random bytes as HTTP requests and as WebSocket frames; the
    process keeps serving everyone else."""
    import random
    rnd = random.Random(4)
    w = wshub("--max-message-bytes", "4096")
    keeper = RawWS(w.port)
    keeper.send_text('{"type":"subscribe","channel":"k"}')
    keeper.recv_json()
    for i in range(150):
        junk = bytes(rnd.randrange(256) for _ in range(rnd.randrange(1, 600)))
        try:
            if i % 2:
                s = socket.create_connection(("127.0.0.1", w.port), 2)
                s.sendall(junk)
            else:
                c = RawWS(w.port)
                s = c.sock
                # Masked or not, valid header or not: anything goes.
                s.sendall(junk)
            s.settimeout(0.05)
            try:
                s.recv(65536)
            except (socket.timeout, ConnectionResetError):
                pass
            s.close()
        except (ConnectionResetError, BrokenPipeError):
            pass
    assert w.proc.poll() is None
    assert w.http("GET", "/healthz") == (200, b"ok")
    assert w.publish("k", "42")[0] == 200
    assert keeper.recv_json() == {"type": "message", "channel": "k",
                                  "data": 42}
    wait_for(lambda: w.metrics()["wshub_connections"] == 1, 5,
             what="every junk connection released")


def _handshake(port, headers):
    s = socket.create_connection(("127.0.0.1", port), 5)
    s.sendall(b"GET /ws HTTP/1.1\r\nHost: x\r\n" + headers + b"\r\n")
    data = b""
    while b"\r\n\r\n" not in data:
        d = s.recv(4096)
        if not d:
            break
        data += d
    s.close()
    return data


def test_upgrade_header_variants(wshub):
    w = wshub()
    key = b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    # Firefox sends "keep-alive, Upgrade"; header names and the upgrade
    # token are case-insensitive.  RFC 6455's sample key and accept value.
    r = _handshake(w.port, b"upgrade: WebSocket\r\n"
                   b"connection: keep-alive, Upgrade\r\n" + key +
                   b"sec-websocket-version: 13\r\n")
    assert r.startswith(b"HTTP/1.1 101"), r
    assert b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=" in r
    # Another version: 426 naming the one we speak.
    r = _handshake(w.port, b"Upgrade: websocket\r\nConnection: Upgrade\r\n" +
                   key + b"Sec-WebSocket-Version: 8\r\n")
    assert r.startswith(b"HTTP/1.1 426"), r
    assert b"Sec-WebSocket-Version: 13" in r
    # No key: 400.
    r = _handshake(w.port, b"Upgrade: websocket\r\nConnection: Upgrade\r\n"
                   b"Sec-WebSocket-Version: 13\r\n")
    assert r.startswith(b"HTTP/1.1 400"), r
