"""A Redis Cluster on loopback, and the shard rule, for make bench and make chaos.

Standard library only (the bench and chaos drivers use no redis-py). What they share:

- `keyslot(key)`: the slot Redis gives a key (CRC16/XMODEM of its hash tag, mod 16384),
  the same as `CLUSTER KEYSLOT`;
- `shard_name(key, i)` and `shard_of(member, shards)`: the names of shard i and the
  producers' rule, as src/config/keys.rs defines them;
- `node_port()`: a free port whose cluster bus port (port + 10000) is free too;
- `create(ports, replicas)`: `redis-cli --cluster create ... --cluster-yes`, then waits
  until every node says `cluster_state:ok` and every range lists its replicas;
- `slot_ranges(port)`: `CLUSTER SLOTS` as (lo, hi, master port, master id, replica ports);
- `tag_on_masters(ranges, shards, ...)`: a hash tag whose shards sit on distinct masters.

Starting the nodes is the caller's business (each keeps its own process table); the
command line for one node is `node_args(port, dir)`.
"""
import hashlib
import socket
import subprocess
import time


def crc16(data):
    crc = 0
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else (crc << 1)
            crc &= 0xFFFF
    return crc


def hash_tag(key):
    """What Redis hashes: the text between the first { and the next }, when not empty."""
    open_ = key.find("{")
    if open_ >= 0:
        close = key.find("}", open_ + 1)
        if close > open_ + 1:
            return key[open_ + 1:close]
    return key


def keyslot(key):
    if isinstance(key, bytes):
        key = key.decode()
    return crc16(hash_tag(key).encode()) % 16384


def shard_name(key, i):
    """Shard 0 is the name itself; shard i >= 1 has its hash tag {T} made {T:i}."""
    if i == 0:
        return key
    open_ = key.find("{")
    if open_ >= 0:
        close = key.find("}", open_ + 1)
        if close > open_ + 1:
            return f"{key[:close]}:{i}{key[close:]}"
    return f"{key}:{i}"


def shard_of(member, shards):
    """The producers' rule: the job id's (SHA-1 of the member) first 8 hex digits, mod shards."""
    if isinstance(member, str):
        member = member.encode()
    return int(hashlib.sha1(member).hexdigest()[:8], 16) % shards


def node_port():
    """A free loopback port <= 55535 whose bus port (+10000) is free as well."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port > 55535:
            continue
        with socket.socket() as b:
            try:
                b.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        return port


def node_args(port, directory, node_timeout_ms=2000, program="redis-server", extra=()):
    return [program, "--port", str(port), "--bind", "127.0.0.1",
            "--cluster-enabled", "yes", "--cluster-node-timeout", str(node_timeout_ms),
            "--save", "", "--appendonly", "no", "--dir", directory, *extra]


# ------------------------------------------------------------------ minimal RESP


class Error(Exception):
    """An error reply (the text as Redis sent it)."""


def _enc(args):
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        b = a if isinstance(a, bytes) else str(a).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(b), b))
    return b"".join(out)


class Conn:
    """One node. Errors come back as `Error` values from pipeline(), raised by call();
    connection trouble raises OSError (the connection is then closed)."""

    def __init__(self, port, timeout=5.0):
        self.port, self.timeout = port, timeout
        self.sock = self.f = None

    def close(self):
        if self.sock is not None:
            try:
                self.sock.close()
            except OSError:
                pass
        self.sock = self.f = None

    def _read(self):
        line = self.f.readline()
        if not line:
            raise OSError("connection closed")
        t, rest = line[:1], line[1:-2]
        if t == b"+":
            return rest.decode()
        if t == b"-":
            return Error(rest.decode())
        if t == b":":
            return int(rest)
        if t == b"$":
            n = int(rest)
            if n < 0:
                return None
            data = self.f.read(n + 2)
            if len(data) < n + 2:
                raise OSError("short read")
            return data[:-2].decode(errors="replace")
        if t == b"*":
            n = int(rest)
            return None if n < 0 else [self._read() for _ in range(n)]
        raise OSError(f"bad reply {line!r}")

    def pipeline(self, cmds):
        if self.sock is None:
            self.sock = socket.create_connection(("127.0.0.1", self.port), timeout=self.timeout)
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.f = self.sock.makefile("rb")
        try:
            self.sock.sendall(b"".join(_enc(c) for c in cmds))
            return [self._read() for _ in cmds]
        except (OSError, ValueError) as e:
            self.close()
            raise OSError(str(e)) from None

    def call(self, *args):
        reply = self.pipeline([args])[0]
        if isinstance(reply, Error):
            raise reply
        return reply


def info(port, section):
    c = Conn(port, timeout=2.0)
    try:
        text = c.call("INFO", section)
    finally:
        c.close()
    return dict(line.split(":", 1) for line in text.splitlines()
                if ":" in line and not line.startswith("#"))


# ------------------------------------------------------------------ the cluster


def slot_ranges(port):
    """CLUSTER SLOTS of the node on `port`, sorted: [(lo, hi, master_port, master_id,
    [replica ports])]."""
    c = Conn(port, timeout=2.0)
    try:
        slots = c.call("CLUSTER", "SLOTS")
    finally:
        c.close()
    out = []
    for r in slots:
        out.append((int(r[0]), int(r[1]), int(r[2][1]), r[2][2], [int(n[1]) for n in r[3:]]))
    return sorted(out)


def master_of(ranges, slot):
    for lo, hi, master, _, _ in ranges:
        if lo <= slot <= hi:
            return master
    return None


def wait_ok(ports, masters, replicas, timeout=60.0):
    """Until every node in `ports` says cluster_state:ok, sees `masters` masters and, in
    CLUSTER SLOTS, every range has `replicas` replicas."""
    end = time.time() + timeout
    last = None
    while time.time() < end:
        try:
            good = all("cluster_state:ok" in Conn(p, 1.0).call("CLUSTER", "INFO") for p in ports)
            if good:
                views = [slot_ranges(p) for p in ports]
                last = views[0]
                if all(len({r[2] for r in v}) == masters and all(len(r[4]) >= replicas for r in v)
                       and [r[:3] for r in v] == [r[:3] for r in views[0]] for v in views):
                    return views[0]
        except (OSError, Error) as e:
            last = e
        time.sleep(0.1)
    raise RuntimeError(f"the cluster did not settle within {timeout:.0f} s (last: {last})")


def create(ports, replicas, cli="redis-cli", timeout=60.0):
    """Joins running nodes into a cluster of len(ports) / (replicas + 1) masters."""
    for p in ports:
        end = time.time() + 30
        while True:
            try:
                if Conn(p, 1.0).call("PING") == "PONG":
                    break
            except (OSError, Error):
                if time.time() > end:
                    raise RuntimeError(f"cluster node {p} did not answer within 30 s")
                time.sleep(0.05)
    out = subprocess.run([cli, "--cluster", "create", *[f"127.0.0.1:{p}" for p in ports],
                          "--cluster-replicas", str(replicas), "--cluster-yes"],
                         capture_output=True, text=True, timeout=120)
    if out.returncode != 0:
        raise RuntimeError("redis-cli --cluster create failed:\n" + out.stdout + out.stderr)
    return wait_ok(ports, len(ports) // (replicas + 1), replicas, timeout)


def tag_on_masters(ranges, shards, prefix="dq", key_suffix=":job_zqueue", extra=None):
    """The first tag `{prefix}{n}` whose `shards` shards sit on distinct masters (and for
    which `extra(slots)` holds, when given). Returns (tag, [slot of shard i])."""
    for n in range(100000):
        tag = f"{prefix}{n}"
        key = "{" + tag + "}" + key_suffix
        slots = [keyslot(shard_name(key, i)) for i in range(shards)]
        if len({master_of(ranges, s) for s in slots}) == min(shards, len({r[2] for r in ranges})) \
                and (extra is None or extra(slots)):
            return tag, slots
    raise RuntimeError("no tag puts the shards on distinct masters")


if __name__ == "__main__":
    # Self-check against Redis's documented values.
    assert keyslot("123456789") == 12739, keyslot("123456789")  # CRC16/XMODEM check value 0x31C3
    assert keyslot("{user1000}.following") == keyslot("{user1000}.followers")
    assert shard_name("{dq}:job_zqueue", 2) == "{dq:2}:job_zqueue"
    assert shard_name("app:{q}:jobs", 1) == "app:{q:1}:jobs"
    assert shard_name("jobs", 1) == "jobs:1"
    assert shard_of("a", 3) == 1 and shard_of("a", 7) == 6
    print("ok")
