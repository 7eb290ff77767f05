"""The remembered outcome ids of one model key, kept with the bytes its record holds them as."""

from __future__ import annotations

import sys
from array import array

from models._state_keyed import seal_key_record

__all__ = ["KeyIds"]


def _big_endian(values: array[int]) -> bytes:
    """``values`` as big-endian bytes, the byte order of the state format.

    >>> _big_endian(array("I", [1, 258]))
    b'\\x00\\x00\\x00\\x01\\x00\\x00\\x01\\x02'
    """
    if sys.byteorder == "big":
        return values.tobytes()
    swapped = array(values.typecode, values)
    swapped.byteswap()
    return swapped.tobytes()


class KeyIds:
    """The ids of one model key's outcomes that deduplication remembers, with their sequence
    numbers, oldest first; and each id's UTF-8 bytes, kept as ids come and go, so that a commit
    of a busy key copies bytes instead of encoding every remembered id again.

    >>> from models._state_keyed import decode_key_record, encode_key_record
    >>> k = KeyIds.of(["o1", "o22"], [3, 5]); k.append("o3", 9); k.drop_front(1); k.drop("o3")
    >>> k.append("o4", 11); k.ids, list(k.seqs)
    (['o22', 'o4'], [5, 11])
    >>> k.record(b"learner") == encode_key_record(b"learner", ["o22", "o4"], [5, 11])
    True
    >>> decode_key_record(k.record(b"learner", signing_key=b"k" * 32), signing_key=b"k" * 32)
    (b'learner', ['o22', 'o4'], [5, 11])
    """

    __slots__ = ("ids", "lens", "raw", "seqs")

    def __init__(self) -> None:
        self.ids: list[str] = []
        self.seqs = array("Q")
        self.lens = array("I")
        """Each id's length in UTF-8 bytes."""
        self.raw = bytearray()
        """Every id's UTF-8 bytes, one after the other."""

    @classmethod
    def of(cls, ids: list[str], seqs: list[int]) -> KeyIds:
        """The ids and sequence numbers of a record (:func:`decode_key_record`)."""
        out = cls()
        encoded = [oid.encode("utf-8", "surrogatepass") for oid in ids]
        out.ids, out.seqs = ids, array("Q", seqs)
        out.lens = array("I", map(len, encoded))
        out.raw = bytearray(b"".join(encoded))
        return out

    def append(self, oid: str, seq: int) -> None:
        """Remember ``oid``, numbered ``seq`` (above every number already here)."""
        data = oid.encode("utf-8", "surrogatepass")
        self.ids.append(oid)
        self.seqs.append(seq)
        self.lens.append(len(data))
        self.raw += data

    def drop_front(self, n: int) -> None:
        """Forget the oldest ``n`` ids."""
        del self.raw[: sum(self.lens[:n])]
        del self.ids[:n], self.seqs[:n], self.lens[:n]

    def drop(self, oid: str) -> None:
        """Forget ``oid``; ``ValueError`` if it is not here."""
        i = self.ids.index(oid)
        at = sum(self.lens[:i])
        del self.raw[at : at + self.lens[i]]
        del self.ids[i], self.seqs[i], self.lens[i]

    def record(self, learner: bytes, signing_key: bytes | None = None) -> bytes:
        """The model-key record of ``learner`` with these ids (the layout of
        :func:`models._state_keyed.encode_key_record`)."""
        return seal_key_record(
            learner, _big_endian(self.seqs), _big_endian(self.lens), self.raw, signing_key
        )
