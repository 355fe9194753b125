"""The Redis side of history (CONTRACT.md "History and recovery")
against a real redis-server: the `wshub` function library
(backplanes/wshub.lua) loaded with FUNCTION LOAD REPLACE, by the tests
or by wshub on every connect, and `redis-cli FCALL wshub_publish ...` /
`FCALL wshub_read ...` from outside, with the exact keys, stream ids,
fields, TTLs, the answers and the pub/sub payload."""
import os
import re
import subprocess
import time

from conftest import ROOT, wait_for

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


def read(redis_server, since=0, count=100, meta_ttl=86400, keys=KEYS[:2]):
    """FCALL wshub_read: (offset, epoch, [(offset, data), ...])."""
    rep = redis_server.client().execute_command(
        "FCALL", "wshub_read", 2, *keys, since, count, meta_ttl)
    assert isinstance(rep, list) and len(rep) == 3, rep
    entries = []
    for eid, fields in rep[2]:
        assert eid.endswith(b"-0") and fields[0] == b"d", (eid, fields)
        entries.append((int(eid[:-2]), fields[1].decode()))
    return rep[0], rep[1].decode(), entries


def lib_loaded(redis_server):
    """The wshub library's function names, or None when not loaded."""
    for lib in redis_server.client().execute_command("FUNCTION", "LIST"):
        d = dict(zip(lib[::2], lib[1::2]))
        if d[b"library_name"] == b"wshub":
            return sorted(dict(zip(f[::2], f[1::2]))[b"name"].decode()
                          for f in d[b"functions"])
    return None


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


def test_read_creates_the_record(redis_server):
    load(redis_server)
    r = redis_server.client()
    r.xadd("ws:history:news", {"d": "stale"}, id="7-0")  # an old epoch's
    off, epoch, entries = read(redis_server, since=0, count=10, meta_ttl=500)
    assert off == 0 and entries == []
    assert re.fullmatch(r"[A-Za-z0-9]{1,32}", epoch), epoch
    assert r.exists("ws:history:news") == 0  # the stale stream is gone
    assert r.hgetall("ws:meta:news") == {b"epoch": epoch.encode(),
                                         b"offset": b"0"}
    assert 499 <= r.ttl("ws:meta:news") <= 500
    # Reading again changes nothing; the first publish keeps the epoch.
    assert read(redis_server, 0, 0) == (0, epoch, [])
    assert fcall(redis_server, '{"t":1}') == (1, epoch)


def test_read_ranges_and_ttls(redis_server):
    load(redis_server)
    r = redis_server.client()
    for i in range(1, 6):
        _, epoch = fcall(redis_server, '{"t":%d}' % i, size=4, ttl=50,
                         meta_ttl=60)
    # Kept: 2..5 (size 4).
    assert read(redis_server, 0, 100) == \
        (5, epoch, [(o, '{"t":%d}' % o) for o in range(2, 6)])
    assert read(redis_server, 2, 100) == \
        (5, epoch, [(3, '{"t":3}'), (4, '{"t":4}'), (5, '{"t":5}')])
    assert read(redis_server, 2, 2) == \
        (5, epoch, [(3, '{"t":3}'), (4, '{"t":4}')])
    assert read(redis_server, 5, 100) == (5, epoch, [])  # nothing newer
    assert read(redis_server, 9, 100) == (5, epoch, [])
    assert read(redis_server, 3, 0) == (5, epoch, [])    # meta only
    # A read does not refresh the TTLs of an existing record.
    read(redis_server, 0, 10, meta_ttl=100000)
    assert 0 < r.pttl("ws:history:news") <= 50000
    assert 0 < r.pttl("ws:meta:news") <= 60000


def test_read_after_meta_expiry_or_flushall_has_a_fresh_epoch(redis_server):
    load(redis_server)
    r = redis_server.client()
    _, e1 = fcall(redis_server, "1")
    fcall(redis_server, "2")
    r.pexpire("ws:meta:news", 1)
    wait_for(lambda: r.exists("ws:meta:news") == 0, 5, what="meta expiry")
    off, e2, entries = read(redis_server, 0, 10)
    assert (off, entries) == (0, []) and e2 != e1
    assert r.exists("ws:history:news") == 0
    assert fcall(redis_server, "3") == (1, e2)
    r.flushall()  # functions survive FLUSHALL; the data does not
    off, e3, entries = read(redis_server, 0, 10)
    assert (off, entries) == (0, []) and e3 not in (e1, e2)


def test_read_arguments_checked(redis_server):
    load(redis_server)
    for bad in (["x", "1", "10"], ["-1", "1", "10"], ["0", "1.5", "10"],
                ["0", "1", "0"], ["0", "1"]):
        out = subprocess.run(
            ["redis-cli", "-p", str(redis_server.port), "FCALL",
             "wshub_read", "2", "ws:history:news", "ws:meta:news"] + bad,
            capture_output=True, timeout=10)
        assert b"ERR wshub_read" in out.stdout + out.stderr, bad
    assert redis_server.client().exists("ws:meta:news") == 0
    out = cli(redis_server, "FCALL", "wshub_read", "2", "ws:history:news",
              "ws:meta:news", "0", "10", "100").split("\n")
    assert out[0] == "0" and re.fullmatch(r"[A-Za-z0-9]{1,32}", out[1])


def hub_up(w):
    return w.http("GET", "/healthz")[0] == 200


def test_wshub_loads_the_library(wshub, redis_server):
    assert lib_loaded(redis_server) is None
    w = wshub("--redis", redis_server.url, "--instance-id", "lib")
    wait_for(lambda: hub_up(w), 10, what="backplane up")
    assert lib_loaded(redis_server) == ["wshub_publish", "wshub_read"]
    # The very text of backplanes/wshub.lua, compiled into the binary.
    lib, = redis_server.client().execute_command("FUNCTION", "LIST",
                                                  "WITHCODE")
    d = dict(zip(lib[::2], lib[1::2]))
    assert d[b"library_code"] == open(LIB, "rb").read()
    # Outside publishers can call it now without loading it themselves.
    off, epoch = fcall(redis_server, '{"t":1}')
    assert off == 1
    assert read(redis_server, 0, 10) == (1, epoch, [(1, '{"t":1}')])


def client_ids(redis_server, name):
    out = []
    for c in redis_server.client().client_list():
        if c.get("name") == name:
            out.append(c["id"])
    return out


def test_library_loaded_again_on_reconnect(wshub, redis_server):
    w = wshub("--redis", redis_server.url, "--instance-id", "re")
    wait_for(lambda: hub_up(w), 10, what="backplane up")
    r = redis_server.client()
    r.execute_command("FUNCTION", "FLUSH")
    assert lib_loaded(redis_server) is None
    # Drop the hub's command connection: it reconnects and loads again.
    ids = client_ids(redis_server, "wshub:re:pub")
    assert len(ids) == 1
    r.execute_command("CLIENT", "KILL", "ID", ids[0])
    wait_for(lambda: lib_loaded(redis_server) is not None, 15,
             what="library loaded again")
    wait_for(lambda: hub_up(w), 10, what="backplane up again")
    # A Redis restart loses the functions too (no persistence here).
    redis_server.kill()
    redis_server.start()
    assert lib_loaded(redis_server) is None
    wait_for(lambda: lib_loaded(redis_server) is not None, 15,
             what="library loaded after restart")
    wait_for(lambda: hub_up(w), 10, what="backplane up after restart")


def test_refused_library_without_history_is_logged_once(wshub, redis_server):
    r = redis_server.client()
    r.execute_command("ACL", "SETUSER", "nofn", "on", ">pw", "~*", "&*",
                      "+@all", "-function")
    w = wshub("--redis", "redis://nofn:pw@127.0.0.1:%d" % redis_server.port,
              "--instance-id", "nofn")
    wait_for(lambda: hub_up(w), 10, what="backplane up")
    assert lib_loaded(redis_server) is None
    log = open(w.log_path, "rb").read().decode()
    assert log.count("FUNCTION LOAD refused") == 1, log
    assert "NOPERM" in log, log
