#!/usr/bin/python3
"""A minimal stand-in for wshub, used only to test the load generator.

It speaks the same client contract as build/wshub (GET /ws upgrade,
subscribe/subscribed, POST /publish, message envelopes) with asyncio and
no library, so `make bench-selftest` can prove the load generator counts
deliveries, losses, duplicates and reordering correctly without the
real server.  Fault switches make it misbehave on purpose:

  --drop-every N      skip every Nth delivery      (loadgen must see lost)
  --dup-every N       send every Nth delivery twice (loadgen must see dup)
  --swap-every N      swap every Nth publish with the next one on the
                      same channel                 (loadgen must see ooo)
  --ping              send a ping after each subscribe (loadgen must pong)

Usage: mock_hub.py --port P [faults]   (prints READY when listening)
"""
import argparse
import asyncio
import base64
import hashlib
import json
import signal
import struct
import sys

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def frame(opcode, payload):
    n = len(payload)
    if n < 126:
        hdr = struct.pack("!BB", 0x80 | opcode, n)
    elif n < 65536:
        hdr = struct.pack("!BBH", 0x80 | opcode, 126, n)
    else:
        hdr = struct.pack("!BBQ", 0x80 | opcode, 127, n)
    return hdr + payload


class Hub:
    def __init__(self, args):
        self.args = args
        self.channels = {}
        self.deliveries = 0
        self.held = {}  # channel -> frame held back for --swap-every
        self.publishes = 0
        self.pongs = 0

    def deliver(self, channel, data):
        env = b'{"type":"message","channel":"%s","data":%s}' % (
            channel.encode(), data)
        f = frame(1, env)
        self.publishes += 1
        a = self.args
        frames = [f]
        if a.swap_every and self.publishes % a.swap_every == 0:
            self.held[channel] = f
            return
        if channel in self.held:
            frames.append(self.held.pop(channel))
        for w in list(self.channels.get(channel, ())):
            for fr in frames:
                self.deliveries += 1
                if a.drop_every and self.deliveries % a.drop_every == 0:
                    continue
                w.write(fr)
                if a.dup_every and self.deliveries % a.dup_every == 0:
                    w.write(fr)

    async def ws_session(self, reader, writer):
        subs = set()
        try:
            while True:
                h = await reader.readexactly(2)
                op, ln = h[0] & 0x0F, h[1] & 0x7F
                if not h[1] & 0x80:
                    return
                if ln == 126:
                    ln = struct.unpack("!H", await reader.readexactly(2))[0]
                elif ln == 127:
                    ln = struct.unpack("!Q", await reader.readexactly(8))[0]
                mask = await reader.readexactly(4)
                data = bytearray(await reader.readexactly(ln))
                for i in range(ln):
                    data[i] ^= mask[i & 3]
                if op == 8:
                    writer.write(frame(8, bytes(data[:2])))
                    return
                if op == 10:
                    self.pongs += 1
                    continue
                if op != 1:
                    continue
                msg = json.loads(data)
                if msg.get("type") == "subscribe":
                    ch = msg["channel"]
                    self.channels.setdefault(ch, set()).add(writer)
                    subs.add(ch)
                    writer.write(frame(1, json.dumps(
                        {"type": "subscribed", "channel": ch}).encode()))
                    if self.args.ping:
                        writer.write(frame(9, b"hi"))
                else:
                    writer.write(frame(1, b'{"type":"error","error":"x"}'))
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            for ch in subs:
                self.channels[ch].discard(writer)
            writer.close()

    async def handle(self, reader, writer):
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode().split("\r\n")
                method, path, _ = lines[0].split(" ", 2)
                hdrs = {}
                for ln in lines[1:]:
                    if ":" in ln:
                        k, v = ln.split(":", 1)
                        hdrs[k.strip().lower()] = v.strip()
                if method == "GET" and path == "/ws":
                    key = hdrs["sec-websocket-key"].encode()
                    acc = base64.b64encode(hashlib.sha1(key + GUID).digest())
                    writer.write(b"HTTP/1.1 101 Switching Protocols\r\n"
                                 b"Upgrade: websocket\r\nConnection: Upgrade"
                                 b"\r\nSec-WebSocket-Accept: " + acc +
                                 b"\r\n\r\n")
                    await self.ws_session(reader, writer)
                    return
                body = await reader.readexactly(
                    int(hdrs.get("content-length", "0")))
                if method == "POST" and path == "/publish":
                    msg = json.loads(body)
                    # The data JSON, verbatim, as wshub does.
                    raw = body[body.index(b'"data":') + 7:-1]
                    self.deliver(msg["channel"], raw)
                    out = b'{"ok":true}'
                    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n"
                                 b"\r\n%s" % (len(out), out))
                else:
                    writer.write(b"HTTP/1.1 404 Not Found\r\n"
                                 b"Content-Length: 0\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError, ValueError):
            writer.close()


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--drop-every", type=int, default=0)
    ap.add_argument("--dup-every", type=int, default=0)
    ap.add_argument("--swap-every", type=int, default=0)
    ap.add_argument("--ping", action="store_true")
    args = ap.parse_args()
    hub = Hub(args)
    srv = await asyncio.start_server(hub.handle, "127.0.0.1", args.port,
                                     backlog=1024)
    stop = asyncio.get_running_loop().create_future()
    asyncio.get_running_loop().add_signal_handler(
        signal.SIGTERM, lambda: stop.done() or stop.set_result(None))
    print("READY", flush=True)
    async with srv:
        await stop
    print("pongs=%d publishes=%d" % (hub.pongs, hub.publishes), flush=True)


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        sys.exit(0)
