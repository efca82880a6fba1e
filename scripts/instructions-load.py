"""Raw gotalk load for scripts/instructions.sh: CONNS connections over TCP or WebSocket (`ws`
as the seventh argument; upgraded at /gotalk/), one 32-byte `echo` request in flight on each. WARM requests per connection first, then the server's callgrind
counters are zeroed, COUNT requests per connection are made, and the counters are dumped.
Every answer is checked. Python's speed does not matter: the server's instructions are counted,
not its time."""

import selectors
import socket
import subprocess
import sys

host, port, conns, warm, count, valgrind_pid = sys.argv[1:7]
port, conns, warm, count = int(port), int(conns), int(warm), int(count)
WS = sys.argv[7:8] == ["ws"]
PAYLOAD = b"x" * 32
OP = b"echo"
# 'R', the id (4), the size (8 hex digits), the payload.
ANSWER_LEN = 1 + 4 + 8 + len(PAYLOAD)


def framed(message):
    """`message` as this connection sends it: over WebSocket, one masked binary frame (the
    mask is zero, which leaves the bytes as they are)."""
    if not WS:
        return message
    assert len(message) < 126
    return bytes([0x82, 0x80 | len(message)]) + b"\0\0\0\0" + message


def request(n):
    head = b"r" + b"%04x" % (n % 0x10000) + b"%03x" % len(OP) + OP
    return framed(head + b"%08x" % len(PAYLOAD) + PAYLOAD)


def deframe(data):
    """Over WebSocket, the byte stream carried by the whole frames at the start of `data`, and
    what is left of `data`; over TCP, all of it."""
    if not WS:
        return data, b""
    stream = b""
    while len(data) >= 2:
        opcode, length, at = data[0] & 0x0F, data[1] & 0x7F, 2
        if length == 126:
            if len(data) < 4:
                break
            length, at = int.from_bytes(data[2:4], "big"), 4
        elif length == 127:
            if len(data) < 10:
                break
            length, at = int.from_bytes(data[2:10], "big"), 10
        if len(data) < at + length:
            break
        if opcode in (0, 1, 2):
            stream += data[at : at + length]
        elif opcode == 8:
            sys.exit("the server closed the WebSocket")
        data = data[at + length :]
    return stream, data


def connect():
    s = socket.create_connection((host, port))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    rest = b""
    if WS:
        s.sendall(
            b"GET /gotalk/ HTTP/1.1\r\nHost: %s:%d\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            b"Sec-WebSocket-Version: 13\r\n\r\n" % (host.encode(), port)
        )
        head = b""
        while b"\r\n\r\n" not in head:
            head += s.recv(4096)
        assert head.startswith(b"HTTP/1.1 101"), head
        rest = head.split(b"\r\n\r\n", 1)[1]
    s.sendall(framed(b"01"))
    version = b""
    while len(version) < 2:
        got, rest = deframe(rest)
        version += got
        if len(version) < 2:
            rest += s.recv(4096)
    assert version == b"01", version
    return s


def phase(socks, n):
    """n requests on every connection, each sent when the one before it is answered."""
    sel = selectors.DefaultSelector()
    left = {s: n for s in socks}
    pending = {s: b"" for s in socks}
    frames = {s: b"" for s in socks}
    for s in socks:
        s.sendall(request(left[s]))
        sel.register(s, selectors.EVENT_READ)
    active = len(socks)
    while active:
        for key, _ in sel.select():
            s = key.fileobj
            data = s.recv(65536)
            if not data:
                sys.exit("the server closed a connection")
            stream, frames[s] = deframe(frames[s] + data)
            pending[s] += stream
            while len(pending[s]) >= ANSWER_LEN:
                answer, pending[s] = pending[s][:ANSWER_LEN], pending[s][ANSWER_LEN:]
                expected = b"R" + b"%04x" % (left[s] % 0x10000) + b"%08x" % len(PAYLOAD) + PAYLOAD
                assert answer == expected, answer
                left[s] -= 1
                if left[s] == 0:
                    sel.unregister(s)
                    active -= 1
                else:
                    s.sendall(request(left[s]))
    sel.close()


socks = [connect() for _ in range(conns)]
phase(socks, warm)
subprocess.run(["callgrind_control", "--zero", valgrind_pid], check=True, capture_output=True)
phase(socks, count)
subprocess.run(["callgrind_control", "--dump", valgrind_pid], check=True, capture_output=True)
