"""``python -m alphapulse.healthcheck [--ready]``: ask the worker on this machine for its health.

It exits with status 0 when the worker's ``/healthz`` (or, with ``--ready``, ``/readyz``)
answers 200, else 1, and prints the answer. The Dockerfile's ``HEALTHCHECK`` and the compose
file's worker healthcheck run it: the slim image has no curl, and the port comes from the same
settings the worker reads. It imports only the settings, so that it starts in a fraction of a
second.
"""

from __future__ import annotations

import argparse
import sys
import urllib.error
import urllib.request

from stream.settings import Settings

__all__ = ["health_url", "main"]

_ANY_ADDRESS = ("", "0.0.0.0", "::")


def health_url(settings: Settings, ready: bool = False) -> str:
    """The URL of the worker's liveness (or readiness) page as seen from its own machine.

    >>> health_url(Settings(_env_file=None))
    'http://127.0.0.1:6066/healthz'
    >>> health_url(Settings(_env_file=None, web_host="0.0.0.0", web_port=7000), ready=True)
    'http://127.0.0.1:7000/readyz'
    """
    host = "127.0.0.1" if settings.web_host in _ANY_ADDRESS else settings.web_host
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{settings.web_port}/{'readyz' if ready else 'healthz'}"


def main(argv: list[str] | None = None) -> int:
    """Run the check; returns the exit status."""
    parser = argparse.ArgumentParser(prog="python -m alphapulse.healthcheck", description=__doc__)
    parser.add_argument("--ready", action="store_true", help="check /readyz instead of /healthz")
    parser.add_argument("--timeout", type=float, default=3.0, help="seconds to wait (default 3)")
    args = parser.parse_args(argv)
    url = health_url(Settings(), ready=args.ready)
    try:
        with urllib.request.urlopen(url, timeout=args.timeout) as resp:
            print(resp.read().decode(errors="replace"))
            return 0 if resp.status == 200 else 1
    except urllib.error.HTTPError as exc:  # 503: not ready; the body names the failing checks
        print(exc.read().decode(errors="replace"), file=sys.stderr)
    except OSError as exc:
        print(f"{url}: {exc}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    raise SystemExit(main())
