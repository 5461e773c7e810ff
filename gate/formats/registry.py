"""What a format is, in one place: its names, its magic, how its header is read, which rule a
malformed header breaks, whether it holds a tensor table, whether loading it can run code.

Sniffing (formats/sniff.py), hashing (the incremental header parser), integrity (header rule,
"not inspected"), the lineage readers and Hub file lists, and the pre-commit hook's `files:`
(gate/watch.py) all read this table. Adding a format: one module with its parser, one entry here
(docs/architecture.md).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from gate.formats import HeaderReader, gguf, onnx, safetensors

SNIFF_BYTES = 16  # the prefix every `magic` test sees
INDEX_SUFFIX = ".safetensors.index.json"  # a sharded checkpoint's index (gate/checks/shards.py)


@dataclasses.dataclass(frozen=True)
class FormatSpec:
    name: str  # the manifest schema's `format` value
    suffixes: tuple[str, ...]  # names that say "weights" (lower case, with the dot)
    # Whether the first SNIFF_BYTES bytes (the file's suffix and size beside) are this format.
    magic: Callable[[bytes, str, int], bool] | None = None
    # Reads the header from the hashed chunks (size, file descriptor); None: not parsed.
    header: Callable[[int, int], HeaderReader] | None = None
    header_rule: str | None = None  # the rule a malformed header breaks
    tensors: bool = False  # the header is a tensor table: per-tensor digests, lineage tiers
    executes: bool = False  # a common loader of this format can run code (pickle family)
    # A structure formats.loaders finds that marks a file as weights whatever its name.
    announces: bool = False

    @property
    def inspected(self) -> bool:
        """Whether the gate reads inside the file (else only its size and digest: PG306)."""
        return self.header is not None or self.executes or self.name == "other"


def _zip(prefix: bytes) -> bool:
    return prefix.startswith((b"PK\x03\x04", b"PK\x05\x06"))


def _safetensors(prefix: bytes, suffix: str, size: int) -> bool:
    if len(prefix) < 9 or prefix[8:9] != b"{":
        return False
    return int.from_bytes(prefix[:8], "little") <= size - 8


def _pickle(prefix: bytes, suffix: str, size: int) -> bool:
    # A zip in a weight slot is a torch checkpoint (pickle inside) unless it is an .npz (numpy
    # comes first); protocols 2-5 open with PROTO (0/1 have no magic: the suffix decides).
    return _zip(prefix) or (
        prefix[:1] == b"\x80" and prefix[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05")
    )


# In sniffing order: the first whose magic matches names the file; else its suffix does.
SPECS: tuple[FormatSpec, ...] = (
    FormatSpec(
        "gguf",
        (".gguf",),
        magic=lambda p, s, n: p.startswith(b"GGUF"),
        header=gguf.IncrementalHeader,
        header_rule="PG309",
        tensors=True,
        announces=True,
    ),
    FormatSpec(
        "hdf5",
        (".h5", ".hdf5"),
        magic=lambda p, s, n: p.startswith(b"\x89HDF\r\n\x1a\n"),
        announces=True,
    ),
    # Keras 3 (and tf.keras since 2.12) `.keras`: a zip of config.json, metadata.json and
    # model.weights.h5. A Lambda layer in its config is code (formats.loaders finds it).
    FormatSpec("keras", (".keras",), magic=lambda p, s, n: _zip(p) and s == ".keras"),
    FormatSpec("tflite", (".tflite",), magic=lambda p, s, n: p[4:8] == b"TFL3", announces=True),
    FormatSpec(
        "numpy",
        (".npy", ".npz"),
        magic=lambda p, s, n: p.startswith(b"\x93NUMPY") or (_zip(p) and s == ".npz"),
    ),
    FormatSpec(
        "pickle",
        (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle", ".joblib", ".nemo"),
        magic=_pickle,
        executes=True,
    ),
    FormatSpec(
        "safetensors",
        (".safetensors",),
        magic=_safetensors,
        header=safetensors.IncrementalHeader,
        header_rule="PG304",
        tensors=True,
        announces=True,
    ),
    FormatSpec(
        "onnx",
        (".onnx",),  # protobuf has no magic: the name says ONNX, the structure must agree
        header=onnx.IncrementalHeader,
        header_rule="PG313",
        tensors=True,
    ),
    FormatSpec("msgpack", (".msgpack",)),
    # Core ML: a `.mlmodel` (protobuf), or an `.mlpackage` folder whose weights are
    # `Data/com.apple.CoreML/weights/weight.bin` (a MIL blob file, not a pickle: see sniff).
    FormatSpec("coreml", (".mlmodel",)),
    # TensorFlow SavedModel: `saved_model.pb` (the graph) and `variables/variables.index` and
    # `variables.data-NNNNN-of-NNNNN` (the checkpoint), recognised by name (sniff).
    FormatSpec("savedmodel", ()),
    # Weight files by name whose format the schema does not name (checked by size and digest).
    FormatSpec("other", (".ggml", ".pb", ".llamafile", ".onnx_data")),
)
BY_NAME: dict[str, FormatSpec] = {s.name: s for s in SPECS}
BY_SUFFIX: dict[str, FormatSpec] = {x: s for s in SPECS for x in s.suffixes}
WEIGHT_SUFFIXES = frozenset(BY_SUFFIX)
EXECUTABLE_SUFFIXES = frozenset(x for s in SPECS if s.executes for x in s.suffixes)
# Formats with a tensor table (per-tensor digests, the exact tier).
TENSOR_FORMATS = tuple(s.name for s in SPECS if s.tensors)
TENSOR_SUFFIXES = tuple(x for s in SPECS if s.tensors for x in s.suffixes)
# What the lineage tiers also open (gate/lineage/models.py has one reader per name): torch zip
# checkpoints, whose tensor table is read without unpickling (formats/torch_zip.py), and only
# where a folder has no tensor-table files (Hub repositories often hold both, the same weights).
LINEAGE_FORMATS = (*TENSOR_FORMATS, "pickle")
_TORCH_SUFFIXES = (".bin", ".pt", ".pth")
# torch files of a training run beside the weights: optimizer moments, arguments, RNG state
_NOT_WEIGHTS = ("training_args.bin", "optimizer.pt", "scheduler.pt", "scaler.pt", "rng_state")


def holds_torch_weights(path: str) -> bool:
    """Whether a file so named (a relative posix path) may hold a torch checkpoint's model
    weights, not a training run's state; the lineage tiers read these only where no
    tensor-table file is present."""
    name = path.rsplit("/", 1)[-1]
    return name.endswith(_TORCH_SUFFIXES) and not name.startswith(_NOT_WEIGHTS)
