"""Records of keyed online state: one model key's record, and a whole partition's snapshot.

A model-key record (``APKR``, version 1) is what a changelog keyed by model key holds: the key's
learner record (:mod:`models._state_learner`) as a length-prefixed blob, then the ids of that
key's outcomes that deduplication remembers, each with its sequence number (the order in which
the partition learned them, across keys, so that a partition rebuilt from its keys' records
forgets the same ids first). It ends with a seal: a byte (0 digest, 1 signature) and 32 bytes,
the SHA-256 of everything before (corruption shows) or, with a signing key, its HMAC-SHA256
(a record forged by a client of the cluster shows too). A reader with a key accepts only
signed records; one without a key accepts only digests. The seal is checked before anything
else is read.

A partition snapshot (``APKO``, version 3; versions 1 and 2 were pickles and are refused) holds
the whole partition: its parameters, every key's learner record, and the remembered ids in order
with the index of the key each belongs to. With ``seen_count`` it is a delta whose older ids come
from the full snapshot it extends (those ids come back without their key).

>>> data = encode_key_record(b"learner", ["o1", "o2"], [0, 3])
>>> decode_key_record(data)
(b'learner', ['o1', 'o2'], [0, 3])
>>> signed = encode_key_record(b"learner", ["o1"], [0], signing_key=b"k" * 32)
>>> decode_key_record(signed, signing_key=b"k" * 32)
(b'learner', ['o1'], [0])
>>> try:
...     decode_key_record(signed, signing_key=b"x" * 32)
... except StateRefused as err:
...     print(str(err)[:60])
a model-key record refused: its signature does not match ALP
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from itertools import pairwise
from typing import Any

from models._snapshot import Header
from models._state_codec import MAC_SIZE, Reader, StateRefused, Writer, mac, verify_mac
from models._state_learner import NO_KEY, read_config, write_config
from models.online import OnlineConfig

__all__ = [
    "KEY_HEADER",
    "PARTITION_HEADER",
    "PartitionState",
    "Snapshot",
    "decode_key_record",
    "decode_snapshot",
    "encode_key_record",
    "seal_key_record",
    "snapshot_ids",
]

KEY_HEADER = Header(b"APKR", ">B", "a model-key record")
KEY_VERSION = 1
PARTITION_HEADER = Header(b"APKO", ">B", "a keyed online-state snapshot")
PARTITION_VERSION = 3  # 3: plain numbers. 2 and 1: pickles, refused
_NO_KEY = 0  # key index of an id whose model key is unknown
_DIGEST, _SIGNED = 0, 1  # how a model-key record is sealed


def encode_key_record(
    learner: bytes, ids: Sequence[str], seqs: Sequence[int], signing_key: bytes | None = None
) -> bytes:
    """One model key's record: its learner record and its remembered ids with their numbers,
    sealed with a digest or, with ``signing_key``, an HMAC."""
    raw = [s.encode("utf-8", "surrogatepass") for s in ids]
    seq_bytes = struct.pack(f">{len(seqs)}Q", *seqs)
    len_bytes = struct.pack(f">{len(raw)}I", *map(len, raw))
    return seal_key_record(learner, seq_bytes, len_bytes, b"".join(raw), signing_key)


def seal_key_record(
    learner: bytes,
    seq_bytes: bytes,
    len_bytes: bytes,
    raw: bytes | bytearray,
    signing_key: bytes | None = None,
) -> bytes:
    """:func:`encode_key_record` from the ids already encoded: their sequence numbers (u64
    each) and UTF-8 lengths (u32 each), big-endian, and their UTF-8 bytes one after the other."""
    w = Writer()
    w.raw(KEY_HEADER.pack(b"", KEY_VERSION))
    w.blob(learner)
    w.u32(len(seq_bytes) // 8)
    w.raw(seq_bytes)
    w.u32(len(len_bytes) // 4)
    w.raw(len_bytes)
    w.raw(raw)
    body = w.bytes()
    if signing_key is None:
        return body + bytes([_DIGEST]) + hashlib.sha256(body).digest()
    return body + bytes([_SIGNED]) + mac(signing_key, body)


def _unseal(data: bytes, signing_key: bytes | None) -> bytes:
    """The body of a sealed record, once its seal checked."""
    body, kind, seal = data[: -1 - MAC_SIZE], data[-1 - MAC_SIZE], data[-MAC_SIZE:]
    if kind == _SIGNED and signing_key is None:
        raise StateRefused(f"a model-key record refused: it is signed; {NO_KEY}")
    if kind == _DIGEST and signing_key is not None:
        raise StateRefused(
            "a model-key record refused: it is not signed, and ALPHAPULSE_STATE_SIGNING_KEY is "
            "set (written without the key, or by a client of the cluster)"
        )
    if kind == _DIGEST and hmac.compare_digest(hashlib.sha256(body).digest(), seal):
        return body
    if kind == _SIGNED and signing_key is not None and verify_mac(signing_key, body, seal):
        return body
    if kind not in (_DIGEST, _SIGNED):
        raise StateRefused(f"a model-key record refused: unknown seal {kind}")
    if kind == _DIGEST:
        raise StateRefused("a model-key record refused: its digest does not match (corrupted)")
    raise StateRefused(
        "a model-key record refused: its signature does not match ALPHAPULSE_STATE_SIGNING_KEY "
        "(written under another key, or tampered with)"
    )


def decode_key_record(
    data: bytes, signing_key: bytes | None = None
) -> tuple[bytes, list[str], list[int]]:
    """``(learner record, ids, sequence numbers)`` of a model-key record, its seal and layout
    checked (the learner record is checked by its reader); :class:`StateRefused` otherwise."""
    if not isinstance(data, bytes):
        raise StateRefused(f"a model-key record must be bytes, got {type(data).__name__}")
    KEY_HEADER.unpack_versioned(data[: KEY_HEADER.size], (KEY_VERSION,))
    if len(data) < KEY_HEADER.size + 1 + MAC_SIZE:
        raise StateRefused("a model-key record is truncated (no room for its seal)")
    r = Reader(_unseal(data, signing_key), "a model-key record", KEY_HEADER.size)
    learner = r.blob()
    n = r.count(12)
    seqs = list(r.many("Q", n))
    ids = r.texts()
    r.end()
    if len(ids) != n:
        raise r.refuse(f"{len(ids)} ids for {n} sequence numbers")
    if any(b <= a for a, b in pairwise(seqs)):
        raise r.refuse("the ids' sequence numbers must rise")
    if len(set(ids)) != n:
        raise r.refuse("an outcome id appears twice")
    return learner, ids, seqs


@dataclass(frozen=True)
class Snapshot:
    """A :class:`models.keyed.KeyedOnline`'s state taken at one moment, encoded later by
    :meth:`encode` (in another thread if need be: it touches nothing live).

    ``id_keys`` gives the model key of each id (None when unknown).
    """

    learners: dict[str, bytes]
    ids: list[str]
    id_keys: list[str | None]
    seen_count: int | None
    max_seen_ids: int
    rr: tuple[float, float]
    config: OnlineConfig

    def encode(self) -> bytes:
        """The snapshot's bytes, which :meth:`models.keyed.KeyedOnline.restore` reads."""
        w = Writer()
        w.raw(PARTITION_HEADER.pack(b"", PARTITION_VERSION))
        w.u64(self.max_seen_ids)
        w.f64(self.rr[0])
        w.f64(self.rr[1])
        write_config(w, asdict(self.config))
        w.i64(-1 if self.seen_count is None else self.seen_count)
        index: dict[str | None, int] = {None: _NO_KEY}
        w.u32(len(self.learners))
        for name, record in self.learners.items():
            index[name] = len(index)
            w.text(name)
            w.blob(record)
        w.u32(len(self.ids))
        for oid, owner in zip(self.ids, self.id_keys, strict=True):
            w.text(oid)
            w.u32(index.get(owner, _NO_KEY))
        return w.bytes()


@dataclass
class PartitionState:
    """What :func:`decode_snapshot` read; the learner records are not checked yet."""

    max_seen_ids: int
    rr: tuple[float, float]
    config: dict[str, Any]
    seen_count: int | None
    learners: dict[str, bytes]
    ids: list[str]
    id_keys: list[str | None]


def _reader(data: bytes) -> Reader:
    if not isinstance(data, bytes):
        raise StateRefused(f"a keyed online-state snapshot must be bytes, not {type(data)}")
    PARTITION_HEADER.unpack_versioned(data[: PARTITION_HEADER.size], (PARTITION_VERSION,))
    return Reader(data, "a keyed online-state snapshot", PARTITION_HEADER.size)


def decode_snapshot(data: bytes) -> PartitionState:
    """Read a partition snapshot's layout; :class:`StateRefused` for anything else."""
    r = _reader(data)
    max_seen, scale, w_max = r.u64(), r.f64(), r.f64()
    config = read_config(r)
    count = r.i64()
    if count < -1 or max_seen < 1:
        raise r.refuse("seen_count or max_seen_ids out of range")
    learners: dict[str, bytes] = {}
    keys: list[str | None] = [None]
    for _ in range(r.count(8)):
        key = r.text()
        if key in learners:
            raise r.refuse("a model key appears twice")
        learners[key] = r.blob()
        keys.append(key)
    ids, id_keys = [], []
    for _ in range(r.count(8)):
        ids.append(r.text())
        i = r.u32()
        if i >= len(keys):
            raise r.refuse(f"an id names key index {i} of {len(keys) - 1}")
        id_keys.append(keys[i])
    r.end()
    if len(set(ids)) != len(ids):
        raise r.refuse("an outcome id appears twice")
    seen_count = None if count == -1 else count
    return PartitionState(max_seen, (scale, w_max), config, seen_count, learners, ids, id_keys)


def snapshot_ids(data: bytes) -> list[str]:
    """The remembered ids of a partition snapshot, oldest first."""
    return decode_snapshot(data).ids
