"""What both nodes share and is not protocol logic.

Reading tables (:mod:`node_runtime.tables`), the executor for the cryptography
(:mod:`node_runtime.parallel`), progress bars (:mod:`node_runtime.progress`), the command
lines' common parts (:mod:`node_runtime.cli_common`) and the gRPC plumbing: channels and
identity, certificates, protobuf codecs and the error-to-status catalogue
(:mod:`node_runtime.transport`). It imports :mod:`protocols` and the generated wire code,
never a node.
"""
