"""The send buffer size of another process's TCP sockets, through the
kernel's sock_diag netlink interface (what `ss -tm` prints as `tb`),
so the tests do not need iproute2."""
import socket
import struct

NETLINK_SOCK_DIAG = 4
SOCK_DIAG_BY_FAMILY = 20
NLM_F_REQUEST = 0x1
NLM_F_DUMP = 0x300
NLMSG_DONE = 3
NLMSG_ERROR = 2
INET_DIAG_SKMEMINFO = 7
TCP_ESTABLISHED = 1


def sndbufs(local_port):
    """SO_SNDBUF (as the kernel keeps it, i.e. doubled) of every
    established IPv4 TCP socket whose local port is |local_port|."""
    s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_SOCK_DIAG)
    try:
        # struct inet_diag_req_v2: family, protocol, ext, pad, states,
        # then struct inet_diag_sockid (ports, addresses, if, cookie).
        req = struct.pack("=BBBBI", socket.AF_INET, socket.IPPROTO_TCP,
                          1 << (INET_DIAG_SKMEMINFO - 1), 0,
                          1 << TCP_ESTABLISHED)
        req += b"\0" * 48
        hdr = struct.pack("=IHHII", 16 + len(req), SOCK_DIAG_BY_FAMILY,
                          NLM_F_REQUEST | NLM_F_DUMP, 1, 0)
        s.sendto(hdr + req, (0, 0))
        out = []
        done = False
        while not done:
            data = s.recv(65536)
            off = 0
            while off + 16 <= len(data):
                length, typ, _, _, _ = struct.unpack_from("=IHHII", data,
                                                          off)
                if length < 16:
                    done = True
                    break
                if typ in (NLMSG_DONE, NLMSG_ERROR):
                    done = True
                    break
                msg = data[off + 16:off + length]
                # struct inet_diag_msg: family, state, timer, retrans,
                # then the sockid (sport, dport big-endian first).
                sport = struct.unpack_from("!H", msg, 4)[0]
                if sport == local_port:
                    a = 72  # attributes follow the 72-byte inet_diag_msg
                    while a + 4 <= len(msg):
                        alen, atype = struct.unpack_from("=HH", msg, a)
                        if alen < 4:
                            break
                        if atype == INET_DIAG_SKMEMINFO:
                            mem = struct.unpack_from("=%dI" % ((alen - 4) // 4),
                                                     msg, a + 4)
                            out.append(mem[3])  # SK_MEMINFO_SNDBUF
                        a += (alen + 3) & ~3
                off += (length + 3) & ~3
        return out
    finally:
        s.close()
