"""CONTRACT.md "History and recovery" against build/wshub with the
embedded backplane: offsets in message and published frames and in the
POST /publish answer, epochs, `since` recovery, GET /history, the
history flags and a recording with history replayed.  With the Redis
backplane: test_history_recovery.py."""
import asyncio
import json
import subprocess
import time

import os

import websockets

from conftest import WSHUB

SIM = os.environ.get("WSHUB_SIM_BIN",
                     os.path.join(os.path.dirname(WSHUB), "wshub-sim"))


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 30))


async def recv_json(ws, timeout=5):
    return json.loads(await asyncio.wait_for(ws.recv(), timeout))


async def recv_type(ws, typ, timeout=5):
    while True:
        m = await recv_json(ws, timeout)
        if m["type"] == typ:
            return m


def get_history(w, query):
    st, body = w.http("GET", "/history?" + query)
    return st, json.loads(body)


def test_offsets_epoch_published_and_post_publish(wshub):
    w = wshub("--history-size", "10")

    async def go():
        async with websockets.connect(w.ws_url) as a:
            await a.send('{"type":"subscribe","channel":"news","id":1}')
            sub = await recv_json(a)
            assert sub["type"] == "subscribed" and sub["id"] == 1
            assert sub["offset"] == 0
            epoch = sub["epoch"]
            assert 1 <= len(epoch) <= 32 and epoch.isalnum()
            assert "recovered" not in sub
            await a.send('{"type":"publish","channel":"news","data":{"n":1},'
                         '"id":3}')
            got = [await recv_json(a), await recv_json(a)]
            pub = [m for m in got if m["type"] == "published"][0]
            msg = [m for m in got if m["type"] == "message"][0]
            assert pub == {"type": "published", "channel": "news", "id": 3,
                           "offset": 1}
            assert msg == {"type": "message", "channel": "news", "offset": 1,
                           "data": {"n": 1}}
            st, body = w.publish("news", '{"n":2}')
            assert st == 200 and json.loads(body) == {"ok": True, "offset": 2}
            m = await recv_type(a, "message")
            assert m["offset"] == 2 and m["data"] == {"n": 2}
            return epoch

    epoch = run(go())
    st, h = get_history(w, "channel=news")
    assert st == 200
    assert h == {"channel": "news", "epoch": epoch, "offset": 2,
                 "messages": [{"offset": 1, "data": {"n": 1}},
                              {"offset": 2, "data": {"n": 2}}]}


def test_recovery_replays_exactly_the_missed(wshub):
    w = wshub("--history-size", "5")

    async def go():
        async with websockets.connect(w.ws_url) as a:
            await a.send('{"type":"subscribe","channel":"news"}')
            epoch = (await recv_json(a))["epoch"]
            for i in range(1, 4):
                w.publish("news", str(i))
            for i in range(1, 4):
                assert (await recv_type(a, "message"))["offset"] == i
        for i in range(4, 7):
            assert json.loads(w.publish("news", str(i))[1])["offset"] == i
        async with websockets.connect(w.ws_url) as b:
            await b.send('{"type":"subscribe","channel":"news","since":'
                         '{"offset":3,"epoch":"%s"},"id":1}' % epoch)
            sub = await recv_json(b)
            assert sub == {"type": "subscribed", "channel": "news", "id": 1,
                           "offset": 3, "epoch": epoch, "recovered": True}
            got = [await recv_json(b) for _ in range(3)]
            assert [(m["type"], m["offset"], m["data"]) for m in got] == \
                [("message", 4, 4), ("message", 5, 5), ("message", 6, 6)]
            w.publish("news", "7")
            m = await recv_json(b)
            assert m["offset"] == 7
        # Current offset: recovered with nothing to replay.
        async with websockets.connect(w.ws_url) as c:
            await c.send('{"type":"subscribe","channel":"news","since":'
                         '{"offset":7,"epoch":"%s"}}' % epoch)
            sub = await recv_json(c)
            assert sub["recovered"] is True and sub["offset"] == 7
            w.publish("news", "8")
            assert (await recv_json(c))["offset"] == 8
        # Trimmed (size 5 keeps 4..8), wrong epoch, ahead: not recovered.
        cur = 8
        for since in ('{"offset":2,"epoch":"%s"}' % epoch,
                      '{"offset":7,"epoch":"nope"}',
                      '{"offset":99,"epoch":"%s"}' % epoch):
            async with websockets.connect(w.ws_url) as d:
                await d.send('{"type":"subscribe","channel":"news",'
                             '"since":%s}' % since)
                sub = await recv_json(d)
                assert sub == {"type": "subscribed", "channel": "news",
                               "offset": cur, "epoch": epoch,
                               "recovered": False}, since
                w.publish("news", "0")
                cur += 1
                m = await recv_json(d)
                assert m["type"] == "message" and m["offset"] == cur

    run(go())


def test_since_on_channel_without_history_and_bad_since(wshub):
    w = wshub("--history-size", "5", "--history-channels", "h.*,x")

    async def go():
        async with websockets.connect(w.ws_url) as a:
            await a.send('{"type":"subscribe","channel":"plain","since":'
                         '{"offset":1,"epoch":"E"},"id":2}')
            assert await recv_json(a) == {"type": "subscribed",
                                          "channel": "plain", "id": 2,
                                          "recovered": False}
            await a.send('{"type":"subscribe","channel":"h.1","since":5}')
            m = await recv_json(a)
            assert m == {"type": "error", "error": "invalid since"}
            await a.send('{"type":"subscribe","channel":"x"}')
            assert "epoch" in await recv_json(a)
            await a.send('{"type":"publish","channel":"plain","data":1,'
                         '"id":4}')
            got = [await recv_json(a), await recv_json(a)]
            assert {"type": "published", "channel": "plain", "id": 4} in got
            assert {"type": "message", "channel": "plain", "data": 1} in got

    run(go())
    st, body = w.publish("plain", "1")
    assert st == 200 and json.loads(body) == {"ok": True}
    assert get_history(w, "channel=plain")[0] == 400
    assert get_history(w, "channel=bad%20name")[0] == 400
    assert get_history(w, "nochannel=1")[0] == 400
    assert get_history(w, "channel=x&since=z")[0] == 400


def test_history_query_since_limit_and_cap(wshub):
    w = wshub("--history-size", "4")
    for i in range(1, 8):
        w.publish("n", str(i))
    st, h = get_history(w, "channel=n")
    assert st == 200 and h["offset"] == 7
    assert [m["offset"] for m in h["messages"]] == [4, 5, 6, 7]
    _, h = get_history(w, "channel=n&since=5")
    assert [m["offset"] for m in h["messages"]] == [6, 7]
    _, h = get_history(w, "channel=n&since=1&limit=2")
    assert [m["offset"] for m in h["messages"]] == [4, 5]
    _, h = get_history(w, "channel=n&limit=100")
    assert len(h["messages"]) == 4
    # A channel with no record yet: offset 0 and the epoch its first
    # subscribe or publish then gets.
    _, h = get_history(w, "channel=fresh")
    assert h["offset"] == 0 and h["messages"] == []
    st, body = w.publish("fresh", "1")
    _, h2 = get_history(w, "channel=fresh")
    assert h2["epoch"] == h["epoch"] and h2["offset"] == 1


def test_history_ttl_drops_messages_keeps_offset(wshub):
    w = wshub("--history-size", "4", "--history-ttl", "300ms")
    w.publish("n", "1")
    w.publish("n", "2")
    _, h = get_history(w, "channel=n")
    assert len(h["messages"]) == 2
    time.sleep(0.6)
    _, h2 = get_history(w, "channel=n")
    assert h2["messages"] == [] and h2["offset"] == 2
    assert h2["epoch"] == h["epoch"]
    assert json.loads(w.publish("n", "3")[1])["offset"] == 3


def test_history_meta_ttl_starts_a_new_epoch(wshub):
    w = wshub("--history-size", "4", "--history-ttl", "200ms",
              "--history-meta-ttl", "300ms")
    w.publish("n", "1")
    _, h = get_history(w, "channel=n")
    time.sleep(0.6)
    assert json.loads(w.publish("n", "2")[1])["offset"] == 1
    _, h2 = get_history(w, "channel=n")
    assert h2["epoch"] != h["epoch"] and h2["offset"] == 1


def test_history_env_and_help():
    out = subprocess.run([WSHUB, "--help"], capture_output=True, timeout=5)
    for f in ("--history-size", "--history-ttl", "--history-meta-ttl",
              "--history-channels"):
        assert f in out.stdout.decode(), f
    for args in (["--history-size", "x"], ["--history-ttl", "0"],
                 ["--history-size", "100001"]):
        r = subprocess.run([WSHUB] + args, capture_output=True, timeout=5)
        assert r.returncode == 2, args


def test_history_with_redis_starts(wshub):
    """History with --redis is built (test_history_recovery.py): the
    server starts and waits for Redis like any Redis backplane."""
    w = wshub("--history-size", "5", "--redis", "redis://127.0.0.1:1",
              "--registry", "off")
    assert w.proc.poll() is None
    assert w.http("GET", "/healthz")[0] == 503


def test_recording_with_history_replays(wshub, tmp_path):
    rec = str(tmp_path / "h.rec")
    w = wshub("--history-size", "3", "--history-channels", "n*",
              "--history-ttl", "1", "--record", rec)

    async def go():
        async with websockets.connect(w.ws_url) as a:
            await a.send('{"type":"subscribe","channel":"news"}')
            epoch = (await recv_json(a))["epoch"]
            for i in range(5):
                w.publish("news", str(i))
            for i in range(5):
                await recv_json(a)
        async with websockets.connect(w.ws_url) as b:
            await b.send('{"type":"subscribe","channel":"news","since":'
                         '{"offset":3,"epoch":"%s"}}' % epoch)
            assert (await recv_json(b))["recovered"] is True
            assert [(await recv_json(b))["offset"] for _ in range(2)] == \
                [4, 5]
        await asyncio.sleep(1.2)  # past --history-ttl
        assert json.loads(w.publish("news", "9")[1])["offset"] == 6

    run(go())
    w.signal(15)
    assert w.wait() == 0
    out = subprocess.run([SIM, "--replay", rec], capture_output=True,
                         timeout=30)
    assert out.returncode == 0, out.stdout
    assert out.stdout.startswith(b"REPLAY ok: ")
