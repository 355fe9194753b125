"""Quick measurements of build/wshub (not a test; bench/ has the real
load generator).  Loopback only, bounded in count and time.

  /usr/bin/python3 tests/integration/measure.py rss N [wshub flags...]
      RSS growth per idle connection subscribed to its own channel.
  /usr/bin/python3 tests/integration/measure.py cpu N M WINDOW [flags...]
      N subscribers of one channel, M publishes through POST /publish on
      one keep-alive connection with WINDOW requests in flight: server CPU
      (utime+stime from /proc) per delivery and frames per writev.
"""
import os
import resource
import socket
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from conftest import Wshub  # noqa: E402
from wsraw import RawWS  # noqa: E402


def rss_kb(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS"):
                return int(line.split()[1])
    return 0


def cpu_s(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def subscribe(port, channel):
    c = RawWS(port)
    c.send_text('{"type":"subscribe","channel":"%s"}' % channel)
    c.recv_json()
    return c


def measure_rss(n, flags):
    w = Wshub(flags)
    try:
        warm = [subscribe(w.port, "warm%d" % i) for i in range(100)]
        r0 = rss_kb(w.proc.pid)
        t0 = time.time()
        cs = [subscribe(w.port, "c%d" % i) for i in range(n)]
        dt = time.time() - t0
        time.sleep(0.5)
        r1 = rss_kb(w.proc.pid)
        print("RESULT rss conns=%d rss_before_kb=%d rss_after_kb=%d "
              "bytes_per_conn=%.0f connect_subscribe_s=%.2f" % (
                  n, r0, r1, (r1 - r0) * 1024.0 / n, dt))
        del warm, cs
    finally:
        w.stop()


def measure_cpu(n, m, window, flags):
    w = Wshub(flags)
    try:
        subs = [subscribe(w.port, "bench") for _ in range(n)]
        s = socket.create_connection(("127.0.0.1", w.port), 10)
        body = (b'{"channel":"bench","data":{"x":"01234567890123456789'
                b'01234567890123456789"}}')
        req = (b"POST /publish HTTP/1.1\r\nHost: x\r\nContent-Length: %d"
               b"\r\n\r\n%s" % (len(body), body))
        m0 = w.metrics()
        c0 = cpu_s(w.proc.pid)
        t0 = time.time()
        sent = got = 0
        buf = b""
        while got < m:
            while sent < m and sent - got < window:
                s.sendall(req)
                sent += 1
            buf += s.recv(65536)
            got = buf.count(b"HTTP/1.1 200")
        target = m0["wshub_frames_written_total"] + n * m
        while (w.metrics()["wshub_frames_written_total"] < target and
               time.time() - t0 < 60):
            time.sleep(0.2)
        c1 = cpu_s(w.proc.pid)
        m1 = w.metrics()
        d = m1["wshub_frames_written_total"] - m0["wshub_frames_written_total"]
        wv = m1["wshub_writev_calls_total"] - m0["wshub_writev_calls_total"]
        print("RESULT cpu subscribers=%d messages=%d window=%d "
              "deliveries=%d cpu_s=%.2f us_per_delivery=%.3f "
              "frames_per_writev=%.1f" % (
                  n, m, window, d, c1 - c0, (c1 - c0) * 1e6 / max(d, 1),
                  d / max(wv, 1)))
        del subs
    finally:
        w.stop()


def main():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if len(sys.argv) >= 3 and sys.argv[1] == "rss":
        measure_rss(int(sys.argv[2]), sys.argv[3:])
    elif len(sys.argv) >= 5 and sys.argv[1] == "cpu":
        measure_cpu(int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]),
                    sys.argv[5:])
    else:
        print(__doc__)
        sys.exit(2)


if __name__ == "__main__":
    main()
