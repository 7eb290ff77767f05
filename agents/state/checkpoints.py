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
(:class:`Refusal`): it is never started afresh.

>>> meta = decode_meta(encode_meta(42, 3, b""))
>>> meta.next_offset, meta.keys, meta.waiting.waiting
(42, 3, [])
>>> model_key_of(record_key("BTC")), META_KEY.decode("utf-8", "replace") == "\\ufffdmeta"
('BTC', True)
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
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
    kept: KeyedOnline | None = field(default=None, compare=False, repr=False)
    """The last good state: each model key's newest readable record. The refused partition
    answers with it and learns nothing."""


@dataclass
class Restored:
    """A partition's state read back from its changelog."""

    next_offset: int
    keyed: KeyedOnline
    waiting: WaitingState


def restore_partition(
    partition: int, records: Iterable[Any], make_keyed: Callable[[], KeyedOnline]
) -> Restored | Refusal:
    """The state of ``partition`` from its checkpoints records (``key``, ``value``, ``offset``,
    oldest first, committed only), or why it is refused.

    >>> from types import SimpleNamespace as R
    >>> k = KeyedOnline()
    >>> _ = k.learn("o1", "BTC", {"x": 1.0}, True, None)
    >>> recs = [R(key=b"BTC", value=k.encode_key("BTC"), offset=0),
    ...         R(key=META_KEY, value=encode_meta(9, 1, b""), offset=1)]
    >>> got = restore_partition(0, recs, KeyedOnline)
    >>> got.next_offset, got.keyed.n_learned("BTC")
    (9, 1)
    >>> restore_partition(0, recs[:1], KeyedOnline).reason
    'missing_meta'
    >>> bad = [R(key=b"BTC", value=b"junk", offset=0), recs[1]]
    >>> restore_partition(0, bad, KeyedOnline).offset
    0
    """
    history: dict[bytes | None, list[Any]] = {}
    for rec in records:  # in offset order: the newest record of a key comes last
        history.setdefault(rec.key, []).append(rec)
    keyed = make_keyed()
    if not history:
        return Restored(0, keyed, _NOTHING_WAITS)
    # The first fault found is reported; every model key still gets its newest readable record,
    # the last good state that a refused partition keeps (read only).
    faults: list[Refusal] = []
    metas = history.pop(META_KEY, [])
    meta = None
    for rec in reversed(metas):
        if rec.value is None:
            why = "the meta record was deleted"
            faults.append(Refusal(partition, rec.offset, "tombstone", why))
            continue
        try:
            meta = decode_meta(rec.value)
            break
        except SnapshotError as exc:
            faults.append(Refusal(partition, rec.offset, "unreadable_meta", str(exc)))
    if not metas:
        faults.append(
            Refusal(partition, None, "missing_meta", "model key records without a meta record")
        )
    for key, recs in history.items():
        for rec in reversed(recs):
            if key is None:
                faults.append(
                    Refusal(partition, rec.offset, "unreadable_record", "a record without a key")
                )
                break
            if rec.value is None:
                faults.append(
                    Refusal(partition, rec.offset, "tombstone", f"record key {key!r} deleted")
                )
                continue
            try:
                keyed.load_key(model_key_of(key), rec.value)
                break
            except SnapshotError as exc:
                faults.append(Refusal(partition, rec.offset, "unreadable_record", str(exc)))
    if not faults and meta is not None and len(history) < meta.keys:
        faults.append(
            Refusal(
                partition,
                metas[-1].offset,
                "missing_keys",
                f"the meta record counts {meta.keys} model keys, the topic holds {len(history)}",
            )
        )
    if faults or meta is None:
        return replace(faults[0], kept=keyed)
    return Restored(meta.next_offset, keyed, meta.waiting)
