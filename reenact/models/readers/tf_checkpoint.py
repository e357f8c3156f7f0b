"""Reading TensorFlow object-based checkpoints (``PREFIX.index`` + ``PREFIX.data-*``) without TF.

The format, as TensorFlow writes it (``tensor_bundle``):

* ``PREFIX.index`` is an immutable sorted key/value table in the LevelDB "SSTable" layout:
  data blocks of prefix-compressed entries (``varint shared, varint non_shared,
  varint value_len, key suffix, value``) followed by ``uint32`` restart offsets and their
  count; every block is followed by a 5-byte trailer (compression type, masked CRC-32C of
  block + type byte); the last 48 bytes are the footer (metaindex and index block handles as
  varint pairs, zero padding, 8-byte magic ``0xdb4775248b80fb57``). The index block maps
  the last key of each data block to that block's handle.
* Each value is a serialized ``BundleEntryProto`` (dtype, shape, shard id, offset, size,
  masked CRC-32C of the bytes); the empty key holds the ``BundleHeaderProto`` (number of
  shards, endianness).
* Tensor bytes live in ``PREFIX.data-0000K-of-0000N``; string tensors are stored as varint
  lengths, a 4-byte checksum of the lengths, then the bytes.
* The ``_CHECKPOINTABLE_OBJECT_GRAPH`` string tensor is a serialized
  ``TrackableObjectGraph``; each node's ``SerializedTensor`` attributes pair a checkpoint key
  (``layer_with_weights-3/bias/.ATTRIBUTES/VARIABLE_VALUE``) with the variable's
  ``full_name`` (the Keras name without ``:0``, e.g. ``G_synthesis/4x4/Const/bias/bias``).

Protocol buffers are decoded here from the wire format (only varint, 64-bit, length
delimited and 32-bit fields occur), so neither TensorFlow nor generated proto classes are
needed. Every failure is a :class:`~reenact.errors.ModelError` naming the file and the fix.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from reenact.errors import ModelError
from reenact.models.readers.limits import MAX_TENSOR_BYTES, MAX_TOTAL_BYTES, tensor_nbytes

__all__ = [
    "CheckpointEntry",
    "TFCheckpoint",
    "read_tf_checkpoint",
    "read_checkpoint_by_full_name",
    "crc32c",
    "is_tf_checkpoint_prefix",
]

_TABLE_MAGIC = 0xDB4775248B80FB57
_FOOTER_LEN = 48
_OBJECT_GRAPH_KEY = "_CHECKPOINTABLE_OBJECT_GRAPH"
_MASK_DELTA = 0xA282EAD8

#: TensorFlow ``DataType`` enum values we read -> numpy dtype (little-endian).
_DTYPES: dict[int, np.dtype[Any]] = {
    1: np.dtype("<f4"),  # DT_FLOAT
    2: np.dtype("<f8"),  # DT_DOUBLE
    3: np.dtype("<i4"),  # DT_INT32
    4: np.dtype("u1"),  # DT_UINT8
    5: np.dtype("<i2"),  # DT_INT16
    6: np.dtype("i1"),  # DT_INT8
    9: np.dtype("<i8"),  # DT_INT64
    10: np.dtype("?"),  # DT_BOOL
    19: np.dtype("<f2"),  # DT_HALF
}
_DT_STRING = 7


# --- CRC-32C (Castagnoli), masked as LevelDB/TensorFlow store it -----------------------------


def _make_table() -> np.ndarray[Any, np.dtype[np.uint32]]:
    table = np.zeros(256, dtype=np.uint32)
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table[i] = c
    return table


_TABLE = _make_table()
_crc_kernel: Any = None


def _kernel() -> Any:
    """The byte loop, compiled with numba on first use (pure Python is ~1 MB/s)."""
    global _crc_kernel
    if _crc_kernel is None:
        import numba

        @numba.njit(cache=False, nogil=True)
        def _loop(data: Any, table: Any, crc: Any) -> Any:  # pragma: no cover - compiled
            for b in data:
                crc = table[(crc ^ b) & 0xFF] ^ (crc >> 8)
            return crc

        _crc_kernel = _loop
    return _crc_kernel


def crc32c(data: bytes | bytearray | memoryview | np.ndarray[Any, Any]) -> int:
    """Plain (unmasked) CRC-32C of ``data``."""
    arr = np.frombuffer(data, dtype=np.uint8) if not isinstance(data, np.ndarray) else data.reshape(-1).view(np.uint8)
    if arr.size < 4096:
        crc = 0xFFFFFFFF
        for b in arr.tobytes():
            crc = int(_TABLE[(crc ^ b) & 0xFF]) ^ (crc >> 8)
    else:
        crc = int(_kernel()(arr.reshape(-1), _TABLE, np.uint32(0xFFFFFFFF)))
    return crc ^ 0xFFFFFFFF


def _mask(crc: int) -> int:
    return ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + _MASK_DELTA) & 0xFFFFFFFF


# --- protobuf wire format ------------------------------------------------------------------


def _varint(buf: bytes | memoryview, pos: int, end: int, what: str) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= end or shift > 63:
            raise ModelError(f"{what}: truncated or overlong varint")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7


def _proto_fields(buf: bytes, what: str) -> list[tuple[int, int, Any]]:
    """Decode one message level: a list of ``(field_number, wire_type, value)``.

    Varints come back as ints, length-delimited fields as bytes, fixed fields as ints.
    """
    fields: list[tuple[int, int, Any]] = []
    pos, end = 0, len(buf)
    while pos < end:
        tag, pos = _varint(buf, pos, end, what)
        num, wt = tag >> 3, tag & 7
        if num == 0:
            raise ModelError(f"{what}: invalid protobuf field number 0")
        if wt == 0:
            val: int | bytes
            val, pos = _varint(buf, pos, end, what)
        elif wt == 1:
            if pos + 8 > end:
                raise ModelError(f"{what}: truncated 64-bit protobuf field")
            val = struct.unpack_from("<Q", buf, pos)[0]
            pos += 8
        elif wt == 2:
            n, pos = _varint(buf, pos, end, what)
            if pos + n > end:
                raise ModelError(f"{what}: protobuf field {num} runs past the end of its message")
            val = bytes(buf[pos : pos + n])
            pos += n
        elif wt == 5:
            if pos + 4 > end:
                raise ModelError(f"{what}: truncated 32-bit protobuf field")
            val = struct.unpack_from("<I", buf, pos)[0]
            pos += 4
        else:
            raise ModelError(f"{what}: unsupported protobuf wire type {wt} (field {num})")
        fields.append((num, wt, val))
    return fields


def _int64(v: int) -> int:
    return v - (1 << 64) if v >= 1 << 63 else v


@dataclass(frozen=True)
class CheckpointEntry:
    """One ``BundleEntryProto``: where a tensor's bytes are and what they hold."""

    key: str
    dtype: int
    shape: tuple[int, ...]
    shard_id: int
    offset: int
    size: int
    crc32c: int | None


def _parse_entry(key: str, raw: bytes, source: str) -> CheckpointEntry:
    what = f"{source}: entry {key!r}"
    dtype, shard, offset, size, crc = 0, 0, 0, 0, None
    shape: list[int] = []
    for num, wt, val in _proto_fields(raw, what):
        if num == 1 and wt == 0:
            dtype = val
        elif num == 2 and wt == 2:
            for dnum, dwt, dval in _proto_fields(val, what):
                if dnum == 2 and dwt == 2:
                    size_ = 0
                    for snum, swt, sval in _proto_fields(dval, what):
                        if snum == 1 and swt == 0:
                            size_ = _int64(sval)
                    shape.append(size_)
                elif dnum == 3 and dwt == 0 and dval:
                    raise ModelError(f"{what}: tensor of unknown rank cannot be read")
        elif num == 3 and wt == 0:
            shard = val
        elif num == 4 and wt == 0:
            offset = _int64(val)
        elif num == 5 and wt == 0:
            size = _int64(val)
        elif num == 6 and wt == 5:
            crc = val
        elif num == 7:
            raise ModelError(f"{what}: partitioned (sliced) variables are not supported")
    if offset < 0 or size < 0 or any(d < 0 for d in shape):
        raise ModelError(f"{what}: negative offset, size or dimension in the index")
    return CheckpointEntry(key, dtype, tuple(shape), shard, offset, size, crc)


# --- the SSTable ---------------------------------------------------------------------------


def _read_block(data: bytes, offset: int, size: int, source: str) -> bytes:
    if offset < 0 or size < 0 or offset + size + 5 > len(data):
        raise ModelError(f"{source}: a table block lies outside the file; the .index is truncated")
    block = data[offset : offset + size]
    ctype = data[offset + size]
    stored = struct.unpack_from("<I", data, offset + size + 1)[0]
    if _mask(crc32c(data[offset : offset + size + 1])) != stored:
        raise ModelError(f"{source}: checksum mismatch in a table block; the .index file is corrupt")
    if ctype == 1:
        raise ModelError(
            f"{source}: the table uses snappy block compression, which TensorFlow does not use "
            "for checkpoint indexes and reenact does not read; re-save the checkpoint"
        )
    if ctype != 0:
        raise ModelError(f"{source}: unknown table block compression type {ctype}")
    return block


def _block_entries(block: bytes, source: str) -> list[tuple[bytes, bytes]]:
    if len(block) < 4:
        raise ModelError(f"{source}: table block too short")
    num_restarts = struct.unpack_from("<I", block, len(block) - 4)[0]
    limit = len(block) - 4 - 4 * num_restarts
    if limit < 0:
        raise ModelError(f"{source}: table block restart array does not fit in its block")
    entries: list[tuple[bytes, bytes]] = []
    pos, key = 0, b""
    while pos < limit:
        shared, pos = _varint(block, pos, limit, source)
        non_shared, pos = _varint(block, pos, limit, source)
        vlen, pos = _varint(block, pos, limit, source)
        if shared > len(key) or pos + non_shared + vlen > limit:
            raise ModelError(f"{source}: corrupt table entry")
        key = key[:shared] + block[pos : pos + non_shared]
        pos += non_shared
        entries.append((key, block[pos : pos + vlen]))
        pos += vlen
    return entries


#: Largest ``.index`` file read (a checkpoint of thousands of variables has a few hundred KB).
MAX_INDEX_BYTES = 64 << 20


def _read_table(path: Path) -> list[tuple[bytes, bytes]]:
    try:
        if path.stat().st_size > MAX_INDEX_BYTES:
            raise ModelError(
                f"{path}: a checkpoint index of {path.stat().st_size:,} bytes is more than the "
                f"{MAX_INDEX_BYTES >> 20} MiB allowed; refusing to read it (a corrupt or hostile file: get it again from its publisher)"
            )
        data = path.read_bytes()
    except FileNotFoundError as exc:
        raise ModelError(f"checkpoint index {path} does not exist") from exc
    except OSError as exc:
        raise ModelError(f"cannot read checkpoint index {path}: {exc.strerror or exc}") from exc
    src = str(path)
    if len(data) < _FOOTER_LEN or struct.unpack_from("<Q", data, len(data) - 8)[0] != _TABLE_MAGIC:
        raise ModelError(
            f"{path} is not a TensorFlow checkpoint index (no table magic number at its end); "
            "give the checkpoint prefix written by save_weights (PREFIX.index + PREFIX.data-*)"
        )
    footer = data[len(data) - _FOOTER_LEN :]
    pos = 0
    _, pos = _varint(footer, pos, 40, src)  # metaindex offset
    _, pos = _varint(footer, pos, 40, src)  # metaindex size
    idx_off, pos = _varint(footer, pos, 40, src)
    idx_size, pos = _varint(footer, pos, 40, src)
    index = _block_entries(_read_block(data, idx_off, idx_size, src), src)
    out: list[tuple[bytes, bytes]] = []
    for _, handle in index:
        hpos = 0
        off, hpos = _varint(handle, hpos, len(handle), src)
        size, hpos = _varint(handle, hpos, len(handle), src)
        out.extend(_block_entries(_read_block(data, off, size, src), src))
    keys = [k for k, _ in out]
    if keys != sorted(keys) or len(set(keys)) != len(keys):
        raise ModelError(f"{path}: table keys are not strictly sorted; the .index file is corrupt")
    return out


# --- the checkpoint ------------------------------------------------------------------------


def is_tf_checkpoint_prefix(prefix: str | Path) -> bool:
    """Whether ``PREFIX.index`` exists (how Keras decides a path is a TF checkpoint)."""
    return Path(str(prefix) + ".index").is_file()


class TFCheckpoint:
    """A TensorFlow checkpoint bundle opened for reading (index parsed, shards checked).

    ``entries`` maps every checkpoint key to its :class:`CheckpointEntry`;
    :meth:`tensor` reads one value; :meth:`full_names` maps variable keys to the
    ``full_name`` recorded in the object graph.
    """

    def __init__(self, prefix: str | Path, verify_checksums: bool = True) -> None:
        self.prefix = Path(prefix)
        self.verify = verify_checksums
        index_path = Path(str(prefix) + ".index")
        table = _read_table(index_path)
        self.entries: dict[str, CheckpointEntry] = {}
        num_shards = 1
        src = str(index_path)
        for raw_key, value in table:
            try:
                key = raw_key.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise ModelError(f"{src}: a checkpoint key is not UTF-8") from exc
            if key == "":
                for num, wt, val in _proto_fields(value, f"{src}: header"):
                    if num == 1 and wt == 0:
                        num_shards = val
                    elif num == 2 and wt == 0 and val != 0:
                        raise ModelError(f"{src}: big-endian checkpoints are not supported")
                continue
            self.entries[key] = _parse_entry(key, value, src)
        if not 1 <= num_shards <= 100000:
            raise ModelError(f"{src}: implausible number of data shards {num_shards}")
        self.num_shards = num_shards
        total = 0
        for entry in self.entries.values():
            if entry.shard_id >= num_shards:
                raise ModelError(f"{src}: tensor {entry.key!r} names shard {entry.shard_id} of {num_shards}")
            total += entry.size
        if total > MAX_TOTAL_BYTES:
            raise ModelError(
                f"{src}: its tensors add up to {total:,} bytes, more than the {MAX_TOTAL_BYTES >> 20} MiB a "
                "model file may hold; refusing to read them (a corrupt or hostile file: get it again from its publisher)"
            )

    def shard_path(self, shard: int) -> Path:
        return Path(f"{self.prefix}.data-{shard:05d}-of-{self.num_shards:05d}")

    def _read_into(self, entry: CheckpointEntry, out: np.ndarray[Any, Any]) -> None:
        """Fill ``out`` (``entry.size`` bytes) with the tensor's bytes, read from its shard by slice."""
        path = self.shard_path(entry.shard_id)
        try:
            with open(path, "rb") as f:
                length = os.fstat(f.fileno()).st_size
                end = entry.offset + entry.size
                if end > length:
                    raise ModelError(
                        f"{path} is truncated: tensor {entry.key!r} needs bytes {entry.offset}..{end} but "
                        f"the file has {length}; download it again"
                    )
                f.seek(entry.offset)
                view = memoryview(out.reshape(-1).view(np.uint8))  # type: ignore[arg-type]
                got = 0
                while got < entry.size:
                    n = f.readinto(view[got:])
                    if not n:
                        raise ModelError(f"{path} is truncated at tensor {entry.key!r}; download it again")
                    got += n
        except FileNotFoundError as exc:
            raise ModelError(
                f"checkpoint data shard {path} is missing; a TF checkpoint is the .index file "
                "plus every .data-* file with the same prefix: copy them all"
            ) from exc
        except IsADirectoryError as exc:
            raise ModelError(f"checkpoint data shard {path} is a folder, not a file") from exc
        except OSError as exc:
            raise ModelError(f"cannot read checkpoint shard {path}: {exc.strerror or exc}") from exc

    def _check(self, entry: CheckpointEntry, covered: bytes | np.ndarray[Any, Any]) -> None:
        if self.verify and entry.crc32c is not None and _mask(crc32c(covered)) != entry.crc32c:
            raise ModelError(
                f"{self.shard_path(entry.shard_id)}: checksum mismatch for tensor {entry.key!r}; "
                "the file is corrupt: download it again"
            )

    def tensor(self, key: str) -> np.ndarray[Any, Any] | list[bytes]:
        """The value of ``key``: a numpy array, or a list of bytes for string tensors.

        The size the index declares is checked against the shape, the caps of
        :mod:`reenact.models.readers.limits` and the shard's length before anything is
        allocated; numeric tensors are then read straight into an array of their dtype.
        """
        entry = self.entries.get(key)
        if entry is None:
            raise ModelError(f"{self.prefix}: checkpoint has no tensor {key!r}")
        if entry.dtype == _DT_STRING:
            return self._strings(entry)
        dtype = _DTYPES.get(entry.dtype)
        if dtype is None:
            raise ModelError(f"{self.prefix}: tensor {key!r} has unsupported TF dtype {entry.dtype}")
        nbytes = tensor_nbytes(entry.shape, dtype.itemsize, str(self.prefix), key)
        if nbytes != entry.size:
            raise ModelError(
                f"{self.prefix}: tensor {key!r} of shape {list(entry.shape)} needs {nbytes} bytes, the index "
                f"says {entry.size}; the checkpoint is corrupt"
            )
        out = np.empty(entry.shape, dtype=dtype)
        self._read_into(entry, out)
        self._check(entry, out)
        return out if dtype.isnative else out.byteswap().view(dtype.newbyteorder("="))

    def _strings(self, entry: CheckpointEntry) -> list[bytes]:
        # TF checksums each length as a little-endian uint32 (uint64 if it needs it),
        # then the stored 4-byte length checksum, then the string bytes.
        if entry.size > MAX_TENSOR_BYTES:
            raise ModelError(
                f"{self.prefix}: string tensor {entry.key!r} of {entry.size:,} bytes is more than the "
                f"{MAX_TENSOR_BYTES >> 20} MiB allowed; refusing to read it (a corrupt or hostile file: get it again from its publisher)"
            )
        buf = np.empty(entry.size, dtype=np.uint8)
        self._read_into(entry, buf)
        raw = buf.tobytes()
        count = 1
        for d in entry.shape:
            count *= d
        if count > len(raw):  # every string takes at least one byte of length
            raise ModelError(f"{self.prefix}: string tensor {entry.key!r} claims {count} strings in {len(raw)} bytes")
        pos, lengths, covered = 0, [], []
        for _ in range(count):
            n, pos = _varint(raw, pos, len(raw), f"{self.prefix}: {entry.key}")
            lengths.append(n)
            covered.append(struct.pack("<I", n) if n < 1 << 32 else struct.pack("<Q", n))
        covered.append(raw[pos : pos + 4] + raw[pos + 4 :])
        self._check(entry, b"".join(covered))
        pos += 4
        out = []
        for n in lengths:
            if pos + n > len(raw):
                raise ModelError(f"{self.prefix}: string tensor {entry.key!r} is truncated")
            out.append(raw[pos : pos + n])
            pos += n
        return out

    def full_names(self) -> dict[str, str]:
        """Checkpoint key -> ``full_name`` from the ``_CHECKPOINTABLE_OBJECT_GRAPH`` proto."""
        if _OBJECT_GRAPH_KEY not in self.entries:
            raise ModelError(
                f"{self.prefix}: checkpoint has no {_OBJECT_GRAPH_KEY} entry; it is a name-based "
                "(TF1) checkpoint, not one written by Keras save_weights"
            )
        graph = self.tensor(_OBJECT_GRAPH_KEY)
        if not isinstance(graph, list) or len(graph) != 1:
            raise ModelError(f"{self.prefix}: {_OBJECT_GRAPH_KEY} is not a scalar string")
        what = f"{self.prefix}: object graph"
        names: dict[str, str] = {}
        for num, wt, node in _proto_fields(graph[0], what):
            if num != 1 or wt != 2:
                continue
            for anum, awt, attr in _proto_fields(node, what):
                if anum != 2 or awt != 2:  # SerializedTensor attributes
                    continue
                fields = {n: v for n, w, v in _proto_fields(attr, what) if w == 2}
                full = fields.get(2, b"").decode("utf-8", "replace")
                ckey = fields.get(3, b"").decode("utf-8", "replace")
                if ckey:
                    names[ckey] = full
        return names


def read_tf_checkpoint(
    prefix: str | Path, verify_checksums: bool = True
) -> dict[str, np.ndarray[Any, Any]]:
    """Every numeric tensor of the checkpoint at ``prefix``, keyed by checkpoint key."""
    ckpt = TFCheckpoint(prefix, verify_checksums=verify_checksums)
    out: dict[str, np.ndarray[Any, Any]] = {}
    for key, entry in ckpt.entries.items():
        if entry.dtype == _DT_STRING:
            continue
        value = ckpt.tensor(key)
        assert isinstance(value, np.ndarray)
        out[key] = value
    return out


def read_checkpoint_by_full_name(
    prefix: str | Path, verify_checksums: bool = True
) -> dict[str, np.ndarray[Any, Any]]:
    """The variables of a Keras object-based checkpoint keyed by ``full_name``.

    Only ``.../.ATTRIBUTES/VARIABLE_VALUE`` entries are variables; a variable key with no
    ``full_name`` in the object graph, or two keys with the same name, is a ModelError.
    """
    ckpt = TFCheckpoint(prefix, verify_checksums=verify_checksums)
    names = ckpt.full_names()
    out: dict[str, np.ndarray[Any, Any]] = {}
    for key, entry in ckpt.entries.items():
        if not key.endswith("/.ATTRIBUTES/VARIABLE_VALUE") or entry.dtype == _DT_STRING:
            continue
        full = names.get(key)
        if not full:
            raise ModelError(f"{prefix}: variable {key!r} has no full_name in the checkpoint's object graph")
        if full in out:
            raise ModelError(f"{prefix}: two checkpoint variables are both named {full!r}")
        value = ckpt.tensor(key)
        assert isinstance(value, np.ndarray)
        out[full] = value
    return out
