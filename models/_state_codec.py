"""Bytes of the state format: a writer and a strict reader of plain numbers and strings.

Big-endian fixed-size integers and IEEE doubles (``struct``), strings as a length and UTF-8
(lone surrogates kept, as the ids and feature names may hold them). The reader refuses, with
:class:`StateRefused`, anything it cannot read exactly: a short buffer, a length past the end,
a non-finite double where a finite one is due, bytes left over. Nothing is ever evaluated.

>>> w = Writer()
>>> w.u32(2); w.f64(0.5); w.text("BTC")
>>> r = Reader(w.bytes(), "a demo record")
>>> r.u32(), r.f64(), r.text(); r.end()
(2, 0.5, 'BTC')
>>> Reader(b"\\x00\\x00", "a demo record").u32()
Traceback (most recent call last):
...
models._state_codec.StateRefused: a demo record is truncated (needs 4 bytes at 0, has 2)
"""

from __future__ import annotations

import hashlib
import hmac
import math
import struct
from collections.abc import Sequence
from typing import Any

from models._snapshot import SnapshotError

__all__ = ["MAC_SIZE", "Reader", "StateRefused", "Writer", "mac", "verify_mac"]

_U8, _U32, _U64, _I32, _I64, _F64 = (struct.Struct(f) for f in (">B", ">I", ">Q", ">i", ">q", ">d"))
_SIZES = {"B": 1, "I": 4, "Q": 8, "d": 8}  # the struct codes Reader.many reads
MAC_SIZE = 32
"""Bytes of an HMAC-SHA256 signature."""


class StateRefused(SnapshotError):
    """Bytes that are not a valid state record of this format (nothing of them was applied)."""


def mac(key: bytes, data: bytes) -> bytes:
    """HMAC-SHA256 of ``data`` under ``key``."""
    return hmac.new(key, data, hashlib.sha256).digest()


def verify_mac(key: bytes, data: bytes, signature: bytes) -> bool:
    """Whether ``signature`` is ``data``'s HMAC under ``key`` (compared in constant time)."""
    return hmac.compare_digest(mac(key, data), signature)


class Writer:
    """Appends numbers and strings to a growing buffer."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def raw(self, data: bytes | bytearray) -> None:
        """Bytes as they are."""
        self._buf += data

    def u8(self, v: int) -> None:
        """An unsigned byte."""
        self._buf += _U8.pack(v)

    def u32(self, v: int) -> None:
        """An unsigned 32-bit integer."""
        self._buf += _U32.pack(v)

    def u64(self, v: int) -> None:
        """An unsigned 64-bit integer."""
        self._buf += _U64.pack(v)

    def i32(self, v: int) -> None:
        """A signed 32-bit integer."""
        self._buf += _I32.pack(v)

    def i64(self, v: int) -> None:
        """A signed 64-bit integer."""
        self._buf += _I64.pack(v)

    def f64(self, v: float) -> None:
        """An IEEE double, bit for bit."""
        self._buf += _F64.pack(v)

    def many(self, fmt: str, values: Sequence[int] | Sequence[float]) -> None:
        """``values`` packed with one :mod:`struct` code (``"I"``, ``"Q"``, ``"d"``, ``"B"``),
        without their count (the reader is told it)."""
        self._buf += struct.pack(f">{len(values)}{fmt}", *values)

    def texts(self, items: Sequence[str]) -> None:
        """A count (u32), each string's UTF-8 length (u32), then all their bytes."""
        raw = [s.encode("utf-8", "surrogatepass") for s in items]
        self.u32(len(raw))
        self.many("I", [len(b) for b in raw])
        self._buf += b"".join(raw)

    def blob(self, data: bytes) -> None:
        """A length (u32), then the bytes."""
        self._buf += _U32.pack(len(data))
        self._buf += data

    def text(self, s: str) -> None:
        """A string as a blob of UTF-8 (lone surrogates kept)."""
        self.blob(s.encode("utf-8", "surrogatepass"))

    def bytes(self) -> bytes:
        """What was written."""
        return bytes(self._buf)


class Reader:
    """Reads what :class:`Writer` wrote, refusing anything else with :class:`StateRefused`.

    ``what`` names the record in error messages, with its article.
    """

    def __init__(self, data: bytes, what: str, pos: int = 0) -> None:
        if not isinstance(data, bytes | bytearray | memoryview):
            raise StateRefused(f"{what} must be bytes, got {type(data).__name__}")
        self._data = memoryview(data).cast("B")
        self.pos = pos
        self.what = what

    def refuse(self, why: str) -> StateRefused:
        """The error to raise for a record that breaks a rule of the format."""
        return StateRefused(f"{self.what} refused: {why}")

    def _take(self, n: int) -> memoryview:
        end = self.pos + n
        if n < 0 or end > len(self._data):
            raise StateRefused(
                f"{self.what} is truncated (needs {n} bytes at {self.pos}, "
                f"has {len(self._data) - self.pos})"
            )
        out = self._data[self.pos : end]
        self.pos = end
        return out

    def _unpack(self, s: struct.Struct) -> Any:
        pos = self.pos
        if pos + s.size > len(self._data):
            raise StateRefused(
                f"{self.what} is truncated (needs {s.size} bytes at {pos}, "
                f"has {len(self._data) - pos})"
            )
        self.pos = pos + s.size
        return s.unpack_from(self._data, pos)[0]

    def fields(self, s: struct.Struct) -> tuple[Any, ...]:
        """The fields of ``s`` at once (its doubles are not checked: the caller checks them)."""
        if s.size > len(self._data) - self.pos:
            raise StateRefused(
                f"{self.what} is truncated (needs {s.size} bytes at {self.pos}, "
                f"has {len(self._data) - self.pos})"
            )
        values = s.unpack_from(self._data, self.pos)
        self.pos += s.size
        return values

    def u8(self) -> int:
        """An unsigned byte."""
        return int(self._unpack(_U8))

    def flag(self) -> bool:
        """A byte that must be 0 or 1."""
        v = self.u8()
        if v > 1:
            raise self.refuse(f"a flag must be 0 or 1, got {v}")
        return v == 1

    def u32(self) -> int:
        """An unsigned 32-bit integer."""
        return int(self._unpack(_U32))

    def u64(self) -> int:
        """An unsigned 64-bit integer."""
        return int(self._unpack(_U64))

    def i32(self) -> int:
        """A signed 32-bit integer."""
        return int(self._unpack(_I32))

    def i64(self) -> int:
        """A signed 64-bit integer."""
        return int(self._unpack(_I64))

    def f64(self) -> float:
        """A finite IEEE double."""
        v = float(self._unpack(_F64))
        if not math.isfinite(v):
            raise self.refuse(f"a number is not finite ({v}) at byte {self.pos - 8}")
        return v

    def count(self, item_size: int) -> int:
        """A u32 count of items of at least ``item_size`` bytes each, checked against the bytes
        left (a huge count is refused before anything is allocated)."""
        n = self.u32()
        if n * max(item_size, 1) > len(self._data) - self.pos:
            raise StateRefused(f"{self.what} is truncated (a count of {n} overruns its end)")
        return n

    def many(self, fmt: str, n: int) -> tuple[Any, ...]:
        """``n`` values of one :mod:`struct` code; doubles (``"d"``) must be finite."""
        end = self.pos + n * _SIZES[fmt]
        if end > len(self._data):
            raise StateRefused(f"{self.what} is truncated ({n} values overrun its end)")
        values = struct.unpack_from(f">{n}{fmt}", self._data, self.pos)
        self.pos = end
        if fmt == "d" and not all(map(math.isfinite, values)):
            raise self.refuse(f"a number is not finite before byte {self.pos}")
        return values

    def texts(self) -> list[str]:
        """What :meth:`Writer.texts` wrote."""
        lengths = self.many("I", self.count(4))
        if sum(lengths) > self.left():
            raise StateRefused(f"{self.what} is truncated (strings overrun its end)")
        raw = self._take(sum(lengths)).tobytes()
        out, at = [], 0
        try:
            for n in lengths:
                out.append(raw[at : at + n].decode("utf-8", "surrogatepass"))
                at += n
        except UnicodeDecodeError as exc:
            raise self.refuse(f"a string is not UTF-8 ({exc.reason})") from None
        return out

    def blob(self) -> bytes:
        """A length (u32), then that many bytes."""
        return bytes(self._take(self.u32()))

    def text(self) -> str:
        """A string written by :meth:`Writer.text`."""
        raw = self._take(self.u32())
        try:
            return str(raw, "utf-8", "surrogatepass")
        except UnicodeDecodeError as exc:
            raise self.refuse(f"a string is not UTF-8 ({exc.reason})") from None

    def left(self) -> int:
        """Bytes not read yet."""
        return len(self._data) - self.pos

    def end(self) -> None:
        """Refuse the record if any byte is left over."""
        if self.left():
            raise self.refuse(f"{self.left()} bytes left over after its end")
