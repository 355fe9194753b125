#!/usr/bin/python3
"""make bench: runs the issue-5 scenarios against build/wshub.

Starts every process it needs (wshub instances and, for the Redis
backplane, a redis-server with no persistence) on free loopback ports,
drives them with build/wshub-loadgen, stops them by pid, prints one
`RESULT key=value ...` line per scenario run and a table, and checks the
targets.  Exit status: 0 when every run completed with no correctness
failure (lost, duplicate, out-of-order or misrouted deliveries, failed
connections or publishes, the Redis economy of E); 1 otherwise.  A missed
performance target is printed as MISS and fails only with --strict.

  bench/run.py [--build build] [--only A,B,C,D,E,L,W,T,S] \
               [--backplane embedded,redis] [--smoke] [--strict] \
               [--window N]
"""
import argparse
import contextlib
import http.client
import io
import os
import signal
import socket
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# The targets.
T_A_CPU_US = 0.25
T_B_RSS_BYTES = 1500
T_C_CPU_US = 5.0
T_L_P99_MS = 5.0


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Proc:
    """A child process we started; stopped by its pid only."""

    def __init__(self, name, argv, logdir):
        self.name = name
        self.log = open(os.path.join(logdir, name + ".log"), "w")
        self.p = subprocess.Popen(argv, stdout=self.log,
                                  stderr=subprocess.STDOUT,
                                  stdin=subprocess.DEVNULL)
        self.pid = self.p.pid

    def alive(self):
        return self.p.poll() is None

    def stop(self, timeout=10.0):
        if self.p.poll() is None:
            os.kill(self.pid, signal.SIGTERM)
            try:
                self.p.wait(timeout)
            except subprocess.TimeoutExpired:
                os.kill(self.pid, signal.SIGKILL)
                self.p.wait()
        self.log.close()
        return self.p.returncode


def wait_http(port, path, want, timeout, proc, tls=False):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        if not proc.alive():
            raise RuntimeError("%s exited with %s (see its log)" %
                               (proc.name, proc.p.returncode))
        try:
            if tls:
                import ssl
                c = http.client.HTTPSConnection(
                    "127.0.0.1", port, timeout=1,
                    context=ssl._create_unverified_context())
            else:
                c = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
            c.request("GET", path)
            r = c.getresponse()
            r.read()
            c.close()
            if r.status == want:
                return
            last = r.status
        except OSError as e:
            last = e
        time.sleep(0.05)
    raise RuntimeError("%s: GET %s never answered %d (last: %s)" %
                       (proc.name, path, want, last))


def wait_redis(port, proc):
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if not proc.alive():
            raise RuntimeError("redis-server exited (see its log)")
        try:
            s = socket.create_connection(("127.0.0.1", port), timeout=1)
            s.sendall(b"PING\r\n")
            if s.recv(64).startswith(b"+PONG"):
                s.close()
                return
            s.close()
        except OSError:
            pass
        time.sleep(0.05)
    raise RuntimeError("redis-server did not start")


def redis_info(port, section):
    """INFO |section| of the redis-server on |port| as a dict of lines."""
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    try:
        s.sendall(b"INFO %s\r\n" % section.encode())
        buf = b""
        while b"\r\n" not in buf:
            buf += s.recv(65536)
        head, _, rest = buf.partition(b"\r\n")
        n = int(head[1:])
        while len(rest) < n + 2:
            rest += s.recv(65536)
    finally:
        s.close()
    out = {}
    for line in rest[:n].decode().splitlines():
        if ":" in line and not line.startswith("#"):
            k, v = line.split(":", 1)
            out[k] = v
    return out


def fcall_calls(info):
    """calls= of cmdstat_fcall (FCALL wshub_publish and wshub_read)."""
    v = info.get("cmdstat_fcall", "")
    for kv in v.split(","):
        if kv.startswith("calls="):
            return int(kv[6:])
    return 0


class Env:
    """One scenario's processes: n wshub instances, maybe a redis-server."""

    def __init__(self, args, tag, backplane, instances, extra_args=(),
                 tls=False):
        self.args = args
        self.procs = []
        self.redis = None
        self.redis_port = None
        self.servers = []  # (port, Proc)
        logdir = args.logdir
        try:
            if backplane == "redis":
                self.redis_port = free_port()
                self.redis = Proc(tag + "-redis", [
                    "redis-server", "--port", str(self.redis_port),
                    "--bind", "127.0.0.1", "--save", "", "--appendonly",
                    "no", "--daemonize", "no", "--maxclients", "1000"],
                    logdir)
                self.procs.append(self.redis)
                wait_redis(self.redis_port, self.redis)
            for k in range(instances):
                port = free_port()
                argv = [args.wshub, "--listen", "127.0.0.1:%d" % port,
                        "--instance-id", "%s-%d" % (tag, k),
                        "--max-queue-msgs", str(args.max_queue_msgs),
                        "--shutdown-timeout", "2"]
                if self.redis_port:
                    argv += ["--redis", "redis://127.0.0.1:%d" %
                             self.redis_port]
                argv += list(extra_args)
                if getattr(args, "record_on", False):
                    rec = os.path.join(logdir, "%s-wshub%d.rec" % (tag, k))
                    argv += ["--record", rec]
                    args.rec_files.append(rec)
                p = Proc("%s-wshub%d" % (tag, k), argv, logdir)
                self.procs.append(p)
                self.servers.append((port, p))
            for port, p in self.servers:
                wait_http(port, "/healthz", 200, 15, p, tls)
        except Exception:
            self.stop()
            raise

    def stop(self):
        codes = {}
        for p in reversed(self.procs):
            codes[p.name] = p.stop()
        self.procs = []
        return codes


def parse_result(line):
    out = {}
    for tok in line.split()[1:]:
        if "=" in tok:
            k, v = tok.split("=", 1)
            try:
                out[k] = float(v) if any(c in v for c in ".e") else int(v)
            except ValueError:
                out[k] = v
    return out


class Bench:
    def __init__(self, args):
        self.args = args
        self.results = []  # (scenario, backplane, dict)
        self.lines = []  # the RESULT lines, verbatim
        self.failures = []
        self.misses = []

    def loadgen(self, env, scenario, backplane, lg_args, pids=True,
                redis_check=False, timeout=300, record=True):
        argv = [self.args.loadgen]
        for port, _ in env.servers:
            argv += ["--server", "127.0.0.1:%d" % port]
        if pids:
            for _, p in env.servers:
                argv += ["--pid", "wshub=%d" % p.pid]
            if env.redis:
                argv += ["--pid", "redis=%d" % env.redis.pid]
        if redis_check:
            argv += ["--redis", "127.0.0.1:%d" % env.redis_port]
        argv += ["--label", "scenario=%s backplane=%s" % (scenario,
                                                           backplane)]
        argv += [str(a) for a in lg_args]
        if self.args.verbose:
            print("  $ " + " ".join(argv), flush=True)
        r = subprocess.run(argv, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True,
                           timeout=timeout)
        for ln in r.stderr.splitlines():
            print("  " + ln, flush=True)
        res = None
        for ln in r.stdout.splitlines():
            if ln.startswith("RESULT "):
                print(ln, flush=True)
                self.lines.append(ln)
                res = parse_result(ln)
        if r.returncode != 0 or res is None:
            raise RuntimeError("loadgen failed (exit %d)" % r.returncode)
        for _, p in env.servers:
            if not p.alive():
                self.failures.append("%s %s: %s died during the run" %
                                     (scenario, backplane, p.name))
        if record:
            self.results.append((scenario, backplane, res))
        return res

    def repeated(self, tag, scenario, bp, instances, lg_args, key,
                 extra_args=(), tls=False):
        """Runs a scenario --repeat times, each on fresh processes, checks
        every run, and records the median run by |key| with the range of
        |key| over the runs: on a shared machine noise only adds cost, and
        one run can be far off."""
        runs = []
        for k in range(self.args.repeat):
            env = Env(self.args, "%s-r%d" % (tag, k), bp, instances,
                      extra_args, tls)
            try:
                r = self.loadgen(env, scenario, bp,
                                 list(lg_args) + (["--tls"] if tls else []),
                                 record=False)
            finally:
                env.stop()
            self.check_clean(scenario, bp, r)
            runs.append(r)
        runs.sort(key=lambda r: r.get(key) or 0.0)
        med = dict(runs[len(runs) // 2])
        if len(runs) > 1:
            lo, hi = runs[0].get(key) or 0.0, runs[-1].get(key) or 0.0
            if key == "p99_us":
                med["_range"] = "p99 %.2f-%.2f ms" % (lo / 1e3, hi / 1e3)
            else:
                med["_range"] = "%.3f-%.3f us/deliv" % (lo, hi)
        self.results.append((scenario, bp, med))
        return med

    def check_clean(self, scenario, backplane, r):
        """No faults injected: every connection and delivery must work."""
        bad = []
        if r.get("failed", 0) or r.get("ready", 0) != r.get("conns"):
            bad.append("%s of %s connections subscribed" %
                       (r.get("ready"), r.get("conns")))
        for k in ("lost", "dup", "ooo", "misrouted", "bad", "pub_err",
                  "closed", "proto_err", "errors_rx"):
            if r.get(k, 0):
                bad.append("%s=%s" % (k, r[k]))
        if r.get("timed_out"):
            bad.append("publish phase hit its time limit")
        if "msgs" in r and r.get("published") != r.get("msgs"):
            bad.append("published %s of %s" % (r.get("published"),
                                                r.get("msgs")))
        if "msgs" in r and r.get("deliveries") != r.get("expected"):
            bad.append("deliveries %s != expected %s" % (
                r.get("deliveries"), r.get("expected")))
        for b in bad:
            self.failures.append("%s %s: %s" % (scenario, backplane, b))

    def target(self, what, value, limit, unit, ok=None):
        if self.args.smoke:
            # Tiny sizes say nothing about the targets; E's correctness
            # check still runs (as a failure, above).
            return
        if ok is None:
            ok = value is not None and value <= limit
        line = "%-52s %10s %-5s (target <= %s %s)" % (
            what, "-" if value is None else "%.3f" % value, unit, limit,
            unit)
        self.misses.append(("ok  " if ok else "MISS") + " " + line)

    # ------------------------------------------------------- scenarios

    def run_a(self, bp):
        sizes = [200] if self.args.smoke else [1000, 10000]
        msgs = 200 if self.args.smoke else 2000
        for n in sizes:
            name = "A%dk" % (n // 1000) if n >= 1000 else "A%d" % n
            r = self.repeated("a%d-%s" % (n, bp), name, bp, 1, [
                "--conns", n, "--channels", 1, "--msgs", msgs,
                "--size", 64, "--pub-conns", 4, "--window",
                self.args.window, "--max-outstanding",
                4 * self.args.window, "--publish-timeout", 120],
                "run_us_per_deliv_wshub")
            if n == 10000:
                self.target("A 10,000 subs: server CPU us/delivery (%s)" % bp,
                            r.get("cpu_us_per_deliv_wshub"), T_A_CPU_US, "us")
            if self.args.record:
                self.run_a_recorded(n, name, bp, msgs, r)
            if self.args.history:
                self.run_a_history(n, name, bp, msgs, r)

    def run_a_history(self, n, name, bp, msgs, plain):
        """--history: A again with --history-size 100 (issue 9): server
        CPU per delivery against the run without; with Redis also
        redis-server's CPU per publish (schedstat run time over the
        publish phase / messages published), with and without."""
        r = self.repeated("a%d-%s-hist" % (n, bp), name + "+hist", bp, 1, [
            "--conns", n, "--channels", 1, "--msgs", msgs,
            "--size", 64, "--pub-conns", 4, "--window",
            self.args.window, "--max-outstanding",
            4 * self.args.window, "--publish-timeout", 120],
            "run_us_per_deliv_wshub", ["--history-size", "100"])
        for key in ("cpu_us_per_deliv_wshub", "run_us_per_deliv_wshub"):
            a, b = plain.get(key), r.get(key)
            if a and b:
                print("HISTORY scenario=%s backplane=%s %s plain=%.3f "
                      "history=%.3f ratio=%.3f" % (name, bp, key, a, b,
                                                   b / a), flush=True)
        if bp == "redis":
            a, b = [x.get("run_s_redis", 0) * 1e6 / max(1, x.get("published"))
                    for x in (plain, r)]
            print("HISTORY scenario=%s backplane=redis "
                  "redis_run_us_per_publish plain=%.2f history=%.2f "
                  "ratio=%.3f" % (name, a, b, b / a if a else 0.0),
                  flush=True)
        a, b = plain.get("cpu_us_per_deliv_wshub"), \
            r.get("cpu_us_per_deliv_wshub")
        if n == 10000 and a and b:
            self.target("A 10,000 subs with --history-size 100: server CPU "
                        "per delivery over the run without (%s)" % bp,
                        b / a, 1.10, "x")

    def run_a_recorded(self, n, name, bp, msgs, plain):
        """--record: A again with the flight recorder on (issue 11): CPU
        per delivery against the run without, and the bytes recorded per
        published message."""
        self.args.record_on, self.args.rec_files = True, []
        try:
            r = self.repeated("a%d-%s-rec" % (n, bp), name + "+rec", bp, 1, [
                "--conns", n, "--channels", 1, "--msgs", msgs,
                "--size", 64, "--pub-conns", 4, "--window",
                self.args.window, "--max-outstanding",
                4 * self.args.window, "--publish-timeout", 120],
                "run_us_per_deliv_wshub")
        finally:
            self.args.record_on = False
        sizes = [os.path.getsize(f) for f in self.args.rec_files
                 if os.path.exists(f)]
        per_msg = sum(sizes) / len(sizes) / msgs if sizes else None
        print("RECORD scenario=%s backplane=%s bytes_per_published_msg=%s "
              "files=%s" % (name, bp, "%.1f" % per_msg if per_msg else "-",
                            ",".join(str(x) for x in sizes)), flush=True)
        for key in ("cpu_us_per_deliv_wshub", "run_us_per_deliv_wshub"):
            a, b = plain.get(key), r.get(key)
            if a and b:
                print("RECORD scenario=%s backplane=%s %s plain=%.3f "
                      "recorded=%.3f ratio=%.3f" % (name, bp, key, a, b,
                                                    b / a), flush=True)
        a, b = plain.get("run_us_per_deliv_wshub"), \
            r.get("run_us_per_deliv_wshub")
        if n == 10000 and a and b:
            self.target("A 10,000 subs with --record: server run time per "
                        "delivery over the run without (%s)" % bp,
                        b / a, 1.10, "x")
        if per_msg is not None:
            self.misses.append("info %s %s --record: %.1f bytes recorded "
                               "per published message" % (name, bp, per_msg))

    def auth_variants(self):
        """(name, server flags, token) for B with authentication: an
        HS256 secret and an ES256 key made with openssl, tokens minted
        with python3-jwt (every channel granted, exp an hour ahead)."""
        try:
            import jwt
        except ImportError:
            print("  (python3-jwt missing: B without authentication only)")
            return []
        d = self.args.logdir
        key = os.path.join(d, "bench-ec.pem")
        pub = os.path.join(d, "bench-ec.pub")
        subprocess.run(["openssl", "ecparam", "-name", "prime256v1",
                        "-genkey", "-noout", "-out", key], check=True,
                       capture_output=True)
        subprocess.run(["openssl", "ec", "-in", key, "-pubout", "-out", pub],
                       check=True, capture_output=True)
        claims = {"sub": "bench", "subscribe": ["*"], "publish": ["*"],
                  "exp": int(time.time()) + 3600}
        secret = "bench-secret-0123456789abcdef"
        return [
            ("B-hs256", ["--token-secret", secret],
             jwt.encode(claims, secret, algorithm="HS256")),
            ("B-es256", ["--token-key", pub],
             jwt.encode(claims, open(key).read(), algorithm="ES256"))]

    def run_b(self, bp):
        n = 500 if self.args.smoke else 19900
        for name, extra, token in [("B", [], None)] + self.auth_variants():
            env = Env(self.args, "%s-%s" % (name.lower(), bp), bp, 1, extra)
            try:
                r = self.loadgen(env, name, bp, [
                    "--conns", n, "--channels", n, "--msgs", 0,
                    "--idle-ms", 1000, "--concurrency", 500] +
                    (["--token", token] if token else []))
            finally:
                env.stop()
            self.check_clean(name, bp, r)
            if name == "B":
                self.target("B idle subscribed conn: server RSS bytes/conn "
                            "(%s)" % bp, r.get("rss_per_conn_bytes_wshub"),
                            T_B_RSS_BYTES, "B")

    def run_c(self, bp):
        sizes = [(200, 2)] if self.args.smoke else \
            [(1000, 150), (5000, 30), (9000, 17)]
        per = {}
        for ch, rounds in sizes:
            name = "C%dk" % (ch // 1000) if ch >= 1000 else "C%d" % ch
            r = self.repeated("c%d-%s" % (ch, bp), name, bp, 1, [
                "--conns", 2 * ch, "--channels", ch, "--msgs",
                ch * rounds, "--size", 64, "--pub-conns", 4, "--window",
                self.args.window, "--max-outstanding", 1024],
                "run_us_per_deliv_wshub")
            per[ch] = r
            if ch == 5000:
                self.target("C 5,000 ch x 2: server CPU us/delivery (%s)" % bp,
                            r.get("cpu_us_per_deliv_wshub"), T_C_CPU_US, "us")
        if 1000 in per and 9000 in per:
            lo = per[1000].get("run_us_per_deliv_wshub")
            hi = per[9000].get("run_us_per_deliv_wshub")
            # "Flat": 9,000 x 2 may cost at most 10 % more per delivery
            # than 1,000 x 2 (run time from schedstat, ns resolution).
            self.target("C flat: 9k/1k run-time per delivery ratio (%s)" % bp,
                        hi / lo if lo else None, 1.10, "x")

    def run_d(self, bp):
        if bp != "redis":
            return
        n = 1000 if self.args.smoke else 10000
        msgs = 200 if self.args.smoke else 2000
        env = Env(self.args, "d", "redis", 2)
        try:
            r = self.loadgen(env, "D", "redis", [
                "--conns", n, "--channels", 1, "--msgs", msgs, "--size", 64,
                "--pub-conns", 4, "--window", self.args.window,
                "--max-outstanding", 4 * self.args.window,
                "--publish-timeout", 120])
        finally:
            env.stop()
        self.check_clean("D", "redis", r)

    def run_e(self, bp):
        if bp != "redis":
            return
        n = 1000 if self.args.smoke else 10000
        env = Env(self.args, "e", "redis", 2)
        try:
            r = self.loadgen(env, "E", "redis", [
                "--conns", n, "--channels", 100, "--msgs", 1000, "--size",
                64, "--pub-conns", 4, "--window", self.args.window,
                "--max-outstanding", 256], redis_check=True)
        finally:
            env.stop()
        self.check_clean("E", "redis", r)
        numsub = r.get("redis_numsub_total")
        clients = r.get("redis_sub_clients")
        # Every channel has subscribers on both instances, so exactly one
        # SUBSCRIBE per instance per channel: 200.  Two subscriber
        # connections in all, and each instance needs at least one for its
        # subscribers to receive anything (lost=0 above): one each.
        e_ok = numsub is not None and numsub <= 200 and clients == 2 and \
            r.get("redis_psub", 0) == 0
        if not e_ok:
            self.failures.append(
                "E: Redis saw NUMSUB total %s (<= 200 wanted), %s subscriber "
                "connections (2 wanted), psub %s" % (numsub, clients,
                                                     r.get("redis_psub")))
        self.target("E Redis PUBSUB NUMSUB total", numsub, 200, "subs",
                    ok=e_ok)
        self.target("E Redis subscriber connections (2 instances)", clients,
                    2, "conns", ok=e_ok)

    def run_s(self, bp):
        """The reconnect storm (issue 9): 10,000 subscribers of one
        history channel on one instance with Redis; after 1,000 messages
        every one of them is disconnected at once and reconnects with
        since while publishing goes on (--rate).  Time until all are
        subscribed again and until all are live (caught up), the history
        reads Redis served (FCALLs over the run minus the publishes: the
        first subscribes and the storm's recoveries, coalesced), lost and
        duplicate deliveries (must be 0).  Run twice (noise)."""
        if bp != "redis":
            return
        n = 500 if self.args.smoke else 10000
        msgs = 300 if self.args.smoke else 2000
        after = 100 if self.args.smoke else 1000
        for k in range(1 if self.args.smoke else 2):
            env = Env(self.args, "s-r%d" % k, "redis", 1,
                      ["--history-size", "1000"])
            try:
                before = fcall_calls(redis_info(env.redis_port,
                                                "commandstats"))
                r = self.loadgen(env, "S", "redis", [
                    "--conns", n, "--channels", 1, "--msgs", msgs,
                    "--size", 64, "--pub-conns", 1, "--window", 4,
                    "--rate", 100, "--max-outstanding", 1000000,
                    "--give-up-ms", 30000, "--storm-after", after,
                    "--publish-timeout", 120], timeout=400)
                fcalls = fcall_calls(redis_info(env.redis_port,
                                                "commandstats")) - before
            finally:
                env.stop()
            reads = fcalls - r.get("pub_ok", 0)
            r["hist_reads"] = reads
            print("STORM run=%d conns=%d storm_after=%d resub_s=%.3f "
                  "live_s=%.3f history_reads=%d fcalls=%d recovered=%s "
                  "not_recovered=%s lost=%s dup=%s ooo=%s off_gap=%s "
                  "gap_rx=%s" % (
                      k, n, after, r.get("storm_resub_s", 0),
                      r.get("storm_live_s", 0), reads, fcalls,
                      r.get("recovered"), r.get("not_recovered"),
                      r.get("lost"), r.get("dup"), r.get("ooo"),
                      r.get("off_gap"), r.get("gap_rx")), flush=True)
            self.check_clean("S", "redis", r)
            for key in ("off_gap", "gap_rx", "not_recovered"):
                if r.get(key, 0):
                    self.failures.append("S redis: %s=%s" % (key, r[key]))
            if r.get("storm") != 2 or r.get("recovered") != n:
                self.failures.append(
                    "S redis: storm %s, %s of %d recovered" % (
                        r.get("storm"), r.get("recovered"), n))
            self.target("S reconnect storm: history reads Redis served "
                        "(run %d)" % k, reads, 100, "reads")

    def run_l(self, bp):
        n = 200 if self.args.smoke else 1000
        msgs = 20 if self.args.smoke else 200
        # L is the target; Lbusy repeats it with a load generator that
        # polls instead of sleeping, to show how much of the latency is the
        # wake-up of a client on the same host (informational).
        for name, extra in (("L", []), ("Lbusy", ["--busy-poll"])):
            if name == "Lbusy" and self.args.smoke:
                continue
            r = self.repeated("%s-%s" % (name.lower(), bp), name, bp, 1, [
                "--conns", n, "--channels", 1, "--msgs", msgs, "--size",
                64, "--pub-conns", 1, "--rate", 20] + extra, "p99_us")
            if name == "L":
                p99 = r.get("p99_us")
                self.target("L 20 msg/s to 1,000 subs: p99 ms (%s)" % bp,
                            p99 / 1000.0 if p99 is not None else None,
                            T_L_P99_MS, "ms")

    def run_w(self, bp):
        """A at 10,000 subscribers with 1,000 messages and more or fewer
        publishes in flight: how server CPU per delivery follows batching
        (frames per writev).  Informational; no target."""
        n = 500 if self.args.smoke else 10000
        msgs = 100 if self.args.smoke else 1000
        for w in (1, 4, 16, 64):
            env = Env(self.args, "w%d-%s" % (w, bp), bp, 1)
            try:
                r = self.loadgen(env, "W%d" % (4 * w), bp, [
                    "--conns", n, "--channels", 1, "--msgs", msgs, "--size",
                    64, "--pub-conns", 4, "--window", w, "--max-outstanding",
                    4 * w, "--publish-timeout", 120])
            finally:
                env.stop()
            self.check_clean("W%d" % (4 * w), bp, r)

    def run_t(self, bp):
        """TLS next to plain TCP (issue 12), embedded backplane,
        informational: A10k (10,000 subscribers, 2,000 messages of 64
        bytes, the load generator with and without --tls against a server
        with and without --tls-cert, RSA 2048), then the server's cost
        per handshake (connect + TLS + upgrade + close) from
        bench/tls_cost.py --subs 0."""
        if bp != "embedded":
            return
        d = os.path.join(self.args.logdir, "tls")
        os.makedirs(d, exist_ok=True)
        cert, key = os.path.join(d, "cert.pem"), os.path.join(d, "key.pem")
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048",
                        "-nodes", "-keyout", key, "-out", cert, "-days", "2",
                        "-subj", "/CN=localhost"], check=True,
                       capture_output=True)
        n = 500 if self.args.smoke else 10000
        msgs = 200 if self.args.smoke else 2000
        lg = ["--conns", n, "--channels", 1, "--msgs", msgs, "--size", 64,
              "--pub-conns", 4, "--window", self.args.window,
              "--max-outstanding", 4 * self.args.window,
              "--publish-timeout", 120]
        name = "T-A%dk" % (n // 1000) if n >= 1000 else "T-A%d" % n
        a = {}
        for mode in ("plain", "tls"):
            a[mode] = self.repeated(
                "t-a%d-%s" % (n, mode), name + "-" + mode, bp, 1, lg,
                "run_us_per_deliv_wshub",
                ["--tls-cert", cert, "--tls-key", key]
                if mode == "tls" else [], mode == "tls")
        argv = [sys.executable, os.path.join(ROOT, "bench", "tls_cost.py"),
                "--wshub", self.args.wshub, "--subs", "0", "--handshakes",
                "200" if self.args.smoke else "2000"]
        r = subprocess.run(argv, stdout=subprocess.PIPE, text=True,
                           timeout=900)
        h = {}
        for ln in r.stdout.splitlines():
            if ln.startswith("RESULT "):
                print(ln, flush=True)
                self.lines.append(ln)
                kv = parse_result(ln)
                h[kv.get("mode")] = kv
        if r.returncode != 0 or set(h) != {"plain", "tls"}:
            raise RuntimeError("tls_cost.py failed (exit %d)" % r.returncode)
        p, t = a["plain"], a["tls"]
        hp, ht = h["plain"], h["tls"]
        self.tls_summary = (
            "T (TLS cost, embedded): per delivery at %s, server run time "
            "plain %.3f us, TLS %.3f us (+%.3f us, x%.2f; cpu %.3f vs "
            "%.3f us); per handshake (connect + upgrade + close, %d of "
            "them), server run time plain %.1f us, TLS RSA-2048 %.1f us "
            "(+%.1f us)" % (
                name[2:], p["run_us_per_deliv_wshub"],
                t["run_us_per_deliv_wshub"],
                t["run_us_per_deliv_wshub"] - p["run_us_per_deliv_wshub"],
                t["run_us_per_deliv_wshub"] / p["run_us_per_deliv_wshub"],
                p["cpu_us_per_deliv_wshub"], t["cpu_us_per_deliv_wshub"],
                hp["handshakes"], hp["run_us_per_handshake_wshub"],
                ht["run_us_per_handshake_wshub"],
                ht["run_us_per_handshake_wshub"] -
                hp["run_us_per_handshake_wshub"]))

    # ----------------------------------------------------------- output

    def table(self):
        cols = ["scenario", "backplane", "conns", "deliveries", "deliv/s",
                "cpu us/deliv", "run us/deliv", "redis us/deliv", "p50 ms",
                "p99 ms", "lost", "ooo", "frames/writev", "rss B/conn",
                "connect s", "setup us/conn", "range over runs"]
        rows = []
        for sc, bp, r in self.results:
            def f(key, fmt="%.0f", scale=1.0):
                v = r.get(key)
                return "-" if v is None else fmt % (v * scale)
            rows.append([
                sc, bp, f("conns", "%d"), f("deliveries", "%d"),
                f("deliv_per_s"), f("cpu_us_per_deliv_wshub", "%.3f"),
                f("run_us_per_deliv_wshub", "%.3f"),
                f("run_us_per_deliv_redis", "%.3f"),
                f("p50_us", "%.2f", 1e-3), f("p99_us", "%.2f", 1e-3),
                f("lost", "%d"), f("ooo", "%d"),
                f("frames_per_writev", "%.1f"),
                f("rss_per_conn_bytes_wshub") if sc.startswith("B") else "-",
                f("connect_s", "%.2f"),
                f("connect_run_us_per_conn_wshub", "%.1f")
                if sc.startswith("B") else "-", r.get("_range", "")])
        w = [max(len(c), *(len(r[i]) for r in rows)) if rows else len(c)
             for i, c in enumerate(cols)]
        line = "  ".join(c.rjust(w[i]) for i, c in enumerate(cols))
        print()
        print(line)
        print("-" * len(line))
        for r in rows:
            print("  ".join(v.rjust(w[i]) for i, v in enumerate(r)))
        print()
        print("cpu us/deliv: server utime+stime (/proc/PID/stat, 10 ms "
              "ticks) over the publish phase / deliveries;")
        print("run us/deliv: the same from schedstat run time (ns); "
              "redis us/deliv: redis-server's, same method.")
        if getattr(self, "tls_summary", None):
            print(self.tls_summary)
        print("setup us/conn (B): the server's schedstat run time over the "
              "connect phase (accept, upgrade with its token, subscribe) / "
              "connections.")
        print("A, C and L ran --repeat times on fresh processes; the row is "
              "the median run, the last column the range of its key figure "
              "(run us/deliv or p99 us).")
        print()
        if self.args.smoke:
            print("Targets: not evaluated in a smoke run (tiny sizes).")
        else:
            print("Targets (issue 5):")
        for m in self.misses:
            print("  " + m)
        if self.failures:
            print()
            print("FAILURES:")
            for f in self.failures:
                print("  " + f)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--build", default="build")
    ap.add_argument("--only", default="A,B,C,D,E,L,W,T,S")
    ap.add_argument("--backplane", default="embedded,redis")
    ap.add_argument("--smoke", action="store_true",
                    help="tiny sizes, seconds; checks the machinery only")
    ap.add_argument("--strict", action="store_true",
                    help="a missed performance target fails the run")
    ap.add_argument("--window", type=int, default=16,
                    help="HTTP requests in flight (pipelined) per publish "
                    "connection, 4 connections (A, C, D, E)")
    ap.add_argument("--max-queue-msgs", type=int, default=4096)
    ap.add_argument("--repeat", type=int, default=3,
                    help="runs of A, C and L; the median is reported")
    ap.add_argument("--record", action="store_true",
                    help="also run A with --record on (the flight "
                    "recorder): CPU against the run without, bytes "
                    "recorded per published message")
    ap.add_argument("--no-history", dest="history", action="store_false",
                    help="skip A with --history-size 100")
    ap.add_argument("--history", action="store_true", default=True,
                    help="also run A with --history-size 100: server CPU "
                    "against the run without (and Redis CPU per publish "
                    "with --redis)")
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args()
    if args.smoke:
        args.repeat = 1
    args.wshub = os.path.join(ROOT, args.build, "wshub")
    args.loadgen = os.path.join(ROOT, args.build, "wshub-loadgen")
    args.logdir = os.path.join(ROOT, args.build, "bench", "logs")
    os.makedirs(args.logdir, exist_ok=True)
    for b in (args.wshub, args.loadgen):
        if not os.access(b, os.X_OK):
            sys.exit("bench: %s is missing (make builds it)" % b)
    bench = Bench(args)
    only = [s.strip().upper() for s in args.only.split(",") if s.strip()]
    bps = [b.strip() for b in args.backplane.split(",") if b.strip()]
    t0 = time.monotonic()
    for sc in only:
        fn = getattr(bench, "run_" + sc.lower(), None)
        if fn is None:
            sys.exit("bench: unknown scenario %s" % sc)
        for bp in bps:
            if sc in ("D", "E", "S") and bp != "redis":
                continue
            print("== scenario %s, %s backplane" % (sc, bp), flush=True)
            try:
                fn(bp)
            except (RuntimeError, subprocess.TimeoutExpired) as e:
                bench.failures.append("%s %s: %s" % (sc, bp, e))
                print("  error: %s" % e, flush=True)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        bench.table()
    print(out.getvalue(), end="")
    path = os.path.join(ROOT, args.build, "bench", "results.txt")
    with open(path, "w") as f:
        f.write("\n".join(bench.lines) + "\n" + out.getvalue())
    print("\nmake bench: %.0f s; logs in %s; results in %s" % (
        time.monotonic() - t0, args.logdir, path))
    if bench.failures:
        sys.exit(1)
    if args.strict and any(m.startswith("MISS") for m in bench.misses):
        sys.exit(1)


if __name__ == "__main__":
    main()
