"""A bounded set of Prometheus label values for an unbounded set of names (model keys)."""

from __future__ import annotations

__all__ = ["OTHER", "LabelCap"]

OTHER = "other"
"""The label value shared by every name beyond the cap."""


class LabelCap:
    """Label values for names: the first ``limit`` distinct names keep their own, the rest
    share :data:`OTHER`.

    A name keeps its label once it has one, so a series never changes its label from one scrape
    to the next. A name spelled ``other`` is always counted with the rest.

    Parameters
    ----------
    limit
        Most names with a label of their own; 0 puts every name under :data:`OTHER`.

    Examples
    --------
    >>> cap = LabelCap(2)
    >>> [cap(k) for k in ("BTC", "ETH", "SOL", "BTC", "other")]
    ['BTC', 'ETH', 'other', 'BTC', 'other']
    >>> cap.own
    2
    """

    def __init__(self, limit: int) -> None:
        if limit < 0:
            raise ValueError(f"limit must be 0 or more, got {limit}")
        self.limit = limit
        self._own: set[str] = set()

    @property
    def own(self) -> int:
        """How many names have a label of their own."""
        return len(self._own)

    def __call__(self, name: str) -> str:
        """The label value of ``name``."""
        if name in self._own:
            return name
        if name != OTHER and len(self._own) < self.limit:
            self._own.add(name)
            return name
        return OTHER
