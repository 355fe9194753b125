"""Operations (issue 12): logs, --version, /metrics build and process
metrics, SIGHUP, TLS (wss:// and https:// on the listen port), the
duplicate instance id refusal, and the small flag fixes.

Certificates are made here with `openssl req -x509`; Redis is a real
redis-server (conftest.py), stopped by pid.
"""
import asyncio
import json
import os
import re
import signal
import socket
import ssl
import subprocess
import time
import urllib.request

import websockets

from conftest import WSHUB, free_port, wait_for
from wsraw import Closed, RawWS

TS_RE = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z"
TEXT_RE = re.compile(r"^(" + TS_RE + r") (debug|info|warn|error) (.*)$")


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 30))


def log_lines(w):
    with open(w.log_path, "rb") as f:
        return f.read().decode().splitlines()


def text_events(w):
    """[(level, rest of the line)] of a text log; every line must parse."""
    out = []
    for ln in log_lines(w):
        m = TEXT_RE.match(ln)
        assert m, "not a log line: %r" % ln
        out.append((m.group(2), m.group(3)))
    return out


def json_events(w):
    out = []
    for ln in log_lines(w):
        ev = json.loads(ln)
        assert re.fullmatch(TS_RE, ev["ts"]), ev
        assert ev["level"] in ("debug", "info", "warn", "error"), ev
        assert isinstance(ev["msg"], str)
        out.append(ev)
    return out


def run_wshub(args, env=None, timeout=10):
    full = dict(os.environ)
    full.update(env or {})
    return subprocess.run([WSHUB] + list(args), capture_output=True,
                          text=True, timeout=timeout, env=full)


def closed_port():
    return free_port()  # nothing listens there once the probe closed


# ------------------------------------------------------------------ logs

def test_startup_line_text(wshub):
    w = wshub()
    wait_for(lambda: any("listening" in r for _, r in text_events(w)), 3,
             what="startup line")
    (lvl, rest), = [e for e in text_events(w) if " listening " in
                    " " + e[1] + " "]
    assert lvl == "info"
    fields = dict(kv.split("=", 1) for kv in rest.split()[1:])
    assert re.match(r"\d+\.\d+\.\d+", fields["version"])
    assert fields["listen"] == "127.0.0.1:%d" % w.port
    assert fields["backplane"] == "embedded"
    assert "redis_addr" not in fields
    assert fields["scheme"] == "http"


def test_json_logs_backplane_failure_and_startup(wshub):
    port = closed_port()
    w = wshub("--redis", "redis://127.0.0.1:%d" % port, "--registry", "off",
              "--log-format", "json", "--instance-id", "42")

    def failure():
        return [e for e in json_events(w)
                if e["msg"] == "redis connect failed"]
    evs = wait_for(failure, 5, what="a connect failure line")
    e = evs[0]
    assert e["level"] == "warn"
    assert e["addr"] == "127.0.0.1:%d" % port
    assert "refused" in e["reason"].lower()
    assert isinstance(e["retry_in_s"], (int, float)) and e["retry_in_s"] >= 0
    start, = [e for e in json_events(w) if e["msg"] == "listening"]
    assert start["backplane"] == "redis"
    assert start["redis_addr"] == "127.0.0.1:%d" % port
    assert start["listen"] == "127.0.0.1:%d" % w.port
    assert start["version"]
    assert start["instance"] == "42"  # an id is a string, even if numeric
    # The retry delays grow (backoff), and each line says how long.
    wait_for(lambda: len(failure()) >= 3, 5, what="three failures")


def test_backplane_up_down_lines(wshub, redis_server):
    w = wshub("--redis", redis_server.url, "--instance-id", "ud")
    addr = "127.0.0.1:%d" % redis_server.port
    wait_for(lambda: any(r.startswith("redis backplane up addr=" + addr)
                         for _, r in text_events(w)), 5, what="up line")
    redis_server.kill()
    wait_for(lambda: any(r.startswith("redis backplane down addr=" + addr)
                         and "reason=" in r and "retry_in_s=" in r
                         for _, r in text_events(w)), 5, what="down line")


def test_log_level_filtering(wshub):
    port = closed_port()
    url = "redis://127.0.0.1:%d" % port
    w_warn = wshub("--redis", url, "--registry", "off", "--log-level", "warn")
    w_err = wshub("--redis", url, "--registry", "off", "--log-level", "error")
    wait_for(lambda: any(lvl == "warn" for lvl, _ in text_events(w_warn)), 5,
             what="a warn line")
    time.sleep(0.5)
    assert all(lvl in ("warn", "error") for lvl, _ in text_events(w_warn))
    assert not any(r.startswith("listening") for _, r in text_events(w_warn))
    assert all(lvl == "error" for lvl, _ in text_events(w_err))
    assert w_err.http("GET", "/healthz")[0] == 503  # it does run


def test_debug_level_and_wshub_debug_alias(wshub):
    for w in (wshub("--log-level", "debug"), wshub(env={"WSHUB_DEBUG": "1"})):
        c = RawWS(w.port)
        c.send_frame(0x2, b"\x00")  # binary: the hub closes 1003
        try:
            c.recv_frame()
        except (Closed, OSError):
            pass
        wait_for(lambda: any(lvl == "debug" and r.startswith("close ") and
                             "code=1003" in r for lvl, r in text_events(w)),
                 3, what="a debug close line")
    w = wshub()  # info: no debug lines
    c = RawWS(w.port)
    c.send_frame(0x2, b"\x00")
    time.sleep(0.3)
    assert not any(lvl == "debug" for lvl, _ in text_events(w))


def test_bad_log_flags_refused():
    for args in (["--log-level", "verbose"], ["--log-format", "xml"]):
        r = run_wshub(args + ["--listen", "127.0.0.1:%d" % free_port()])
        assert r.returncode != 0
        assert args[0] in r.stderr


# ------------------------------------------------- version and metrics

def test_version():
    r = run_wshub(["--version"])
    assert r.returncode == 0
    assert re.match(r"^wshub \d+\.\d+\.\d+", r.stdout), r.stdout


def test_metrics_build_info_and_process(wshub):
    before = time.time()
    w = wshub()
    m = w.metrics()
    version = run_wshub(["--version"]).stdout.split()[1]
    info = [k for k in m if k.startswith("wshub_build_info{")]
    assert len(info) == 1 and m[info[0]] == 1
    assert 'version="%s"' % version in info[0]
    assert m["process_resident_memory_bytes"] > 1 << 20
    assert m["process_open_fds"] > 0
    assert m["process_max_fds"] >= m["process_open_fds"]
    assert m["process_cpu_seconds_total"] >= 0
    assert abs(m["process_start_time_seconds"] - before) < 10


# ------------------------------------------------------------ SIGHUP

def test_sighup_is_harmless(wshub):
    w = wshub()
    c = RawWS(w.port)
    c.send_text(json.dumps({"type": "subscribe", "channel": "news", "id": 1}))
    assert c.recv_json()["type"] == "subscribed"
    for _ in range(3):
        w.signal(signal.SIGHUP)
        time.sleep(0.1)
    assert w.proc.poll() is None
    assert w.publish("news", '{"after":"hup"}')[0] == 200
    msg = c.recv_json()
    assert msg["type"] == "message" and msg["data"] == {"after": "hup"}
    assert any("SIGHUP" in r for _, r in text_events(w))


# -------------------------------------------------------------- TLS

def make_cert(d, name, cn):
    cert, key = os.path.join(d, name + ".crt"), os.path.join(d, name + ".key")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes",
         "-keyout", key, "-out", cert, "-days", "2", "-subj", "/CN=" + cn,
         "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
        check=True, capture_output=True)
    return cert, key


def client_ctx(cert):
    ctx = ssl.create_default_context(cafile=cert)
    return ctx


def https(port, method, path, ctx, body=None):
    req = urllib.request.Request("https://127.0.0.1:%d%s" % (port, path),
                                 data=body, method=method)
    with urllib.request.urlopen(req, timeout=5, context=ctx) as r:
        return r.status, r.read()


def served_cert_pem(port):
    return ssl.get_server_certificate(("127.0.0.1", port))


def same_cert(pem_a, path_b):
    with open(path_b) as f:
        return ssl.PEM_cert_to_DER_cert(pem_a) == \
            ssl.PEM_cert_to_DER_cert(f.read())


def test_tls_websocket_and_https_publish(wshub, tmp_path):
    cert, key = make_cert(str(tmp_path), "a", "wshub-test-a")
    w = wshub("--tls-cert", cert, "--tls-key", key)
    ctx = client_ctx(cert)

    async def go():
        url = "wss://127.0.0.1:%d/ws" % w.port
        async with websockets.connect(url, ssl=ctx) as ws:
            await ws.send(json.dumps({"type": "subscribe", "channel": "news",
                                      "id": 1}))
            rep = json.loads(await asyncio.wait_for(ws.recv(), 5))
            assert rep == {"type": "subscribed", "channel": "news", "id": 1}
            loop = asyncio.get_running_loop()
            status, body = await loop.run_in_executor(None, lambda: https(
                w.port, "POST", "/publish", ctx,
                b'{"channel":"news","data":{"over":"tls"}}'))
            assert status == 200 and json.loads(body) == {"ok": True}
            msg = json.loads(await asyncio.wait_for(ws.recv(), 5))
            assert msg == {"type": "message", "channel": "news",
                           "data": {"over": "tls"}}
            # A bigger burst through SSL_write (partial records, spans).
            for i in range(200):
                await ws.send(json.dumps({"type": "publish",
                                          "channel": "news",
                                          "data": {"i": i, "pad": "x" * 900}}))
            got = 0
            while got < 200:
                m = json.loads(await asyncio.wait_for(ws.recv(), 5))
                if m["type"] == "message":
                    assert m["data"]["i"] == got
                    got += 1
    run(go())
    assert https(w.port, "GET", "/healthz", ctx) == (200, b"ok")
    start = [r for _, r in text_events(w) if r.startswith("listening")]
    assert "scheme=https" in start[0]


def test_plain_http_on_tls_port_refused_cleanly(wshub, tmp_path):
    cert, key = make_cert(str(tmp_path), "a", "wshub-test-a")
    w = wshub("--tls-cert", cert, "--tls-key", key)
    ctx = client_ctx(cert)
    fds0 = https(w.port, "GET", "/metrics", ctx)
    for _ in range(20):
        s = socket.create_connection(("127.0.0.1", w.port), 2)
        s.settimeout(3)
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        t0 = time.monotonic()
        try:
            data = s.recv(4096)
        except ConnectionResetError:
            data = b""
        assert time.monotonic() - t0 < 2.5  # no hang
        assert not data.startswith(b"HTTP/")  # nothing served in clear
        s.close()
    assert fds0[0] == 200
    assert w.proc.poll() is None

    def fds():
        body = https(w.port, "GET", "/metrics", ctx)[1].decode()
        return float([ln for ln in body.splitlines()
                      if ln.startswith("process_open_fds ")][0].split()[1])
    wait_for(lambda: fds() <= 12, 3, what="no fd leak")
    assert https(w.port, "GET", "/healthz", ctx) == (200, b"ok")


def test_tls_handshake_timeout(wshub, tmp_path):
    """A client that never finishes its TLS handshake is dropped by
    --handshake-timeout, like one that never upgrades."""
    cert, key = make_cert(str(tmp_path), "a", "wshub-test-a")
    w = wshub("--tls-cert", cert, "--tls-key", key,
              "--handshake-timeout", "0.5")
    silent = socket.create_connection(("127.0.0.1", w.port), 2)
    partial = socket.create_connection(("127.0.0.1", w.port), 2)
    partial.sendall(b"\x16\x03\x01\x02\x00\x01")  # a ClientHello, cut
    for s in (silent, partial):
        s.settimeout(3)
        t0 = time.monotonic()
        try:
            assert s.recv(100) == b""
        except ConnectionResetError:
            pass
        assert time.monotonic() - t0 < 2.5
        s.close()
    assert w.proc.poll() is None


def test_tls_reload_on_sighup(wshub, tmp_path):
    d = str(tmp_path)
    cert_a, key_a = make_cert(d, "a", "wshub-test-a")
    cert_b, key_b = make_cert(d, "b", "wshub-test-b")
    cert, key = os.path.join(d, "live.crt"), os.path.join(d, "live.key")
    for src, dst in ((cert_a, cert), (key_a, key)):
        with open(src, "rb") as f, open(dst, "wb") as g:
            g.write(f.read())
    w = wshub("--tls-cert", cert, "--tls-key", key)
    assert same_cert(served_cert_pem(w.port), cert_a)
    c = RawWSOverTLS(w.port, cert_a)  # an open connection keeps working
    for src, dst in ((cert_b, cert), (key_b, key)):
        with open(src, "rb") as f, open(dst, "wb") as g:
            g.write(f.read())
    w.signal(signal.SIGHUP)
    wait_for(lambda: same_cert(served_cert_pem(w.port), cert_b), 3,
             what="the new certificate served")
    assert any(r.startswith("tls certificate reloaded")
               for _, r in text_events(w))
    # A failed reload (a broken file) keeps the current one.
    with open(cert, "w") as f:
        f.write("not a certificate\n")
    w.signal(signal.SIGHUP)
    wait_for(lambda: any(lvl == "error" and r.startswith("tls reload failed")
                         for lvl, r in text_events(w)), 3,
             what="the failure logged")
    assert w.proc.poll() is None
    assert same_cert(served_cert_pem(w.port), cert_b)
    assert w.publish_tls("news", cert_b) == 200
    assert c.recv_message() == {"n": 1}
    c.close()


class RawWSOverTLS:
    """A tiny blocking wss:// subscriber of channel news."""

    def __init__(self, port, cert):
        async def connect():
            return await websockets.connect(
                "wss://127.0.0.1:%d/ws" % port, ssl=client_ctx(cert))
        self.loop = asyncio.new_event_loop()
        self.ws = self.loop.run_until_complete(connect())
        self.loop.run_until_complete(self.ws.send(json.dumps(
            {"type": "subscribe", "channel": "news"})))
        rep = json.loads(self.loop.run_until_complete(self.ws.recv()))
        assert rep["type"] == "subscribed"

    def recv_message(self):
        m = json.loads(self.loop.run_until_complete(
            asyncio.wait_for(self.ws.recv(), 5)))
        assert m["type"] == "message"
        return m["data"]

    def close(self):
        self.loop.run_until_complete(self.ws.close())
        self.loop.close()


def _publish_tls(self, channel, cert):
    return https(self.port, "POST", "/publish", client_ctx(cert),
                 ('{"channel":"%s","data":{"n":1}}' % channel).encode())[0]


def _install():
    import conftest
    conftest.Wshub.publish_tls = _publish_tls


_install()


def test_bad_tls_files_refused(tmp_path):
    d = str(tmp_path)
    cert_a, key_a = make_cert(d, "a", "a")
    cert_b, key_b = make_cert(d, "b", "b")
    listen = ["--listen", "127.0.0.1:%d" % free_port()]
    r = run_wshub(listen + ["--tls-cert", os.path.join(d, "missing.crt"),
                            "--tls-key", key_a])
    assert r.returncode != 0 and "--tls-cert" in r.stderr, r.stderr
    r = run_wshub(listen + ["--tls-cert", cert_a, "--tls-key", key_b])
    assert r.returncode != 0 and "does not match" in r.stderr, r.stderr
    r = run_wshub(listen + ["--tls-cert", cert_a])
    assert r.returncode != 0 and "--tls-key" in r.stderr, r.stderr


# -------------------------------------------------- duplicate instance ids

def test_duplicate_instance_id_refused(wshub, redis_server):
    w = wshub("--redis", redis_server.url, "--instance-id", "twin")
    r = redis_server.client()
    wait_for(lambda: w.http("GET", "/healthz")[0] == 200, 5, what="up")
    wait_for(lambda: r.exists("ws:instance:twin"), 3, what="instance key")
    value = r.get("ws:instance:twin")
    res = run_wshub(["--listen", "127.0.0.1:%d" % free_port(),
                     "--redis", redis_server.url, "--instance-id", "twin"])
    assert res.returncode != 0
    assert "instance id in use" in res.stderr and "twin" in res.stderr
    assert "ws:instance:twin" in res.stderr and "ttl_s=" in res.stderr
    # The live instance's key is untouched and it still serves.
    assert r.exists("ws:instance:twin")
    assert json.loads(r.get("ws:instance:twin"))["instance_id"] == "twin"
    assert 0 < r.ttl("ws:instance:twin") <= 30
    assert json.loads(value)["instance_id"] == "twin"
    assert w.proc.poll() is None and w.http("GET", "/healthz")[0] == 200
    # A free id is claimed before serving: the key exists once it serves.
    w2 = wshub("--redis", redis_server.url, "--instance-id", "other")
    assert w2.http("GET", "/healthz")[0] == 200  # answered: it serves
    assert r.exists("ws:instance:other")
    # With the registry off there is nothing to claim.
    w3 = wshub("--redis", redis_server.url, "--instance-id", "twin",
               "--registry", "off")
    assert w3.http("GET", "/healthz")[0] == 200


def test_claimed_key_survives_refused_process_shutdown(wshub, redis_server):
    """The refused process exits; a graceful stop of the live one still
    deletes its own key (it owns it)."""
    w = wshub("--redis", redis_server.url, "--instance-id", "solo")
    r = redis_server.client()
    wait_for(lambda: r.exists("ws:instance:solo"), 5, what="instance key")
    res = run_wshub(["--listen", "127.0.0.1:%d" % free_port(),
                     "--redis", redis_server.url, "--instance-id", "solo"])
    assert res.returncode != 0
    time.sleep(0.3)
    assert r.exists("ws:instance:solo")
    w.signal(signal.SIGTERM)
    assert w.wait(15) == 0
    assert not r.exists("ws:instance:solo")


# ------------------------------------------------------------- smaller

def test_hours_accepted(wshub):
    w = wshub("--ping-interval", "1h", "--pong-timeout", "2h",
              "--shutdown-timeout", "1h")
    assert w.http("GET", "/healthz")[0] == 200


def test_pong_timeout_below_ping_interval_refused():
    r = run_wshub(["--listen", "127.0.0.1:%d" % free_port(),
                   "--ping-interval", "30", "--pong-timeout", "10"])
    assert r.returncode == 2
    assert "--pong-timeout" in r.stderr and "--ping-interval" in r.stderr


def test_overridden_env_var_not_parsed(wshub):
    # conftest passes --listen: a bad WSHUB_LISTEN must not matter.
    w = wshub("--max-queue-msgs", "8",
              env={"WSHUB_LISTEN": "not-an-address",
                   "WSHUB_MAX_QUEUE_MSGS": "many"})
    assert w.http("GET", "/healthz")[0] == 200
    # Without the flag the variable is used, and checked.
    r = run_wshub([], env={"WSHUB_LISTEN": "not-an-address"})
    assert r.returncode != 0 and "WSHUB_LISTEN" in r.stderr


def test_help_points_at_docs():
    r = run_wshub(["--help"])
    assert r.returncode == 0
    assert "docs/operations.md" in r.stdout and "docs/protocol.md" in r.stdout
    assert "CONTRACT.md" not in r.stdout
    for flag in ("--tls-cert", "--tls-key", "--log-level", "--log-format",
                 "--version", "WSHUB_DEBUG"):
        assert flag in r.stdout
