"""Whether anything listens at a service's address, asked with a bounded wait.

The clients of MLflow and PostgreSQL retry an unreachable server for a long time (MLflow's HTTP
client for minutes); a command asks this first so that it can fail in seconds, with one line.

>>> import socket
>>> with socket.socket() as s:
...     s.bind(("127.0.0.1", 0))
...     port = s.getsockname()[1]
>>> why_unreachable([("127.0.0.1", port)], timeout=1.0) is not None
True
"""

from __future__ import annotations

import socket
from collections.abc import Iterable

__all__ = ["why_unreachable"]


def why_unreachable(addresses: Iterable[tuple[str, int]], timeout: float) -> str | None:
    """None when one of ``addresses`` accepts a TCP connection within ``timeout`` seconds each;
    else why the last one did not (such as ``connection refused``)."""
    reason = "no address to connect to"
    for host, port in addresses:
        try:
            socket.create_connection((host, port), timeout=timeout).close()
        except TimeoutError:
            reason = f"no answer within {timeout:g} s"
        except OSError as exc:
            reason = (exc.strerror or str(exc) or type(exc).__name__).lower()
        else:
            return None
    return reason
