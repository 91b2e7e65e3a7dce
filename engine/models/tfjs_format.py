"""A reader for TensorFlow.js graph models: ``model.json`` (topology + weights manifest) and its ``.bin`` shards.

The ``.json`` holds ``modelTopology`` (a TensorFlow GraphDef as JSON: ``node`` entries with ``name``, ``op``,
``input`` and ``attr``) and ``weightsManifest``: groups, each naming its shard files (``paths``, read one after
the other as one byte buffer) and its ``weights`` in buffer order (``name``, ``shape``, ``dtype`` and, when the
converter quantised them, ``quantization``). Bytes are little-endian. Stored dtypes:

- unquantised: ``float32`` (4 bytes), ``int32`` (4), ``bool`` (1);
- ``quantization.dtype == "float16"``: IEEE half floats (2 bytes), widened to float32;
- ``quantization.dtype`` ``"uint8"`` / ``"uint16"``: affine, ``value = q * scale + min`` (``scale`` and ``min`` in
  the entry); an ``int32`` original is rounded back to whole numbers.

The result: the graph's nodes and every weight as a float32 (or int32 / bool) numpy array by name. Anything the
reader does not understand (a truncated buffer, an unknown dtype, a shape that does not match) raises
:class:`TfjsFormatError` naming the weight and the file.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np


class TfjsFormatError(ValueError):
    """The file is not a TF.js graph model this reader understands; the message says what is wrong."""


#: Unquantised stored dtypes: numpy dtype (little-endian).
PLAIN_DTYPES = {"float32": np.dtype("<f4"), "int32": np.dtype("<i4"), "bool": np.dtype("?")}
#: Quantised stored dtypes: numpy dtype of the stored values.
QUANT_DTYPES = {"float16": np.dtype("<f2"), "uint8": np.dtype("u1"), "uint16": np.dtype("<u2")}


@dataclass(frozen=True)
class Node:
    """One GraphDef node: ``attr`` decoded to plain values (see :func:`attr_value`)."""

    name: str
    op: str
    inputs: tuple[str, ...]
    attr: dict[str, Any]


@dataclass
class GraphModel:
    """A TF.js graph model: nodes in file order and weights by name (numpy arrays)."""

    nodes: list[Node]
    weights: dict[str, np.ndarray]
    signature: dict[str, Any] = field(default_factory=dict)

    def node(self, name: str) -> Node:
        for n in self.nodes:
            if n.name == name:
                return n
        raise KeyError(name)


def attr_value(value: dict[str, Any]) -> Any:
    """A GraphDef ``AttrValue`` in JSON as a plain value: ``s`` → str, ``i`` → int, ``f`` → float, ``b`` → bool,
    ``list`` → list of those, ``type`` → str, ``shape``/``tensor`` kept as their dicts."""
    if "list" in value:
        lst = value["list"]
        for key in ("s", "i", "f", "b", "type"):
            if key in lst:
                return [attr_value({key: v}) for v in lst[key]]
        return []
    if "s" in value:
        return base64.b64decode(value["s"]).decode("utf-8", errors="replace")
    if "i" in value:
        return int(value["i"])
    if "f" in value:
        return float(value["f"])
    if "b" in value:
        return bool(value["b"])
    if "type" in value:
        return value["type"]
    return value.get("shape", value.get("tensor", value))


def _nodes(topology: Any, where: Path) -> list[Node]:
    if not isinstance(topology, dict) or not isinstance(topology.get("node"), list):
        raise TfjsFormatError(f"{where}: modelTopology has no node list (not a graph model?)")
    out = []
    for i, raw in enumerate(topology["node"]):
        if not isinstance(raw, dict) or "name" not in raw or "op" not in raw:
            raise TfjsFormatError(f"{where}: node {i} lacks a name or an op")
        attr = {k: attr_value(v) for k, v in raw.get("attr", {}).items() if isinstance(v, dict)}
        out.append(Node(raw["name"], raw["op"], tuple(raw.get("input", ())), attr))
    return out


def _decode(entry: dict[str, Any], buf: memoryview, offset: int, where: str) -> tuple[np.ndarray, int]:
    """One weight from ``buf`` at ``offset``: (array, offset after it)."""
    name = entry.get("name", "?")
    try:
        shape = tuple(int(d) for d in entry["shape"])
        dtype = entry["dtype"]
    except (KeyError, TypeError, ValueError) as exc:
        raise TfjsFormatError(f"{where}: weight {name!r} has no valid shape/dtype ({exc})") from exc
    if any(d < 0 for d in shape):
        raise TfjsFormatError(f"{where}: weight {name!r} has a negative dimension {shape}")
    count = int(np.prod(shape, dtype=np.int64))
    quant = entry.get("quantization")
    if quant is not None:
        stored = QUANT_DTYPES.get(quant.get("dtype"))
        if stored is None:
            raise TfjsFormatError(f"{where}: weight {name!r}: unknown quantisation dtype {quant.get('dtype')!r}")
    elif dtype in PLAIN_DTYPES:
        stored = PLAIN_DTYPES[dtype]
    else:
        raise TfjsFormatError(f"{where}: weight {name!r}: unsupported dtype {dtype!r}")
    end = offset + count * stored.itemsize
    if end > len(buf):
        raise TfjsFormatError(
            f"{where}: weight {name!r} needs bytes {offset}..{end} but the weight file has {len(buf)}: truncated?"
        )
    raw = np.frombuffer(buf[offset:end], dtype=stored, count=count)
    if quant is None:
        values = raw.copy()
    elif quant["dtype"] == "float16":
        values = raw.astype(np.float32)
    else:
        if "scale" not in quant or "min" not in quant:
            raise TfjsFormatError(f"{where}: weight {name!r}: {quant['dtype']} quantisation without scale/min")
        values = raw.astype(np.float32) * np.float32(quant["scale"]) + np.float32(quant["min"])
        if quant.get("original_dtype", dtype) == "int32":
            values = np.round(values).astype(np.int32)
    return values.reshape(shape), end


def read_weights(
    manifest: Any, folder: Path, where: Path, shards: Mapping[str, str | Path] | None = None
) -> dict[str, np.ndarray]:
    """Every weight of a ``weightsManifest`` whose shard files are in ``folder`` (or at ``shards[file name]``)."""
    if not isinstance(manifest, list):
        raise TfjsFormatError(f"{where}: weightsManifest is not a list of groups")
    weights: dict[str, np.ndarray] = {}
    for group in manifest:
        paths, entries = group.get("paths"), group.get("weights")
        if not isinstance(paths, list) or not isinstance(entries, list):
            raise TfjsFormatError(f"{where}: a weightsManifest group lacks paths or weights")
        try:
            buf = memoryview(b"".join(Path((shards or {}).get(p, folder / p)).read_bytes() for p in paths))
        except OSError as exc:
            raise TfjsFormatError(f"{where}: cannot read weight shard ({exc})") from exc
        label, offset = f"{where} ({', '.join(paths)})", 0
        for entry in entries:
            weights[entry.get("name", "?")], offset = _decode(entry, buf, offset, label)
        if offset != len(buf):
            raise TfjsFormatError(f"{label}: {len(buf) - offset} bytes left after the last weight: wrong manifest?")
    return weights


def read_graph_model(path: str | Path, shards: Mapping[str, str | Path] | None = None) -> GraphModel:
    """Read a TF.js graph model from its ``.json``; its shards are looked up beside it unless ``shards`` maps their
    file names (as the manifest writes them) to paths, for shards resolved elsewhere."""
    path = Path(path)
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise TfjsFormatError(f"{path}: not a readable JSON file ({exc})") from exc
    if not isinstance(doc, dict) or "modelTopology" not in doc or "weightsManifest" not in doc:
        raise TfjsFormatError(f"{path}: no modelTopology/weightsManifest: not a TF.js model")
    if doc.get("format", "graph-model") != "graph-model":
        raise TfjsFormatError(f"{path}: format {doc.get('format')!r}, only graph-model is supported")
    nodes = _nodes(doc["modelTopology"], path)
    weights = read_weights(doc["weightsManifest"], path.parent, path, shards)
    return GraphModel(nodes, weights, doc.get("signature", {}))
