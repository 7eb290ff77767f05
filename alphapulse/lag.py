"""Consumer lag of a running worker: how far each assigned partition's position is behind its
high watermark, for ``alphapulse_consumer_lag`` (:mod:`alphapulse.metrics`)."""

from __future__ import annotations

from typing import Any

from stream.direct_fetch import direct_fetch_of

__all__ = ["consumer_lag"]


async def consumer_lag(app: Any) -> dict[tuple[str, int], int]:
    """High watermark minus position for each partition assigned to ``app``'s consumer (or
    fetched by its :class:`stream.direct_fetch.DirectFetch`).

    Partitions whose high watermark or position is not known yet are left out; an app whose
    consumer has not started gives an empty dict.
    """
    from aiokafka.errors import IllegalStateError
    from faust.exceptions import ConsumerNotStarted

    out: dict[tuple[str, int], int] = {}
    try:
        consumer = app.consumer
        assigned = consumer.assignment()
    except (ConsumerNotStarted, AttributeError, RuntimeError):
        return out
    direct = direct_fetch_of(app)
    routed = direct.routes.topics if direct is not None else frozenset()
    sources = [(consumer, [tp for tp in assigned if tp.topic not in routed])]
    if direct is not None and direct.consumer is not None:
        sources.append((direct.consumer, list(direct.consumer.assignment())))
    for source, tps in sources:
        for tp in tps:
            if tp.topic.endswith("__assignor-__leader"):
                continue  # Faust's own leader-election topic
            try:
                high = source.highwater(tp)
                pos = await source.position(tp)
            except (ConsumerNotStarted, IllegalStateError):
                continue  # not started yet, or the partition was revoked meanwhile
            if high is not None and pos is not None:
                out[(tp.topic, tp.partition)] = max(0, int(high) - int(pos))
    return dict(sorted(out.items()))
