"""The bank's node."""

import os

# gRPC's C core writes its own lines to stderr (e.g. "Handshake failed ..."); the bank says
# what went wrong in one line of its own (node_runtime/transport/probe.py). An explicit
# GRPC_VERBOSITY (debugging) is respected.
os.environ.setdefault("GRPC_VERBOSITY", "NONE")
