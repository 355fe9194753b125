"""A loopback TCP proxy for fault tests: put it between wshub and
redis-server and make the link misbehave.

    p = TcpProxy(redis_port)           # listens on p.port
    p.stall()      # stop moving bytes both ways; connections stay open
    p.resume()     # move bytes again (what was held goes through)
    p.cut()        # close every connection now (new ones are accepted)
    p.slow(bps)    # at most bps bytes per second per direction
    p.drip(delay)  # one byte at a time, |delay| seconds apart
    p.close()

Threads, one pair per connection, each with a bounded buffer; all of it
dies with close().  Nothing here talks to anything but 127.0.0.1.
"""
import select
import socket
import threading
import time


class TcpProxy:
    def __init__(self, target_port, target_host="127.0.0.1"):
        self.target = (target_host, target_port)
        self.ls = socket.socket()
        self.ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.ls.bind(("127.0.0.1", 0))
        self.ls.listen(64)
        self.port = self.ls.getsockname()[1]
        self.lock = threading.Lock()
        self.conns = []          # (client socket, server socket)
        self.mode = "pass"
        self.bps = 0
        self.delay = 0.0
        self.closed = False
        self.accepted = 0
        self.moved = 0           # bytes forwarded, both directions
        self.moved_to_server = 0
        self.t = threading.Thread(target=self._accept, daemon=True)
        self.t.start()

    # ---------------------------------------------------------- control
    def stall(self):
        self.mode = "stall"

    def resume(self):
        self.mode = "pass"

    def slow(self, bps):
        self.bps = bps
        self.mode = "slow"

    def drip(self, delay):
        self.delay = delay
        self.mode = "drip"

    def cut(self):
        with self.lock:
            conns, self.conns = self.conns, []
        for a, b in conns:
            for s in (a, b):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                s.close()

    def close(self):
        self.closed = True
        try:
            self.ls.close()
        except OSError:
            pass
        self.cut()

    # ---------------------------------------------------------- workers
    def _accept(self):
        while not self.closed:
            try:
                c, _ = self.ls.accept()
            except OSError:
                return
            try:
                s = socket.create_connection(self.target, timeout=5)
            except OSError:
                c.close()
                continue
            with self.lock:
                self.conns.append((c, s))
                self.accepted += 1
            for src, dst, up in ((c, s, True), (s, c, False)):
                threading.Thread(target=self._pump, args=(src, dst, up),
                                 daemon=True).start()

    def _pump(self, src, dst, up):
        budget_t = time.monotonic()
        try:
            while not self.closed:
                if self.mode == "stall":
                    time.sleep(0.01)
                    continue
                r, _, _ = select.select([src], [], [], 0.05)
                if not r:
                    continue
                if self.mode == "stall":
                    continue
                n = 65536
                if self.mode == "drip":
                    n = 1
                elif self.mode == "slow":
                    n = max(1, min(65536, self.bps // 20))
                data = src.recv(n)
                if not data:
                    break
                dst.sendall(data)
                self.moved += len(data)
                if up:
                    self.moved_to_server += len(data)
                if self.mode == "drip":
                    time.sleep(self.delay)
                elif self.mode == "slow":
                    budget_t += len(data) / float(self.bps)
                    wait = budget_t - time.monotonic()
                    if wait > 0:
                        time.sleep(wait)
                    else:
                        budget_t = time.monotonic()
        except (OSError, ValueError):
            pass  # ValueError: cut() closed the socket (fd -1) meanwhile
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
