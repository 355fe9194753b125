"""The Redis side of history (CONTRACT.md "History and recovery")
against a real redis-server: the `wshub` function library
(backplanes/wshub.lua) loaded with FUNCTION LOAD REPLACE, and
`redis-cli FCALL wshub_publish ...` from outside, with the exact keys,
stream ids, fields, TTLs, the [offset, epoch] answer and the pub/sub
payload.  The hub does not use it yet: history with --redis is refused
(test_history.py), so nothing here starts wshub."""
import os
import re
import subprocess
import time

from conftest import ROOT

LIB = os.path.join(ROOT, "backplanes", "wshub.lua")
KEYS = ["ws:history:news", "ws:meta:news", "ws:chan:news"]


def cli(redis_server, *args):
    out = subprocess.run(["redis-cli", "-p", str(redis_server.port)] +
                         list(args), capture_output=True, timeout=10)
    assert out.returncode == 0, out.stderr
    return out.stdout.decode()


def load(redis_server):
    with open(LIB, "rb") as f:
        out = subprocess.run(["redis-cli", "-p", str(redis_server.port), "-x",
                              "FUNCTION", "LOAD", "REPLACE"], stdin=f,
                             capture_output=True, timeout=10)
    assert out.stdout.decode().strip() == "wshub", out


def fcall(redis_server, data, size=100, ttl=300, meta_ttl=86400, keys=KEYS):
    out = cli(redis_server, "FCALL", "wshub_publish", "3", *keys, data,
              str(size), str(ttl), str(meta_ttl)).split("\n")
    return int(out[0]), out[1]


def test_contract_example_and_keys(redis_server):
    load(redis_server)
    load(redis_server)  # REPLACE: loading again is fine
    r = redis_server.client()
    p = r.pubsub()
    p.subscribe("ws:chan:news")
    assert p.get_message(timeout=2)["type"] == "subscribe"
    # The example of CONTRACT.md, verbatim.
    out = subprocess.run(
        ["redis-cli", "-p", str(redis_server.port), "FCALL", "wshub_publish",
         "3", "ws:history:news", "ws:meta:news", "ws:chan:news", '{"t":1}',
         "100", "300", "86400"], capture_output=True, timeout=10)
    offset, epoch = out.stdout.decode().split("\n")[:2]
    assert offset == "1"
    assert re.fullmatch(r"[A-Za-z0-9]{1,32}", epoch), epoch
    assert r.type("ws:history:news") == b"stream"
    assert r.type("ws:meta:news") == b"hash"
    assert r.xrange("ws:history:news") == [(b"1-0", {b"d": b'{"t":1}'})]
    assert r.hgetall("ws:meta:news") == {b"epoch": epoch.encode(),
                                         b"offset": b"1"}
    assert 299 <= r.ttl("ws:history:news") <= 300
    assert 86399 <= r.ttl("ws:meta:news") <= 86400
    m = p.get_message(timeout=2)
    assert m["type"] == "message" and m["channel"] == b"ws:chan:news"
    assert m["data"] == ('wshub:1:%s:{"t":1}' % epoch).encode()
    # The next publish: same epoch, next offset, TTLs renewed.
    assert fcall(redis_server, '{"t":2}', ttl=50, meta_ttl=60) == (2, epoch)
    assert 49 <= r.ttl("ws:history:news") <= 50
    assert 59 <= r.ttl("ws:meta:news") <= 60
    assert p.get_message(timeout=2)["data"] == \
        ('wshub:2:%s:{"t":2}' % epoch).encode()
    p.close()


def test_exact_maxlen(redis_server):
    load(redis_server)
    r = redis_server.client()
    for i in range(1, 8):
        fcall(redis_server, str(i), size=3)
    assert r.xlen("ws:history:news") == 3
    assert [e[0] for e in r.xrange("ws:history:news")] == \
        [b"5-0", b"6-0", b"7-0"]
    assert r.hget("ws:meta:news", "offset") == b"7"


def test_missing_meta_starts_a_new_epoch_and_drops_the_stream(redis_server):
    load(redis_server)
    r = redis_server.client()
    _, e1 = fcall(redis_server, "1")
    fcall(redis_server, "2")
    r.delete("ws:meta:news")  # as if it expired, or Redis lost it
    off, e2 = fcall(redis_server, "3")
    assert off == 1 and e2 != e1
    assert r.xrange("ws:history:news") == [(b"1-0", {b"d": b"3"})]


def test_stream_expiry_keeps_the_offsets(redis_server):
    load(redis_server)
    r = redis_server.client()
    _, e1 = fcall(redis_server, "1", ttl=1)
    time.sleep(2.1)
    assert r.exists("ws:history:news") == 0
    assert fcall(redis_server, "2") == (2, e1)
    assert r.xrange("ws:history:news") == [(b"2-0", {b"d": b"2"})]


def test_channels_are_independent_and_arguments_checked(redis_server):
    load(redis_server)
    other = ["ws:history:x", "ws:meta:x", "ws:chan:x"]
    _, e1 = fcall(redis_server, "1")
    off, ex = fcall(redis_server, "1", keys=other)
    assert off == 1 and ex != e1
    for bad in (["0", "300", "86400"], ["10", "x", "86400"],
                ["10", "300", "-1"], ["1.5", "300", "86400"]):
        out = subprocess.run(
            ["redis-cli", "-p", str(redis_server.port), "FCALL",
             "wshub_publish", "3"] + other + ["d"] + bad,
            capture_output=True, timeout=10)
        assert b"ERR wshub_publish" in out.stdout + out.stderr, bad
    assert redis_server.client().hget("ws:meta:x", "offset") == b"1"
