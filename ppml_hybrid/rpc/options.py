"""gRPC channel/server options shared by K, E and their clients."""

from __future__ import annotations

MAX_MESSAGE_BYTES = 256 * 1024 * 1024  # one ciphertext or one chunk per message stays far below
CHUNK_BYTES = 4 * 1024 * 1024  # public-material blobs travel in chunks of this size
# The one-machine run's services listen here.
LOOPBACK = "127.0.0.1"

GRPC_OPTIONS = (
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
)
# every server certificate (self-signed services, keygen's role certificates) names localhost: the
# name is a fixed label, the pinned trust anchor is what authenticates the server
CLIENT_OPTIONS = GRPC_OPTIONS + (("grpc.ssl_target_name_override", "localhost"),)
