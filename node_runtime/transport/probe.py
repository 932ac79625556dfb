"""Why a connection to the bureau fails, in words a bank's engineer can act on.

gRPC reports every failure to connect as the same UNAVAILABLE after its retries. Before
opening its channel the bank makes one direct probe (a TCP connection, the TLS handshake
with its own certificate, then the HTTP/2 preface) and names the first step that failed:
nothing listening, the bureau's certificate not from the bank's CA, the bureau refusing the
bank's certificate, plaintext against TLS (or TLS against plaintext). A probe that cannot
decide (a slow network) says nothing and gRPC's own connection attempt goes on.
"""

from __future__ import annotations

import socket
import ssl
from pathlib import Path

from protocols.errors import PeerError

from .certs import BUREAU_NAME

_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"
_TLS_ALERT = 0x15  # the first byte of a TLS alert record


class ConnectError(PeerError):
    """The bank cannot set up a connection to the bureau (one of four reasons)."""


class BureauUnreachable(ConnectError):
    """Nothing answers at the bureau's address (down, or the network is): the one reason a
    bank may choose to go on without the bureau (``--fallback bank-only``)."""

    status = "UNAVAILABLE"


def _split(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise ConnectError(f"{address!r} is not HOST:PORT")
    return host.strip("[]"), int(port)


def _context(tls_dir: Path) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(cafile=tls_dir / "ca.crt")
    context.load_cert_chain(tls_dir / "bank.crt", tls_dir / "bank.key")
    context.set_alpn_protocols(["h2"])  # as gRPC does: a bureau may refuse a client without
    return context


def probe(address: str, tls_dir: str | Path | None, timeout: float = 5.0) -> None:
    """Raises ConnectError naming why ``address`` cannot serve this bank; returns if the
    bureau answered the HTTP/2 preface (or the probe could not tell in time)."""
    host, port = _split(address)
    try:
        raw = socket.create_connection((host, port), timeout=timeout)
    except OSError as exc:
        raise BureauUnreachable(
            f"cannot connect to the bureau at {address}: {exc.strerror or exc} (is the bureau "
            "node running, and are the host and port right?)"
        ) from None
    with raw:
        if tls_dir is None:
            _plaintext(raw, address)
        else:
            _tls(raw, address, Path(tls_dir))


def _plaintext(raw: socket.socket, address: str) -> None:
    try:
        raw.sendall(_PREFACE)
        reply = raw.recv(16)
    except TimeoutError:
        return
    except OSError:
        reply = b""
    if not reply or reply[0] == _TLS_ALERT:
        raise ConnectError(
            f"the bureau at {address} speaks TLS and this bank plaintext: use --tls-dir DIR "
            "(the directory the bureau issued to this bank) instead of --insecure"
        )


def _tls(raw: socket.socket, address: str, tls_dir: Path) -> None:
    try:
        stream = _context(tls_dir).wrap_socket(raw, server_hostname=BUREAU_NAME)
    except ssl.SSLCertVerificationError as exc:
        raise ConnectError(
            f"the bureau's certificate at {address} is not from your CA ({exc.verify_message}): "
            "is the address right, and is ca.crt in --tls-dir the bureau's current CA?"
        ) from None
    except ssl.SSLError as exc:
        if "WRONG_VERSION_NUMBER" in str(exc) or "record layer failure" in str(exc):
            raise ConnectError(
                f"the bureau at {address} speaks plaintext (started with --insecure?) and this "
                "bank TLS: ask the bureau to serve with --tls-dir"
            ) from None
        raise _refused(address, exc.reason) from None
    except TimeoutError:
        return
    except OSError:  # closed during the handshake: a plaintext server hung up on it
        raise ConnectError(
            f"the bureau at {address} closed the connection during the TLS handshake: it "
            "speaks plaintext (started with --insecure?) or is not a bureau node"
        ) from None
    with stream:
        try:
            stream.sendall(_PREFACE)
            reply = stream.recv(16)  # TLS 1.3: the bureau checks our certificate about now
        except TimeoutError:
            return
        except ssl.SSLError as exc:
            raise _refused(address, exc.reason) from None
        except OSError:
            reply = b""
        if not reply:
            raise _refused(address, "connection closed")


def _refused(address: str, reason: str | None) -> ConnectError:
    why = (reason or "handshake failed").lower().replace("_", " ")
    return ConnectError(
        f"the bureau at {address} refused your certificate ({why}): "
        "is --tls-dir the directory this bureau issued to this bank, and is it still valid?"
    )
