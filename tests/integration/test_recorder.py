"""The flight recorder (CONTRACT.md, "Flight recorder"; docs/recording.md)
against real processes: build/wshub --record on real traffic (subscribe,
publish, a slow consumer's eviction, a Redis outage, SIGTERM, SIGABRT,
the size limit), then build/wshub-sim --replay of the file: ok,
truncated, not a recording, and a mutant core that diverges at the first
event whose effects differ."""
import os
import re
import resource
import shutil
import signal
import subprocess
import time

import pytest

from conftest import ROOT, WSHUB, wait_for
from wsraw import RawWS, Closed

SIM = os.environ.get("WSHUB_SIM_BIN",
                     os.path.join(os.path.dirname(WSHUB), "wshub-sim"))

SUB = '{"type":"subscribe","channel":"%s"}'

# The fatal-signal tests kill build/wshub with SIGABRT and SIGSEGV: no
# core files in the tree.
resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def replay(path, *args, sim=SIM):
    p = subprocess.run([sim, "--replay", str(path)] + list(args),
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       timeout=120)
    return p.returncode, p.stdout.decode(errors="replace")


def subscribe(c, channel):
    c.send_text(SUB % channel)
    r = c.recv_json()
    assert r["type"] == "subscribed", r


def stop_term(w):
    w.signal(signal.SIGTERM)
    assert w.wait(20) == 0


def log(w):
    with open(w.log_path, "rb") as f:
        return f.read().decode(errors="replace")


def traffic(w, n=20):
    """Two readers and a publisher: subscribe, publish, unsubscribe, a
    malformed request, a binary frame (closed 1003)."""
    a, b = RawWS(w.port), RawWS(w.port)
    subscribe(a, "news")
    subscribe(b, "news")
    subscribe(b, "sport")
    for i in range(n):
        status, _ = w.publish("news", '{"i":%d}' % i)
        assert status == 200
        assert a.recv_json()["data"]["i"] == i
        assert b.recv_json()["data"]["i"] == i
    b.send_text('{"type":"unsubscribe","channel":"sport"}')
    assert b.recv_json()["type"] == "unsubscribed"
    a.send_text("{not json")
    assert a.recv_json()["type"] == "error"
    c = RawWS(w.port)
    c.send_frame(2, b"\x00\x01")
    assert c.recv_until_closed(5) in (1003, None)
    return a, b


def test_record_traffic_and_eviction_then_sigterm_replays_ok(wshub,
                                                               tmp_path):
    rec = tmp_path / "run.rec"
    w = wshub("--record", str(rec), "--max-queue-msgs", "16", "--sndbuf",
              "4096", "--shutdown-timeout", "2", "--max-message-bytes",
              "4096")
    a, b = traffic(w)
    # Over --max-message-bytes: refused by its length alone (the server
    # passes no bytes, the recording none either), closed 1009.
    big = RawWS(w.port)
    big.send_text('{"type":"publish","channel":"news","data":"%s"}' %
                  ("y" * 5000))
    assert big.recv_until_closed(5) in (1009, None)
    # A slow consumer: subscribed, never reads, evicted 1008.
    slow = RawWS(w.port, rcvbuf=4096)
    subscribe(slow, "news")
    pad = "x" * 1000
    for i in range(200):
        assert w.publish("news", '{"i":%d,"pad":"%s"}' % (i, pad))[0] == 200
        assert a.recv_json()["data"]["i"] == i
        assert b.recv_json()["data"]["i"] == i
    wait_for(lambda: w.metrics()['wshub_evictions_total{reason="slow_msgs"}']
             == 1, 5, what="the slow consumer's eviction")
    # SIGTERM with a and b still open: CLOSE 1001, their closes after the
    # shutdown event are recorded too.
    stop_term(w)
    assert "recording closed" in log(w) and str(rec) in log(w)
    rc, out = replay(rec)
    assert rc == 0, out
    m = re.match(r"REPLAY ok: (\d+) events, effects identical\n", out)
    assert m, out
    n = int(m.group(1))
    assert n > 400

    rc, out = replay(rec, "--trace")
    assert rc == 0, out
    assert "slow_msgs" in out and "CLOSE conn" in out and "shutdown()" in out
    assert re.search(r"conn_msg\(conn \d+, text, 4097 bytes\)", out), out
    assert "1009" in out
    # The state before the shutdown: both readers on "news".
    k = int(re.search(r"^event (\d+) shutdown\(\)", out, re.M).group(1))
    rc, out = replay(rec, "--until", str(k - 1))
    assert rc == 0, out
    assert out.startswith("REPLAY until event %d: effects identical" % (k - 1))
    assert "channel news: 2 subscribers" in out
    assert re.search(r"conn \d+: backlog \d+ msgs, \d+ bytes", out), out
    assert "slow_msgs 1" in out


def test_record_redis_outage_replays_ok(wshub, redis_server, tmp_path):
    rec = tmp_path / "redis.rec"
    w = wshub("--redis", redis_server.url, "--instance-id", "rec0",
              "--record", str(rec), "--heartbeat-interval", "200ms",
              "--shutdown-timeout", "2")
    wait_for(lambda: w.http("GET", "/healthz")[0] == 200, 5,
             what="backplane up")
    a = RawWS(w.port)
    subscribe(a, "news")
    assert w.publish("news", '{"i":0}')[0] == 200
    assert a.recv_json()["data"]["i"] == 0
    redis_server.kill()  # by its pid
    wait_for(lambda: w.http("GET", "/healthz")[0] == 503, 5,
             what="backplane down")
    # Down: delivered locally.
    assert w.publish("news", '{"i":1}')[0] == 200
    assert a.recv_json()["data"]["i"] == 1
    time.sleep(0.5)  # heartbeats and reconnect attempts while down
    redis_server.start()
    wait_for(lambda: w.http("GET", "/healthz")[0] == 200, 10,
             what="backplane up again")
    wait_for(lambda: redis_server.numsub("ws:chan:news") == 1, 5,
             what="resubscribed")
    assert w.publish("news", '{"i":2}')[0] == 200
    assert a.recv_json()["data"]["i"] == 2
    stop_term(w)
    rc, out = replay(rec, "--trace")
    assert rc == 0, out
    assert out.rstrip().endswith("effects identical"), out[-500:]
    assert "bp_down()" in out and "bp_up()" in out
    assert "BP_SUBSCRIBE news" in out and "REG_SET key instance:rec0" in out
    assert "bp_msg(" in out and "expiry()" in out


def test_cut_in_a_record_is_truncated_exit_3(wshub, tmp_path):
    rec = tmp_path / "run.rec"
    w = wshub("--record", str(rec))
    traffic(w)
    stop_term(w)
    data = rec.read_bytes()
    rc, full = replay(rec)
    assert rc == 0, full
    n = int(re.match(r"REPLAY ok: (\d+)", full).group(1))
    cut = tmp_path / "cut.rec"
    # The END record is 4 bytes: cut into it, then far into the file.
    for keep in (len(data) - 2, len(data) * 2 // 3):
        cut.write_bytes(data[:keep])
        rc, out = replay(cut)
        assert rc == 3, out
        m = re.match(r"REPLAY truncated: (\d+) events, effects identical\n",
                     out)
        assert m, out
        assert int(m.group(1)) <= n
    cut.write_bytes(data[:len(data) - 2])
    rc, out = replay(cut)
    assert int(re.match(r"REPLAY truncated: (\d+)", out).group(1)) == n
    assert "cut off" in out


@pytest.mark.parametrize("what,content,words", [
    ("empty", b"", "empty"),
    ("garbage", bytes(range(256)) * 4, "not a wshub recording"),
    ("foreign", b'{"type":"subscribe","channel":"news"}\n',
     "not a wshub recording"),
    ("version", b"WSHUBREC\x07\x00\x02\x01\x08\x08\x08\x00\x14\x00\x00\x00",
     "version"),
    ("no config", b"WSHUBREC\x01\x00\x02\x01\x08\x08\x08\x00\x14\x00\x00\x00"
     b"\x21\x02\x01\x00", "configuration"),
    ("bad type", b"WSHUBREC\x01\x00\x02\x01\x08\x08\x08\x00\x14\x00\x00\x00"
     b"\x55\x00", "unknown record type"),
])
def test_not_a_recording_exit_2(tmp_path, what, content, words):
    f = tmp_path / "x.rec"
    f.write_bytes(content)
    rc, out = replay(f)
    assert rc == 2, (what, out)
    assert out.startswith("REPLAY error: "), out
    assert words in out, out


def test_missing_file_exit_2(tmp_path):
    rc, out = replay(tmp_path / "nope.rec")
    assert rc == 2 and "REPLAY error:" in out and "No such file" in out


def test_corrupted_byte_never_crashes(wshub, tmp_path):
    """Every single-byte corruption of a real recording gives a verdict
    (0, 1, 2 or 3), never a crash."""
    rec = tmp_path / "run.rec"
    w = wshub("--record", str(rec))
    a = RawWS(w.port)
    subscribe(a, "news")
    assert w.publish("news", '{"i":1}')[0] == 200
    a.recv_json()
    stop_term(w)
    data = bytearray(rec.read_bytes())
    bad = tmp_path / "bad.rec"
    seen = set()
    for i in range(0, len(data), max(1, len(data) // 150)):
        d = bytearray(data)
        d[i] ^= 0x5A
        bad.write_bytes(bytes(d))
        rc, out = replay(bad)
        assert rc in (0, 1, 2, 3), (i, rc, out)
        assert out.startswith("REPLAY "), out
        seen.add(rc)
    assert 2 in seen and 1 in seen


def build_mutant(k):
    """The core with mutants/<k>-*.patch applied, and a wshub-sim on it, as
    mutants/mutants.mk builds them (in a directory of its own)."""
    patch = [p for p in os.listdir(os.path.join(ROOT, "mutants"))
             if p.startswith("%d-" % k) and p.endswith(".patch")][0]
    d = os.path.join("build", "rec-mutant%d" % k)
    full = os.path.join(ROOT, d)
    shutil.rmtree(os.path.join(full, "src"), ignore_errors=True)
    shutil.rmtree(os.path.join(full, "obj"), ignore_errors=True)
    os.makedirs(os.path.join(full, "src"))
    shutil.copytree(os.path.join(ROOT, "core"), os.path.join(full, "src",
                                                             "core"))
    with open(os.path.join(ROOT, "mutants", patch), "rb") as f:
        subprocess.run(["patch", "-s", "-f", "-p1", "--no-backup-if-mismatch",
                        "-d", os.path.join(full, "src")], stdin=f, check=True)
    subprocess.run(["nice", "make", "--no-print-directory", "-j2",
                    "MODE=release", "MUTANT_DIR=" + d, d + "/wshub-sim"],
                   cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    return os.path.join(full, "wshub-sim")


def test_mutant_core_diverges_at_first_changed_event(wshub, tmp_path):
    rec = tmp_path / "run.rec"
    w = wshub("--record", str(rec))
    traffic(w, n=3)
    stop_term(w)
    rc, trace = replay(rec, "--trace")
    assert rc == 0, trace
    # The first publish that reaches subscribers: its effects change.
    # (POST /publish is recorded as api_publish: hub_api_publish.)
    m = re.search(r"^event (\d+) ((?:api_)?publish)\(.*\n    effect SEND",
                  trace, re.M)
    k = int(m.group(1))
    mutant = build_mutant(2)  # every message delivered twice
    rc, out = replay(rec, sim=mutant)
    assert rc == 1, out
    assert out.startswith("REPLAY diverged at event %d: %s(" % (
        k, m.group(2))), out
    # Two SENDs and the API_REPLY recorded; the mutant sends each twice.
    assert "recorded 3 effects" in out and "the replay produced 5" in out
    assert out.count("  SEND conn") == 4, out


def test_sigabrt_leaves_a_replayable_recording(wshub, tmp_path):
    rec = tmp_path / "abrt.rec"
    w = wshub("--record", str(rec))
    a, b = traffic(w, n=5)
    # The last events are still in the buffer (the tick writes it every
    # 100 ms): the fatal-signal handler must write them.
    assert w.publish("news", '{"last":"before the crash"}')[0] == 200
    a.recv_json()
    w.signal(signal.SIGABRT)
    assert w.wait(10) == -signal.SIGABRT
    rc, out = replay(rec, "--trace")
    assert rc == 3, out[-2000:]
    assert re.search(r"REPLAY truncated: \d+ events, effects identical", out)
    assert "before the crash" in out


def test_sigsegv_is_flushed_too(wshub, tmp_path):
    rec = tmp_path / "segv.rec"
    w = wshub("--record", str(rec))
    a = RawWS(w.port)
    subscribe(a, "crash")
    w.signal(signal.SIGSEGV)
    assert w.wait(10) == -signal.SIGSEGV
    rc, out = replay(rec, "--trace")
    assert rc == 3, out
    assert '"channel":"crash"' in out


def test_record_max_bytes_stops_logs_and_replays(wshub, tmp_path):
    rec = tmp_path / "small.rec"
    limit = 3000
    w = wshub("--record", str(rec), "--record-max-bytes", str(limit))
    traffic(w, n=60)
    wait_for(lambda: "recording stopped" in log(w), 5, what="the log line")
    assert "record_max_bytes=%d" % limit in log(w)
    # Still serving after the recording stopped.
    a = RawWS(w.port)
    subscribe(a, "after")
    stop_term(w)
    size = os.path.getsize(rec)
    assert 2000 < size <= limit
    rc, out = replay(rec)
    assert rc == 0, out
    assert re.match(r"REPLAY ok: \d+ events, effects identical \(the "
                    r"recording stopped at --record-max-bytes\)", out), out


def test_record_flag_errors(tmp_path):
    for args, words in ((["--record", str(tmp_path / "no" / "dir.rec")],
                         "No such file"),
                        (["--record-max-bytes", "lots"], "bad option value")):
        p = subprocess.run([WSHUB, "--listen", "127.0.0.1:0"] + args,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           timeout=10)
        assert p.returncode == 2 and words in p.stdout.decode(), p.stdout
    p = subprocess.run([WSHUB, "--help"], stdout=subprocess.PIPE, timeout=10)
    assert b"--record FILE" in p.stdout and b"--record-max-bytes" in p.stdout


def test_shell_calls_the_core_only_through_the_recorder():
    """Every core event call of shell.c goes through sh_rec.h's sh_call_
    functions, so none escapes the recording."""
    src = open(os.path.join(ROOT, "shell", "shell.c")).read()
    src = re.sub(r'"[^"\n]*"', '""', src)  # the error hook's names
    calls = re.findall(r"\b(hub_on_\w+|hub_api_\w+|hub_publish|hub_handle_expiry|"
                       r"hub_shutdown|hub_new)\s*\(", src)
    assert calls == [], calls


def sim_record_and_replay(tmp_path, scn, name, *args):
    out = tmp_path / name
    p = subprocess.run([SIM] + list(args) + ["--record", str(out), str(scn)],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       timeout=120)
    files = sorted(f for f in os.listdir(tmp_path)
                   if f.startswith(name + ".") and not f.endswith(".scn"))
    assert files, p.stdout
    for f in files:
        rc, text = replay(tmp_path / f)
        assert rc == 0 and text.startswith("REPLAY ok: "), (scn, f, text)
    return p, files


def test_sim_record_every_scenario_replays_ok(tmp_path):
    """wshub-sim --record: one file per instance incarnation, recorded
    through the same shell as the server; each replays identically."""
    scns = sorted(os.listdir(os.path.join(ROOT, "scenarios")))
    total = 0
    for f in scns:
        if not f.endswith(".scn"):
            continue
        n = f[:-4]
        p, files = sim_record_and_replay(
            tmp_path, os.path.join(ROOT, "scenarios", f), n)
        assert p.stdout.decode().startswith("PASS "), p.stdout
        total += len(files)
    assert total >= len(scns)
    # A restarted instance records to FILE.<id> of its incarnation.
    assert os.path.exists(tmp_path / "contract_statements.1.1")


def test_sim_record_with_allocation_failures_replays_ok(tmp_path):
    """Explored scenarios with injected allocation failures: each failure
    is recorded with its number in its call, and fails again in the
    replay."""
    fails = 0
    for seed in range(10, 40):
        scn = tmp_path / ("s%d.scn" % seed)
        d = subprocess.run([SIM, "--explore", "--seeds", "%d..%d" % (seed,
                                                                    seed),
                            "--dump", "--alloc-fail", "0.02"],
                           stdout=subprocess.PIPE, timeout=60)
        scn.write_bytes(d.stdout)
        _, files = sim_record_and_replay(tmp_path, scn, "s%d" % seed)
        for f in files:
            rc, text = replay(tmp_path / f, "--trace")
            fails += text.count("of the call fails)")
    assert fails > 10


def test_record_auth_session_replays_ok(wshub, tmp_path):
    """An authenticated session (--token-secret) recorded: the open with
    the token's claims, a subscribe the grants refuse, a refresh with
    another sub (refused), a good refresh (narrower grants, later exp),
    then the 4001 at the new exp.  The claims are in the recording, the
    tokens are not; the replay gets the same effects."""
    import asyncio
    import json

    import jwt
    import websockets

    secret = "rec-secret"
    rec = tmp_path / "auth.rec"
    w = wshub("--token-secret", secret, "--record", str(rec))

    def mint(claims):
        return jwt.encode(claims, secret, algorithm="HS256")

    exp = int(time.time()) + 2
    tok = mint({"sub": "alice", "subscribe": ["news", "sport"],
                "publish": ["news"], "exp": exp})

    async def reply(ws, msg):
        await ws.send(json.dumps(msg))
        while True:
            r = json.loads(await asyncio.wait_for(ws.recv(), 5))
            if r.get("type") != "message":
                return r

    async def go():
        async with websockets.connect(w.ws_url + "?token=" + tok) as ws:
            for ch in ("news", "sport"):
                r = await reply(ws, {"type": "subscribe", "channel": ch})
                assert r["type"] == "subscribed", r
            r = await reply(ws, {"type": "subscribe", "channel": "secret",
                                 "id": 1})
            assert r["error"] == "permission denied", r
            r = await reply(ws, {"type": "refresh", "id": 2, "token": mint(
                {"sub": "mallory", "subscribe": ["*"]})})
            assert r == {"type": "error", "id": 2,
                         "error": "token sub does not match"}, r
            await ws.send(json.dumps({"type": "refresh", "id": 3,
                                      "token": mint({
                                          "sub": "alice",
                                          "subscribe": ["news"],
                                          "exp": exp + 1})}))
            assert json.loads(await asyncio.wait_for(ws.recv(), 5)) == {
                "type": "refreshed", "id": 3}
            assert json.loads(await asyncio.wait_for(ws.recv(), 5)) == {
                "type": "unsubscribed", "channel": "sport",
                "reason": "permission denied"}
            with pytest.raises(websockets.ConnectionClosed):
                while True:
                    await asyncio.wait_for(ws.recv(), 10)
            assert ws.close_code == 4001
    asyncio.run(go())
    stop_term(w)
    rc, out = replay(rec)
    assert rc == 0 and out.startswith("REPLAY ok: "), out
    rc, out = replay(rec, "--trace")
    assert rc == 0, out
    assert "auth 1" in out
    assert re.search(r'conn_open_auth\(addr "[^"]*", sub "alice", '
                     r'subscribe \["news", "sport"\], publish \["news"\], '
                     r'expires t=\+', out), out
    assert re.search(r'conn_verified\(conn \d+, sub "mallory", '
                     r'subscribe \["\*"\], publish \[\]', out), out
    assert re.search(r'conn_verified\(conn \d+, sub "alice", '
                     r'subscribe \["news"\], publish \[\]', out), out
    assert "effect VERIFY conn" in out
    assert re.search(r"CLOSE conn \d+ 4001 token expired \(token_expired\)",
                     out), out
    # The tokens themselves are not in the file (only the claims).
    data = rec.read_bytes()
    assert tok.encode() not in data and tok.split(".")[2].encode() not in data
