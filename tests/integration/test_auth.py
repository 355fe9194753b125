"""Authentication and channel permissions (CONTRACT.md, "Authentication
and channel permissions") against real build/wshub processes: every
bad-token case, both token transports, HS256 / RS256 / ES256 (keys made
with openssl here), grants, refresh, 4001, origins, the API key, the
registry's "user", and Redis with a password, an ACL user and a unix
socket.  Tokens are minted with python3-jwt, or by hand where it refuses
(an HS256 token signed with an RSA public key, the confusion attack)."""
import asyncio
import base64
import hashlib
import hmac
import json
import os
import socket
import subprocess
import time

import jwt
import pytest
import websockets

from conftest import RedisServer, free_port, wait_for

SECRET = "test-secret-0123456789"


def b64u(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def hs256_by_hand(claims, key_bytes, alg="HS256"):
    head = b64u(json.dumps({"alg": alg, "typ": "JWT"}).encode())
    body = b64u(json.dumps(claims).encode())
    sig = hmac.new(key_bytes, ("%s.%s" % (head, body)).encode(),
                   hashlib.sha256).digest()
    return "%s.%s.%s" % (head, body, b64u(sig))


def mint(claims, key=SECRET, alg="HS256"):
    return jwt.encode(claims, key, algorithm=alg)


def raw_upgrade(port, path="/ws", headers=()):
    """The raw answer to an upgrade: (status, body)."""
    req = ("GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
           "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ=="
           "\r\nSec-WebSocket-Version: 13\r\n" % path)
    for h in headers:
        req += h + "\r\n"
    req += "\r\n"
    with socket.create_connection(("127.0.0.1", port), 5) as s:
        s.sendall(req.encode())
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        status = int(head.split(b" ")[1])
        if status != 101:
            length = 0
            for line in head.split(b"\r\n")[1:]:
                k, _, v = line.partition(b":")
                if k.strip().lower() == b"content-length":
                    length = int(v)
            while len(body) < length:
                chunk = s.recv(65536)
                if not chunk:
                    break
                body += chunk
        return status, body


def expect_401(port, token=None, reason=None, headers=()):
    path = "/ws" if token is None else "/ws?token=" + token
    status, body = raw_upgrade(port, path, headers)
    assert status == 401, (status, body)
    err = json.loads(body)["error"]
    assert isinstance(err, str) and err
    if reason is not None:
        assert err == reason, err
    return err


def now():
    return int(time.time())


async def recv_json(ws, timeout=5.0):
    return json.loads(await asyncio.wait_for(ws.recv(), timeout))


async def request(ws, msg, timeout=5.0):
    """Sends |msg| and returns the first reply (skipping message frames)."""
    await ws.send(json.dumps(msg))
    while True:
        r = await recv_json(ws, timeout)
        if r.get("type") != "message":
            return r


def run(coro):
    return asyncio.run(coro)


@pytest.fixture
def keys(tmp_path):
    """RSA and EC P-256 key pairs made with openssl."""
    out = {}
    rsa = tmp_path / "rsa.pem"
    ec = tmp_path / "ec.pem"
    subprocess.run(["openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt",
                    "rsa_keygen_bits:2048", "-out", str(rsa)], check=True,
                   capture_output=True)
    subprocess.run(["openssl", "ecparam", "-name", "prime256v1", "-genkey",
                    "-noout", "-out", str(ec)], check=True,
                   capture_output=True)
    for name, path in (("rsa", rsa), ("ec", ec)):
        pub = tmp_path / (name + ".pub")
        subprocess.run(["openssl", "pkey", "-in", str(path), "-pubout",
                        "-out", str(pub)], check=True, capture_output=True)
        out[name] = (path.read_text(), str(pub))
    return out


# ------------------------------------------------------------- tokens

def test_bad_tokens_get_401_and_no_upgrade(wshub):
    w = wshub("--token-secret", SECRET)
    p = w.port
    expect_401(p, None, "missing token")
    expect_401(p, "garbage", "malformed token")
    expect_401(p, "a.b.c")
    expect_401(p, mint({"sub": "a"}, key="wrong-secret"), "bad signature")
    # A good signature over a changed payload.
    good = mint({"sub": "a"})
    head, _, rest = good.partition(".")
    _, _, sig = rest.partition(".")
    forged = "%s.%s.%s" % (head, b64u(b'{"sub":"root"}'), sig)
    expect_401(p, forged, "bad signature")
    expect_401(p, mint({"sub": "a", "exp": now() - 5}), "token expired")
    expect_401(p, mint({"sub": "a", "nbf": now() + 300}),
               "token not yet valid")
    expect_401(p, jwt.encode({"sub": "a"}, None, algorithm="none"),
               "algorithm not allowed")
    # alg none with a signature of the right kind attached.
    none_hdr = b64u(b'{"alg":"none","typ":"JWT"}')
    expect_401(p, none_hdr + good[good.index("."):], "algorithm not allowed")
    expect_401(p, mint({"sub": "a"}, alg="HS512"), "algorithm not allowed")
    expect_401(p, mint({"exp": now() + 60}), "missing sub")
    expect_401(p, mint({"sub": 7}))
    expect_401(p, mint({"sub": ""}))
    expect_401(p, mint({"sub": "x" * 129}))
    expect_401(p, mint({"sub": "a", "subscribe": "news"}))
    # Bearer transport gets the same checks.
    expect_401(p, None, "bad signature",
               headers=("Authorization: Bearer " +
                        mint({"sub": "a"}, key="nope"),))
    status, _ = raw_upgrade(p, "/ws?token=" + mint({"sub": "x" * 128}))
    assert status == 101


def test_both_token_transports(wshub):
    w = wshub("--token-secret", SECRET)
    tok = mint({"sub": "alice", "subscribe": ["news"], "exp": now() + 60})

    async def go():
        async with websockets.connect(w.ws_url + "?token=" + tok) as ws:
            r = await request(ws, {"type": "subscribe", "channel": "news",
                                   "id": 1})
            assert r == {"type": "subscribed", "channel": "news", "id": 1}
        async with websockets.connect(
                w.ws_url,
                extra_headers={"Authorization": "Bearer " + tok}) as ws:
            r = await request(ws, {"type": "subscribe", "channel": "news",
                                   "id": 2})
            assert r["type"] == "subscribed"
    run(go())


def test_rs256_key(wshub, keys):
    priv, pub = keys["rsa"]
    w = wshub("--token-key", pub)
    status, _ = raw_upgrade(w.port, "/ws?token=" +
                            mint({"sub": "a"}, key=priv, alg="RS256"))
    assert status == 101
    # The algorithm-confusion attack: HS256 "signed" with the public key.
    confused = hs256_by_hand({"sub": "a"}, open(pub, "rb").read())
    expect_401(w.port, confused, "algorithm not allowed")
    expect_401(w.port, mint({"sub": "a"}, key=SECRET), "algorithm not allowed")
    ec_priv, _ = keys["ec"]
    expect_401(w.port, mint({"sub": "a"}, key=ec_priv, alg="ES256"),
               "algorithm not allowed")
    other = subprocess.run(["openssl", "genpkey", "-algorithm", "RSA",
                            "-pkeyopt", "rsa_keygen_bits:2048"],
                           check=True, capture_output=True).stdout.decode()
    expect_401(w.port, mint({"sub": "a"}, key=other, alg="RS256"),
               "bad signature")
    expect_401(w.port, jwt.encode({"sub": "a"}, None, algorithm="none"),
               "algorithm not allowed")


def test_es256_key(wshub, keys):
    priv, pub = keys["ec"]
    w = wshub("--token-key", pub)
    tok = mint({"sub": "a", "subscribe": ["*"], "exp": now() + 60},
               key=priv, alg="ES256")

    async def go():
        async with websockets.connect(w.ws_url + "?token=" + tok) as ws:
            r = await request(ws, {"type": "subscribe", "channel": "x"})
            assert r["type"] == "subscribed"
    run(go())
    confused = hs256_by_hand({"sub": "a"}, open(pub, "rb").read())
    expect_401(w.port, confused, "algorithm not allowed")
    rsa_priv, _ = keys["rsa"]
    expect_401(w.port, mint({"sub": "a"}, key=rsa_priv, alg="RS256"),
               "algorithm not allowed")


def test_bad_key_file_refused_at_start(tmp_path):
    from conftest import WSHUB
    bad = tmp_path / "bad.pem"
    bad.write_text("not a key\n")
    r = subprocess.run([WSHUB, "--listen", "127.0.0.1:%d" % free_port(),
                        "--token-key", str(bad)], capture_output=True,
                       timeout=10)
    assert r.returncode == 2
    assert b"token-key" in r.stderr


# ------------------------------------------------------------- grants

def test_grants_and_permission_denied(wshub):
    w = wshub("--token-secret", SECRET)
    tok = mint({"sub": "alice", "subscribe": ["news.*", "user:{sub}"],
                "publish": ["chat"]})
    tok_none = mint({"sub": "bob"})

    async def go():
        async with websockets.connect(w.ws_url + "?token=" + tok) as ws:
            for ch, ok in (("news.sport", True), ("news", False),
                           ("user:alice", True), ("user:bob", False),
                           ("user:alice2", False)):
                r = await request(ws, {"type": "subscribe", "channel": ch,
                                       "id": 7})
                if ok:
                    assert r == {"type": "subscribed", "channel": ch, "id": 7}
                else:
                    assert r == {"type": "error", "id": 7,
                                 "error": "permission denied"}
            r = await request(ws, {"type": "publish", "channel": "news.sport",
                                   "data": 1, "id": 8})
            assert r == {"type": "error", "id": 8,
                         "error": "permission denied"}
            r = await request(ws, {"type": "publish", "channel": "chat",
                                   "data": 1, "id": 9})
            assert r["type"] == "published"
        async with websockets.connect(w.ws_url + "?token=" + tok_none) as ws:
            # An absent claim grants nothing.
            r = await request(ws, {"type": "subscribe", "channel": "a"})
            assert r["error"] == "permission denied"
            r = await request(ws, {"type": "publish", "channel": "a",
                                   "data": 1})
            assert r["error"] == "permission denied"
    run(go())


def test_delivery_with_grants(wshub):
    w = wshub("--token-secret", SECRET)
    sub = mint({"sub": "s", "subscribe": ["room.*"]})
    pub = mint({"sub": "p", "publish": ["room.*"]})

    async def go():
        async with websockets.connect(w.ws_url + "?token=" + sub) as a, \
                websockets.connect(w.ws_url + "?token=" + pub) as b:
            r = await request(a, {"type": "subscribe", "channel": "room.1"})
            assert r["type"] == "subscribed"
            r = await request(b, {"type": "publish", "channel": "room.1",
                                  "data": {"x": 1}})
            assert r["type"] == "published"
            m = await recv_json(a)
            assert m == {"type": "message", "channel": "room.1",
                         "data": {"x": 1}}
    run(go())


# ------------------------------------------------------ expiry, refresh

def test_expiry_closes_4001(wshub):
    w = wshub("--token-secret", SECRET)
    tok = mint({"sub": "a", "subscribe": ["*"], "exp": now() + 2})

    async def go():
        t0 = time.monotonic()
        async with websockets.connect(w.ws_url + "?token=" + tok) as ws:
            with pytest.raises(websockets.ConnectionClosed):
                while True:
                    await asyncio.wait_for(ws.recv(), 10)
            assert ws.close_code == 4001
            assert ws.close_reason == "token expired"
        assert time.monotonic() - t0 < 4.5
    run(go())
    m = w.metrics()
    assert m['wshub_evictions_total{reason="token_expired"}'] == 1


def test_refresh(wshub):
    w = wshub("--token-secret", SECRET, "--api-key", "k")

    def publish(ch, data):
        body = ('{"channel":"%s","data":%s}' % (ch, data)).encode()
        assert http_auth(w.port, "POST", "/publish", body, "k")[0] == 200

    exp = now() + 3
    tok = mint({"sub": "alice", "subscribe": ["news", "sport"], "exp": exp})

    async def go():
        async with websockets.connect(w.ws_url + "?token=" + tok) as ws:
            for ch in ("news", "sport"):
                r = await request(ws, {"type": "subscribe", "channel": ch})
                assert r["type"] == "subscribed"
            # Failures change nothing: another sub, a bad signature,
            # garbage, an expired token.
            for bad, why in (
                    (mint({"sub": "mallory", "subscribe": ["*"]}),
                     "token sub does not match"),
                    (mint({"sub": "alice"}, key="x"), "bad signature"),
                    ("garbage", "malformed token"),
                    (mint({"sub": "alice", "exp": now() - 1}),
                     "token expired")):
                r = await request(ws, {"type": "refresh", "token": bad,
                                       "id": 3})
                assert r == {"type": "error", "id": 3, "error": why}
            r = await request(ws, {"type": "subscribe", "channel": "sport"})
            assert r["type"] == "subscribed"
            # A good one: narrower grants, a later exp.
            fresh = mint({"sub": "alice", "subscribe": ["news"],
                          "exp": exp + 3})
            await ws.send(json.dumps({"type": "refresh", "token": fresh,
                                      "id": 4}))
            assert await recv_json(ws) == {"type": "refreshed", "id": 4}
            assert await recv_json(ws) == {
                "type": "unsubscribed", "channel": "sport",
                "reason": "permission denied"}
            publish("sport", '{"n":1}')
            publish("news", '{"n":2}')
            m = await recv_json(ws)
            assert m == {"type": "message", "channel": "news",
                         "data": {"n": 2}}
            r = await request(ws, {"type": "subscribe", "channel": "sport"})
            assert r["error"] == "permission denied"
            # Open past the first exp, closed at the second.
            t0 = time.time()
            with pytest.raises(websockets.ConnectionClosed):
                while True:
                    await asyncio.wait_for(ws.recv(), 15)
            assert ws.close_code == 4001
            assert time.time() >= exp + 2
    run(go())


def test_refresh_without_auth_is_unknown(wshub):
    w = wshub()

    async def go():
        async with websockets.connect(w.ws_url) as ws:
            r = await request(ws, {"type": "refresh", "token": "x", "id": 1})
            assert r == {"type": "error", "id": 1, "error": "unknown type"}
    run(go())


# ------------------------------------------------- origins, the API key

def test_allowed_origins(wshub):
    w = wshub("--allowed-origins",
              "https://app.example.com, http://localhost:3000")
    assert raw_upgrade(w.port, headers=("Origin: https://app.example.com",)
                       )[0] == 101
    assert raw_upgrade(w.port, headers=("Origin: http://localhost:3000",)
                       )[0] == 101
    status, body = raw_upgrade(w.port,
                               headers=("Origin: http://evil.example",))
    assert status == 403
    assert json.loads(body)["error"]
    assert raw_upgrade(w.port, headers=("Origin: https://app.example.com.evil",)
                       )[0] == 403
    assert raw_upgrade(w.port)[0] == 101  # no Origin: not refused


def test_origins_checked_with_auth(wshub):
    w = wshub("--token-secret", SECRET, "--allowed-origins", "https://a.b")
    tok = mint({"sub": "a"})
    assert raw_upgrade(w.port, "/ws?token=" + tok,
                       ("Origin: https://x.y",))[0] == 403
    assert raw_upgrade(w.port, "/ws?token=" + tok,
                       ("Origin: https://a.b",))[0] == 101


def http_auth(port, method, path, body=None, key=None):
    import urllib.request
    import urllib.error
    req = urllib.request.Request("http://127.0.0.1:%d%s" % (port, path),
                                 data=body, method=method)
    if key is not None:
        req.add_header("Authorization", "Bearer " + key)
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def test_api_key(wshub):
    w = wshub("--api-key", "k3y")
    body = b'{"channel":"news","data":1}'
    assert http_auth(w.port, "POST", "/publish", body)[0] == 401
    assert http_auth(w.port, "POST", "/publish", body, "wrong")[0] == 401
    assert http_auth(w.port, "POST", "/publish", body, "k3y")[0] == 200
    assert http_auth(w.port, "POST", "/publish", body, "k3yk3y")[0] == 401
    st, b = http_auth(w.port, "GET", "/history?channel=news")
    assert st == 401 and json.loads(b)["error"]
    for path in ("/healthz", "/metrics", "/"):
        assert http_auth(w.port, "GET", path)[0] == 200
    # WebSocket clients are not asked for the API key (auth is off).
    assert raw_upgrade(w.port)[0] == 101


def test_api_403_with_auth_and_no_key(wshub):
    w = wshub("--token-secret", SECRET)
    body = b'{"channel":"news","data":1}'
    st, b = http_auth(w.port, "POST", "/publish", body)
    assert st == 403 and json.loads(b)["error"]
    assert http_auth(w.port, "POST", "/publish", body, SECRET)[0] == 403
    assert http_auth(w.port, "GET", "/history?channel=x")[0] == 403
    for path in ("/healthz", "/metrics", "/"):
        assert http_auth(w.port, "GET", path)[0] == 200
    w2 = wshub("--token-secret", SECRET, "--api-key", "k")
    assert http_auth(w2.port, "POST", "/publish", body, "k")[0] == 200
    assert http_auth(w2.port, "POST", "/publish", body)[0] == 401


def test_help_lists_flags():
    from conftest import WSHUB
    out = subprocess.run([WSHUB, "--help"], capture_output=True,
                         timeout=10).stdout.decode()
    for flag in ("--token-secret", "--token-key", "--api-key",
                 "--allowed-origins"):
        assert flag in out


# --------------------------------------------------------------- Redis

def test_registry_holds_user(wshub, redis_server):
    w = wshub("--redis", redis_server.url, "--token-secret", SECRET,
              "--instance-id", "auth1")
    wait_for(lambda: w.http("GET", "/healthz")[0] == 200, 10, what="up")
    tok = mint({"sub": "alice", "subscribe": ["*"]})

    async def go():
        async with websockets.connect(w.ws_url + "?token=" + tok) as ws:
            await request(ws, {"type": "subscribe", "channel": "x"})
            r = redis_server.client()
            v = wait_for(lambda: r.get("ws:conn:auth1:1"), 5, what="conn key")
            doc = json.loads(v)
            assert doc["user"] == "alice"
            assert doc["conn_id"] == "auth1:1"
    run(go())


class AuthRedis(RedisServer):
    """redis-server with a password, an ACL user, or on a unix socket."""

    def __init__(self, tmpdir, extra, unixsocket=None):
        self.extra = extra
        self.unixsocket = unixsocket
        super().__init__(tmpdir)

    def start(self):
        args = ["redis-server", "--port",
                "0" if self.unixsocket else str(self.port),
                "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                "--dir", self.tmpdir, "--loglevel", "warning"] + self.extra
        if self.unixsocket:
            args += ["--unixsocket", self.unixsocket, "--unixsocketperm",
                     "700"]
        self.proc = __import__("subprocess").Popen(
            args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(lambda: self.proc.poll() is None and self._up(), 5,
                 what="redis-server")

    def _up(self):
        if self.unixsocket:
            return os.path.exists(self.unixsocket)
        try:
            with socket.create_connection(("127.0.0.1", self.port), 0.2):
                return True
        except OSError:
            return False


def pubsub_works(w):
    tok = None

    async def go():
        async with websockets.connect(w.ws_url) as ws:
            r = await request(ws, {"type": "subscribe", "channel": "c"})
            assert r["type"] == "subscribed"
            assert w.publish("c", '{"v":1}')[0] == 200
            m = await recv_json(ws)
            assert m["data"] == {"v": 1}
    run(go())
    return tok


def test_redis_requirepass(wshub, tmp_path):
    r = AuthRedis(str(tmp_path), ["--requirepass", "s3cret"])
    try:
        w = wshub("--redis", "redis://:s3cret@127.0.0.1:%d" % r.port)
        wait_for(lambda: w.http("GET", "/healthz")[0] == 200, 10,
                 what="backplane up")
        pubsub_works(w)
        bad = wshub("--redis", "redis://:wrong@127.0.0.1:%d" % r.port)
        time.sleep(1.0)
        assert bad.http("GET", "/healthz")[0] == 503
        log = open(bad.log_path, "rb").read().decode()
        assert "AUTH refused" in log, log
        # It keeps retrying with backoff (more than one attempt logged).
        wait_for(lambda: open(bad.log_path, "rb").read().decode().count(
            "AUTH refused") >= 2, 10, what="a retry")
        assert bad.proc.poll() is None
    finally:
        r.stop()


def test_redis_acl_user(wshub, tmp_path):
    r = AuthRedis(str(tmp_path), [
        "--user", "default", "off",
        "--user", "hub", "on", ">hubpw", "~*", "&*", "+@all"])
    try:
        w = wshub("--redis", "redis://hub:hubpw@127.0.0.1:%d" % r.port)
        wait_for(lambda: w.http("GET", "/healthz")[0] == 200, 10,
                 what="backplane up")
        pubsub_works(w)
        bad = wshub("--redis", "redis://hub:nope@127.0.0.1:%d" % r.port)
        wait_for(lambda: "AUTH refused" in open(bad.log_path, "rb").read()
                 .decode(), 10, what="AUTH refused logged")
        assert bad.http("GET", "/healthz")[0] == 503
    finally:
        r.stop()


def test_redis_unix_socket(wshub, tmp_path):
    sock = str(tmp_path / "redis.sock")
    r = AuthRedis(str(tmp_path), [], unixsocket=sock)
    try:
        w = wshub("--redis", "unix://" + sock, "--instance-id", "u1")
        wait_for(lambda: w.http("GET", "/healthz")[0] == 200, 10,
                 what="backplane up")
        pubsub_works(w)
        import redis as redis_mod
        c = redis_mod.Redis(unix_socket_path=sock)
        wait_for(lambda: c.exists("ws:instance:u1"), 5, what="instance key")
    finally:
        r.stop()


def test_bad_redis_urls_refused(tmp_path):
    from conftest import WSHUB
    for url in ("redis://user@127.0.0.1:1", "unix://relative.sock",
                "redis://:@127.0.0.1:1", "http://x"):
        r = subprocess.run([WSHUB, "--listen", "127.0.0.1:%d" % free_port(),
                            "--redis", url], capture_output=True, timeout=10)
        assert r.returncode == 2, url


def test_flags_from_env(wshub):
    w = wshub(env={"WSHUB_TOKEN_SECRET": SECRET, "WSHUB_API_KEY": "ek",
                   "WSHUB_ALLOWED_ORIGINS": "https://ok.example"})
    expect_401(w.port, None, "missing token")
    assert raw_upgrade(w.port, "/ws?token=" + mint({"sub": "a"}))[0] == 101
    assert raw_upgrade(w.port, "/ws?token=" + mint({"sub": "a"}),
                       ("Origin: https://bad.example",))[0] == 403
    body = b'{"channel":"n","data":1}'
    assert http_auth(w.port, "POST", "/publish", body, "ek")[0] == 200
    assert http_auth(w.port, "POST", "/publish", body)[0] == 401
