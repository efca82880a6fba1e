"""Raw gotalk load for scripts/instructions.sh: CONNS connections over TCP, one 32-byte `echo`
request in flight on each. WARM requests per connection first, then the server's callgrind
counters are zeroed, COUNT requests per connection are made, and the counters are dumped.
Every answer is checked. Python's speed does not matter: the server's instructions are counted,
not its time."""

import selectors
import socket
import subprocess
import sys

host, port, conns, warm, count, valgrind_pid = sys.argv[1:7]
port, conns, warm, count = int(port), int(conns), int(warm), int(count)
PAYLOAD = b"x" * 32
OP = b"echo"
# 'R', the id (4), the size (8 hex digits), the payload.
ANSWER_LEN = 1 + 4 + 8 + len(PAYLOAD)


def request(n):
    head = b"r" + b"%04x" % (n % 0x10000) + b"%03x" % len(OP) + OP
    return head + b"%08x" % len(PAYLOAD) + PAYLOAD


def connect():
    s = socket.create_connection((host, port))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    s.sendall(b"01")
    version = b""
    while len(version) < 2:
        version += s.recv(2 - len(version))
    assert version == b"01", version
    return s


def phase(socks, n):
    """n requests on every connection, each sent when the one before it is answered."""
    sel = selectors.DefaultSelector()
    left = {s: n for s in socks}
    pending = {s: b"" for s in socks}
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
            pending[s] += data
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
