"""Transport and identity, set up in one place for each side.

With a TLS directory both sides speak gRPC over mutual TLS and the bank's identity is the
common name of its certificate, issued by the bureau's private CA (``certs.py``); the bank
also names itself in call metadata, which must agree. Without one (development, loopback
only at the bureau) the bank's word in the metadata is its identity.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from concurrent import futures

import grpc
from cryptography import x509

from node_runtime.cli_common import distribution_version

from .certs import BUREAU_NAME, TlsFiles
from .errors import IdentityError, IncompatibleRelease

# Largest message either side accepts: chunks are at most 2 MiB (65,536 points).
MAX_MESSAGE_BYTES = 8 * 1024 * 1024
BANK_ID_METADATA = "x-xinrong-bank-id"
# The wire protocol both nodes speak: the messages' meaning, not only their fields (a new
# field that an older node would ignore, a bound that moved, a step that changed). The bank
# names it on every call and the bureau refuses any other at once, FAILED_PRECONDITION,
# before a servicer reads the call: a bank and a bureau of different releases would
# otherwise fail late or, worse, train a wrong model. Raise it with any such change.
PROTOCOL_METADATA = "x-xinrong-protocol"
# 2: each Paillier key comes with its proof of being a Paillier modulus; 3: a lookup table
# update's removed tags come spread over its chunks (a bank of protocol 2 read the first
# chunk's only, and would keep answering with entries the bureau removed), and scoring
# serves no scorecard points per row; 4: a feature's bins for information value are fitted
# on the bureau's whole table and come as noisy counts of positives and of negatives (no
# exact bin sizes; the request's min_bin_count is gone: the bank merges small bins)
PROTOCOL_VERSION = 4
# the audit receipts of a call, in its trailing metadata (bureau_node/interceptors.py)
RECEIPT_METADATA = "x-xinrong-receipt-bin"
_OPTIONS = [
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
]


def create_server(
    address: str,
    max_workers: int = 16,
    tls: TlsFiles | None = None,
    interceptors: Sequence[grpc.ServerInterceptor] = (),
    maximum_concurrent_rpcs: int | None = None,
) -> tuple[grpc.Server, int]:
    """A gRPC server bound to ``address`` (port 0 picks a free port); returns it and the port.
    With ``tls``, mutual TLS: a client must present a certificate from the same CA. Beyond
    ``maximum_concurrent_rpcs`` calls (running or waiting for a thread) gRPC refuses a new
    one at once, RESOURCE_EXHAUSTED."""
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=max_workers),
        # no SO_REUSEPORT: a second node on the same port would otherwise share its calls
        # with the first (a review's two bureaus answered half of a bank's PSI sessions each)
        options=[*_OPTIONS, ("grpc.so_reuseport", 0)],
        interceptors=list(interceptors),
        maximum_concurrent_rpcs=maximum_concurrent_rpcs,
    )
    try:
        if tls is None:
            port = server.add_insecure_port(address)
        else:
            credentials = grpc.ssl_server_credentials(
                [(tls.key, tls.cert)], root_certificates=tls.ca, require_client_auth=True
            )
            port = server.add_secure_port(address, credentials)
    except RuntimeError:  # grpc's "failed to bind"
        port = 0
    if port == 0:
        raise OSError(
            f"cannot listen on {address}: the port is in use (another node?) or the address "
            "is not this machine's"
        )
    return server, port


# The bank retries a call the bureau never received (UNAVAILABLE: a restart, a dropped
# connection) with exponential backoff; a step that did arrive twice is answered by the
# bureau from its recorded reply (vertical_lr.BureauTrainer), so nothing is applied twice.
_RETRY = json.dumps(
    {
        "methodConfig": [
            {
                "name": [  # unary calls only: a retried stream can wait for a server that is gone
                    {"service": f"xinrong.v1.{service}", "method": method}
                    for service, method in (
                        ("Catalogue", "ListFeatures"),
                        ("JointTraining", "StartTraining"),
                        ("JointTraining", "Gradient"),
                        ("JointTraining", "Decrypt"),
                        ("JointTraining", "Update"),
                        ("JointTraining", "ResumeTraining"),
                        ("JointTraining", "FinishTraining"),
                        ("Scoring", "MakeScorecard"),
                        ("Scoring", "ListModels"),
                    )
                ],
                "retryPolicy": {
                    "maxAttempts": 5,
                    "initialBackoff": "0.5s",
                    "maxBackoff": "8s",
                    "backoffMultiplier": 2,
                    "retryableStatusCodes": ["UNAVAILABLE"],
                },
            }
        ]
    }
)
_CLIENT_OPTIONS = [*_OPTIONS, ("grpc.enable_retries", 1), ("grpc.service_config", _RETRY)]


def open_channel(address: str, tls: TlsFiles | None = None) -> grpc.Channel:
    if tls is None:
        return grpc.insecure_channel(address, options=_CLIENT_OPTIONS)
    credentials = grpc.ssl_channel_credentials(
        root_certificates=tls.ca, private_key=tls.key, certificate_chain=tls.cert
    )
    # the bureau's certificate names it BUREAU_NAME, whatever address it is reached at
    options = [*_CLIENT_OPTIONS, ("grpc.ssl_target_name_override", BUREAU_NAME)]
    return grpc.secure_channel(address, credentials, options=options)


def bank_metadata(bank_id: str) -> tuple[tuple[str, str], ...]:
    return ((BANK_ID_METADATA, bank_id), (PROTOCOL_METADATA, str(PROTOCOL_VERSION)))


def check_protocol(context: grpc.ServicerContext) -> None:
    """Raises IncompatibleRelease unless the caller speaks this node's ``PROTOCOL_VERSION``.
    A caller that names itself neither in metadata nor by a certificate is left to its
    servicer (UNAUTHENTICATED)."""
    metadata = context.invocation_metadata() or ()
    said = [v for k, v in metadata if k == PROTOCOL_METADATA]
    if said == [str(PROTOCOL_VERSION)]:
        return
    named = any(k == BANK_ID_METADATA for k, _ in metadata)
    if not named and not context.auth_context().get("x509_common_name"):
        return
    if not said:
        theirs = "no protocol version (a release from before protocol versions)"
    elif len(said) > 1:
        theirs = "several protocol versions"
    else:
        theirs = f"protocol {said[0][:16]!r}"
    raise IncompatibleRelease(
        f"this bureau speaks Xinrong protocol {PROTOCOL_VERSION} (release "
        f"{distribution_version()}) and the bank node sent {theirs}"
        ": both nodes must speak the same protocol, so run the bureau's release on the bank "
        "node (or ask the bureau's operators when they will move to yours); nothing was done "
        "or charged"
    )


def valid_bank_id(bank_id: str) -> bool:
    """1-64 ASCII letters, digits, '-', '_' or '.', starting with a letter or digit (it names
    a directory on the bureau)."""
    return (
        0 < len(bank_id) <= 64
        and bank_id.isascii()
        and bank_id[0].isalnum()
        and all(c.isalnum() or c in "-_." for c in bank_id)
    )


def bank_identity(context: grpc.ServicerContext) -> str:
    """Who is calling: the common name of its TLS certificate when there is one (and the
    metadata must agree), else the bank id in the metadata. Raises IdentityError if the
    caller did not say, or said it badly."""
    values = [v for k, v in context.invocation_metadata() if k == BANK_ID_METADATA]
    names = context.auth_context().get("x509_common_name") or []
    if names:
        certified = names[0].decode("utf-8", "replace")
        if not valid_bank_id(certified):
            raise IdentityError(f"the client certificate names {certified!r}, not a bank id")
        if values and values != [certified]:
            raise IdentityError(
                f"the client certificate is bank {certified!r}, but the call names "
                f"{values[0]!r}: leave out --bank-id (it defaults to the certificate's name)"
            )
        return certified
    if len(values) != 1 or not isinstance(values[0], str) or not valid_bank_id(values[0]):
        raise IdentityError(
            "the caller must name itself once with a bank id of 1-64 ASCII letters, digits, "
            "'-', '_' or '.', starting with a letter or digit"
        )
    return values[0]


def peer_certificate(context: grpc.ServicerContext) -> x509.Certificate | None:
    """The client certificate the TLS handshake accepted, if any (for records and the
    revocation check)."""
    try:
        pems = context.auth_context().get("x509_pem_cert") or []
    except Exception:  # noqa: BLE001 - a context without a transport (tests)
        return None
    if not pems:
        return None
    return _parse_certificate(bytes(pems[0]))


@functools.lru_cache(maxsize=256)
def _parse_certificate(pem: bytes) -> x509.Certificate:
    return x509.load_pem_x509_certificate(pem)
