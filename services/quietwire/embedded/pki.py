"""A development PKI: one CA, a SIP server certificate, a gRPC service certificate.

Kept in ``<state-dir>/pki``; reused across runs while it is valid for the
SIP host and not close to expiry, so a phone that trusted the CA once keeps
trusting it. Keys are written mode 0600.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_DAYS = 3650
LEAF_DAYS = 397
RENEW_BEFORE = dt.timedelta(days=30)
#: The gRPC certificate's names: services reach each other on loopback.
GRPC_NAMES = ("localhost", "127.0.0.1", "::1")


@dataclass(frozen=True, slots=True)
class Pki:
    ca: Path
    sip_cert: Path
    sip_key: Path
    grpc_cert: Path
    grpc_key: Path


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    data = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(data)


def _sans(names: tuple[str, ...]) -> list[x509.GeneralName]:
    """Every name as a DNS SAN (Linphone's mbedTLS ignores IP SANs), IPs also as IP SANs."""
    sans: list[x509.GeneralName] = [x509.DNSName(n) for n in names]
    for name in names:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            continue
    return sans


def _load(cert: Path, key: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None:
    try:
        certificate = x509.load_pem_x509_certificate(cert.read_bytes())
        private = serialization.load_pem_private_key(key.read_bytes(), password=None)
    except (OSError, ValueError):
        return None
    if not isinstance(private, ec.EllipticCurvePrivateKey):
        return None
    return certificate, private


def _fresh(cert: x509.Certificate, issuer: x509.Certificate | None, names: tuple[str, ...]) -> bool:
    if cert.not_valid_after_utc - RENEW_BEFORE < _now():
        return False
    if issuer is not None:
        try:
            cert.verify_directly_issued_by(issuer)
        except (ValueError, TypeError, InvalidSignature):
            return False
    try:
        present = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return not names
    return set(present.get_values_for_type(x509.DNSName)) == set(names)


def _issue(
    subject_cn: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None,
    names: tuple[str, ...],
    usages: list[x509.ObjectIdentifier],
) -> x509.Certificate:
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject_cn)])
    is_ca = issuer is None
    issuer_name, signer = (subject, key) if issuer is None else (issuer[0].subject, issuer[1])
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(_now() - dt.timedelta(minutes=5))
        .not_valid_after(_now() + dt.timedelta(days=CA_DAYS if is_ca else LEAF_DAYS))
        .add_extension(x509.BasicConstraints(ca=is_ca, path_length=0 if is_ca else None), True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=not is_ca,
                key_cert_sign=is_ca,
                crl_sign=is_ca,
                encipher_only=False,
                decipher_only=False,
            ),
            True,
        )
    )
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(_sans(names)), False)
    if usages:
        builder = builder.add_extension(x509.ExtendedKeyUsage(usages), False)
    if issuer is not None:
        ski = issuer[0].extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), False
        )
    return builder.sign(signer, hashes.SHA256())


def _ensure(
    cert_path: Path,
    key_path: Path,
    subject_cn: str,
    issuer: tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None,
    names: tuple[str, ...],
    usages: list[x509.ObjectIdentifier],
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    loaded = _load(cert_path, key_path)
    if loaded is not None and _fresh(loaded[0], issuer[0] if issuer else None, names):
        return loaded
    key = ec.generate_private_key(ec.SECP256R1())
    cert = _issue(subject_cn, key, issuer, names, usages)
    _write_key(key_path, key)
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return cert, key


def ensure_pki(directory: Path, sip_host: str, grpc_names: tuple[str, ...] = ()) -> Pki:
    """Create or reuse the development CA and the certificates it signs.

    ``grpc_names`` adds host names to the gRPC certificate (for containers that
    reach each other by service name, as in docker-compose.yml).
    """
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    pki = Pki(
        ca=directory / "ca.pem",
        sip_cert=directory / "sip.pem",
        sip_key=directory / "sip.key",
        grpc_cert=directory / "grpc.pem",
        grpc_key=directory / "grpc.key",
    )
    ca = _ensure(pki.ca, directory / "ca.key", "quietwire development CA", None, (), [])
    _ensure(pki.sip_cert, pki.sip_key, sip_host, ca, (sip_host,), [ExtendedKeyUsageOID.SERVER_AUTH])
    _ensure(
        pki.grpc_cert,
        pki.grpc_key,
        "quietwire services",
        ca,
        GRPC_NAMES + grpc_names,
        [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH],
    )
    return pki
