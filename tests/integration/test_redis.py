"""CONTRACT.md's Redis section against real redis-server and build/wshub
processes: lazy per-channel subscriptions, cross-instance delivery,
redis-cli PUBLISH, the registry keys and their TTLs, graceful shutdown
and crash, and Redis going away and coming back."""
import asyncio
import json
import re
import signal
import socket
import subprocess
import time

import websockets

from conftest import wait_for
from wsraw import RawWS


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 60))


async def recv_json(ws, timeout=5):
    return json.loads(await asyncio.wait_for(ws.recv(), timeout))


def sub(c, channel, id=None):
    msg = {"type": "subscribe", "channel": channel}
    if id is not None:
        msg["id"] = id
    c.send_text(msg)
    r = c.recv_json()
    assert r["type"] == "subscribed" and r["channel"] == channel, r
    return r


def unsub(c, channel):
    c.send_text({"type": "unsubscribe", "channel": channel})
    r = c.recv_json()
    assert r["type"] == "unsubscribed", r


def start(wshub, redis_server, iid, *args):
    return wshub("--redis", redis_server.url, "--instance-id", iid, *args)


def sub_clients(redis_server):
    """Names of the subscriber-side client connections Redis sees."""
    out = {}
    for c in redis_server.client().client_list():
        out.setdefault(c.get("name", ""), []).append(c)
    return out


def test_lazy_subscribe_numsub(wshub, redis_server):
    w = start(wshub, redis_server, "i0")
    a, b = RawWS(w.port), RawWS(w.port)
    assert redis_server.numsub("ws:chan:news") == 0
    sub(a, "news")
    # `subscribed` is sent once Redis confirmed: NUMSUB is already 1.
    assert redis_server.numsub("ws:chan:news") == 1
    sub(b, "news")
    time.sleep(0.2)
    assert redis_server.numsub("ws:chan:news") == 1  # never 2
    unsub(a, "news")
    time.sleep(0.2)
    assert redis_server.numsub("ws:chan:news") == 1
    b.close()  # the last subscriber leaves by disconnecting
    wait_for(lambda: redis_server.numsub("ws:chan:news") == 0, 3,
             what="UNSUBSCRIBE after the last subscriber")
    # Publishing to a channel nobody holds never subscribes it.
    assert w.publish("other", "1")[0] == 200
    time.sleep(0.2)
    assert redis_server.numsub("ws:chan:other") == 0


def test_one_subscriber_connection_per_instance_no_patterns(wshub,
                                                           redis_server):
    w0 = start(wshub, redis_server, "i0")
    w1 = start(wshub, redis_server, "i1")
    clients = []
    for i in range(20):
        c = RawWS((w0, w1)[i % 2].port)
        sub(c, "ch%d" % (i % 5))
        clients.append(c)
    time.sleep(0.2)
    names = sub_clients(redis_server)
    for iid in ("i0", "i1"):
        subs = names.get("wshub:%s:sub" % iid)
        pubs = names.get("wshub:%s:pub" % iid)
        assert subs and len(subs) == 1, names.keys()
        assert pubs and len(pubs) == 1
        assert int(subs[0]["sub"]) == 5  # one SUBSCRIBE per channel
        assert int(subs[0]["psub"]) == 0  # never a pattern subscription
    assert redis_server.client().pubsub_numpat() == 0
    for i in range(5):
        assert redis_server.numsub("ws:chan:ch%d" % i) == 2
    m = w0.metrics()
    assert m["wshub_backplane_subscriptions"] == 5
    assert m["wshub_backplane_up"] == 1


def test_cross_instance_delivery_exactly_once(wshub, redis_server):
    w0 = start(wshub, redis_server, "i0")
    w1 = start(wshub, redis_server, "i1")

    async def go():
        async with websockets.connect(w0.ws_url, max_queue=None) as a, \
                websockets.connect(w1.ws_url, max_queue=None) as b, \
                websockets.connect(w1.ws_url, max_queue=None) as p:
            for c in (a, b, p):
                await c.send('{"type":"subscribe","channel":"news"}')
                assert (await recv_json(c))["type"] == "subscribed"
            for i in range(100):
                await p.send(json.dumps({"type": "publish",
                                         "channel": "news",
                                         "data": {"n": i}, "id": i}))
            for c in (a, b):
                got = [(await recv_json(c))["data"]["n"] for _ in range(100)]
                assert got == list(range(100))
            # The publisher gets its `published` replies and its own
            # messages, each exactly once, in order.
            replies, msgs = [], []
            while len(replies) < 100 or len(msgs) < 100:
                m = await recv_json(p)
                (replies if m["type"] == "published" else msgs).append(m)
            assert [m["id"] for m in replies] == list(range(100))
            assert [m["data"]["n"] for m in msgs] == list(range(100))
            for c in (a, b, p):
                try:
                    extra = await asyncio.wait_for(c.recv(), 0.3)
                    raise AssertionError("duplicate delivery: %s" % extra)
                except asyncio.TimeoutError:
                    pass
    run(go())


def test_redis_cli_publish_reaches_every_instance(wshub, redis_server):
    w0 = start(wshub, redis_server, "i0")
    w1 = start(wshub, redis_server, "i1")
    a, b = RawWS(w0.port), RawWS(w1.port)
    sub(a, "news")
    sub(b, "news")
    out = subprocess.run(["redis-cli", "-p", str(redis_server.port),
                          "PUBLISH", "ws:chan:news", '{"t":1}'],
                         capture_output=True, timeout=5)
    assert out.stdout.strip() == b"2"
    for c in (a, b):
        assert c.recv_json() == {"type": "message", "channel": "news",
                                 "data": {"t": 1}}
    # The message's data is carried verbatim through Redis.
    b.send_text('{"type":"publish","channel":"news","data":{"k":[1,2]}}')
    assert b.recv_json()["type"] == "published"
    assert a.recv_json()["data"] == {"k": [1, 2]}
    # And POST /publish goes through Redis too.
    assert w0.publish("news", '"s"')[0] == 200
    assert b.recv_json()["data"] == {"k": [1, 2]}  # b's own message first
    assert b.recv_json()["data"] == "s"


def test_http_publish_through_redis(wshub, redis_server):
    w0 = start(wshub, redis_server, "i0")
    w1 = start(wshub, redis_server, "i1")
    a = RawWS(w1.port)
    sub(a, "x")
    ps = redis_server.client().pubsub()
    ps.subscribe("ws:chan:x")
    ps.get_message(timeout=1)
    assert w0.publish("x", '{"v":true}') == (200, b'{"ok":true}')
    assert a.recv_json() == {"type": "message", "channel": "x",
                             "data": {"v": True}}
    m = ps.get_message(timeout=2)
    assert m["data"] == b'{"v":true}'
    ps.close()


def test_registry_keys_and_ttls(wshub, redis_server):
    w = start(wshub, redis_server, "reg0")
    r = redis_server.client()
    before = int(time.time())
    c1, c2 = RawWS(w.port), RawWS(w.port)
    sub(c1, "a")
    wait_for(lambda: r.exists("ws:conn:reg0:2"), 3, what="conn key")
    inst = json.loads(r.get("ws:instance:reg0"))
    assert inst["instance_id"] == "reg0"
    assert inst["connections"] in (0, 1, 2)
    assert isinstance(inst["started_at"], int)
    assert abs(inst["started_at"] - before) <= 5
    assert 0 < r.ttl("ws:instance:reg0") <= 30
    conn = json.loads(r.get("ws:conn:reg0:1"))
    assert conn["conn_id"] == "reg0:1"
    assert conn["instance_id"] == "reg0"
    assert conn["remote_addr"].startswith("127.0.0.1:")
    assert int(conn["remote_addr"].rsplit(":", 1)[1]) == \
        c1.sock.getsockname()[1]
    assert isinstance(conn["connected_at"], int)
    assert abs(conn["connected_at"] - before) <= 5
    assert 0 < r.ttl("ws:conn:reg0:1") <= 120
    # Deleted when the connection closes.
    c1.send_frame(8, b"\x03\xe8")
    c1.recv_until_closed()
    wait_for(lambda: not r.exists("ws:conn:reg0:1"), 3,
             what="conn key deleted on close")
    assert r.exists("ws:conn:reg0:2")
    c2.close()
    wait_for(lambda: not r.exists("ws:conn:reg0:2"), 3,
             what="conn key deleted on disconnect")


def test_heartbeat_refreshes_keys(wshub, redis_server):
    w = start(wshub, redis_server, "hb", "--heartbeat-interval", "0.5")
    r = redis_server.client()
    c = RawWS(w.port)
    wait_for(lambda: r.exists("ws:conn:hb:1"), 3, what="conn key")
    # Let time pass: without a refresh the TTLs would drop by 2.
    time.sleep(2.2)
    assert r.ttl("ws:instance:hb") >= 29
    assert r.ttl("ws:conn:hb:1") >= 119
    inst = json.loads(r.get("ws:instance:hb"))
    assert inst["connections"] == 1
    c.close()


def test_connection_ids_unique_across_instances(wshub, redis_server):
    w0 = start(wshub, redis_server, "u0")
    w1 = start(wshub, redis_server, "u1")
    cs = [RawWS(w.port) for w in (w0, w1, w0, w1)]
    r = redis_server.client()
    wait_for(lambda: len(r.keys("ws:conn:*")) == 4, 3, what="4 conn keys")
    ids = sorted(json.loads(r.get(k))["conn_id"] for k in r.keys("ws:conn:*"))
    assert ids == ["u0:1", "u0:2", "u1:1", "u1:2"]
    for c in cs:
        c.close()


def test_registry_off_and_custom_prefix(wshub, redis_server):
    w = start(wshub, redis_server, "p0", "--redis-prefix", "app1:",
              "--registry", "off")
    r = redis_server.client()
    c = RawWS(w.port)
    sub(c, "news")
    assert redis_server.numsub("app1:chan:news") == 1
    assert redis_server.numsub("ws:chan:news") == 0
    r.publish("app1:chan:news", '"hi"')
    assert c.recv_json()["data"] == "hi"
    time.sleep(0.2)
    assert r.keys("*") == []  # registry off: no keys at all
    w2 = start(wshub, redis_server, "p1", "--redis-prefix", "app2:")
    c2 = RawWS(w2.port)
    wait_for(lambda: r.exists("app2:conn:p1:1"), 3, what="prefixed key")
    assert r.exists("app2:instance:p1")
    c2.close()


def test_sigterm_1001_no_keys_no_subscriptions_exit_0(wshub, redis_server):
    w0 = start(wshub, redis_server, "s0")
    w1 = start(wshub, redis_server, "s1")
    r = redis_server.client()
    a, b, c = RawWS(w0.port), RawWS(w0.port), RawWS(w1.port)
    sub(a, "news")
    sub(b, "sports")
    sub(c, "news")
    wait_for(lambda: len(r.keys("ws:conn:s0:*")) == 2, 3, what="keys")
    w0.signal(signal.SIGTERM)
    for x in (a, b):
        assert x.recv_until_closed() == 1001
    assert w0.wait(10) == 0
    assert not r.exists("ws:instance:s0")
    assert r.keys("ws:conn:s0:*") == []
    assert redis_server.numsub("ws:chan:sports") == 0
    assert redis_server.numsub("ws:chan:news") == 1  # s1's
    assert r.exists("ws:instance:s1") and r.exists("ws:conn:s1:1")
    c.send_text('{"type":"publish","channel":"news","data":1}')
    got = [c.recv_json(), c.recv_json()]
    assert {"type": "message", "channel": "news", "data": 1} in got


def test_sigkill_leaves_keys_with_ttls(wshub, redis_server):
    w = start(wshub, redis_server, "k0")
    r = redis_server.client()
    c = RawWS(w.port)
    sub(c, "news")
    wait_for(lambda: r.exists("ws:conn:k0:1"), 3, what="conn key")
    w.signal(signal.SIGKILL)
    w.wait(5)
    assert r.exists("ws:instance:k0") and r.exists("ws:conn:k0:1")
    assert 0 < r.ttl("ws:instance:k0") <= 30
    assert 0 < r.ttl("ws:conn:k0:1") <= 120
    wait_for(lambda: redis_server.numsub("ws:chan:news") == 0, 3,
             what="Redis dropping the dead subscriber")


def test_redis_down_and_back(wshub, redis_server):
    w0 = start(wshub, redis_server, "d0")
    w1 = start(wshub, redis_server, "d1")
    a, a2, b = RawWS(w0.port), RawWS(w0.port), RawWS(w1.port)
    sub(a, "news")
    sub(a2, "news")
    sub(b, "news")
    assert w0.http("GET", "/healthz") == (200, b"ok")
    redis_server.kill()
    wait_for(lambda: w0.http("GET", "/healthz")[0] == 503, 3,
             what="/healthz 503 while Redis is down")
    assert w0.metrics()["wshub_backplane_up"] == 0
    # Local connections stay; local publishes reach local subscribers.
    a.send_text('{"type":"publish","channel":"news","data":"local"}')
    got = [a.recv_json(), a.recv_json()]
    assert {"type": "message", "channel": "news", "data": "local"} in got
    assert a2.recv_json()["data"] == "local"
    # A subscribe while Redis is down is acknowledged at once.
    c = RawWS(w0.port)
    sub(c, "sports")
    redis_server.start()  # same port
    wait_for(lambda: w0.http("GET", "/healthz")[0] == 200, 8,
             what="/healthz 200 after Redis is back")
    wait_for(lambda: w1.http("GET", "/healthz")[0] == 200, 8,
             what="instance 1 back")
    # Every channel with local subscribers is subscribed again.
    wait_for(lambda: redis_server.numsub("ws:chan:news") == 2, 3,
             what="news re-subscribed")
    assert redis_server.numsub("ws:chan:sports") == 1
    # The registry is refreshed.
    r = redis_server.client()
    wait_for(lambda: r.exists("ws:instance:d0") and r.exists("ws:conn:d0:1"),
             3, what="registry refreshed")
    # Delivery across instances resumed.
    b.send_text('{"type":"publish","channel":"news","data":"back"}')
    for x in (a, a2):
        assert x.recv_json()["data"] == "back"
    assert w0.metrics()["wshub_backplane_reconnects_total"] == 1
    subprocess.run(["redis-cli", "-p", str(redis_server.port), "PUBLISH",
                    "ws:chan:sports", "2"], capture_output=True, timeout=5)
    assert c.recv_json() == {"type": "message", "channel": "sports",
                             "data": 2}


def test_start_without_redis_then_redis_arrives(wshub, redis_server):
    redis_server.kill()
    w = start(wshub, redis_server, "late")
    assert w.http("GET", "/healthz")[0] == 503
    c = RawWS(w.port)
    sub(c, "news")  # acknowledged at once while down
    redis_server.start()
    wait_for(lambda: w.http("GET", "/healthz")[0] == 200, 8,
             what="backplane up")
    wait_for(lambda: redis_server.numsub("ws:chan:news") == 1, 3,
             what="subscribed once up")
    assert w.metrics()["wshub_backplane_reconnects_total"] == 0


def test_subscribed_means_effective(wshub, redis_server):
    """Every message published after a client holds `subscribed` reaches
    it: publish straight into Redis the moment the reply arrives."""
    w = start(wshub, redis_server, "e0")
    r = redis_server.client()
    c = RawWS(w.port)
    for i in range(30):
        ch = "fresh%d" % i
        sub(c, ch)
        r.publish("ws:chan:" + ch, str(i))
        assert c.recv_json() == {"type": "message", "channel": ch,
                                 "data": i}


def test_default_instance_id_is_hostname_pid_random(wshub, redis_server):
    w = wshub("--redis", redis_server.url)
    r = redis_server.client()
    wait_for(lambda: r.keys("ws:instance:*"), 3, what="instance key")
    key = r.keys("ws:instance:*")[0].decode()
    iid = key[len("ws:instance:"):]
    host = socket.gethostname()
    assert re.fullmatch(re.escape(host) + r"-%d-[0-9a-f]+" % w.proc.pid,
                        iid), iid
    w2 = wshub("--redis", redis_server.url)
    wait_for(lambda: len(r.keys("ws:instance:*")) == 2, 3,
             what="second instance key")
    c = RawWS(w2.port)
    wait_for(lambda: len(r.keys("ws:conn:*")) == 1, 3, what="conn key")
    conn = json.loads(r.get(r.keys("ws:conn:*")[0]))
    assert conn["instance_id"] != iid
    assert conn["conn_id"] == conn["instance_id"] + ":1"
    c.close()


def test_losing_one_connection_recovers_both(wshub, redis_server):
    """Redis drops only the subscriber connection (CLIENT KILL): the
    instance reconnects, re-subscribes and delivers again."""
    w0 = start(wshub, redis_server, "ck0")
    w1 = start(wshub, redis_server, "ck1")
    a, b = RawWS(w0.port), RawWS(w1.port)
    sub(a, "news")
    sub(b, "news")
    r = redis_server.client()
    addr = [c["addr"] for c in r.client_list()
            if c.get("name") == "wshub:ck0:sub"][0]
    r.client_kill(addr)
    wait_for(lambda: w0.metrics()["wshub_backplane_reconnects_total"] == 1,
             5, what="reconnect after CLIENT KILL")
    wait_for(lambda: redis_server.numsub("ws:chan:news") == 2, 3,
             what="news re-subscribed")
    names = sub_clients(redis_server)
    assert len(names["wshub:ck0:sub"]) == 1
    assert len(names["wshub:ck0:pub"]) == 1
    b.send_text('{"type":"publish","channel":"news","data":"again"}')
    assert a.recv_json()["data"] == "again"


def test_sigterm_while_redis_is_down(wshub, redis_server):
    w = start(wshub, redis_server, "sd0")
    c = RawWS(w.port)
    sub(c, "news")
    redis_server.kill()
    wait_for(lambda: w.http("GET", "/healthz")[0] == 503, 3,
             what="backplane down")
    t0 = time.monotonic()
    w.signal(signal.SIGTERM)
    assert c.recv_until_closed() == 1001
    assert w.wait(10) == 0
    assert time.monotonic() - t0 < 3


def test_redis_connect_timeout_then_recovers(wshub, redis_server):
    """A Redis that accepts no connections (SYNs dropped: a full backlog)
    makes the connect attempt time out; the server must give up on it
    cleanly, keep retrying, come up once Redis answers, and still shut
    down cleanly (this used to leave freed hiredis contexts behind)."""
    redis_server.kill()
    port = redis_server.port
    hole = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    hole.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    hole.bind(("127.0.0.1", port))
    hole.listen(0)
    fillers = []
    for _ in range(4):  # fill the accept queue; later SYNs are dropped
        f = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        f.setblocking(False)
        f.connect_ex(("127.0.0.1", port))
        fillers.append(f)
    try:
        w = start(wshub, redis_server, "hole")
        assert w.http("GET", "/healthz")[0] == 503
        time.sleep(3.0)  # past the 2 s connect timeout
        assert w.proc.poll() is None
        assert w.http("GET", "/healthz")[0] == 503
    finally:
        for f in fillers:
            f.close()
        hole.close()
    redis_server.start()  # same port
    wait_for(lambda: w.http("GET", "/healthz")[0] == 200, 10,
             what="backplane up after the timed-out attempt")
    c = RawWS(w.port)
    sub(c, "news")
    wait_for(lambda: redis_server.numsub("ws:chan:news") == 1, 3,
             what="subscribed")
    w.signal(signal.SIGTERM)
    assert w.wait(10) == 0
