"""``make certs``: a private CA and one certificate per service for mutual TLS between the services.

    python -m services.devstack.certs [--out certs] [--days 365] [--namespace tradebot] [--force]

Writes ``ca.crt`` and ``ca.key`` (keep the CA key offline once the certificates are issued) and, for
every identity, ``<name>.crt`` and ``<name>.key``. A certificate's Common Name is the identity the
servers authorise per call (``services/common/caller_policy.py``): ``gateway`` is the only identity
that may call ``Executor/RunCycle``; ``executor`` reads market data; ``operator`` is for grpcurl.
Server certificates name the compose service, its Kubernetes Service names and localhost, so the
same files work in compose, in Kubernetes and on one host.
"""

from __future__ import annotations

import argparse
import datetime
import ipaddress
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_NAME = "tradebot-ca"
# The gRPC servers also call out (the executor reads the market), so they get both usages.
SERVERS = ("market", "strategy", "executor")
CLIENTS = ("gateway", "operator")
DEFAULT_NAMESPACE = "tradebot"


@dataclass(frozen=True)
class IssuedPair:
    cert: Path
    key: Path


@dataclass(frozen=True)
class Authority:
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey
    files: IssuedPair


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _write(directory: Path, name: str, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> IssuedPair:
    cert_path, key_path = directory / f"{name}.crt", directory / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    # Created 0600 so no other account ever sees the key, not even for a moment.
    descriptor = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    return IssuedPair(cert_path, key_path)


def _validity(days: int) -> tuple[datetime.datetime, datetime.datetime]:
    now = datetime.datetime.now(datetime.UTC)
    return now - datetime.timedelta(minutes=5), now + datetime.timedelta(days=days)


def make_authority(directory: Path, *, name: str = CA_NAME, days: int = 3650, file_name: str = "ca") -> Authority:
    key = _new_key()
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    not_before, not_after = _validity(days)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                     crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
        .sign(key, hashes.SHA256())
    )
    return Authority(cert, key, _write(directory, file_name, cert, key))


def server_names(service: str, namespace: str = DEFAULT_NAMESPACE) -> list[x509.GeneralName]:
    """Every name a client may dial the service by: compose, Kubernetes (short and full), one host."""
    dns = [service, f"{service}.{namespace}", f"{service}.{namespace}.svc", f"{service}.{namespace}.svc.cluster.local",
           "localhost"]
    ips = [ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1")]
    return [*(x509.DNSName(name) for name in dns), *(x509.IPAddress(ip) for ip in ips)]


def issue(directory: Path, identity: str, authority: Authority, *, server: bool, days: int = 365,
          namespace: str = DEFAULT_NAMESPACE, file_name: str | None = None) -> IssuedPair:
    """A certificate whose Common Name is ``identity``; ``server`` adds serverAuth and the service's names."""
    key = _new_key()
    not_before, not_after = _validity(days)
    usages = [ExtendedKeyUsageOID.CLIENT_AUTH] + ([ExtendedKeyUsageOID.SERVER_AUTH] if server else [])
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, identity)]))
        .issuer_name(authority.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
    )
    if server:
        builder = builder.add_extension(x509.SubjectAlternativeName(server_names(identity, namespace)), critical=False)
    return _write(directory, file_name or identity, builder.sign(authority.key, hashes.SHA256()), key)


def generate(directory: Path, *, days: int = 365, namespace: str = DEFAULT_NAMESPACE,
             force: bool = False) -> dict[str, IssuedPair]:
    """The CA and every identity's pair in ``directory``; refuses to overwrite unless ``force``."""
    directory.mkdir(parents=True, exist_ok=True)
    if (directory / "ca.crt").exists() and not force:
        raise FileExistsError(f"{directory}/ca.crt exists: pass --force to replace the whole set")
    authority = make_authority(directory)
    issued = {"ca": authority.files}
    for name in SERVERS:
        issued[name] = issue(directory, name, authority, server=True, days=days, namespace=namespace)
    for name in CLIENTS:
        issued[name] = issue(directory, name, authority, server=False, days=days, namespace=namespace)
    return issued


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make certs", description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="certs", help="directory to write into (default: certs)")
    parser.add_argument("--days", type=int, default=365, help="validity of the service certificates")
    parser.add_argument("--namespace", default=DEFAULT_NAMESPACE, help="Kubernetes namespace in the server names")
    parser.add_argument("--force", action="store_true", help="replace an existing set")
    args = parser.parse_args(argv)
    try:
        issued = generate(Path(args.out), days=args.days, namespace=args.namespace, force=args.force)
    except FileExistsError as error:
        print(f"make certs: {error}", file=sys.stderr)
        return 1
    for name, pair in issued.items():
        print(f"{name:9s} {pair.cert}  {pair.key}")
    print("CA key: keep it offline once the certificates are issued; it signs new identities.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
