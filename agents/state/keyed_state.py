"""Per-model-key state records over :class:`models.keyed.KeyedOnline`: a local stand-in.

Issue 25 gives ``KeyedOnline`` itself a per-key state API (``touched``, ``take_touched``,
``encode_key``, ``load_key``, a ``signing_key``), written in ``models/`` on another branch. Until
that lands, :class:`KeyedState` provides the same four methods here, so that the learner's
changelog (:mod:`agents.state.checkpoints`) can be built and tested against them; once the
branch is merged, this module goes and ``KeyedOnline`` is used directly.

A key's record holds its online learner and the ids of the outcomes it learned (its own dedupe
horizon of ``max_seen_ids``). The learner's snapshot is still a pickle, so every record carries
an HMAC-SHA256 over the model key and the payload, and :meth:`KeyedState.load_key` checks it
before anything is unpickled: a record written by anyone without the key is refused with
:class:`models._snapshot.SnapshotError`, and nothing in it runs.

>>> k = KeyedState(signing_key=b"secret")
>>> _ = k.learn("o1", "BTC", {"x": 1.0}, True, None)
>>> [(key, len(data) > 0) for key, data in k.take_touched()], k.touched
([('BTC', True)], set())
>>> back = KeyedState(signing_key=b"secret")
>>> back.load_key("BTC", k.encode_key("BTC"))
>>> back.n_learned("BTC"), back.learn("o1", "BTC", {"x": 1.0}, True, None).learned
(1, False)
>>> try:
...     KeyedState(signing_key=b"other").load_key("BTC", k.encode_key("BTC"))
... except SnapshotError as exc:
...     print(exc)
the state record of model key 'BTC' is not signed with this group's key; refused
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Mapping
from itertools import islice
from typing import Any

import orjson

from models._snapshot import Header, SnapshotError
from models.keyed import KeyedOnline, LearnResult, log_loss
from models.online import OnlineConfig, OnlineLearner

__all__ = ["KeyedState"]

_VERSION = 1
_HEADER = Header(b"APKS", ">H", "a model key's state record")
_MAC = hashlib.sha256().digest_size


def _ids_json(ids: list[str]) -> bytes:
    try:
        return orjson.dumps(ids)
    except orjson.JSONEncodeError:  # an id orjson cannot write, such as a lone surrogate
        return json.dumps(ids, ensure_ascii=True).encode()


class KeyedState(KeyedOnline):
    """:class:`KeyedOnline` with the per-key state API (see the module's text).

    Parameters are those of :class:`KeyedOnline`, plus ``signing_key``, the HMAC key of the
    records (required to write or read one).
    """

    def __init__(
        self,
        config: OnlineConfig | None = None,
        max_seen_ids: int = 1_000_000,
        rr_scale: float = 1.0,
        rr_weight_max: float = 5.0,
        signing_key: bytes | None = None,
    ) -> None:
        super().__init__(config, max_seen_ids, rr_scale, rr_weight_max)
        self.signing_key = signing_key
        self.touched: set[str] = set()
        """Model keys whose state changed since :meth:`take_touched` last ran."""
        self.key_ids: dict[str, dict[str, None]] = {}
        """The ids each model key learned, oldest first, at most ``max_seen_ids`` per key."""

    def learn(
        self,
        outcome_id: str,
        key: str,
        features: Mapping[str, Any],
        label: bool,
        realized_rr: float | None,
    ) -> LearnResult:
        """As :meth:`KeyedOnline.learn`; the key is touched when the outcome is learned."""
        ids = self.key_ids.get(key)
        if ids is not None and outcome_id in ids:
            p, n = self.predict(key, features)
            return LearnResult(False, p, log_loss(p, label), False, n)
        res = super().learn(outcome_id, key, features, label, realized_rr)
        if res.learned:
            self.touched.add(key)
            ids = self.key_ids.setdefault(key, {})
            ids[outcome_id] = None
            if len(ids) > self.max_seen_ids + self._evict_slack:
                for oid in list(islice(ids, len(ids) - self.max_seen_ids)):
                    del ids[oid]
        return res

    def take_touched(self) -> list[tuple[str, bytes]]:
        """``(model key, record)`` of every touched key, encoded now; clears ``touched``."""
        keys, self.touched = sorted(self.touched), set()
        return [(key, self.encode_key(key)) for key in keys]

    def _mac(self, key: str, payload: bytes) -> bytes:
        if not self.signing_key:
            raise SnapshotError("no signing key: state records are neither written nor read")
        body = key.encode("utf-8", "surrogatepass") + b"\0" + payload
        return hmac.new(self.signing_key, body, hashlib.sha256).digest()

    def encode_key(self, key: str) -> bytes:
        """The record of ``key``'s state: its learner and its ids, signed."""
        learner = self.learners[key]
        ids = list(self.key_ids.get(key, {}))
        payload = b'{"ids":%b,"learner":"%b"}' % (
            _ids_json(ids),
            base64.b64encode(learner.snapshot()),
        )
        return _HEADER.pack(self._mac(key, payload) + payload, _VERSION)

    def load_key(self, key: str, data: bytes) -> None:
        """Restore ``key``'s state from its record; :class:`SnapshotError` on anything invalid
        (checked before anything is unpickled)."""
        body = _HEADER.unpack_versioned(data, (_VERSION,))[1]
        mac, payload = body[:_MAC], body[_MAC:]
        if len(mac) != _MAC or not hmac.compare_digest(mac, self._mac(key, payload)):
            raise SnapshotError(
                f"the state record of model key {key!r} is not signed with this group's key; "
                "refused"
            )
        try:
            doc = json.loads(payload)
            learner = OnlineLearner.restore(base64.b64decode(doc["learner"], validate=True))
            ids = [str(oid) for oid in doc["ids"]]
        except Exception as exc:  # signed but unreadable: refused the same way
            raise SnapshotError(f"the state record of model key {key!r}: {exc}") from exc
        self.learners[key] = learner
        own = self.key_ids.setdefault(key, {})
        for oid in ids:
            own[oid] = None
            self.seen[oid] = None
