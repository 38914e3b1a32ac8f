"""Kafka TLS and SASL settings: read once with the other settings (`Settings.kafka_security`), checked
once, and turned into what each client library takes. Every Kafka client the project builds gets its
keyword arguments from one function here: `kafka_python_kwargs` (kafka-python: admin, replay, tools)
and `aiokafka_kwargs` (the output producer, the ordered input, the control and items readers); the
Faust app (its consumer group and producer) gets `stream.transport.faust_credentials` (this module is
shared: the core imports the settings, so no Faust here). PLAINTEXT, the default, adds nothing, so
clients are built exactly as without these settings.

The names are the ones the Kafka ecosystem uses (`security.protocol`, `sasl.mechanism`, ...) as
environment variables: KAFKA_SECURITY_PROTOCOL, KAFKA_SASL_MECHANISM, KAFKA_SASL_USERNAME,
KAFKA_SASL_PASSWORD, KAFKA_SSL_CAFILE, KAFKA_SSL_CERTFILE, KAFKA_SSL_KEYFILE, KAFKA_SSL_KEY_PASSWORD.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import ssl
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from .errors import ConfigError

PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
ENV = {"protocol": "KAFKA_SECURITY_PROTOCOL", "sasl_mechanism": "KAFKA_SASL_MECHANISM",
       "sasl_username": "KAFKA_SASL_USERNAME", "sasl_password": "KAFKA_SASL_PASSWORD",
       "ssl_cafile": "KAFKA_SSL_CAFILE", "ssl_certfile": "KAFKA_SSL_CERTFILE", "ssl_keyfile": "KAFKA_SSL_KEYFILE",
       "ssl_key_password": "KAFKA_SSL_KEY_PASSWORD"}


@dataclass(frozen=True)
class KafkaSecurity:
    """How every Kafka client connects. Secrets are kept out of repr (and so out of any log of the
    settings); `describe` is what may be printed."""

    protocol: str = "PLAINTEXT"
    sasl_mechanism: str = "PLAIN"
    sasl_username: str = ""
    sasl_password: str = field(default="", repr=False)
    ssl_cafile: str = ""  # empty: the system's CA certificates
    ssl_certfile: str = ""  # client certificate (mutual TLS), PEM; may hold the key too
    ssl_keyfile: str = ""
    ssl_key_password: str = field(default="", repr=False)

    def __post_init__(self) -> None:
        if self.protocol not in PROTOCOLS:
            raise ConfigError(f"KAFKA_SECURITY_PROTOCOL={self.protocol!r} is not one of {', '.join(PROTOCOLS)}: "
                              "set it to the protocol of the brokers' listener")
        if self.sasl_mechanism not in MECHANISMS:
            raise ConfigError(f"KAFKA_SASL_MECHANISM={self.sasl_mechanism!r} is not one of {', '.join(MECHANISMS)}: "
                              "set it to a mechanism the brokers enable")
        if self.sasl:
            missing = [ENV[name] for name in ("sasl_username", "sasl_password") if not getattr(self, name)]
            if missing:
                raise ConfigError(f"KAFKA_SECURITY_PROTOCOL={self.protocol} needs {' and '.join(missing)}: "
                                  "set the client's SASL user and password")
        elif self.sasl_username or self.sasl_password:
            raise ConfigError(f"KAFKA_SASL_USERNAME/KAFKA_SASL_PASSWORD are set but KAFKA_SECURITY_PROTOCOL="
                              f"{self.protocol} does not authenticate: set it to SASL_SSL (or SASL_PLAINTEXT)")
        tls_files = [ENV[name] for name in ("ssl_cafile", "ssl_certfile", "ssl_keyfile", "ssl_key_password")
                     if getattr(self, name)]
        if tls_files and not self.tls:
            raise ConfigError(f"{', '.join(tls_files)} set but KAFKA_SECURITY_PROTOCOL={self.protocol} does not "
                              "use TLS: set it to SSL or SASL_SSL")
        if self.ssl_keyfile and not self.ssl_certfile:
            raise ConfigError("KAFKA_SSL_KEYFILE is set without KAFKA_SSL_CERTFILE: set the client certificate too")
        for name in ("ssl_cafile", "ssl_certfile", "ssl_keyfile"):
            path = getattr(self, name)
            if path and not Path(path).is_file():
                raise ConfigError(f"{ENV[name]}={path}: no such file; give the path of a PEM file this process "
                                  "can read")
        if self.tls:
            self.ssl_context()  # unreadable TLS material: a clear error now, not at the first connection

    @property
    def sasl(self) -> bool:
        return self.protocol.startswith("SASL_")

    @property
    def tls(self) -> bool:
        return self.protocol.endswith("SSL")

    def ssl_context(self) -> ssl.SSLContext | None:
        """The TLS context every client shares (None without TLS): verifies the brokers' certificates
        and host names against the CA file (or the system's CAs); presents the client certificate if set."""
        return _ssl_context(self.ssl_cafile, self.ssl_certfile, self.ssl_keyfile, self.ssl_key_password) \
            if self.tls else None

    def describe(self) -> str:
        """A line that may be printed: no secret, only whether one is set."""
        parts = [self.protocol]
        if self.sasl:
            parts.append(f"{self.sasl_mechanism} as {self.sasl_username}, password set")  # required with SASL
        if self.tls:
            parts.append(f"CA {self.ssl_cafile or 'system'}")
            if self.ssl_certfile:
                parts.append(f"client certificate {self.ssl_certfile}")
        return ", ".join(parts)

    def to_env(self) -> dict[str, str]:
        """Every variable, set or empty: a child process reads exactly these settings, whatever it inherits."""
        return {ENV[f.name]: getattr(self, f.name) for f in dataclasses.fields(self)}

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> "KafkaSecurity":
        values: dict[str, str] = {}
        for f in dataclasses.fields(cls):
            raw = environ.get(ENV[f.name], "")
            if raw:
                values[f.name] = raw.strip().upper() if f.name in ("protocol", "sasl_mechanism") else raw
        return cls(**values)


#: The default: no TLS, no SASL (clients are built with no security arguments at all).
PLAINTEXT = KafkaSecurity()


class _EncryptedKey(Exception):
    """The client key needs a password and none was given."""


def _no_password() -> str:
    # without a callable, OpenSSL would ask for the passphrase on the terminal and wait there
    raise _EncryptedKey


@functools.lru_cache(maxsize=4)
def _ssl_context(cafile: str, certfile: str, keyfile: str, key_password: str) -> ssl.SSLContext:
    try:
        context = ssl.create_default_context(cafile=cafile or None)
        if certfile:
            context.load_cert_chain(certfile, keyfile or None, key_password or _no_password)
    except _EncryptedKey:
        raise ConfigError("the Kafka client key (KAFKA_SSL_KEYFILE, or KAFKA_SSL_CERTFILE holding it) is encrypted: "
                          "set KAFKA_SSL_KEY_PASSWORD") from None
    except (ssl.SSLError, OSError) as exc:  # the message names the failing step, never the password
        raise ConfigError(f"cannot load the Kafka TLS files (KAFKA_SSL_CAFILE, KAFKA_SSL_CERTFILE, KAFKA_SSL_KEYFILE, "
                          f"KAFKA_SSL_KEY_PASSWORD): {exc}; check they are PEM files and the key password") from None
    return context


def _sasl_kwargs(security: KafkaSecurity) -> dict[str, Any]:
    if not security.sasl:
        return {}
    return {"sasl_mechanism": security.sasl_mechanism, "sasl_plain_username": security.sasl_username,
            "sasl_plain_password": security.sasl_password}


def kafka_python_kwargs(security: KafkaSecurity) -> dict[str, Any]:
    """Keyword arguments of kafka-python's KafkaProducer, KafkaConsumer and KafkaAdminClient."""
    if security.protocol == "PLAINTEXT":
        return {}
    kwargs: dict[str, Any] = {"security_protocol": security.protocol, **_sasl_kwargs(security)}
    if security.tls:
        kwargs["ssl_context"] = security.ssl_context()  # the others' ssl_* options are then ignored
    return kwargs


#: aiokafka consumers' pause between retries: its default, 100 ms, made about 160 connection attempts a second per
#: worker while the broker was gone (15% of a core, 5% at 1 s). The producer keeps the default: a send waits on it.
CONSUMER_RETRY_BACKOFF_MS = 1000


def aiokafka_kwargs(security: KafkaSecurity) -> dict[str, Any]:
    """Keyword arguments of aiokafka's AIOKafkaProducer and AIOKafkaConsumer."""
    return kafka_python_kwargs(security)  # aiokafka took kafka-python's names; both take an SSLContext


def consumer_kwargs(security: KafkaSecurity) -> dict[str, Any]:
    """Keyword arguments of the workers' AIOKafkaConsumers."""
    return aiokafka_kwargs(security) | {"retry_backoff_ms": CONSUMER_RETRY_BACKOFF_MS}

