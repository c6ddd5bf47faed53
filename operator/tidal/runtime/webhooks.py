"""The admission webhooks' server: where it listens, how the API server reaches it, its TLS.

Owns: `webhook_settings` (`TIDAL_WEBHOOKS` and the `TIDAL_WEBHOOK_*` environment), and
`TidalWebhookServer`, Kopf's HTTPS webhook server with a self-signed certificate made with
`cryptography` (ECDSA P-256, for the host or the Service's DNS names, handed to the API server
as the webhook's caBundle by Kopf) and, in Service mode, the API server pointed at a Service
instead of a URL. Must not: decide admissions (`tidal.residency.admission`) or register
handlers (`tidal.controllers.admission`).
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from collections.abc import AsyncIterator, Collection, Mapping
from dataclasses import dataclass
from typing import Final

import kopf
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = ["DEFAULT_PORT", "TidalWebhookServer", "WebhookSettings", "webhook_settings"]

DEFAULT_PORT: Final = 9443
_TRUTHY: Final = frozenset({"1", "true", "yes", "on"})


@dataclass(frozen=True)
class WebhookSettings:
    """Where the webhook server listens and how the API server reaches it.

    URL mode (`host` set, e.g. 127.0.0.1 for the local control plane): the API server calls
    `https://<host>:<port>/<webhook>`. Service mode (`service` = (namespace, name), in a
    cluster): it calls the Service, which forwards `service_port` to our `port`.
    """

    addr: str
    port: int
    host: str | None = None
    service: tuple[str, str] | None = None
    service_port: int = 443
    certfile: str | None = None
    pkeyfile: str | None = None


def webhook_settings(env: Mapping[str, str] = os.environ) -> WebhookSettings | None:
    """The webhook server's settings from the environment; None when webhooks are off.

    `TIDAL_WEBHOOKS=1` turns them on. `TIDAL_WEBHOOK_HOST` (URL mode) or
    `TIDAL_WEBHOOK_SERVICE=<namespace>/<name>` (Service mode, port `TIDAL_WEBHOOK_SERVICE_PORT`,
    default 443) says how the API server reaches the operator; `TIDAL_WEBHOOK_PORT` (default
    9443) and `TIDAL_WEBHOOK_ADDR` (default: the host in URL mode, else 0.0.0.0) where it
    listens. `TIDAL_WEBHOOK_CERTFILE`/`TIDAL_WEBHOOK_KEYFILE` replace the self-signed
    certificate (needed when several replicas serve one Service). Raises ValueError for a
    configuration that cannot work, so the operator fails at start instead of admitting blindly.
    """
    if env.get("TIDAL_WEBHOOKS", "").strip().lower() not in _TRUTHY:
        return None
    host = env.get("TIDAL_WEBHOOK_HOST") or None
    service: tuple[str, str] | None = None
    if raw_service := env.get("TIDAL_WEBHOOK_SERVICE"):
        namespace, _, name = raw_service.partition("/")
        if not namespace or not name:
            raise ValueError(
                f"TIDAL_WEBHOOK_SERVICE must be <namespace>/<name>, not {raw_service!r}"
            )
        service = (namespace, name)
    if host is None and service is None:
        raise ValueError("TIDAL_WEBHOOKS=1 needs TIDAL_WEBHOOK_HOST or TIDAL_WEBHOOK_SERVICE")
    certfile = env.get("TIDAL_WEBHOOK_CERTFILE") or None
    pkeyfile = env.get("TIDAL_WEBHOOK_KEYFILE") or None
    if (certfile is None) != (pkeyfile is None):
        raise ValueError("TIDAL_WEBHOOK_CERTFILE and TIDAL_WEBHOOK_KEYFILE go together")
    return WebhookSettings(
        addr=env.get("TIDAL_WEBHOOK_ADDR") or (host if host and service is None else "0.0.0.0"),
        port=_port(env, "TIDAL_WEBHOOK_PORT", DEFAULT_PORT),
        host=host,
        service=service,
        service_port=_port(env, "TIDAL_WEBHOOK_SERVICE_PORT", 443),
        certfile=certfile,
        pkeyfile=pkeyfile,
    )


def _port(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name, "")
    try:
        port = int(raw) if raw else default
    except ValueError:
        raise ValueError(f"{name} must be a port number, not {raw!r}") from None
    if not 0 < port < 65536:
        raise ValueError(f"{name} must be a port number, not {raw!r}")
    return port


class TidalWebhookServer(kopf.WebhookServer):
    """Kopf's HTTPS webhook server with two changes: the self-signed certificate is made with
    `cryptography` (a dependency already; Kopf's own generator needs extra packages), and in
    Service mode the API server is pointed at a Service instead of a URL."""

    def __init__(self, config: WebhookSettings) -> None:
        sans: list[str] = []
        host = config.host
        if config.service is not None:
            namespace, name = config.service
            host = f"{name}.{namespace}.svc"
            sans = [name, f"{name}.{namespace}", f"{host}.cluster.local"]
        super().__init__(
            addr=config.addr,
            port=config.port,
            host=host,
            certfile=config.certfile,
            pkeyfile=config.pkeyfile,
            extra_sans=sans,
        )
        self.service = config.service
        self.service_port = config.service_port

    async def __call__(self, fn: kopf.WebhookFn) -> AsyncIterator[kopf.WebhookClientConfig]:
        async for config in super().__call__(fn):
            if self.service is None:
                yield config
                continue
            namespace, name = self.service
            service_config = kopf.WebhookClientConfig(
                service=kopf.WebhookClientConfigService(
                    namespace=namespace, name=name, port=self.service_port, path=""
                )
            )
            if "caBundle" in config:
                service_config["caBundle"] = config["caBundle"]
            yield service_config

    @staticmethod
    def build_certificate(
        hostnames: Collection[str], password: str | None = None
    ) -> tuple[bytes, bytes]:
        """A self-signed certificate (its own CA) for `hostnames`, and its PEM private key."""
        names: list[x509.GeneralName] = []
        for hostname in dict.fromkeys(hostnames):  # ordered, deduplicated
            try:
                address = ipaddress.ip_address(hostname)
            except ValueError:
                names.append(x509.DNSName(hostname))
                continue
            if not address.is_unspecified:  # 0.0.0.0 is where we listen, not a name
                names.append(x509.IPAddress(address))
        common = next((str(n.value) for n in names), "tidal-webhook")
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])
        now = datetime.datetime.now(datetime.UTC)
        certificate = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            # Regenerated at every start; a year outlives any operator process.
            .not_valid_after(now + datetime.timedelta(days=365))
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    key_encipherment=False,
                    key_cert_sign=True,
                    crl_sign=False,
                    content_commitment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .sign(key, hashes.SHA256())
        )
        encryption: serialization.KeySerializationEncryption = (
            serialization.BestAvailableEncryption(password.encode())
            if password
            else serialization.NoEncryption()
        )
        key_pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
        )
        return certificate.public_bytes(serialization.Encoding.PEM), key_pem
