#!/usr/bin/python3
"""What TLS costs the server: per handshake and per delivery, next to
plain TCP (issue 12).  `make bench BENCH_ARGS='--only T'` runs it
(scenario T of bench/run.py); it also runs alone:

  bench/tls_cost.py --wshub build/wshub [--subs 10000] [--msgs 200]
                    [--handshakes 1000] [--key rsa|ec]

The C load generator (bench/loadgen.c) has no TLS client, so this script
drives the server with Python's asyncio + ssl instead.  Only the
server's cost is measured: its run time from /proc/PID/schedstat (ns)
and utime+stime from /proc/PID/stat, over each phase.  The client may be
slow; that stretches a phase, it does not add server CPU.

Per handshake: --handshakes connections, 32 at a time, each TCP connect
(+ TLS handshake) + WebSocket upgrade + close.  Per delivery: --subs
subscribers of one channel, --msgs messages of 64 bytes of data
published with POST /publish over one keep-alive connection (8 in
flight); cost = server run time over the publish phase / (subs x msgs).

Prints one `RESULT scenario=T mode=plain|tls ...` line per mode.  With
--subs 0 only the handshakes are measured (make bench measures delivery
at A10k with the load generator's --tls instead).
"""
import argparse
import asyncio
import base64
import os
import resource
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def proc_cpu(pid):
    """(run time ns from schedstat, utime+stime ticks)."""
    with open("/proc/%d/schedstat" % pid) as f:
        run_ns = int(f.read().split()[0])
    with open("/proc/%d/stat" % pid) as f:
        st = f.read()
    fields = st[st.rindex(")") + 2:].split()
    return run_ns, int(fields[11]) + int(fields[12])


def make_cert(d, kind):
    cert, key = os.path.join(d, "c.pem"), os.path.join(d, "k.pem")
    newkey = ["-newkey", "rsa:2048"] if kind == "rsa" else \
        ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"]
    subprocess.run(["openssl", "req", "-x509"] + newkey +
                   ["-nodes", "-keyout", key, "-out", cert, "-days", "2",
                    "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True)
    return cert, key


UPGRADE = (b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
           b"Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
           b"Sec-WebSocket-Key: %s\r\n\r\n")


def mask_frame(payload):
    m = os.urandom(4)
    body = bytes(b ^ m[i % 4] for i, b in enumerate(payload))
    assert len(payload) < 126
    return bytes([0x81, 0x80 | len(payload)]) + m + body


async def ws_open(port, ctx):
    r, w = await asyncio.open_connection("127.0.0.1", port, ssl=ctx,
                                         server_hostname=None if ctx is None
                                         else "127.0.0.1")
    w.write(UPGRADE % base64.b64encode(os.urandom(16)))
    head = await r.readuntil(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 101"):
        raise RuntimeError("upgrade refused: %r" % head[:40])
    return r, w


async def handshakes(port, ctx, n, conc=32):
    sem = asyncio.Semaphore(conc)

    async def one():
        async with sem:
            r, w = await ws_open(port, ctx)
            w.close()
            try:
                await w.wait_closed()
            except (ConnectionError, ssl.SSLError):
                pass
    await asyncio.gather(*[one() for _ in range(n)])


class Sub:
    def __init__(self, r, w):
        self.r, self.w = r, w
        self.buf = b""
        self.msgs = 0

    async def subscribe(self):
        self.w.write(mask_frame(b'{"type":"subscribe","channel":"t"}'))
        await self.read_frames(0, want_reply=True)

    async def read_frames(self, want, want_reply=False):
        while True:
            b = self.buf
            i = 0
            while len(b) - i >= 2:
                n = b[i + 1] & 0x7f
                h = 2
                if n == 126:
                    if len(b) - i < 4:
                        break
                    n = int.from_bytes(b[i + 2:i + 4], "big")
                    h = 4
                elif n == 127:
                    if len(b) - i < 10:
                        break
                    n = int.from_bytes(b[i + 2:i + 10], "big")
                    h = 10
                if len(b) - i < h + n:
                    break
                op = b[i] & 0x0f
                if op == 0x9:  # ping: answer
                    p = b[i + h:i + h + n]
                    m = os.urandom(4)
                    self.w.write(bytes([0x8a, 0x80 | n]) + m + bytes(
                        x ^ m[k % 4] for k, x in enumerate(p)))
                elif op == 0x1:
                    if want_reply:
                        self.buf = b[i + h + n:]
                        return
                    self.msgs += 1
                i += h + n
            self.buf = b[i:]
            if not want_reply and self.msgs >= want:
                return
            d = await self.r.read(262144)
            if not d:
                raise RuntimeError("subscriber closed after %d" % self.msgs)
            self.buf += d


async def publish(port, ctx, msgs, window=8):
    r, w = await asyncio.open_connection("127.0.0.1", port, ssl=ctx,
                                         server_hostname=None if ctx is None
                                         else "127.0.0.1")
    pad = "x" * 40

    def req(g):
        body = ('{"channel":"t","data":{"g":%d,"p":"%s"}}' % (
            g, pad[:max(0, 56 - len(str(g)))])).encode()
        return (b"POST /publish HTTP/1.1\r\nHost: x\r\nContent-Length: %d"
                b"\r\n\r\n" % len(body)) + body
    sent = done = 0
    while done < msgs:
        while sent < msgs and sent - done < window:
            w.write(req(sent))
            sent += 1
        head = await r.readuntil(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 200"):
            raise RuntimeError("publish failed: %r" % head[:60])
        cl = 0
        for ln in head.split(b"\r\n"):
            if ln.lower().startswith(b"content-length:"):
                cl = int(ln.split(b":")[1])
        await r.readexactly(cl)
        done += 1
    w.close()


async def deliveries(port, ctx, subs, msgs, pid):
    conns = []
    sem = asyncio.Semaphore(64)

    async def open_one():
        async with sem:
            r, w = await ws_open(port, ctx)
            s = Sub(r, w)
            await s.subscribe()
            conns.append(s)
    await asyncio.gather(*[open_one() for _ in range(subs)])
    await asyncio.sleep(0.5)
    c0 = proc_cpu(pid)
    t0 = time.monotonic()
    readers = [asyncio.ensure_future(s.read_frames(msgs)) for s in conns]
    await publish(port, ctx, msgs)
    await asyncio.gather(*readers)
    c1 = proc_cpu(pid)
    wall = time.monotonic() - t0
    for s in conns:
        s.w.close()
    return c1[0] - c0[0], c1[1] - c0[1], wall


def run_mode(args, mode, cert, key):
    port = free_port()
    argv = [args.wshub, "--listen", "127.0.0.1:%d" % port,
            "--max-queue-msgs", "4096", "--log-level", "warn"]
    ctx = None
    if mode == "tls":
        argv += ["--tls-cert", cert, "--tls-key", key]
        ctx = ssl.create_default_context(cafile=cert)
        ctx.check_hostname = False
    p = subprocess.Popen(argv)
    try:
        for _ in range(200):
            try:
                socket.create_connection(("127.0.0.1", port), 0.1).close()
                break
            except OSError:
                time.sleep(0.02)
        asyncio.run(handshakes(port, ctx, 50))  # warm-up
        h0 = proc_cpu(p.pid)
        t0 = time.monotonic()
        asyncio.run(handshakes(port, ctx, args.handshakes))
        h1 = proc_cpu(p.pid)
        hwall = time.monotonic() - t0
        run_ns, ticks, wall = 0, 0, 0.0
        if args.subs > 0:
            run_ns, ticks, wall = asyncio.run(
                deliveries(port, ctx, args.subs, args.msgs, p.pid))
        if p.poll() is not None:
            raise RuntimeError("wshub died")
        nd = max(1, args.subs * args.msgs)
        print("RESULT scenario=T mode=%s key=%s handshakes=%d "
              "run_us_per_handshake_wshub=%.2f cpu_us_per_handshake_wshub=%.1f"
              " handshake_wall_s=%.2f subs=%d msgs=%d deliveries=%d "
              "run_us_per_deliv_wshub=%.4f cpu_us_per_deliv_wshub=%.4f "
              "publish_wall_s=%.2f" % (
                  mode, args.key if mode == "tls" else "-", args.handshakes,
                  (h1[0] - h0[0]) / 1e3 / args.handshakes,
                  (h1[1] - h0[1]) * 1e4 / args.handshakes, hwall,
                  args.subs, args.msgs, nd, run_ns / 1e3 / nd,
                  ticks * 1e4 / nd, wall), flush=True)
    finally:
        if p.poll() is None:
            os.kill(p.pid, signal.SIGKILL)
            p.wait()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--wshub", default="build/wshub")
    ap.add_argument("--subs", type=int, default=10000)
    ap.add_argument("--msgs", type=int, default=200)
    ap.add_argument("--handshakes", type=int, default=1000)
    ap.add_argument("--key", choices=("rsa", "ec"), default="rsa")
    ap.add_argument("--modes", default="plain,tls")
    args = ap.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if hard < args.subs + 100:
        sys.exit("tls_cost: ulimit -n %d is too low for %d subs" %
                 (hard, args.subs))
    with tempfile.TemporaryDirectory() as d:
        cert, key = make_cert(d, args.key)
        for mode in args.modes.split(","):
            run_mode(args, mode, cert, key)


if __name__ == "__main__":
    main()
