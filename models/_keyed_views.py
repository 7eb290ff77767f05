"""Helpers of :class:`models.keyed.KeyedOnline` kept out of it: the read-only view of every
key's learner, and the ordering of remembered outcome ids."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from itertools import islice
from typing import Any

from models._key_ids import KeyIds
from models.online import OnlineLearner

__all__ = ["Learners", "in_sequence", "keep_newest", "merge_delta_ids"]


def keep_newest(ids: dict[str, Any], n: int) -> list[str]:
    """Delete all but the newest ``n`` of ``ids``, found in one pass over the front; return them.

    >>> d = dict.fromkeys("abcd"); keep_newest(d, 2), list(d)
    (['a', 'b'], ['c', 'd'])
    """
    doomed = list(islice(ids, max(0, len(ids) - n)))
    for oid in doomed:
        del ids[oid]
    return doomed


def merge_delta_ids(
    older_ids: Iterable[str], ids: list[str], id_keys: list[str | None], seen_count: int
) -> dict[str, str | None]:
    """The ids a delta snapshot stands for: ``older_ids`` (without their key), then its own
    ``ids`` with their keys, newest last, cut to the ``seen_count`` newest.

    An id learned again after it was forgotten counts as its newest learning.

    >>> merge_delta_ids(["a", "b", "c"], ["b", "d"], ["K", "K"], 3)
    {'c': None, 'b': 'K', 'd': 'K'}
    """
    merged: dict[str, str | None] = dict.fromkeys(older_ids)
    for oid, k in zip(ids, id_keys, strict=True):
        merged.pop(oid, None)
        merged[oid] = k
    keep_newest(merged, seen_count)
    return merged


def in_sequence(
    seen: dict[str, str | None], key_ids: Mapping[str, KeyIds]
) -> dict[str, str | None]:
    """``seen`` (outcome id to model key) in the order its ids were learned, by the sequence
    numbers filed with each key's ids; ids without a key, which carry no number, first.

    >>> ids = {"K": KeyIds.of(["b", "a"], [1, 2]), "L": KeyIds.of(["c"], [0])}
    >>> in_sequence({"a": "K", "x": None, "b": "K", "c": "L"}, ids)
    {'x': None, 'c': 'L', 'b': 'K', 'a': 'K'}
    """
    keyed = sorted(
        (seq, oid, key)
        for key, ki in key_ids.items()
        for oid, seq in zip(ki.ids, ki.seqs, strict=True)
    )
    out: dict[str, str | None] = {k: v for k, v in seen.items() if v is None}
    for _, oid, key in keyed:
        out[oid] = key
    return out


class Learners(Mapping[str, OnlineLearner]):
    """Every key's learner: the ``live`` ones as they are, a key kept as its record in ``cold``
    rebuilt by ``thaw`` for the caller (a copy: learning goes through ``KeyedOnline.learn``)
    without making it live."""

    def __init__(
        self,
        live: dict[str, OnlineLearner],
        cold: dict[str, bytes],
        thaw: Callable[[bytes], OnlineLearner],
    ) -> None:
        self._live, self._cold, self._thaw = live, cold, thaw

    def __getitem__(self, key: str) -> OnlineLearner:
        lr = self._live.get(key)
        if lr is not None:
            return lr
        return self._thaw(self._cold[key])

    def __iter__(self) -> Iterator[str]:
        return iter([*self._live, *self._cold])

    def __len__(self) -> int:
        return len(self._live) + len(self._cold)

    def __contains__(self, key: object) -> bool:
        return key in self._live or key in self._cold

    def __repr__(self) -> str:
        return repr(dict(self.items()))
