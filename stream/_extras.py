"""Packages that only some installs have (the package's extras), imported where they are used.

``pip install alphapulse`` leaves out the PostgreSQL driver (extra ``store``), the Redis client
(``redis``) and pyarrow (``parquet``). Code that needs one imports it through :func:`require`,
so that a command run without the extra fails with one line that names the extra to install
(a :class:`~models.errors.ConfigError`: exit status 2 under the CLI's error policy).

>>> require("json", "store", "the test").__name__
'json'
>>> try:
...     require("alphapulse_no_such_module", "store", "the PostgreSQL store")
... except ConfigError as exc:
...     print(exc)
the PostgreSQL store needs the 'store' extra: pip install 'alphapulse[store]' (No module named 'alphapulse_no_such_module')
"""  # noqa: E501

from __future__ import annotations

import importlib
from types import ModuleType

from models.errors import ConfigError

__all__ = ["require"]


def require(module: str, extra: str, what: str) -> ModuleType:
    """Import ``module``, or raise :class:`ConfigError` naming the ``extra`` that installs it.

    ``what`` names the feature that needs it, for the message.
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ConfigError(
            f"{what} needs the '{extra}' extra: pip install 'alphapulse[{extra}]' ({exc})"
        ) from None
