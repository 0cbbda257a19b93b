"""A passive eavesdropper on this machine's loopback interface, and a party program whose
messages it looks for (test aid for test_link_eavesdropper.py).

The eavesdropper is a raw ``AF_PACKET`` socket on ``lo``: it sees every byte any MPC link
puts on the wire, as a network tap between two hospitals would. It needs CAP_NET_RAW.
"""

from __future__ import annotations

import socket
import threading
from dataclasses import dataclass
from typing import List

import torch

ETH_P_ALL = 0x0003
VALUES = 64


class LoopbackTap:
    """Records every frame on ``lo`` between ``start`` and ``stop``."""

    def __init__(self) -> None:
        self._sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.ntohs(ETH_P_ALL))
        self._sock.bind(("lo", 0))
        self._sock.settimeout(0.1)
        self._frames: List[bytes] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self._frames.append(self._sock.recv(1 << 17))
            except socket.timeout:
                continue

    def start(self) -> "LoopbackTap":
        self._thread.start()
        return self

    def stop(self) -> bytes:
        self._stop.set()
        self._thread.join()
        self._sock.close()
        return b"".join(self._frames)


@dataclass(frozen=True)
class OpenAndReport:
    """Party program: share one random vector per party, open the sum, and return the share
    of the opened value this party put on the wire (what an eavesdropper would need)."""

    values: int = VALUES

    def __call__(self, ctx, inputs) -> bytes:
        import secrets

        mine = torch.tensor([secrets.randbelow(2**20) / 2**10 for _ in range(self.values)])
        total = None
        for src in range(ctx.parties):
            shared = ctx.share(mine if src == ctx.rank else None, src=src)
            total = shared if total is None else total + shared
        share = total._tensor.share.clone()  # what this party sends in the opening's all_reduce
        total.get_plain_text()
        return share.numpy().tobytes()


def windows(blob: bytes, width: int = 64) -> List[bytes]:
    """Non-overlapping ``width``-byte pieces of ``blob`` (a TCP segment boundary can split one
    piece, never all of them)."""
    return [blob[i:i + width] for i in range(0, len(blob) - width + 1, width)]
