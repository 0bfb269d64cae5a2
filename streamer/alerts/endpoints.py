"""ZeroMQ endpoint helpers: bind to loopback by default, snapshot endpoint beside the PUB one."""

from __future__ import annotations

import ipaddress
import re

DEFAULT_ENDPOINT = "tcp://127.0.0.1:5577"
"""Where alerts are published unless the user names another address (loopback only)."""

_TCP = re.compile(r"^tcp://(?P<host>\[[^\]]+\]|[^:]+):(?P<port>\*|\d+)$")
LOOPBACK_NAMES = frozenset({"localhost", "ip6-localhost", "ip6-loopback"})


def split_tcp(endpoint: str) -> tuple[str, str]:
    """``(host, port)`` of a ``tcp://host:port`` endpoint (port may be ``*``).

    >>> split_tcp("tcp://127.0.0.1:5577")
    ('127.0.0.1', '5577')
    """
    match = _TCP.match(endpoint)
    if match is None:
        raise ValueError(f"not a tcp://host:port endpoint: {endpoint!r}")
    return match["host"], match["port"]


def is_loopback(endpoint: str) -> bool:
    """Whether binding ``endpoint`` exposes it to this machine only.

    ``ipc://`` and ``inproc://`` are local; ``tcp://`` is local for 127.0.0.0/8, ``::1`` and
    ``localhost``; wildcards (``*``, ``0.0.0.0``) and interface names are not.

    >>> is_loopback("tcp://127.0.0.1:*"), is_loopback("tcp://*:5577"), is_loopback("ipc:///tmp/a")
    (True, False, True)
    """
    if endpoint.startswith(("ipc://", "inproc://")):
        return True
    host, _ = split_tcp(endpoint)
    host = host.strip("[]")
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_bind_endpoint(endpoint: str, *, allow_remote: bool) -> str:
    """Return ``endpoint`` if it may be bound; refuse non-loopback addresses unless allowed."""
    if not endpoint.startswith(("tcp://", "ipc://", "inproc://")):
        raise ValueError(f"unsupported endpoint {endpoint!r}: use tcp://, ipc:// or inproc://")
    if not allow_remote and not is_loopback(endpoint):
        raise ValueError(
            f"refusing to bind {endpoint!r}: alerts are published on 127.0.0.1 only unless "
            "allow_remote=True is passed explicitly"
        )
    return endpoint


def default_snapshot_endpoint(endpoint: str) -> str:
    """The snapshot endpoint beside a PUB endpoint: TCP port + 1 (any free port for ``*``/0).

    >>> default_snapshot_endpoint("tcp://127.0.0.1:5577")
    'tcp://127.0.0.1:5578'
    >>> default_snapshot_endpoint("tcp://127.0.0.1:*")
    'tcp://127.0.0.1:*'
    >>> default_snapshot_endpoint("ipc:///tmp/alerts")
    'ipc:///tmp/alerts.snapshot'
    """
    if not endpoint.startswith("tcp://"):
        return endpoint + ".snapshot"
    host, port = split_tcp(endpoint)
    if port in ("*", "0"):
        return f"tcp://{host}:*"
    return f"tcp://{host}:{int(port) + 1}"


def port_of(endpoint: str) -> int | None:
    """TCP port of a bound endpoint (``None`` for ipc/inproc)."""
    if not endpoint.startswith("tcp://"):
        return None
    return int(split_tcp(endpoint)[1])


def with_port(connect_endpoint: str, port: int) -> str:
    """``connect_endpoint``'s host with another TCP port.

    >>> with_port("tcp://10.0.0.5:5577", 40123)
    'tcp://10.0.0.5:40123'
    """
    host, _ = split_tcp(connect_endpoint)
    return f"tcp://{host}:{port}"
