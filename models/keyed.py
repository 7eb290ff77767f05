"""Online learners by model key, with outcome-id deduplication: the learner agent's pure core.

One :class:`KeyedOnline` holds the state of one input partition: an online learner for each model
key routed to it and the ids of the outcomes it has learned. ``learn`` is idempotent by outcome id,
and the whole state snapshots to bytes and back exactly, so a checkpoint can carry it.
"""

from __future__ import annotations

import math
import pickle
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from itertools import islice
from typing import Any

import orjson

from models._snapshot import Header
from models.errors import ConfigError
from models.online import OnlineConfig, OnlineLearner

__all__ = ["KeyedOnline", "LearnResult", "Snapshot", "log_loss", "rr_weight"]

_MAGIC = b"APKO"
_VERSION = 2  # 2: the seen ids as JSON bytes (an array or an object). 1: a pickled list
_READABLE_VERSIONS = (1, 2)
_HEADER = Header(_MAGIC, ">B", "a keyed online-state snapshot")  # one field: the version


def _pack_ids(ids: list[str]) -> bytes | list[str]:
    """The ids as one JSON array, or the list itself if orjson cannot write them.

    An array rather than an object's keys: orjson writes it faster.

    >>> _unpack_ids(_pack_ids(["a", "b", "c"])), _pack_ids([])
    (['a', 'b', 'c'], b'[]')
    """
    try:
        return orjson.dumps(ids)
    except orjson.JSONEncodeError:  # an id orjson cannot write, such as a lone surrogate
        return list(ids)


def _unpack_ids(packed: bytes | list[str]) -> list[str]:
    """Inverse of :func:`_pack_ids`; also reads the ids as a JSON object's keys."""
    return list(orjson.loads(packed)) if isinstance(packed, bytes) else list(packed)


def _keep_newest(ids: dict[str, None], n: int) -> None:
    """Delete all but the newest ``n`` of ``ids``, found in one pass over the front.

    >>> d = dict.fromkeys("abcd"); _keep_newest(d, 2); list(d)
    ['c', 'd']
    """
    for oid in list(islice(ids, max(0, len(ids) - n))):
        del ids[oid]


def rr_weight(rr: float | None, scale: float = 1.0, w_max: float = 5.0) -> float:
    """Sample weight of an outcome from its realised R/R: ``clip(1 + |rr|/scale, 1, w_max)``.

    Bounded, so a single outlier trade cannot dominate; an outcome without R/R weighs 1.

    >>> rr_weight(None), rr_weight(1.0), rr_weight(-1.0), rr_weight(100.0)
    (1.0, 2.0, 2.0, 5.0)
    """
    if rr is None or not math.isfinite(rr):
        return 1.0
    return float(min(max(1.0 + abs(rr) / scale, 1.0), w_max))


@dataclass(frozen=True)
class LearnResult:
    """What learning one outcome did.

    ``learned`` is False for a duplicate outcome id (nothing changed). ``prediction`` is the online
    model's probability for the outcome's features just before it learned them, and ``loss`` its
    log loss against the label.
    """

    learned: bool
    prediction: float
    loss: float
    drift: bool
    n_learned: int


@dataclass(frozen=True)
class Snapshot:
    """A :class:`KeyedOnline`'s state taken at one moment, encoded later by :meth:`encode`.

    Taking it copies what later learning would change (the learners as bytes, the ids as a
    list); encoding it, the costly part with many ids, touches nothing live, so it can run in
    another thread while the owner goes on learning.
    """

    learners: dict[str, bytes]
    ids: list[str]
    seen_count: int | None
    max_seen_ids: int
    rr: tuple[float, float]
    config: OnlineConfig

    def encode(self) -> bytes:
        """The snapshot's bytes, which :meth:`KeyedOnline.restore` reads."""
        state: dict[str, Any] = {
            "learners": self.learners,
            "seen": _pack_ids(self.ids),
            "max_seen_ids": self.max_seen_ids,
            "rr": self.rr,
            "config": self.config,
        }
        if self.seen_count is not None:
            state["seen_count"] = self.seen_count
        return _HEADER.pack(pickle.dumps(state, protocol=pickle.HIGHEST_PROTOCOL), _VERSION)


class KeyedOnline:
    """Online learners by model key plus the set of outcome ids already learned.

    Parameters
    ----------
    config
        Configuration of every learner created here.
    max_seen_ids
        How many outcome ids are remembered for deduplication, at least (oldest forgotten first).
        Up to 1% more are kept between evictions, which forget the excess in one pass.
    rr_scale, rr_weight_max
        Parameters of :func:`rr_weight`.

    Examples
    --------
    >>> k = KeyedOnline()
    >>> k.learn("o1", "BTC", {"x": 1.0}, True, 2.0).learned
    True
    >>> k.learn("o1", "BTC", {"x": 1.0}, True, 2.0).learned
    False
    >>> k.n_learned("BTC"), k.n_learned("ETH")
    (1, 0)
    >>> KeyedOnline.restore(k.snapshot()).n_learned("BTC")
    1
    """

    def __init__(
        self,
        config: OnlineConfig | None = None,
        max_seen_ids: int = 1_000_000,
        rr_scale: float = 1.0,
        rr_weight_max: float = 5.0,
    ) -> None:
        if max_seen_ids < 1:
            raise ConfigError("max_seen_ids must be at least 1")
        if rr_scale <= 0 or rr_weight_max < 1:
            raise ConfigError("rr_scale must be > 0 and rr_weight_max >= 1")
        self.config = config if config is not None else OnlineConfig()
        self.max_seen_ids = max_seen_ids
        self.rr_scale = rr_scale
        self.rr_weight_max = rr_weight_max
        self.learners: dict[str, OnlineLearner] = {}
        # A plain dict in arrival order: strings to None, so the garbage collector never tracks
        # it (an OrderedDict always is, and every full collection would visit each id).
        self.seen: dict[str, None] = {}
        self.ids_added = 0
        """Ids added to ``seen`` since this object was made (a delta snapshot's reference point)."""
        self._evict_slack = max_seen_ids // 100

    def learner(self, key: str) -> OnlineLearner | None:
        """The learner of ``key``, or None when it has learned nothing yet."""
        return self.learners.get(key)

    def n_learned(self, key: str) -> int:
        """Outcomes learned for ``key``."""
        lr = self.learners.get(key)
        return 0 if lr is None else lr.n_learned

    def predict(self, key: str, features: Mapping[str, Any]) -> tuple[float, int]:
        """``(probability, n_learned)`` of ``key``'s learner; ``(0.5, 0)`` before any outcome."""
        lr = self.learners.get(key)
        if lr is None:
            return 0.5, 0
        return lr.win_probability(features), lr.n_learned

    def learn(
        self,
        outcome_id: str,
        key: str,
        features: Mapping[str, Any],
        label: bool,
        realized_rr: float | None,
    ) -> LearnResult:
        """Learn one outcome unless its id was learned before.

        Raises :class:`models.online.NonFiniteUpdate` when the update would make the model's
        state non-finite: nothing changes then, and the id is not taken as learned.

        >>> from models.online import NonFiniteUpdate
        >>> k = KeyedOnline()
        >>> _ = k.learn("o1", "BTC", {"x": 1.0}, True, None)
        >>> _ = k.learn("o2", "BTC", {"x": -1.0}, False, None)
        >>> before = k.predict("BTC", {"x": 0.5})
        >>> try:
        ...     k.learn("o3", "BTC", {"x": 1e300}, True, None)
        ... except NonFiniteUpdate as exc:
        ...     print(exc.feature)
        x
        >>> k.predict("BTC", {"x": 0.5}) == before, "o3" in k.seen
        (True, False)
        """
        if outcome_id in self.seen:
            p, n = self.predict(key, features)
            return LearnResult(False, p, log_loss(p, label), False, n)
        lr = self.learners.get(key)
        new = lr is None
        if lr is None:
            lr = OnlineLearner(self.config)
        # Raises NonFiniteUpdate, with the learner unchanged, for an outcome it must refuse.
        lr.learn_one(features, label, rr_weight(realized_rr, self.rr_scale, self.rr_weight_max))
        if new:
            self.learners[key] = lr
        last = lr.last_prediction  # what the model said just before it learned this outcome
        p = 0.5 if last is None else last
        self.seen[outcome_id] = None
        self.ids_added += 1
        if len(self.seen) > self.max_seen_ids + self._evict_slack:
            self._forget_oldest_ids()
        return LearnResult(True, p, log_loss(p, label), lr.drift_detected, lr.n_learned)

    def _forget_oldest_ids(self) -> None:
        """Forget the oldest ids beyond ``max_seen_ids``, found in one pass over the front.

        Not one at a time: finding the first id again after each deletion scans every slot
        deleted before it until the dict is next resized.
        """
        _keep_newest(self.seen, self.max_seen_ids)

    def snapshot(self, newest_ids: int | None = None) -> bytes:
        """The whole state as bytes (learners' own snapshots plus the seen ids).

        With ``newest_ids``, only the newest that many seen ids are written, with the number of
        ids seen: a delta that :meth:`restore` completes with the ids of an older full snapshot.

        >>> k = KeyedOnline(max_seen_ids=3)
        >>> for oid in "abcd":
        ...     _ = k.learn(oid, "BTC", {"x": 1.0}, True, None)
        >>> full = KeyedOnline.restore(k.snapshot())
        >>> for oid in "ef":
        ...     _ = k.learn(oid, "BTC", {"x": 1.0}, True, None)
        >>> list(KeyedOnline.restore(k.snapshot(newest_ids=2), older_ids=full.seen).seen)
        ['d', 'e', 'f']
        """
        return self.take(newest_ids).encode()

    def take(self, newest_ids: int | None = None) -> Snapshot:
        """The state now, to encode later (see :meth:`snapshot` for ``newest_ids``)."""
        if newest_ids is None:
            ids = list(self.seen)
        else:
            ids = list(islice(reversed(self.seen), min(newest_ids, len(self.seen))))
            ids.reverse()
        return Snapshot(
            learners={k: lr.snapshot() for k, lr in self.learners.items()},
            ids=ids,
            seen_count=None if newest_ids is None else len(self.seen),
            max_seen_ids=self.max_seen_ids,
            rr=(self.rr_scale, self.rr_weight_max),
            config=self.config,
        )

    @classmethod
    def restore(cls, data: bytes, older_ids: Iterable[str] = ()) -> KeyedOnline:
        """Rebuild from :meth:`snapshot` bytes (only bytes this project wrote).

        A delta snapshot (``newest_ids``) takes the ids before its own from ``older_ids``: the
        seen ids of the full snapshot it extends, oldest first.
        """
        state = pickle.loads(_HEADER.unpack_versioned(data, _READABLE_VERSIONS)[1])
        scale, w_max = state["rr"]
        out = cls(state["config"], state["max_seen_ids"], scale, w_max)
        out.learners = {k: OnlineLearner.restore(b) for k, b in state["learners"].items()}
        ids = _unpack_ids(state["seen"])
        count = state.get("seen_count")
        if count is None:
            out.seen = dict.fromkeys(ids)
            return out
        seen: dict[str, None] = {}
        for oid in (*older_ids, *ids):  # an id learned again after it was forgotten is newest
            seen.pop(oid, None)
            seen[oid] = None
        _keep_newest(seen, count)
        out.seen = seen
        return out

    @staticmethod
    def snapshot_ids(data: bytes) -> list[str]:
        """The seen ids of :meth:`snapshot` bytes, oldest first, without restoring the learners."""
        payload = _HEADER.unpack_versioned(data, _READABLE_VERSIONS)[1]
        return _unpack_ids(pickle.loads(payload)["seen"])


def log_loss(p: float, label: bool) -> float:
    """Log loss of probability ``p`` for ``label`` (clipped away from 0 and 1).

    >>> round(log_loss(0.5, True), 4)
    0.6931
    """
    q = min(max(p, 1e-15), 1 - 1e-15)
    return -math.log(q if label else 1 - q)
