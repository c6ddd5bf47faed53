"""The gateway's settings: flags, their environment defaults, and the bearer tokens.

Owns: `GatewayConfig`, `add_arguments`/`from_args` (the `tidal gateway` flags, each with a
`TIDAL_GATEWAY_*` environment default so a Deployment can set either), and `Tokens`, the
optional bearer-token check. Must not: import aiohttp or anything heavy (`tidal --help`
builds these flags).

Tokens come from `TIDAL_GATEWAY_TOKEN` (one token) and/or `--token-file` (one per line, blank
lines and `#` comments ignored; re-read when the file changes, so a rotated Secret takes effect
without a restart). Never from a flag: argv is visible to every process on the node. With no
token configured, auth is off. Tokens are compared in constant time and never logged.
"""

from __future__ import annotations

import argparse
import dataclasses
import hmac
import logging
import os
import socket
from collections.abc import Mapping
from pathlib import Path

__all__ = ["GatewayConfig", "Tokens", "add_arguments", "from_args"]

log = logging.getLogger("tidal.gateway")

MiB = 1 << 20


@dataclasses.dataclass(frozen=True)
class GatewayConfig:
    listen_host: str = "0.0.0.0"
    listen_port: int = 8080
    admin_host: str = "0.0.0.0"
    admin_port: int = 9090
    namespace: str | None = None
    cold_start_budget_seconds: float = 600.0
    retry_after_seconds: int = 30
    max_request_bytes: int = 8 * MiB
    max_held_requests: int = 1000
    max_attempts: int = 3
    connect_timeout_seconds: float = 5.0
    upstream_timeout_seconds: float = 600.0
    last_request_interval_seconds: float = 10.0
    token_file: Path | None = None
    token: str | None = dataclasses.field(default=None, repr=False)
    pod_address_map: Path | None = None
    name: str = "tidal-gateway"
    shutdown_grace_seconds: float = 30.0

    def __post_init__(self) -> None:
        positive = (
            "cold_start_budget_seconds",
            "connect_timeout_seconds",
            "upstream_timeout_seconds",
            "last_request_interval_seconds",
        )
        for name in positive:
            if not getattr(self, name) > 0:
                raise ValueError(f"{name.replace('_', '-')} must be positive")
        for name in ("max_request_bytes", "max_held_requests", "max_attempts"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name.replace('_', '-')} must be at least 1")
        if self.retry_after_seconds < 0 or self.shutdown_grace_seconds < 0:
            raise ValueError("retry-after and the shutdown grace must not be negative")


class Tokens:
    """The accepted bearer tokens; `allows` compares in constant time."""

    def __init__(self, static: str | None = None, path: Path | None = None) -> None:
        self._static = tuple(t for t in ((static or "").strip(),) if t)
        self._path = path
        self._stamp: tuple[int, int] | None = None
        self._from_file: tuple[str, ...] = ()
        if path is not None:
            self.reload(strict=True)

    @property
    def enabled(self) -> bool:
        return bool(self._static or self._path is not None)

    def allows(self, authorization: str | None) -> bool:
        """Whether an `Authorization` header value carries an accepted token."""
        if not self.enabled:
            return True
        scheme, _, presented = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not presented.strip():
            return False
        candidate = presented.strip().encode()
        # Compare with every token (no early exit), so timing says nothing about which matched.
        matched = False
        for token in (*self._static, *self._from_file):
            matched |= hmac.compare_digest(candidate, token.encode())
        return matched

    def reload(self, *, strict: bool = False) -> bool:
        """Re-read the token file if it changed; True when it did. Errors keep the old set
        (strict: raise, for startup)."""
        if self._path is None:
            return False
        try:
            stat = self._path.stat()
            stamp = (stat.st_mtime_ns, stat.st_size)
            if stamp == self._stamp:
                return False
            lines = self._path.read_text().splitlines()
        except OSError as exc:
            if strict:
                raise ValueError(f"cannot read the token file {self._path}: {exc}") from exc
            log.warning("Cannot read the token file %s (keeping the previous tokens)", self._path)
            return False
        tokens = tuple(t.strip() for t in lines if t.strip() and not t.lstrip().startswith("#"))
        if not tokens and strict:
            raise ValueError(f"the token file {self._path} holds no token")
        self._stamp, self._from_file = stamp, tokens
        log.info("Loaded %d bearer token(s) from %s", len(tokens), self._path)
        return True


def add_arguments(parser: argparse.ArgumentParser, env: Mapping[str, str] = os.environ) -> None:
    """The `tidal gateway` flags; each defaults to its environment variable, then a constant."""
    defaults = GatewayConfig()

    def option(flag: str, var: str, default: object, help_text: str, **kw: object) -> None:
        shown = env.get(var) or ("unset" if default is None else default)
        parser.add_argument(
            flag,
            default=env.get(var) or default,
            help=f"{help_text} (env {var}; default {shown})",
            **kw,  # type: ignore[arg-type]
        )

    listen = f"{defaults.listen_host}:{defaults.listen_port}"
    admin = f"{defaults.admin_host}:{defaults.admin_port}"
    option("--listen", "TIDAL_GATEWAY_LISTEN", listen, "OpenAI API address", metavar="HOST:PORT")
    option(
        "--admin-listen",
        "TIDAL_GATEWAY_ADMIN_LISTEN",
        admin,
        "/metrics, /internal/inflight, /healthz, /readyz",
        metavar="HOST:PORT",
    )
    option("--namespace", "TIDAL_GATEWAY_NAMESPACE", None, "route endpoints of this namespace only")
    option(
        "--cold-start-budget",
        "TIDAL_GATEWAY_COLD_START_BUDGET_SECONDS",
        defaults.cold_start_budget_seconds,
        "seconds to hold a request while its endpoint has no ready replica",
        metavar="SECONDS",
    )
    option(
        "--retry-after",
        "TIDAL_GATEWAY_RETRY_AFTER_SECONDS",
        defaults.retry_after_seconds,
        "Retry-After of a 503 past the budget",
        metavar="SECONDS",
    )
    option(
        "--max-request-bytes",
        "TIDAL_GATEWAY_MAX_REQUEST_BYTES",
        defaults.max_request_bytes,
        "largest request body accepted (413 above)",
        metavar="BYTES",
    )
    option(
        "--max-held-requests",
        "TIDAL_GATEWAY_MAX_HELD_REQUESTS",
        defaults.max_held_requests,
        "requests held per endpoint at most (503 above)",
        metavar="N",
    )
    option(
        "--max-attempts",
        "TIDAL_GATEWAY_MAX_ATTEMPTS",
        defaults.max_attempts,
        "replicas tried per request when connections fail",
        metavar="N",
    )
    option(
        "--connect-timeout",
        "TIDAL_GATEWAY_CONNECT_TIMEOUT_SECONDS",
        defaults.connect_timeout_seconds,
        "seconds to connect to a replica",
        metavar="SECONDS",
    )
    option(
        "--upstream-timeout",
        "TIDAL_GATEWAY_UPSTREAM_TIMEOUT_SECONDS",
        defaults.upstream_timeout_seconds,
        "seconds a replica may stay silent mid-response",
        metavar="SECONDS",
    )
    option(
        "--last-request-interval",
        "TIDAL_GATEWAY_LAST_REQUEST_INTERVAL_SECONDS",
        defaults.last_request_interval_seconds,
        "write tidal.dev/last-request-time at most this often per endpoint",
        metavar="SECONDS",
    )
    option(
        "--token-file",
        "TIDAL_GATEWAY_TOKEN_FILE",
        None,
        "bearer tokens, one per line (TIDAL_GATEWAY_TOKEN adds one); none: no auth",
        metavar="PATH",
    )
    option(
        "--pod-address-map",
        "TIDAL_GATEWAY_POD_ADDRESS_MAP",
        None,
        "TEST/SIMULATION HOOK: JSON file mapping pod IP to host:port; unmapped pods get no "
        "traffic. Never set in production",
        metavar="PATH",
    )
    option(
        "--name",
        "POD_NAME",
        socket.gethostname() or defaults.name,
        "this replica's name in /internal/inflight",
    )


def from_args(args: argparse.Namespace, env: Mapping[str, str] = os.environ) -> GatewayConfig:
    """The config from parsed flags; raises ValueError naming the bad value."""
    listen_host, listen_port = _address(args.listen, "--listen")
    admin_host, admin_port = _address(args.admin_listen, "--admin-listen")
    return GatewayConfig(
        listen_host=listen_host,
        listen_port=listen_port,
        admin_host=admin_host,
        admin_port=admin_port,
        namespace=args.namespace or None,
        cold_start_budget_seconds=_number(args.cold_start_budget, "--cold-start-budget"),
        retry_after_seconds=int(_number(args.retry_after, "--retry-after")),
        max_request_bytes=int(_number(args.max_request_bytes, "--max-request-bytes")),
        max_held_requests=int(_number(args.max_held_requests, "--max-held-requests")),
        max_attempts=int(_number(args.max_attempts, "--max-attempts")),
        connect_timeout_seconds=_number(args.connect_timeout, "--connect-timeout"),
        upstream_timeout_seconds=_number(args.upstream_timeout, "--upstream-timeout"),
        last_request_interval_seconds=_number(
            args.last_request_interval, "--last-request-interval"
        ),
        token_file=Path(args.token_file) if args.token_file else None,
        token=env.get("TIDAL_GATEWAY_TOKEN") or None,
        pod_address_map=Path(args.pod_address_map) if args.pod_address_map else None,
        name=str(args.name),
    )


def _address(value: object, flag: str) -> tuple[str, int]:
    host, sep, port = str(value).rpartition(":")
    if not sep:
        raise ValueError(f"{flag} must be HOST:PORT, got {value!r}")
    try:
        number = int(port)
    except ValueError:
        raise ValueError(f"{flag} must be HOST:PORT, got {value!r}") from None
    if not 0 <= number <= 65535:
        raise ValueError(f"{flag}: port out of range in {value!r}")
    return host.strip("[]") or "0.0.0.0", number


def _number(value: object, flag: str) -> float:
    try:
        return float(str(value))
    except ValueError:
        raise ValueError(f"{flag} must be a number, got {value!r}") from None
