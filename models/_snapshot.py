"""Headers of the project's binary snapshots: a magic prefix, then fixed-size integer fields.

A versioned format keeps its version in the first field. The payload follows the header.

>>> head = Header(b"DEMO", ">H", "a demo snapshot")
>>> data = head.pack(b"payload", 2)
>>> data
b'DEMO\\x00\\x02payload'
>>> head.unpack_versioned(data, readable=(1, 2))
(2, b'payload')
>>> try:
...     head.unpack_versioned(data, readable=(1,))
... except SnapshotError as err:
...     print(err)
a demo snapshot in format 2 is not supported (this code reads 1); retrain or upgrade
"""

from __future__ import annotations

import struct
from collections.abc import Iterable

from models.errors import ModelError

__all__ = ["Header", "SnapshotError"]


class SnapshotError(ModelError, ValueError):
    """Bytes that are not a snapshot of the expected kind, or of a version this code cannot
    read."""


class Header:
    """A snapshot header: ``magic`` and then the fields of the :mod:`struct` format ``fields``.

    Parameters
    ----------
    magic
        The bytes every snapshot of this kind starts with.
    fields
        A :mod:`struct` format of integer fields (with its byte order, e.g. ``">qq"``); the
        version first in a versioned format.
    what
        What the snapshot is, with its article, for error messages
        (``"a keyed online-state snapshot"``).

    Examples
    --------
    >>> head = Header(b"APCD", ">qq", "a delta checkpoint")
    >>> data = head.pack(b"state", 8, 120)
    >>> head.matches(data), head.fields_of(data), head.unpack(data)
    (True, (8, 120), ((8, 120), b'state'))
    >>> head.unpack(b"junk")
    Traceback (most recent call last):
    ...
    models._snapshot.SnapshotError: not a delta checkpoint (bad header); check the source
    """

    def __init__(self, magic: bytes, fields: str, what: str) -> None:
        if not magic:
            raise ValueError("a snapshot header needs a non-empty magic prefix")
        self.magic = magic
        self.fields = struct.Struct(fields)
        self.what = what
        self.size = len(magic) + self.fields.size
        """Bytes before the payload."""

    def pack(self, payload: bytes, *values: int) -> bytes:
        """``magic``, the ``values`` of the fields, then ``payload``."""
        return self.magic + self.fields.pack(*values) + payload

    def matches(self, data: bytes) -> bool:
        """Whether ``data`` starts with this header (its magic, and room for the fields)."""
        return data.startswith(self.magic) and len(data) >= self.size

    def fields_of(self, data: bytes) -> tuple[int, ...]:
        """The field values of ``data``'s header, without copying the payload."""
        if not self.matches(data):
            raise SnapshotError(f"not {self.what} (bad header); check the source")
        return tuple(self.fields.unpack_from(data, len(self.magic)))

    def unpack(self, data: bytes) -> tuple[tuple[int, ...], bytes]:
        """The field values and the payload of ``data``."""
        return self.fields_of(data), data[self.size :]

    def unpack_versioned(self, data: bytes, readable: Iterable[int]) -> tuple[int, bytes]:
        """The version (the first field) and the payload of ``data``, when the version is one of
        ``readable``."""
        values, payload = self.unpack(data)
        readable = tuple(readable)
        if values[0] not in readable:
            reads = ", ".join(str(v) for v in readable)
            raise SnapshotError(
                f"{self.what} in format {values[0]} is not supported (this code reads {reads}); "
                "retrain or upgrade"
            )
        return values[0], payload
