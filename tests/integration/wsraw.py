"""A minimal blocking RFC 6455 client on a raw socket, for tests that must
misbehave (binary frames, bad UTF-8, oversize messages, never reading,
never answering pings) or look at frames byte by byte."""
import base64
import hashlib
import json
import os
import socket
import struct
import time

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


class Closed(Exception):
    pass


class RawWS:
    def __init__(self, port, rcvbuf=None, path="/ws", timeout=5.0,
                 auto_pong=True):
        self.sock = socket.socket()
        if rcvbuf is not None:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(timeout)
        self.sock.connect(("127.0.0.1", port))
        self.buf = b""
        self.auto_pong = auto_pong
        self.pings = 0
        self.close_code = None
        self.close_reason = None
        self.eof = False
        key = base64.b64encode(os.urandom(16))
        self.sock.sendall(
            b"GET " + path.encode() + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Upgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: " + key + b"\r\n"
            b"Sec-WebSocket-Version: 13\r\n\r\n")
        head = self._read_until(b"\r\n\r\n")
        self.status = int(head.split(b" ", 2)[1])
        self.headers = head
        if self.status == 101:
            want = base64.b64encode(hashlib.sha1(key + GUID).digest())
            assert b"Sec-WebSocket-Accept: " + want in head, head

    def _read_until(self, marker):
        while marker not in self.buf:
            d = self.sock.recv(65536)
            if not d:
                raise Closed("eof during handshake")
            self.buf += d
        i = self.buf.index(marker) + len(marker)
        head, self.buf = self.buf[:i], self.buf[i:]
        return head

    def send_frame(self, opcode, payload, fin=True, mask=True, rsv=0):
        b0 = (0x80 if fin else 0) | (rsv << 4) | opcode
        n = len(payload)
        if n < 126:
            hdr = struct.pack("!BB", b0, (0x80 if mask else 0) | n)
        elif n < 65536:
            hdr = struct.pack("!BBH", b0, (0x80 if mask else 0) | 126, n)
        else:
            hdr = struct.pack("!BBQ", b0, (0x80 if mask else 0) | 127, n)
        if mask:
            key = os.urandom(4)
            body = bytes(b ^ key[i % 4] for i, b in enumerate(payload)) \
                if n < 4096 else _mask_fast(payload, key)
            self.sock.sendall(hdr + key + body)
        else:
            self.sock.sendall(hdr + payload)

    def send_text(self, text):
        if isinstance(text, (dict, list)):
            text = json.dumps(text)
        if isinstance(text, str):
            text = text.encode()
        self.send_frame(1, text)

    def _need(self, n):
        while len(self.buf) < n:
            d = self.sock.recv(65536)
            if not d:
                self.eof = True
                raise Closed("eof")
            self.buf += d

    def recv_frame(self):
        """Returns (opcode, payload); answers pings unless told not to."""
        while True:
            self._need(2)
            b0, b1 = self.buf[0], self.buf[1]
            n = b1 & 0x7F
            off = 2
            if n == 126:
                self._need(4)
                n = struct.unpack("!H", self.buf[2:4])[0]
                off = 4
            elif n == 127:
                self._need(10)
                n = struct.unpack("!Q", self.buf[2:10])[0]
                off = 10
            assert not (b1 & 0x80), "server frames must not be masked"
            self._need(off + n)
            payload = self.buf[off:off + n]
            self.buf = self.buf[off + n:]
            op = b0 & 0x0F
            if op == 9:
                self.pings += 1
                if self.auto_pong:
                    self.send_frame(10, payload)
                    continue
            if op == 8:
                if len(payload) >= 2:
                    self.close_code = struct.unpack("!H", payload[:2])[0]
                    self.close_reason = payload[2:].decode("utf-8", "replace")
            return op, payload

    def recv_json(self):
        while True:
            op, payload = self.recv_frame()
            if op == 1:
                return json.loads(payload)
            if op == 8:
                raise Closed("close %s" % self.close_code)

    def recv_until_closed(self, timeout=5.0):
        """Reads until a close frame or EOF; returns the close code (None
        when the connection ended without a close frame)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                op, _ = self.recv_frame()
            except (Closed, ConnectionResetError):
                return self.close_code
            except socket.timeout:
                continue
            if op == 8:
                return self.close_code
        raise AssertionError("connection not closed within %ss" % timeout)

    def wait_eof(self, timeout=5.0):
        """After a close frame: True once the server closes TCP."""
        self.sock.settimeout(timeout)
        try:
            while True:
                d = self.sock.recv(65536)
                if not d:
                    return True
        except ConnectionResetError:
            return True
        except socket.timeout:
            return False

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


def _mask_fast(payload, key):
    n = len(payload)
    k = (key * (n // 4 + 1))[:n]
    a = int.from_bytes(payload, "big")
    b = int.from_bytes(k, "big")
    return (a ^ b).to_bytes(n, "big")
