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
import json
import threading
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
    entry = _register(d, bank_id, out / "bank.crt")
    return {
        "dir": str(out),
        "cert": str(out / "bank.crt"),
        "key": str(out / "bank.key"),
        "serial": entry["serial"],
    }


# -- revocation and renewal ------------------------------------------------------------------
#
# The bureau keeps a certificate revocation list (``ca.crl``, X.509, signed by its CA) and a
# register of the bank certificates it issued (``issued.jsonl``). gRPC Python cannot check a
# CRL during the handshake, so the bureau checks it on every call (RevocationList, reloaded
# when the file changes): a revoked bank completes the TLS handshake but every call is
# refused, UNAUTHENTICATED, and on record.

CRL_FILE = "ca.crl"
ISSUED_FILE = "issued.jsonl"


def _register(d: Path, bank_id: str, cert_path: Path) -> dict[str, str]:
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    entry = {
        "bank_id": bank_id,
        "serial": format(cert.serial_number, "x"),
        "not_after": cert.not_valid_after_utc.isoformat(),
        "issued": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }
    with (d / ISSUED_FILE).open("a") as handle:
        handle.write(json.dumps(entry) + "\n")
    return entry


def issued(tls_dir: str | Path, bank_id: str) -> list[dict[str, str]]:
    """Every certificate issued to ``bank_id`` that the register (or its folder) knows."""
    d = Path(tls_dir)
    found: dict[str, dict[str, str]] = {}
    if (d / ISSUED_FILE).exists():
        for line in (d / ISSUED_FILE).read_text().splitlines():
            entry = json.loads(line)
            if entry["bank_id"] == bank_id:
                found[entry["serial"]] = entry
    current = d / "banks" / bank_id / "bank.crt"
    if current.exists():  # issued before the register existed
        cert = x509.load_pem_x509_certificate(current.read_bytes())
        serial = format(cert.serial_number, "x")
        found.setdefault(serial, {"bank_id": bank_id, "serial": serial})
    return list(found.values())


def _revoked_entries(d: Path) -> list[x509.RevokedCertificate]:
    path = d / CRL_FILE
    if not path.exists():
        return []
    return list(x509.load_pem_x509_crl(path.read_bytes()))


def revoke(tls_dir: str | Path, bank_id: str, serial: str | None = None) -> dict[str, object]:
    """Revoke the bank's certificates (all it was issued, or the one ``serial``, hex): the
    CRL is re-signed and a running bureau refuses them from its next call."""
    d = Path(tls_dir)
    if not (d / "ca.key").exists():
        raise InputDataError(f"{d}: no CA here (the directory of `bureau-node certs init`)")
    known = issued(d, bank_id)
    if not known:
        raise InputDataError(f"no certificate was issued to bank {bank_id!r} from {d}")
    serials = [e["serial"] for e in known]
    if serial is not None:
        serial = serial.lower().removeprefix("0x")
        if serial not in serials:
            raise InputDataError(f"bank {bank_id!r} has no certificate with serial {serial}")
        serials = [serial]
    ca_key = serialization.load_pem_private_key((d / "ca.key").read_bytes(), password=None)
    ca_cert = x509.load_pem_x509_certificate((d / "ca.crt").read_bytes())
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
        raise InputDataError(f"{d / 'ca.key'} is not this tool's CA key")
    now = datetime.datetime.now(datetime.UTC)
    entries = _revoked_entries(d)
    already = {e.serial_number for e in entries}
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca_cert.subject)
        .last_update(now)
        .next_update(now + datetime.timedelta(days=LEAF_DAYS))
    )
    for entry in entries:
        builder = builder.add_revoked_certificate(entry)
    added = []
    for s in serials:
        number = int(s, 16)
        if number in already:
            continue
        revoked = (
            x509.RevokedCertificateBuilder().serial_number(number).revocation_date(now).build()
        )
        builder = builder.add_revoked_certificate(revoked)
        added.append(s)
    crl = builder.sign(ca_key, hashes.SHA256())
    _write(d / CRL_FILE, crl.public_bytes(serialization.Encoding.PEM), private=False)
    return {"bank_id": bank_id, "revoked": added, "already_revoked": len(serials) - len(added)}


def renew(tls_dir: str | Path, bank_id: str) -> dict[str, object]:
    """A new key and certificate for the bank (its folder is overwritten); the old
    certificates stay valid until revoked, so a bank is not cut off mid-job: revoke them
    with ``certs revoke BANK --serial`` once it uses the new one."""
    old = [e["serial"] for e in issued(tls_dir, bank_id)]
    if not old:
        raise InputDataError(f"bank {bank_id!r} has no certificate to renew; use issue-bank")
    revoked = RevocationList(tls_dir)
    made: dict[str, object] = dict(issue_bank(tls_dir, bank_id))
    # the ones still valid: a review's renew after a revoke named its revoked ones to revoke
    made["previous_serials"] = [s for s in old if revoked.revoked(int(s, 16)) is None]
    return made


class RevocationList:
    """The CRL of a TLS directory, checked against the CA and reloaded when it changes
    (``stat`` per call: cheap next to a call)."""

    def __init__(self, tls_dir: str | Path) -> None:
        self.path = Path(tls_dir) / CRL_FILE
        self._ca = x509.load_pem_x509_certificate((Path(tls_dir) / "ca.crt").read_bytes())
        self._stamp: tuple[int, int] | None = None
        self._revoked: dict[int, datetime.datetime] = {}
        self._lock = threading.Lock()

    def _reload(self) -> None:
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            self._stamp, self._revoked = None, {}
            return
        stamp = (stat.st_mtime_ns, stat.st_size)
        if stamp == self._stamp:
            return
        crl = x509.load_pem_x509_crl(self.path.read_bytes())
        public = self._ca.public_key()
        if crl.issuer != self._ca.subject or not isinstance(public, ec.EllipticCurvePublicKey):
            raise InputDataError(f"{self.path}: not a revocation list of this CA")
        if not crl.is_signature_valid(public):
            raise InputDataError(f"{self.path}: the revocation list's signature is bad")
        self._revoked = {e.serial_number: e.revocation_date_utc for e in crl}
        self._stamp = stamp

    def revoked(self, serial: int) -> datetime.datetime | None:
        """When the certificate with this serial was revoked, or None."""
        with self._lock:
            self._reload()
            return self._revoked.get(serial)
