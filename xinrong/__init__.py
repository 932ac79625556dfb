"""Xinrong (以信促融): two-party privacy-preserving credit modelling.

A city's credit-information platform (the *bureau*) and a *bank* find their shared
enterprises by private set intersection, train a joint logistic regression under Paillier
encryption and score applicants, without either handing over raw records.

The distribution ships these packages:

- :mod:`bank_node` – the bank's Python API (``bank_node.connect``) and ``bank-node`` CLI;
- :mod:`bureau_node` – the bureau's long-lived gRPC server and ``bureau-node`` CLI;
- :mod:`protocols` – the cryptography and protocol state machines (no I/O, no gRPC);
- :mod:`node_runtime` – what both nodes share: tables, the executor, progress, channels;
- :mod:`xinrong` – the wire contract (``xinrong.v1``, generated from ``proto/``), the
  synthetic city and the demo (``xinrong demo``).
"""

from node_runtime.cli_common import distribution_version

__version__ = distribution_version()
__all__ = ["__version__"]
