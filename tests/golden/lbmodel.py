"""An independent model of lbd's flow hashing and Maglev tables.

lbd fixes its hashes (no random seed) so every instance and every restart
picks the same backend for a flow. This module re-implements them from the
specification in core/src/flow.rs and core/src/maglev.rs, so the
golden tests can predict the backend of every flow and check lbd against
it, rather than trusting lbd's own answer.
"""

M64 = (1 << 64) - 1
K0 = 0x9E3779B97F4A7C15
K1 = 0xC2B2AE3D27D4EB4F
K2 = 0x165667B19E3779F9


def fold_mul(a, b):
    r = (a & M64) * (b & M64)
    return (r & M64) ^ (r >> 64)


def ip_int(s):
    a, b, c, d = (int(x) for x in s.split("."))
    return (a << 24) | (b << 16) | (c << 8) | d


def flow_hash(src, dst, sport, dport, proto):
    """FlowKey::hash of a request 5-tuple (addresses as dotted strings)."""
    a = (ip_int(src) << 32) | ip_int(dst)
    b = (sport << 48) | (dport << 32) | proto
    return fold_mul(fold_mul(a ^ K0, b ^ K1), K2)


RSS_KEY = bytes.fromhex(
    "6d5a56da255b0ec24167253d43a38fb0d0ca2bcbae7b30b477cb2da38030f20c6a42b73bbeac01fa"
)


def toeplitz(key, data):
    """The RSS hash, bit by bit (engine/src/rss.rs)."""
    k = int.from_bytes(key, "big")
    klen = len(key) * 8
    result = 0
    for i, byte in enumerate(data):
        for b in range(8):
            if byte & (0x80 >> b):
                pos = i * 8 + b
                result ^= (k >> (klen - 32 - pos)) & 0xFFFFFFFF
    return result


def owner_shard(ip, port, proto, workers):
    """Worker owning client endpoint (ip, port): Toeplitz over ip||port,
    64 buckets, bucket % workers. `proto` does not take part."""
    h = toeplitz(RSS_KEY, ip_int(ip).to_bytes(4, "big") + port.to_bytes(2, "big"))
    return (h & 63) % workers


def stable_hash(data, seed):
    h = 0xCBF29CE484222325 ^ seed
    for byte in data:
        h ^= byte
        h = (h * 0x00000100000001B3) & M64
    h ^= h >> 33
    h = (h * 0xFF51AFD7ED558CCD) & M64
    h ^= h >> 33
    h = (h * 0xC4CEB9FE1A85EC53) & M64
    return h ^ (h >> 33)


def permutation(name, m):
    offset = stable_hash(name.encode(), 0x6C62642D6F666673) % m
    skip = stable_hash(name.encode(), 0x6C62642D736B6970) % (m - 1) + 1
    return offset, skip


def maglev_table(backends, m=65537):
    """backends: list of (address, port, weight). Returns slot -> index."""
    entries = [-1] * m
    walks = []
    max_w = max([w for _, _, w in backends] + [0])
    if max_w == 0:
        return entries
    for i, (addr, port, w) in enumerate(backends):
        if w > 0:
            off, skip = permutation(f"{addr}:{port}", m)
            walks.append([i, w, off, skip, 0])
    filled, rnd = 0, 1
    while filled < m:
        for wk in walks:
            i, w, _, skip, claimed = wk
            if rnd * w < claimed:
                continue
            wk[4] = claimed + max_w
            while True:
                slot = wk[2]
                wk[2] = (wk[2] + skip) % m
                if entries[slot] == -1:
                    entries[slot] = i
                    filled += 1
                    break
            if filled == m:
                break
        rnd += 1
    return entries


class Listener:
    def __init__(self, vip, proto, port, backends, m=65537):
        self.vip, self.proto, self.port = vip, proto, port
        self.backends = backends
        self.m = m
        self.table = maglev_table(backends, m)

    def pick(self, client, cport):
        h = flow_hash(client, self.vip, cport, self.port, self.proto)
        i = self.table[h % self.m]
        return None if i < 0 else self.backends[i]
