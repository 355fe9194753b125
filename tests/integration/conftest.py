"""Fixtures for the integration tests: real redis-server and build/wshub
processes on free loopback ports, started here and stopped by pid.

Tests are plain functions; the asynchronous WebSocket clients
(python3-websockets 10.4) run inside asyncio.run() so no pytest plugin
is needed.
"""
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request

import pytest
import redis as redis_mod

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
WSHUB = os.environ.get("WSHUB_BIN", os.path.join(ROOT, "build", "wshub"))


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_for(pred, timeout=5.0, interval=0.02, what="condition"):
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for %s" % what)
        time.sleep(interval)


def http(port, method, path, body=None, timeout=5.0):
    """Returns (status, body bytes)."""
    req = urllib.request.Request(
        "http://127.0.0.1:%d%s" % (port, path), data=body, method=method)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def metrics(port):
    status, body = http(port, "GET", "/metrics")
    assert status == 200
    out = {}
    for line in body.decode().splitlines():
        if not line or line.startswith("#"):
            continue
        name, value = line.rsplit(" ", 1)
        out[name] = float(value)
    return out


class RedisServer:
    def __init__(self, tmpdir):
        self.port = free_port()
        self.tmpdir = tmpdir
        self.proc = None
        self.start()

    @property
    def url(self):
        return "redis://127.0.0.1:%d" % self.port

    def start(self):
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
             "--save", "", "--appendonly", "no", "--dir", self.tmpdir,
             "--loglevel", "warning"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(self._ping, 5.0, what="redis-server")

    def _ping(self):
        try:
            return self.client().ping()
        except redis_mod.exceptions.ConnectionError:
            return False

    def client(self):
        return redis_mod.Redis(host="127.0.0.1", port=self.port,
                               socket_timeout=5)

    def numsub(self, channel):
        return dict(self.client().pubsub_numsub(channel))[channel.encode()]

    def kill(self):
        if self.proc and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def stop(self):
        self.kill()


class Wshub:
    def __init__(self, args, env=None, log=None):
        self.port = free_port()
        self.args = ["--listen", "127.0.0.1:%d" % self.port] + list(args)
        self.log_path = log
        self.logf = open(log, "wb") if log else subprocess.DEVNULL
        full_env = dict(os.environ)
        full_env.update(env or {})
        self.proc = subprocess.Popen([WSHUB] + self.args,
                                     stdout=self.logf, stderr=self.logf,
                                     env=full_env)
        wait_for(self._ready, 5.0, what="wshub on port %d" % self.port)

    def _ready(self):
        if self.proc.poll() is not None:
            raise AssertionError("wshub exited with %s" % self.proc.returncode)
        try:
            with socket.create_connection(("127.0.0.1", self.port), 0.2):
                return True
        except OSError:
            return False

    @property
    def ws_url(self):
        return "ws://127.0.0.1:%d/ws" % self.port

    def http(self, method, path, body=None):
        return http(self.port, method, path, body)

    def publish(self, channel, data_json):
        body = ('{"channel":"%s","data":%s}' % (channel, data_json)).encode()
        return self.http("POST", "/publish", body)

    def metrics(self):
        return metrics(self.port)

    def signal(self, sig):
        os.kill(self.proc.pid, sig)

    def wait(self, timeout=15):
        return self.proc.wait(timeout)

    def stop(self):
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        if self.logf is not subprocess.DEVNULL:
            self.logf.close()


@pytest.fixture
def redis_server(tmp_path):
    r = RedisServer(str(tmp_path))
    yield r
    r.stop()


@pytest.fixture
def wshub(tmp_path):
    """A factory: wshub(*args, env=None) starts an instance."""
    started = []

    def start(*args, env=None):
        w = Wshub(args, env=env,
                  log=str(tmp_path / ("wshub%d.log" % len(started))))
        started.append(w)
        return w

    yield start
    for w in started:
        w.stop()
