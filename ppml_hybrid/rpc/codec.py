"""Public messages as bytes without pickle: a JSON header plus raw tensor bytes.

Unpickling what a remote role sent would let that role run code in the receiver's process (a
coordinator could read a hospital's scans). This codec carries only data: ``None``, ``bool``,
``int``, ``float``, ``str``, lists, tuples, string-keyed dicts, CPU tensors of a few plain
dtypes, and frozen dataclasses whose class the *receiver* names in ``types`` (an allowlist;
anything else is refused). Layout: ``MAGIC``, a 4-byte big-endian header length, the UTF-8
JSON header, then each tensor's bytes in header order.
"""

from __future__ import annotations

import dataclasses
import json
import struct
from typing import Any, Dict, List, Sequence

import torch

from ppml_hybrid.errors import PPMLError

MAGIC = b"PPHC1"
_DTYPES: Dict[str, torch.dtype] = {
    "float32": torch.float32, "float64": torch.float64, "float16": torch.float16, "int64": torch.int64,
    "int32": torch.int32, "int16": torch.int16, "uint8": torch.uint8, "bool": torch.bool,
}
_NAMES = {v: k for k, v in _DTYPES.items()}
MAX_DEPTH = 32


class WireFormatError(PPMLError):
    """A message is malformed, or names a type the receiver does not accept."""

    exit_code = 6


def encode(obj: Any) -> bytes:
    """``obj`` as bytes (module doc); raises :class:`WireFormatError` for anything else."""
    blobs: List[bytes] = []
    tensors: List[Dict[str, Any]] = []
    body = _to_json(obj, blobs, tensors, depth=0)
    header = json.dumps({"body": body, "tensors": tensors}, separators=(",", ":")).encode()
    return MAGIC + struct.pack(">I", len(header)) + header + b"".join(blobs)


def decode(data: bytes, *, types: Sequence[type] = ()) -> Any:
    """The object :func:`encode` wrote; dataclasses only of ``types``."""
    allowed = {t.__name__: t for t in types}
    if len(data) < len(MAGIC) + 4 or data[: len(MAGIC)] != MAGIC:
        raise WireFormatError("not a ppml_hybrid message (bad magic)")
    (n,) = struct.unpack(">I", data[len(MAGIC): len(MAGIC) + 4])
    start = len(MAGIC) + 4
    if start + n > len(data):
        raise WireFormatError("truncated message header")
    try:
        header = json.loads(data[start: start + n].decode())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise WireFormatError(f"unreadable message header ({exc})") from None
    if not isinstance(header, dict) or set(header) != {"body", "tensors"} or not isinstance(header["tensors"], list):
        raise WireFormatError("message header must hold exactly 'body' and 'tensors'")
    tensors = _read_tensors(header["tensors"], memoryview(data)[start + n:])
    return _from_json(header["body"], tensors, allowed, depth=0)


def _to_json(obj: Any, blobs: List[bytes], tensors: List[Dict[str, Any]], *, depth: int) -> Any:
    if depth > MAX_DEPTH:
        raise WireFormatError("message nested too deeply")
    if obj is None or isinstance(obj, (bool, str)):
        return obj
    if isinstance(obj, int):
        return obj
    if isinstance(obj, float):
        return obj if obj == obj and obj not in (float("inf"), float("-inf")) else {"__float__": repr(obj)}
    if isinstance(obj, torch.Tensor):
        t = obj.detach().cpu().contiguous()
        if t.dtype not in _NAMES:
            raise WireFormatError(f"tensors of dtype {t.dtype} are not sent")
        raw = t.numpy().tobytes() if t.dtype != torch.bool else t.to(torch.uint8).numpy().tobytes()
        tensors.append({"dtype": _NAMES[t.dtype], "shape": list(t.shape), "nbytes": len(raw)})
        blobs.append(raw)
        return {"__tensor__": len(tensors) - 1}
    if isinstance(obj, (list, tuple)):
        items = [_to_json(v, blobs, tensors, depth=depth + 1) for v in obj]
        return items if isinstance(obj, list) else {"__tuple__": items}
    if isinstance(obj, dict):
        if not all(isinstance(k, str) for k in obj):
            raise WireFormatError("only string-keyed dicts are sent")
        return {"__dict__": {k: _to_json(v, blobs, tensors, depth=depth + 1) for k, v in obj.items()}}
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        fields = {f.name: _to_json(getattr(obj, f.name), blobs, tensors, depth=depth + 1)
                  for f in dataclasses.fields(obj)}
        return {"__type__": type(obj).__name__, "fields": fields}
    raise WireFormatError(f"values of type {type(obj).__name__} are not sent")


def _read_tensors(specs: List[Any], payload: memoryview) -> List[torch.Tensor]:
    out, offset = [], 0
    for spec in specs:
        if not isinstance(spec, dict) or spec.get("dtype") not in _DTYPES:
            raise WireFormatError(f"tensor entry {spec!r} names no accepted dtype")
        shape, nbytes = spec.get("shape"), spec.get("nbytes")
        if (not isinstance(shape, list) or not all(isinstance(s, int) and s >= 0 for s in shape)
                or not isinstance(nbytes, int)):
            raise WireFormatError("tensor entry has a malformed shape or size")
        dtype = _DTYPES[spec["dtype"]]
        itemsize = 1 if dtype == torch.bool else torch.empty(0, dtype=dtype).element_size()
        count = 1
        for s in shape:
            count *= s
        if count * itemsize != nbytes or offset + nbytes > len(payload):
            raise WireFormatError("tensor bytes do not match the header")
        raw = bytearray(payload[offset: offset + nbytes])
        offset += nbytes
        base = torch.uint8 if dtype == torch.bool else dtype
        t = torch.frombuffer(raw, dtype=base) if nbytes else torch.empty(0, dtype=base)
        t = t.reshape(shape)
        out.append(t.to(torch.bool) if dtype == torch.bool else t)
    if offset != len(payload):
        raise WireFormatError("trailing bytes after the last tensor")
    return out


def _from_json(node: Any, tensors: List[torch.Tensor], allowed: Dict[str, type], *, depth: int) -> Any:
    if depth > MAX_DEPTH:
        raise WireFormatError("message nested too deeply")
    if node is None or isinstance(node, (bool, int, float, str)):
        return node
    if isinstance(node, list):
        return [_from_json(v, tensors, allowed, depth=depth + 1) for v in node]
    if not isinstance(node, dict) or len(node) not in (1, 2):
        raise WireFormatError("malformed message node")
    if set(node) == {"__tensor__"}:
        i = node["__tensor__"]
        if not isinstance(i, int) or not 0 <= i < len(tensors):
            raise WireFormatError("tensor reference out of range")
        return tensors[i]
    if set(node) == {"__float__"}:
        if node["__float__"] not in ("nan", "inf", "-inf"):
            raise WireFormatError("malformed special float")
        return float(node["__float__"])
    if set(node) == {"__tuple__"} and isinstance(node["__tuple__"], list):
        return tuple(_from_json(v, tensors, allowed, depth=depth + 1) for v in node["__tuple__"])
    if set(node) == {"__dict__"} and isinstance(node["__dict__"], dict):
        return {k: _from_json(v, tensors, allowed, depth=depth + 1) for k, v in node["__dict__"].items()}
    if set(node) == {"__type__", "fields"} and isinstance(node["fields"], dict):
        cls = allowed.get(node["__type__"])
        if cls is None:
            raise WireFormatError(f"message type {node['__type__']!r} is not accepted here")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(node["fields"]) - names
        if unknown:
            raise WireFormatError(f"{cls.__name__} has no field(s) {sorted(unknown)}")
        values = {k: _from_json(v, tensors, allowed, depth=depth + 1) for k, v in node["fields"].items()}
        try:
            return cls(**values)
        except (TypeError, ValueError) as exc:
            raise WireFormatError(f"malformed {cls.__name__} ({exc})") from None
    raise WireFormatError("malformed message node")


