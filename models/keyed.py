"""Online learners by model key, with outcome-id deduplication: the learner agent's pure core.

One :class:`KeyedOnline` holds the state of one input partition: an online learner for each model
key routed to it and the ids of the outcomes it has learned. ``learn`` is idempotent by outcome id.
Its state is data, keyed by model: :meth:`KeyedOnline.take_touched` gives a record
(:mod:`models._state_keyed`) for each key changed since it was last called, and
:meth:`KeyedOnline.load_key` puts such a record back, refusing anything that is not one. A
partition's whole state also snapshots to bytes and back (:meth:`KeyedOnline.snapshot`).

Only the most recently used ``max_live_keys`` learners are River objects; the others are kept as
their record (about a kilobyte at 10 features, against about 7 KB for River's objects) and
rebuilt on use, bit for bit, since the round trip is exact.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from itertools import islice
from typing import Any

from models._key_ids import KeyIds
from models._keyed_views import Learners, in_sequence, keep_newest, merge_delta_ids
from models._outcome import LearnResult, log_loss, rr_weight
from models._state_codec import StateRefused
from models._state_keyed import (
    PARTITION_HEADER,
    Snapshot,
    decode_key_record,
    decode_snapshot,
    encode_key_record,
    snapshot_ids,
)
from models._state_learner import NO_KEY, PROCESS_KEY, is_signed, n_learned_of
from models.errors import ConfigError
from models.online import LINEAR, OnlineConfig, OnlineLearner

__all__ = ["KeyedOnline", "LearnResult", "Snapshot", "StateRefused", "log_loss", "rr_weight"]

_MAGIC = PARTITION_HEADER.magic


class KeyedOnline:
    """Online learners by model key plus the ids of the outcomes already learned.

    Parameters
    ----------
    config
        Configuration of every learner created here.
    max_seen_ids
        How many outcome ids the partition remembers for deduplication, at least (oldest
        forgotten first, whatever their key). Up to 1% more are kept between evictions, which
        forget the excess in one pass. The bound is per partition; each id is also filed under
        its model key, so that a key's record carries the ids it still remembers.
    rr_scale, rr_weight_max
        Parameters of :func:`rr_weight`.
    signing_key
        Key of the HMAC that signs the records of models that cannot be written as numbers (the
        Hoeffding trees; the setting ``ALPHAPULSE_STATE_SIGNING_KEY``). Without it, such records
        are neither written nor read.
    max_live_keys
        How many learners stay River objects; the least recently used others are kept as their
        records and rebuilt on use.

    Examples
    --------
    >>> k = KeyedOnline()
    >>> k.learn("o1", "BTC", {"x": 1.0}, True, 2.0).learned
    True
    >>> k.learn("o1", "BTC", {"x": 1.0}, True, 2.0).learned
    False
    >>> k.n_learned("BTC"), k.n_learned("ETH"), k.touched
    (1, 0, {'BTC'})
    >>> records = k.take_touched()
    >>> k.touched, [key for key, _ in records]
    (set(), ['BTC'])
    >>> fresh = KeyedOnline()
    >>> fresh.load_key("BTC", records[0][1])
    >>> fresh.n_learned("BTC"), fresh.learn("o1", "BTC", {"x": 1.0}, True, 2.0).learned
    (1, False)
    """

    def __init__(
        self,
        config: OnlineConfig | None = None,
        max_seen_ids: int = 1_000_000,
        rr_scale: float = 1.0,
        rr_weight_max: float = 5.0,
        signing_key: bytes | None = None,
        max_live_keys: int = 10_000,
    ) -> None:
        if max_seen_ids < 1:
            raise ConfigError("max_seen_ids must be at least 1")
        if rr_scale <= 0 or rr_weight_max < 1:
            raise ConfigError("rr_scale must be > 0 and rr_weight_max >= 1")
        if signing_key is not None and len(signing_key) < 16:
            raise ConfigError("the state signing key must be at least 16 bytes")
        if max_live_keys < 1:
            raise ConfigError("max_live_keys must be at least 1")
        self.config = config if config is not None else OnlineConfig()
        self.max_seen_ids = max_seen_ids
        self.rr_scale = rr_scale
        self.rr_weight_max = rr_weight_max
        self.signing_key = signing_key
        self.max_live_keys = max_live_keys
        self._live: dict[str, OnlineLearner] = {}  # least recently used first
        self._cold: dict[str, bytes] = {}
        # Outcome id to model key (None when unknown), in the order learned. Strings only, so
        # the garbage collector never tracks it.
        self._seen: dict[str, str | None] = {}
        self._key_ids: dict[str, KeyIds] = {}
        self._next_seq = 0
        self._unordered = False
        """Whether records were loaded since ``_seen`` was last put in sequence order."""
        self.ids_added = 0
        """Ids added to ``seen`` since this object was made (a delta snapshot's reference point)."""
        self.touched: set[str] = set()
        """Model keys whose learner or remembered ids changed since :meth:`take_touched`."""
        self._evict_slack = max_seen_ids // 100

    @property
    def learners(self) -> Mapping[str, OnlineLearner]:
        """Every model key's learner (see :class:`models._keyed_views.Learners`)."""
        return Learners(self._live, self._cold, self._thaw)

    @property
    def seen(self) -> dict[str, str | None]:
        """The remembered outcome ids, oldest first, each with its model key (None if unknown)."""
        if self._unordered:
            self._reorder()
        return self._seen

    def _freeze_key(self) -> bytes:
        return self.signing_key or PROCESS_KEY  # records kept in memory never leave the process

    def _thaw(self, record: bytes) -> OnlineLearner:
        return OnlineLearner.restore(record, self._freeze_key())

    def _use(self, key: str) -> OnlineLearner | None:
        """The live learner of ``key`` (rebuilt from its record if need be), now most recent."""
        lr = self._live.pop(key, None)
        if lr is None:
            record = self._cold.pop(key, None)
            if record is None:
                return None
            lr = self._thaw(record)
        self._live[key] = lr
        while len(self._live) > self.max_live_keys:
            old = next(iter(self._live))
            self._cold[old] = self._live.pop(old).snapshot(self._freeze_key())
        return lr

    def learner(self, key: str) -> OnlineLearner | None:
        """The live learner of ``key``, or None when it has learned nothing yet."""
        return self._use(key)

    def n_learned(self, key: str) -> int:
        """Outcomes learned for ``key``."""
        lr = self._live.get(key)
        if lr is not None:
            return lr.n_learned
        record = self._cold.get(key)
        return 0 if record is None else n_learned_of(record)

    def predict(self, key: str, features: Mapping[str, Any]) -> tuple[float, int]:
        """``(probability, n_learned)`` of ``key``'s learner; ``(0.5, 0)`` before any outcome."""
        lr = self._live.get(key)
        if lr is None and (lr := self._use(key)) is None:
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
        if outcome_id in self._seen:
            p, n = self.predict(key, features)
            return LearnResult(False, p, log_loss(p, label), False, n)
        lr = self._use(key)
        new = lr is None
        if lr is None:
            lr = OnlineLearner(self.config)
        # Raises NonFiniteUpdate, with the learner unchanged, for an outcome it must refuse.
        lr.learn_one(features, label, rr_weight(realized_rr, self.rr_scale, self.rr_weight_max))
        if new:
            self._live[key] = lr
            self._use(key)  # keeps the live learners within max_live_keys
        last = lr.last_prediction  # what the model said just before it learned this outcome
        p = 0.5 if last is None else last
        self._remember(outcome_id, key)
        self.touched.add(key)
        if len(self._seen) > self.max_seen_ids + self._evict_slack:
            self._forget_oldest_ids()
        return LearnResult(True, p, log_loss(p, label), lr.drift_detected, lr.n_learned)

    def _remember(self, outcome_id: str, key: str | None) -> None:
        self._seen[outcome_id] = key
        if key is not None:
            ki = self._key_ids.get(key)
            if ki is None:
                ki = self._key_ids[key] = KeyIds()
            ki.append(outcome_id, self._next_seq)
        self._next_seq += 1
        self.ids_added += 1

    def _forget_oldest_ids(self) -> None:
        """Forget the oldest ids beyond ``max_seen_ids``, found in one pass over the front.

        Not one at a time: finding the first id again after each deletion scans every slot
        deleted before it until the dict is next resized. A key's forgotten ids are its oldest,
        so each key drops a prefix of its list.
        """
        seen = self.seen
        per_key: dict[str, int] = {}
        for oid in islice(seen, max(0, len(seen) - self.max_seen_ids)):
            key = seen[oid]
            if key is not None:
                per_key[key] = per_key.get(key, 0) + 1
        keep_newest(seen, self.max_seen_ids)
        for key, n in per_key.items():
            ki = self._key_ids[key]
            ki.drop_front(n)
            if not ki.ids:
                del self._key_ids[key]
        self.touched.update(per_key)

    def _reorder(self) -> None:
        """Put ``_seen`` back in sequence order after records were loaded (ids without a key,
        which carry no number, first)."""
        self._seen = in_sequence(self._seen, self._key_ids)
        self._unordered = False

    def _outgoing(self, key: str) -> bytes:
        """The learner record of ``key`` to write out: a tree's must be signed with the
        configured key (one signed with this process's own key could not be read elsewhere)."""
        lr = self._live.get(key)
        if lr is not None:
            if lr.config.classifier not in LINEAR and self.signing_key is None:
                raise ConfigError(NO_KEY)
            return lr.snapshot(self.signing_key)
        learner = self._cold[key]
        if self.signing_key is None and is_signed(learner):
            raise ConfigError(NO_KEY)
        return learner

    def encode_key(self, key: str) -> bytes:
        """The record of ``key``: its learner (configuration included) and the ids of its outcomes
        that deduplication remembers, with their sequence numbers. ``KeyError`` for a key that
        has learned nothing; :class:`ConfigError` for a tree model without a signing key."""
        learner = self._outgoing(key)
        ki = self._key_ids.get(key)
        if ki is None:
            return encode_key_record(learner, (), (), self.signing_key)
        return ki.record(learner, self.signing_key)

    def take_touched(self) -> list[tuple[str, bytes]]:
        """``(model key, record)`` of each key in :attr:`touched` (see :meth:`encode_key`), and
        :attr:`touched` emptied. A touched key without a learner any more is left out."""
        keys = [k for k in sorted(self.touched) if k in self._live or k in self._cold]
        out = [(k, self.encode_key(k)) for k in keys]
        self.touched.clear()
        return out

    def load_key(self, key: str, data: bytes) -> None:
        """Put one key's record (:meth:`encode_key`) in place of whatever ``key`` held.

        Anything that is not a valid record is refused with :class:`StateRefused`, before
        anything changes: wrong magic or version, a seal that does not match (a digest without
        a signing key, an HMAC with one), truncated, bytes left over, non-finite numbers,
        values out of range, a signed learner without the right signature.
        """
        learner, ids, seqs = decode_key_record(data, self.signing_key)
        OnlineLearner.check(learner, self.signing_key, local=False)
        self._drop_key(key)
        self._cold[key] = learner
        if ids:
            self._key_ids[key] = KeyIds.of(ids, seqs)
            for oid in ids:
                owner = self._seen.pop(oid, None)
                if owner is not None and owner != key:  # an id filed under another key
                    self._drop_id(owner, oid)
                self._seen[oid] = key
            self._unordered = True
            self._next_seq = max(self._next_seq, seqs[-1] + 1)
        self.touched.discard(key)

    def _drop_key(self, key: str) -> None:
        self._live.pop(key, None)
        self._cold.pop(key, None)
        ki = self._key_ids.pop(key, None)
        if ki is not None:
            for oid in ki.ids:
                self._seen.pop(oid, None)

    def _drop_id(self, key: str, oid: str) -> None:
        ki = self._key_ids[key]
        ki.drop(oid)
        if not ki.ids:
            del self._key_ids[key]
        self.touched.add(key)

    def snapshot(self, newest_ids: int | None = None) -> bytes:
        """The whole state as bytes (every key's learner record plus the remembered ids).

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
        """The state now, to encode later (see :meth:`snapshot` for ``newest_ids``);
        :class:`ConfigError` for tree models without a signing key."""
        seen = self.seen
        if newest_ids is None:
            ids = list(seen)
        else:
            ids = list(islice(reversed(seen), min(newest_ids, len(seen))))
            ids.reverse()
        learners = {k: self._outgoing(k) for k in self._live}
        learners.update((k, self._outgoing(k)) for k in self._cold)
        return Snapshot(
            learners=learners,
            ids=ids,
            id_keys=[seen[oid] for oid in ids],
            seen_count=None if newest_ids is None else len(seen),
            max_seen_ids=self.max_seen_ids,
            rr=(self.rr_scale, self.rr_weight_max),
            config=self.config,
        )

    @classmethod
    def restore(
        cls,
        data: bytes,
        older_ids: Iterable[str] = (),
        signing_key: bytes | None = None,
        max_live_keys: int = 10_000,
    ) -> KeyedOnline:
        """Rebuild from :meth:`snapshot` bytes; anything else is refused with
        :class:`StateRefused`.

        A delta snapshot (``newest_ids``) takes the ids before its own from ``older_ids``: the
        seen ids of the full snapshot it extends, oldest first (they come back without their
        model key). Signed learner records need the key they were signed with.
        """
        st = decode_snapshot(data)
        try:
            config = OnlineConfig(**st.config)
        except ConfigError as exc:
            raise StateRefused(f"a keyed online-state snapshot refused: {exc}") from None
        for record in st.learners.values():
            OnlineLearner.check(record, signing_key, local=False)
        out = cls(config, st.max_seen_ids, st.rr[0], st.rr[1], signing_key, max_live_keys)
        out._cold = st.learners
        if st.seen_count is None:
            pairs: Iterable[tuple[str, str | None]] = zip(st.ids, st.id_keys, strict=True)
        else:
            pairs = merge_delta_ids(older_ids, st.ids, st.id_keys, st.seen_count).items()
        for oid, k in pairs:
            out._remember(oid, k if k in out._cold else None)
        out.ids_added = 0
        return out

    @staticmethod
    def snapshot_ids(data: bytes) -> list[str]:
        """The seen ids of :meth:`snapshot` bytes, oldest first, without restoring the learners."""
        return snapshot_ids(data)
