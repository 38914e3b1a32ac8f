"""Service URLs in what is printed or logged (their passwords redacted), and Redis URLs checked before a
client is built from one."""

from __future__ import annotations

import re
import socket
from pathlib import Path

from .errors import ConfigError

_USER_END = re.compile(r"[:/@]")  # what ends the user part after "://"
_QUERY_SECRETS = re.compile(r"(?P<name>[?&](?:ssl_)?password=)[^&\s#]*")


def check_redis_url(url: str) -> None:
    """A ConfigError for a Redis URL redis-py would fail on only once it connects, said without the URL (a password
    that breaks the URL's syntax would show in it): a port that is not a number, TLS files that are not there."""
    from urllib.parse import parse_qs, urlsplit

    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - parsing the port is the check
    except ValueError:
        raise ConfigError("REDIS_URL cannot be read as a URL (its port is not a number): percent-encode the special "
                          "characters of its password (/ as %2F, @ as %40, : as %3A)") from None
    for name, values in parse_qs(parts.query).items():
        if name in ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile") and not Path(values[-1]).is_file():
            raise ConfigError(f"REDIS_URL's {name} {values[-1]} is not a file")


def check_bootstrap_servers(servers: str) -> None:
    """A ConfigError for a KAFKA_BOOTSTRAP_SERVERS the Kafka clients cannot read, said at once: they tried it for
    30 s and ended with "cannot reach a Kafka broker" (a URL, a port that is not one, an empty entry)."""
    for entry in servers.split(","):
        entry = entry.strip()
        host, colon, port = _host_and_port(entry)
        if not entry or "://" in entry or "/" in entry or (colon and not host) or \
                (colon and not (port.isdigit() and 0 < int(port) < 65536)):
            raise ConfigError(f"KAFKA_BOOTSTRAP_SERVERS={redact_setting(servers)}: {redact_url(entry) or 'an empty entry'} "
                              "is not a broker address: give host:port (port 1 to 65535, no scheme), "
                              "comma-separated, e.g. KAFKA_BOOTSTRAP_SERVERS=kafka1:9092,kafka2:9092")


def _host_and_port(entry: str) -> tuple[str, str, str]:
    """(host, ":" or "", port) of a bootstrap entry: host:port, [IPv6]:port, or a host or bare IPv6 address alone."""
    if entry.count(":") > 1 and not entry.startswith("["):
        return entry, "", ""  # a bare IPv6 address has no port to check
    host, colon, port = entry.rpartition(":")
    return (host, colon, port) if colon else (entry, "", "")


def bootstrap_hosts(servers: str) -> list[tuple[str, int]]:
    """The (host, port) of each entry of a bootstrap list that names both (9092 when it gives no port)."""
    out = []
    for entry in servers.split(","):
        host, _, port = _host_and_port(entry.strip())
        if host and (not port or port.isdigit()):
            out.append((host.removeprefix("[").removesuffix("]"), int(port) if port else 9092))
    return out


def check_resolvable(servers: str) -> None:
    """A ConfigError at once when no host of KAFKA_BOOTSTRAP_SERVERS is a name the resolver knows (a typo, a
    container's name used outside its network): the Kafka clients tried such a list for 30 s and then said only that
    they could not bootstrap. For one-shot commands: a worker started before its network's names exist waits for
    them. A resolver that cannot be asked right now (a temporary failure) is left to the clients."""
    unknown = []
    for entry in servers.split(","):
        host = _host_and_port(entry.strip())[0].removeprefix("[").removesuffix("]")
        try:
            socket.getaddrinfo(host, None)
        except socket.gaierror as exc:
            if exc.errno != socket.EAI_NONAME:
                return
            unknown.append(host)
        except UnicodeError:  # an empty label or one over 63 characters (kafka..local): no name at all
            raise ConfigError(f"KAFKA_BOOTSTRAP_SERVERS={redact_setting(servers)}: {host!r} is not a host name (a label "
                              "empty or over 63 characters): check the name") from None
        else:
            return
    verb = "does" if len(unknown) == 1 else "do"
    raise ConfigError(f"KAFKA_BOOTSTRAP_SERVERS={redact_setting(servers)}: no such host ({', '.join(unknown)} {verb} not "
                      "resolve): check the name, or run this where the brokers' names resolve (docker-compose.yml's "
                      "kafka:19092 resolves inside its network only; from the host: localhost:9092)")


def redact_url(text: str | None) -> str:
    """`text` with the password of every URL in it replaced by `***` (redis://:pw@host,
    sasl_ssl://user:pw@broker), for anything printed or logged: endpoints may carry credentials."""
    if text is None:
        return "(not set)"
    text = "".join(_without_secret(part) for part in re.split(r"(\s+)", text))
    return _QUERY_SECRETS.sub(lambda m: f"{m['name']}***", text)


def redact_setting(value: str | None) -> str:
    """A setting that is one address (REDIS_URL, KAFKA_BOOTSTRAP_SERVERS) with its password replaced by `***`.
    Unlike `redact_url`, which reads free text a word at a time, whitespace here is part of the value: a password
    with an unencoded space would otherwise be printed whole."""
    if value is None:
        return "(not set)"
    return _QUERY_SECRETS.sub(lambda m: f"{m['name']}***", _without_secret(value))


def _without_secret(word: str) -> str:
    """A word (no whitespace) with the secret of its first URL holding one replaced: from the ':' after the user to
    the word's last '@' (a password may hold "@" or "/", which redis-py reads). Linear in the word: each "://" is
    found once, and the user after it is read up to the next ':', '/' or '@', which no later user crosses."""
    last_at = word.rfind("@")
    mark = word.find("://")
    while 0 <= mark < last_at:
        start = mark
        while start > 0 and (word[start - 1].isalnum() or word[start - 1] in "+.-_"):
            start -= 1
        while start < mark and not word[start].isalpha():  # a scheme begins with a letter
            start += 1
        found = _USER_END.search(word, mark + 3, last_at)
        user_end = found.start() if found else last_at
        if start < mark and user_end < last_at and word[user_end] == ":":
            return f"{word[:user_end + 1]}***{word[last_at:]}"
        mark = word.find("://", max(mark + 3, user_end))
    return word
