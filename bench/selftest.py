#!/usr/bin/python3
"""make bench-selftest: proves build/wshub-loadgen counts what it claims.

Runs the load generator against bench/mock_hub.py, once clean and once
per injected fault, and checks its RESULT counters against what the mock
did on purpose: dropped deliveries must show as lost, doubled ones as
dup, swapped ones as ooo, pings must be answered, and a clean run must
deliver exactly what it expected.  Needs no wshub, no Redis.
"""
import os
import signal
import socket
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUILD = sys.argv[1] if len(sys.argv) > 1 else "build"
LOADGEN = os.path.join(ROOT, BUILD, "wshub-loadgen")
MOCK = os.path.join(ROOT, "bench", "mock_hub.py")

# 100 subscribers over 2 channels, 401 messages from one publisher with
# one request in flight, so the mock's delivery order is deterministic.
CONNS, CHANS, MSGS = 100, 2, 401
EXPECTED = MSGS * (CONNS // CHANS)  # every channel has CONNS/CHANS subscribers


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def run(faults):
    port = free_port()
    mock = subprocess.Popen([sys.executable, MOCK, "--port", str(port)] +
                            faults, stdout=subprocess.PIPE, text=True)
    try:
        assert mock.stdout.readline().strip() == "READY"
        r = subprocess.run([LOADGEN, "--server", "127.0.0.1:%d" % port,
                            "--conns", str(CONNS), "--channels", str(CHANS),
                            "--msgs", str(MSGS), "--pub-conns", "1",
                            "--window", "1", "--give-up-ms", "500",
                            "--pid", "mock=%d" % mock.pid],
                           stdout=subprocess.PIPE, text=True, timeout=60)
    finally:
        mock.send_signal(signal.SIGTERM)
        out, _ = mock.communicate(timeout=10)
    res = {}
    for ln in r.stdout.splitlines():
        if ln.startswith("RESULT "):
            for tok in ln.split()[1:]:
                k, _, v = tok.partition("=")
                res[k] = v
    mock_stats = dict(t.split("=") for t in out.split() if "=" in t)
    return res, mock_stats


def main():
    fails = []

    def check(name, res, key, want):
        got = res.get(key)
        ok = got is not None and float(got) == want
        print("  %-6s %-10s %8s (want %s)%s" % (name, key, got, want,
                                               "" if ok else "  FAIL"))
        if not ok:
            fails.append("%s: %s=%s, want %s" % (name, key, got, want))

    res, _ = run([])
    for k, v in (("ready", CONNS), ("expected", EXPECTED),
                 ("deliveries", EXPECTED), ("lost", 0), ("dup", 0),
                 ("ooo", 0), ("misrouted", 0), ("pub_ok", MSGS)):
        check("clean", res, k, v)
    if not float(res.get("p50_us", 0)) > 0:
        fails.append("clean: no latency measured")
    res, _ = run(["--drop-every", "97"])
    check("drop", res, "lost", EXPECTED // 97)
    check("drop", res, "deliveries", EXPECTED - EXPECTED // 97)
    res, _ = run(["--dup-every", "89"])
    check("dup", res, "dup", EXPECTED // 89)
    check("dup", res, "lost", 0)
    # Publishes 50, 100, ... 400 are held back and sent after the next
    # one on their channel: 7 come late (ooo at each of the channel's 50
    # subscribers), the 8th never comes (lost at 50).
    res, _ = run(["--swap-every", "50"])
    check("swap", res, "ooo", 7 * CONNS // CHANS)
    check("swap", res, "lost", CONNS // CHANS)
    res, mock = run(["--ping"])
    check("ping", res, "lost", 0)
    check("ping", mock, "pongs", CONNS)
    if fails:
        print("bench-selftest: FAILED")
        sys.exit(1)
    print("bench-selftest: loadgen counts verified")


if __name__ == "__main__":
    main()
