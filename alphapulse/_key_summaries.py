"""Per-model-key figures of the online models for /metrics and the dashboard, kept between calls.

A key's rolling metrics cost about 130 us to compute (a ROC AUC over its window), and a key kept
as its record must be rebuilt first, so computing them for every key at each scrape held the event
loop for seconds at 100,000 keys. A key's figures change only when it learns, and its outcomes
learned are read without rebuilding it (:meth:`models.keyed.KeyedOnline.n_learned`): a key is
computed again only when that count moved since the last call.
"""

from __future__ import annotations

from typing import Any

from agents.state import PartitionStore
from models.online import OnlineLearner

__all__ = ["KeySummaries", "summary"]

DRIFT_POINTS_SHOWN = 20
"""The most recent drift points a key's figures list (all are counted)."""


def summary(partition: int, learner: OnlineLearner) -> dict[str, Any]:
    """The figures of one key's online model, as the dashboard shows them.

    >>> from models.online import OnlineConfig
    >>> s = summary(2, OnlineLearner(OnlineConfig()))
    >>> s["partition"], s["n_learned"], s["drifts"], s["drift_points"]
    (2, 0, 0, [])
    """
    m = learner.metrics()
    return {
        "partition": partition,
        "n_learned": learner.n_learned,
        "roc_auc": m.roc_auc,
        "log_loss": m.log_loss,
        "accuracy": m.accuracy,
        "drift_points": list(learner.drift_points[-DRIFT_POINTS_SHOWN:]),
        "drifts": len(learner.drift_points),
    }


class KeySummaries:
    """The figures of every model key held in a :class:`PartitionStore`, each computed again
    only after the key learned.

    >>> from stream.settings import Settings
    >>> from agents.state import PartitionState
    >>> store = PartitionStore(Settings(_env_file=None))
    >>> keyed = store.new_keyed()
    >>> _ = keyed.learn("o1", "BTC", {"x": 1.0}, True, None)
    >>> store.states[0] = PartitionState(0, 1, keyed)
    >>> sums = KeySummaries()
    >>> sums.collect(store)["BTC"]["n_learned"], sums.computed
    (1, 1)
    >>> _ = sums.collect(store); sums.computed  # nothing learned since: not computed again
    1
    >>> _ = keyed.learn("o2", "BTC", {"x": 2.0}, False, None)
    >>> sums.collect(store)["BTC"]["n_learned"], sums.computed
    (2, 2)
    """

    def __init__(self) -> None:
        self._kept: dict[tuple[int, str], tuple[int, dict[str, Any]]] = {}
        self.computed = 0
        """Keys whose figures were computed so far (the others were reused)."""

    def collect(self, store: PartitionStore) -> dict[str, dict[str, Any]]:
        """Per model key, the figures of its online model (see :func:`summary`), sorted by key."""
        out: dict[str, dict[str, Any]] = {}
        kept: dict[tuple[int, str], tuple[int, dict[str, Any]]] = {}
        for p, st in list(store.states.items()):
            keyed = st.keyed
            for key in keyed.learners:  # a snapshot of the keys (see models._keyed_views.Learners)
                n = keyed.n_learned(key)
                known = self._kept.get((p, key))
                if known is None or known[0] != n:
                    learner = keyed.learners.get(key)
                    if learner is None:  # gone meanwhile
                        continue
                    known = (n, summary(p, learner))
                    self.computed += 1
                kept[(p, key)] = known
                out[key] = known[1]
        self._kept = kept  # keys no longer held are forgotten
        return dict(sorted(out.items()))
