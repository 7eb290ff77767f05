"""Kafka client options from the settings, shared by Faust and plain aiokafka clients.

SASL and TLS settings pass through to every client the project creates.

>>> from stream.settings import Settings
>>> client_kwargs(Settings(_env_file=None, KAFKA_BOOTSTRAP_SERVERS="h:1"))["bootstrap_servers"]
'h:1'
"""

from __future__ import annotations

import ssl
from typing import Any

from stream.settings import Settings

__all__ = ["client_kwargs", "faust_broker_kwargs", "ssl_context"]


def ssl_context(settings: Settings) -> ssl.SSLContext | None:
    """A TLS context when the security protocol uses TLS, else None."""
    if settings.kafka_security_protocol not in ("SSL", "SASL_SSL"):
        return None
    ctx = ssl.create_default_context(
        cafile=str(settings.kafka_ssl_cafile) if settings.kafka_ssl_cafile else None
    )
    if settings.kafka_ssl_certfile:
        ctx.load_cert_chain(
            str(settings.kafka_ssl_certfile),
            str(settings.kafka_ssl_keyfile) if settings.kafka_ssl_keyfile else None,
        )
    return ctx


def client_kwargs(settings: Settings) -> dict[str, Any]:
    """Keyword arguments for aiokafka producers, consumers and admin clients."""
    kw: dict[str, Any] = {
        "bootstrap_servers": settings.bootstrap_servers,
        "security_protocol": settings.kafka_security_protocol,
    }
    ctx = ssl_context(settings)
    if ctx is not None:
        kw["ssl_context"] = ctx
    if settings.kafka_security_protocol.startswith("SASL"):
        kw["sasl_mechanism"] = settings.kafka_sasl_mechanism or "PLAIN"
        kw["sasl_plain_username"] = settings.kafka_sasl_username
        pw = settings.kafka_sasl_password
        kw["sasl_plain_password"] = pw.get_secret_value() if pw is not None else None
    return kw


def faust_broker_kwargs(settings: Settings) -> dict[str, Any]:
    """``broker`` and ``broker_credentials`` arguments for :class:`faust.App`."""
    import faust

    urls = [f"kafka://{hp.strip()}" for hp in settings.bootstrap_servers.split(",") if hp.strip()]
    kw: dict[str, Any] = {"broker": ";".join(urls)}
    ctx = ssl_context(settings)
    if settings.kafka_security_protocol.startswith("SASL"):
        pw = settings.kafka_sasl_password
        kw["broker_credentials"] = faust.SASLCredentials(
            username=settings.kafka_sasl_username,
            password=pw.get_secret_value() if pw is not None else None,
            mechanism=settings.kafka_sasl_mechanism or "PLAIN",
            ssl_context=ctx,
        )
    elif ctx is not None:
        kw["broker_credentials"] = faust.SSLCredentials(ctx)
    return kw
