"""Imported by the workers' fork server only (``node_runtime.parallel.PRELOAD``): a stop
(SIGTERM) does not end it at once. systemd's stop signals every process of a unit; the
fork server is the parent of the node's workers, which die with it, so its death broke the
training epochs the node was finishing (a review). It still ends with the node (its pipe
to the node closes), or ``TERM_GRACE_SECONDS`` after a stop."""

from __future__ import annotations

import signal

from .workers import _stop_later

signal.signal(signal.SIGTERM, _stop_later)
