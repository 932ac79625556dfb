"""A private certificate authority for one bureau and the banks it serves (with the
``cryptography`` package: no openssl command line).

Layout of a TLS directory (``--tls-dir``):

    ca.crt, ca.key            the bureau's private CA (the key never leaves the bureau)
    bureau.crt, bureau.key    the bureau node's server certificate
    banks/BANK_ID/            what a bank is given: ca.crt, bank.crt, bank.key

A bank's certificate names the bank in its common name: that is its identity at the bureau.
Every private key is written with mode 0600.
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from node_runtime import tables
from protocols.errors import InputDataError

BUREAU_NAME = "xinrong-bureau"  # the name banks check on the bureau's certificate
CA_DAYS = 3650
LEAF_DAYS = 825


@dataclass(frozen=True)
class TlsFiles:
    """PEM bytes a node needs: the CA to trust, its own certificate and key."""

    ca: bytes
    cert: bytes
    key: bytes

    @classmethod
    def load(cls, ca: Path, cert: Path, key: Path) -> TlsFiles:
        for path in (ca, cert, key):
            if not path.exists():
                raise InputDataError(f"{path}: no such file (see `bureau-node certs --help`)")
        return cls(ca.read_bytes(), cert.read_bytes(), key.read_bytes())


def bureau_files(tls_dir: str | Path) -> TlsFiles:
    d = Path(tls_dir)
    return TlsFiles.load(d / "ca.crt", d / "bureau.crt", d / "bureau.key")


def bank_files(tls_dir: str | Path) -> TlsFiles:
    d = Path(tls_dir)
    return TlsFiles.load(d / "ca.crt", d / "bank.crt", d / "bank.key")


def certified_bank_id(tls_dir: str | Path) -> str:
    """The bank identity in DIR/bank.crt (its common name), as the bureau will see it."""
    path = Path(tls_dir) / "bank.crt"
    if not path.exists():
        raise InputDataError(f"{path}: no such file (see `bureau-node certs issue-bank --help`)")
    try:
        cert = x509.load_pem_x509_certificate(path.read_bytes())
    except ValueError as exc:
        raise InputDataError(f"{path}: not a PEM certificate ({exc})") from None
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if len(names) != 1:
        raise InputDataError(f"{path}: the certificate names no bank (no single common name)")
    return str(names[0].value)


def _write(path: Path, data: bytes, private: bool) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tables.atomic_write_bytes(path, data, mode=0o600 if private else 0o644)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Xinrong"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def init_ca(tls_dir: str | Path, hosts: list[str] | None = None) -> dict[str, str]:
    """A new CA and the bureau's server certificate (for ``hosts``, plus localhost)."""
    d = Path(tls_dir)
    if (d / "ca.key").exists():
        raise InputDataError(f"{d / 'ca.key'} exists: this directory already has a CA")
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _name("Xinrong bureau CA")
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )
    _write(d / "ca.key", _key_pem(ca_key), private=True)
    _write(d / "ca.crt", ca_cert.public_bytes(serialization.Encoding.PEM), private=False)
    names = [BUREAU_NAME, "localhost", *(hosts or [])]
    _issue(d, "bureau", BUREAU_NAME, names, ExtendedKeyUsageOID.SERVER_AUTH)
    return {"ca": str(d / "ca.crt"), "cert": str(d / "bureau.crt"), "key": str(d / "bureau.key")}


def _issue(
    d: Path, stem: str, common_name: str, names: list[str], usage: x509.ObjectIdentifier
) -> None:
    ca_key = serialization.load_pem_private_key((d / "ca.key").read_bytes(), password=None)
    ca_cert = x509.load_pem_x509_certificate((d / "ca.crt").read_bytes())
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
        raise InputDataError(f"{d / 'ca.key'} is not this tool's CA key")
    now = datetime.datetime.now(datetime.UTC)
    key = ec.generate_private_key(ec.SECP256R1())
    alternative: list[x509.GeneralName] = []
    for name in names:
        try:
            alternative.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            alternative.append(x509.DNSName(name))
    if "localhost" in names:
        alternative.append(x509.IPAddress(ipaddress.ip_address("127.0.0.1")))
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=LEAF_DAYS))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(x509.SubjectAlternativeName(alternative), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    _write(d / f"{stem}.key", _key_pem(key), private=True)
    _write(d / f"{stem}.crt", cert.public_bytes(serialization.Encoding.PEM), private=False)


def issue_bank(tls_dir: str | Path, bank_id: str) -> dict[str, str]:
    """A bank's key and certificate (its identity: ``bank_id``) under ``banks/BANK_ID/``,
    with the CA certificate beside them: the directory to hand to the bank."""
    from .channels import valid_bank_id

    if not valid_bank_id(bank_id):
        raise InputDataError(
            f"bank id {bank_id!r}: use 1-64 ASCII letters, digits, '-', '_' or '.'"
        )
    d = Path(tls_dir)
    if not (d / "ca.key").exists():
        raise InputDataError(f"{d}: no CA here; run `bureau-node certs init` first")
    out = d / "banks" / bank_id
    out.mkdir(parents=True, exist_ok=True)
    # the bank's files are issued in the CA directory, then moved to its own folder
    _issue(d, f"banks/{bank_id}/bank", bank_id, [bank_id], ExtendedKeyUsageOID.CLIENT_AUTH)
    _write(out / "ca.crt", (d / "ca.crt").read_bytes(), private=False)
    return {"dir": str(out), "cert": str(out / "bank.crt"), "key": str(out / "bank.key")}
