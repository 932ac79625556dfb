"""Xinrong's node inside a bank: its command line (``bank-node``) and its Python API.

    import bank_node

    with bank_node.connect("bureau.example.org:50051", tls_dir="./tls/banks/my-bank") as bureau:
        bureau.features()                                   # the bureau's catalogue
        found = bureau.psi(clients, id_column="uscc")       # DataFrame or pyarrow Table in
        iv = bureau.information_value(clients, id_column="uscc", label="y")
        model = bureau.train(clients, id_column="uscc", label="y", epochs=10, seed=1)
        model.metrics, model.history                        # a dict, a DataFrame
        scores = model.predict_proba(applicants)            # one row per applicant, in order
        model.save("./model")
        model = bank_node.load("./model", bureau)

Data goes in as a pandas DataFrame, a pyarrow Table or a CSV/Parquet path; results are
pandas DataFrames when pandas is installed (``pip install 'xinrong[pandas]'``), pyarrow
Tables otherwise. Errors are the typed exceptions exported here (all are
``XinrongError``): ``InputDataError`` for the bank's own data and settings, ``PeerError`` when
the bureau refused or failed, ``ProtocolViolation`` for a malformed answer from it.
The API is imported on first use, so ``import bank_node`` stays light.
"""

from __future__ import annotations

from importlib import metadata
from typing import TYPE_CHECKING, Any

from protocols.errors import (
    InputDataError,
    NotAuthorised,
    PeerError,
    PolicyViolation,
    ProtocolViolation,
    QuotaExceeded,
    XinrongError,
)

if TYPE_CHECKING:
    from .api import Bureau, JointModel, connect, load

try:
    __version__ = metadata.version("xinrong")
except metadata.PackageNotFoundError:  # a source tree that was not installed
    __version__ = "0+unknown"

__all__ = [
    "Bureau",
    "InputDataError",
    "JointModel",
    "NotAuthorised",
    "PeerError",
    "PolicyViolation",
    "ProtocolViolation",
    "QuotaExceeded",
    "XinrongError",
    "__version__",
    "connect",
    "load",
]

_API = {"Bureau", "JointModel", "connect", "load"}


def __getattr__(name: str) -> Any:
    if name in _API:
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module 'bank_node' has no attribute {name!r}")
