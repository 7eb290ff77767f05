"""The learner's checkpoint records: full ones, and deltas that extend the last full one.

A checkpoint holds the offset of the first outcome it does not cover and the keyed online state
(:class:`models.keyed.KeyedOnline`): the learners, and the ids of the outcomes learned, up to
``ALPHAPULSE_MAX_SEEN_IDS`` per partition. The ids are almost all of it, and the learner writes a
checkpoint per partition every ``ALPHAPULSE_CHECKPOINT_INTERVAL_S``, so most checkpoints are
deltas: the whole state except the ids, which are only those learned since the last full
checkpoint, and the offset of that full checkpoint in the checkpoints topic. A full checkpoint is
written again once the delta would carry more than a twentieth of the ids
(:func:`full_checkpoint_due`). Sizes and encoding times are in docs/benchmarks.md.

A checkpoint is taken (:func:`take_checkpoint`: the learners as bytes and the ids as a list) and
encoded afterwards, so that a big one can be encoded in another thread while the event loop goes
on (:mod:`agents.state.checkpointer`).

While outcomes wait for their signal (:mod:`agents.state.waiting`), a checkpoint of either kind
also holds them and the partition's event clocks, under a magic of its own (``APCW`` full,
``APDW`` delta) whose header gives the length of that section; a checkpoint without waiting
outcomes is written exactly as before.

Both kinds go to partition ``p`` of the compacted checkpoints topic: full ones under the key
``p``, deltas under ``p.delta``. Compaction keeps the newest record of each key, and a delta
always extends the newest full checkpoint, so the newest record of the partition, with the full
checkpoint it names, is the state.
"""

from __future__ import annotations

from dataclasses import dataclass

from agents.state.waiting import WaitingState, decode_waiting
from models._snapshot import Header, SnapshotError
from models.keyed import KeyedOnline, Snapshot

__all__ = [
    "TakenCheckpoint",
    "checkpoint_base",
    "checkpoint_key",
    "decode_checkpoint",
    "decode_checkpoint_state",
    "encode_checkpoint",
    "encode_delta_checkpoint",
    "full_checkpoint_due",
    "take_checkpoint",
]

_FULL = Header(b"APCK", ">q", "a full learner checkpoint")  # next_offset
_DELTA = Header(b"APCD", ">qq", "a delta learner checkpoint")  # next_offset, base_offset
# The same with waiting outcomes, and the length of their section, which precedes the state.
_FULL_W = Header(b"APCW", ">qI", "a full learner checkpoint")
_DELTA_W = Header(b"APDW", ">qqI", "a delta learner checkpoint")
_NOTHING_WAITS = WaitingState([], None, None)


@dataclass(frozen=True)
class TakenCheckpoint:
    """A checkpoint's content taken at one moment; :meth:`encode` makes its bytes later, in another
    thread if need be (it touches nothing live)."""

    next_offset: int
    state: Snapshot
    base_offset: int | None
    """None for a full checkpoint; for a delta, the offset of the full checkpoint it extends."""
    waiting: bytes = b""
    """The waiting outcomes and clocks (:func:`agents.state.waiting.encode_waiting`), if any."""

    def encode(self) -> bytes:
        """The record's bytes."""
        w = self.waiting
        if self.base_offset is None:
            if w:
                return _FULL_W.pack(w + self.state.encode(), self.next_offset, len(w))
            return _FULL.pack(self.state.encode(), self.next_offset)
        if w:
            payload = w + self.state.encode()
            return _DELTA_W.pack(payload, self.next_offset, self.base_offset, len(w))
        return _DELTA.pack(self.state.encode(), self.next_offset, self.base_offset)


def take_checkpoint(
    next_offset: int,
    keyed: KeyedOnline,
    base_offset: int | None = None,
    new_ids: int = 0,
    waiting: bytes = b"",
) -> TakenCheckpoint:
    """Take a full checkpoint of ``keyed`` or, with ``base_offset``, a delta of its ``new_ids``
    newest seen ids. ``base_offset`` is the offset, in the checkpoints topic, of the full
    checkpoint written when ``keyed`` had learned all but those ids. ``waiting`` is the encoded
    section of the waiting outcomes (empty when none waits)."""
    if base_offset is None:
        return TakenCheckpoint(next_offset, keyed.take(), None, waiting)
    return TakenCheckpoint(next_offset, keyed.take(newest_ids=new_ids), base_offset, waiting)


def encode_checkpoint(next_offset: int, keyed: KeyedOnline) -> bytes:
    """Bytes of a full checkpoint: magic, the covered offset, the keyed online state.

    >>> off, k = decode_checkpoint(encode_checkpoint(42, KeyedOnline()))
    >>> off, k.learners
    (42, {})
    """
    return take_checkpoint(next_offset, keyed).encode()


def encode_delta_checkpoint(
    next_offset: int, keyed: KeyedOnline, base_offset: int, new_ids: int
) -> bytes:
    """Bytes of a delta: the state with only the ``new_ids`` newest seen ids.

    >>> k = KeyedOnline()
    >>> for oid in ("o1", "o2", "o3"):
    ...     _ = k.learn(oid, "BTC", {"x": 1.0}, True, None)
    >>> full = encode_checkpoint(7, k)
    >>> _ = k.learn("o4", "BTC", {"x": 1.0}, False, None)
    >>> delta = encode_delta_checkpoint(8, k, base_offset=120, new_ids=1)
    >>> checkpoint_base(delta), checkpoint_base(full)
    (120, None)
    >>> off, restored = decode_checkpoint(delta, base=full)
    >>> off, list(restored.seen), restored.n_learned("BTC")
    (8, ['o1', 'o2', 'o3', 'o4'], 4)
    """
    return take_checkpoint(next_offset, keyed, base_offset, new_ids).encode()


def checkpoint_base(data: bytes) -> int | None:
    """The offset of the full checkpoint that the delta ``data`` extends; None for a full one."""
    if _DELTA.matches(data):
        return _DELTA.fields_of(data)[1]
    if _DELTA_W.matches(data):
        return _DELTA_W.fields_of(data)[1]
    return None


def decode_checkpoint(data: bytes, base: bytes | None = None) -> tuple[int, KeyedOnline]:
    """``(next_offset, state)`` of a checkpoint; a delta needs its full checkpoint as ``base``.

    A delta whose ``base`` is missing restores with the delta's own ids only.
    """
    next_offset, keyed, _ = decode_checkpoint_state(data, base)
    return next_offset, keyed


def _split(head: Header, data: bytes) -> tuple[tuple[int, ...], WaitingState, bytes]:
    """The header fields, the waiting section and the keyed state of ``data``."""
    fields, payload = head.unpack(data)
    if head is _FULL_W or head is _DELTA_W:
        n = fields[-1]
        return fields[:-1], decode_waiting(payload[:n]), payload[n:]
    return fields, _NOTHING_WAITS, payload


def _full_state(data: bytes) -> bytes:
    for head in (_FULL, _FULL_W):
        if head.matches(data):
            return _split(head, data)[2]
    raise SnapshotError("the base of a delta checkpoint is not a full checkpoint")


def decode_checkpoint_state(
    data: bytes, base: bytes | None = None
) -> tuple[int, KeyedOnline, WaitingState]:
    """``(next_offset, state, waiting)`` of a checkpoint (see :func:`decode_checkpoint`)."""
    for head in (_FULL, _FULL_W):
        if head.matches(data):
            (next_offset,), waiting, state = _split(head, data)
            return next_offset, KeyedOnline.restore(state), waiting
    head = _DELTA if _DELTA.matches(data) else _DELTA_W
    if not head.matches(data):
        raise SnapshotError("not a learner checkpoint")
    older: list[str] = []
    if base is not None:
        older = KeyedOnline.snapshot_ids(_full_state(base))
    (next_offset, _), waiting, state = _split(head, data)
    return next_offset, KeyedOnline.restore(state, older), waiting


def full_checkpoint_due(new_ids: int, seen: int) -> bool:
    """Whether the next checkpoint is a full one rather than a delta of the last full one.

    Full when the ids learned since the last full checkpoint are more than a twentieth of the
    ``seen`` ids remembered (and whenever there is no full checkpoint to extend). A twentieth is
    about what writes the fewest ids in all at the defaults (see the module's text).

    >>> full_checkpoint_due(10_000, 200_000), full_checkpoint_due(10_001, 200_000)
    (False, True)
    """
    return new_ids > seen // 20


def checkpoint_key(partition: int, delta: bool) -> bytes:
    """The record key of a checkpoint of ``partition``.

    >>> checkpoint_key(3, delta=False), checkpoint_key(3, delta=True)
    (b'3', b'3.delta')
    """
    return f"{partition}.delta".encode() if delta else str(partition).encode()
