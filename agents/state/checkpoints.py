"""The learner's state as a changelog keyed by model key, on the compacted checkpoints topic.

Partition ``p`` of the checkpoints topic holds the state of outcomes partition ``p``, the way
Kafka Streams and Faust tables keep theirs:

- one record per model key: the key's UTF-8 bytes, and its state
  (:meth:`models.keyed.KeyedOnline.encode_key`: its online learner as numbers and the ids of
  the outcomes it learned, sealed);
- one meta record under :data:`META_KEY` (not UTF-8, so no model key can take it): the format
  version, the first outcomes offset the state does not cover, how many model keys the partition
  holds, and the outcomes waiting for their signal with the partition's event clocks
  (:mod:`agents.state.waiting`).

A commit writes the keys it touched and the meta record, in the Kafka transaction that also
commits the outcomes offset (:mod:`agents.state.checkpointer`). Compaction keeps the newest record
of each key, so the partition read to its end with ``read_committed`` is the state, newest record
per key winning (:func:`restore_partition`). Anything there that cannot be read, a tombstone, a
missing meta record or fewer model keys than the meta record counts, refuses the partition
(:class:`Refusal`): it is not learned, and never started afresh; each key keeps its newest record
that can be read (its last good state), for answers.

>>> meta = decode_meta(encode_meta(42, 3, b""))
>>> meta.next_offset, meta.keys, meta.waiting.waiting
(42, 3, [])
>>> model_key_of(record_key("BTC")), META_KEY.decode("utf-8", "replace") == "\\ufffdmeta"
('BTC', True)
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from agents.state.waiting import WaitingState, decode_waiting
from models._snapshot import Header, SnapshotError
from models.keyed import KeyedOnline

__all__ = [
    "META_KEY",
    "Meta",
    "Refusal",
    "Restored",
    "decode_meta",
    "encode_meta",
    "model_key_of",
    "record_key",
    "restore_partition",
]

META_KEY = b"\xffmeta"
"""The key of a partition's meta record: 0xff never occurs in UTF-8, so no model key is it."""
_VERSION = 1
_META = Header(b"APSM", ">Hqq", "a learner partition's meta record")  # version, offset, keys
_NOTHING_WAITS = WaitingState([], None, None)


def record_key(model_key: str) -> bytes:
    """The checkpoints record key of ``model_key``."""
    return model_key.encode("utf-8", "surrogatepass")


def model_key_of(key: bytes) -> str:
    """Inverse of :func:`record_key`; :class:`SnapshotError` for bytes no model key gives."""
    try:
        return key.decode("utf-8", "surrogatepass")
    except UnicodeDecodeError as exc:
        raise SnapshotError(f"record key {key!r} is not a model key") from exc


@dataclass(frozen=True)
class Meta:
    """A partition's meta record."""

    next_offset: int
    keys: int
    """How many model keys the partition held when it was written."""
    waiting: WaitingState


def encode_meta(next_offset: int, keys: int, waiting: bytes) -> bytes:
    """The meta record; ``waiting`` is :func:`agents.state.waiting.encode_waiting`'s section,
    empty when no outcome waits."""
    return _META.pack(waiting, _VERSION, next_offset, keys)


def decode_meta(data: bytes) -> Meta:
    """Inverse of :func:`encode_meta`; :class:`SnapshotError` when ``data`` is not one."""
    _, payload = _META.unpack_versioned(data, (_VERSION,))
    _, next_offset, keys = _META.fields_of(data)
    if next_offset < 0 or keys < 0:
        raise SnapshotError(f"a meta record with offset {next_offset} and {keys} model keys")
    waiting = decode_waiting(payload) if payload else _NOTHING_WAITS
    return Meta(next_offset, keys, waiting)


@dataclass(frozen=True)
class Refusal:
    """Why a partition's state was refused, and where."""

    partition: int
    offset: int | None
    """Offset in the checkpoints topic of the record at fault (None: not one record)."""
    reason: str
    """``unreadable_record``, ``unreadable_meta``, ``tombstone``, ``missing_meta``,
    ``missing_keys`` or ``topic_config``."""
    detail: str


@dataclass
class Restored:
    """A partition's state read back from its changelog: the newest readable record of each key.
    ``refused`` says why the partition may not be learned (a newer record could not be read, or
    the state is incomplete); the state is then the last good one, for answers only."""

    next_offset: int
    keyed: KeyedOnline
    waiting: WaitingState
    refused: Refusal | None = None


def restore_partition(
    partition: int, records: Iterable[Any], make_keyed: Callable[[], KeyedOnline]
) -> Restored:
    """The state of ``partition`` from its checkpoints records (``key``, ``value``, ``offset``,
    oldest first, committed only), and why it is refused, if it is.

    A record that cannot be read (or a tombstone) refuses the partition, and the key keeps its
    newest record that can: its last good state. The first fault found is reported.

    >>> from types import SimpleNamespace as R
    >>> k = KeyedOnline()
    >>> _ = k.learn("o1", "BTC", {"x": 1.0}, True, None)
    >>> recs = [R(key=b"BTC", value=k.encode_key("BTC"), offset=0),
    ...         R(key=META_KEY, value=encode_meta(9, 1, b""), offset=1)]
    >>> got = restore_partition(0, recs, KeyedOnline)
    >>> got.next_offset, got.keyed.n_learned("BTC"), got.refused
    (9, 1, None)
    >>> restore_partition(0, recs[:1], KeyedOnline).refused.reason
    'missing_meta'
    >>> bad = restore_partition(0, recs + [R(key=b"BTC", value=b"junk", offset=2)], KeyedOnline)
    >>> bad.refused.offset, bad.refused.reason, bad.keyed.n_learned("BTC")
    (2, 'unreadable_record', 1)
    """
    by_key: dict[bytes | None, list[Any]] = {}
    for rec in records:
        by_key.setdefault(rec.key, []).append(rec)
    keyed = make_keyed()
    faults: list[Refusal] = []
    for rec in by_key.pop(None, []):
        faults.append(Refusal(partition, rec.offset, "unreadable_record", "a record without a key"))
    meta: Meta | None = None
    for rec in reversed(by_key.pop(META_KEY, [])):  # the newest that can be read
        if rec.value is None:
            faults.append(Refusal(partition, rec.offset, "tombstone", "the meta record deleted"))
            continue
        try:
            meta = decode_meta(rec.value)
            meta_offset = rec.offset
            break
        except SnapshotError as exc:
            faults.append(Refusal(partition, rec.offset, "unreadable_meta", str(exc)))
    restored = 0
    for key, recs in by_key.items():
        assert key is not None
        for rec in reversed(recs):
            if rec.value is None:
                faults.append(Refusal(partition, rec.offset, "tombstone", f"key {key!r} deleted"))
                continue
            try:
                keyed.load_key(model_key_of(key), rec.value)
                restored += 1
                break
            except SnapshotError as exc:
                faults.append(Refusal(partition, rec.offset, "unreadable_record", str(exc)))
    if meta is None:
        if by_key and not faults:
            faults.append(
                Refusal(partition, None, "missing_meta", "model key records without a meta record")
            )
        first = min(faults, key=_where) if faults else None
        return Restored(0, keyed, _NOTHING_WAITS, first)
    if restored < meta.keys:
        faults.append(
            Refusal(
                partition,
                meta_offset,
                "missing_keys",
                f"the meta record counts {meta.keys} model keys, the topic holds {restored}",
            )
        )
    first = min(faults, key=_where) if faults else None
    return Restored(meta.next_offset, keyed, meta.waiting, first)


def _where(r: Refusal) -> int:
    return -1 if r.offset is None else r.offset
