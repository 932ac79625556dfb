"""Transport and identity, set up in one place for each side.

Today the bank names itself in call metadata over plaintext gRPC; binding the identity to a
mutual-TLS certificate changes only this module.
"""

from __future__ import annotations

from concurrent import futures

import grpc

from .errors import IdentityError

# Largest message either side accepts: chunks are at most 2 MiB (65,536 points).
MAX_MESSAGE_BYTES = 8 * 1024 * 1024
BANK_ID_METADATA = "x-xinrong-bank-id"
_OPTIONS = [
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
]


def create_server(address: str, max_workers: int = 16) -> tuple[grpc.Server, int]:
    """A gRPC server bound to ``address`` (port 0 picks a free port); returns it and the port."""
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=max_workers), options=_OPTIONS)
    port = server.add_insecure_port(address)
    if port == 0:
        raise OSError(f"cannot listen on {address}")
    return server, port


def open_channel(address: str) -> grpc.Channel:
    return grpc.insecure_channel(address, options=_OPTIONS)


def bank_metadata(bank_id: str) -> tuple[tuple[str, str], ...]:
    return ((BANK_ID_METADATA, bank_id),)


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
    """Who is calling. Raises IdentityError if the caller did not say, or said it badly."""
    values = [v for k, v in context.invocation_metadata() if k == BANK_ID_METADATA]
    if len(values) != 1 or not isinstance(values[0], str) or not valid_bank_id(values[0]):
        raise IdentityError(
            "the caller must name itself once with a bank id of 1-64 ASCII letters, digits, "
            "'-', '_' or '.', starting with a letter or digit"
        )
    return values[0]
