"""Setting one string in a GGUF file's metadata (here: `tokenizer.chat_template`), without
the `gguf` package: the file is copied with its key-value section rewritten.

GGUF v2/v3 layout (https://github.com/ggml-org/ggml/blob/master/docs/gguf.md): magic, version,
tensor count, key-value count, the key-values, the tensor infos, padding to
`general.alignment` (32 by default), then the tensor data. Tensor offsets are relative to the
start of the data, so they stay valid when the metadata before it changes size.
"""

from __future__ import annotations

import shutil
import struct
from pathlib import Path
from typing import BinaryIO

from modelyard.engines.errors import EngineNotInstalledError

MAGIC = b"GGUF"
TEMPLATE_KEY = "tokenizer.chat_template"
STRING, ARRAY, UINT32 = 8, 9, 4
# value type -> size in bytes (fixed-size types)
FIXED = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
DEFAULT_ALIGNMENT = 32


class _Reader:
    def __init__(self, handle: BinaryIO, path: Path) -> None:
        self.handle = handle
        self.path = path

    def take(self, size: int) -> bytes:
        data = self.handle.read(size)
        if len(data) != size:
            raise EngineNotInstalledError(f"{self.path}: truncated GGUF file")
        return data

    def u32(self) -> int:
        return int(struct.unpack("<I", self.take(4))[0])

    def u64(self) -> int:
        return int(struct.unpack("<Q", self.take(8))[0])

    def string(self) -> bytes:
        return self.take(self.u64())

    def value(self, kind: int) -> bytes:
        """The raw bytes of one value of `kind` (for copying), read past."""
        if kind in FIXED:
            return self.take(FIXED[kind])
        if kind == STRING:
            text = self.string()
            return struct.pack("<Q", len(text)) + text
        if kind == ARRAY:
            head = self.take(12)
            element, count = struct.unpack("<IQ", head)
            if element in FIXED:
                return head + self.take(FIXED[element] * count)
            return head + b"".join(self.value(element) for _ in range(count))
        raise EngineNotInstalledError(f"{self.path}: unknown GGUF value type {kind}")


def _string_entry(key: str, value: str) -> bytes:
    name, text = key.encode(), value.encode()
    return struct.pack("<Q", len(name)) + name + struct.pack("<IQ", STRING, len(text)) + text


def read_string(path: Path, key: str) -> str | None:
    """A string metadata value of a GGUF file, or None when the file does not set `key`."""
    with path.open("rb") as handle:
        reader = _Reader(handle, path)
        _, _, kv_count = _header(reader)
        for _ in range(kv_count):
            name = reader.string().decode()
            kind = reader.u32()
            raw = reader.value(kind)
            if name == key and kind == STRING:
                return raw[8:].decode()
    return None


def _header(reader: _Reader) -> tuple[int, int, int]:
    if reader.take(4) != MAGIC:
        raise EngineNotInstalledError(f"{reader.path}: not a GGUF file")
    version = reader.u32()
    if version not in (2, 3):
        raise EngineNotInstalledError(f"{reader.path}: GGUF version {version} is not supported")
    return version, reader.u64(), reader.u64()


def write_with_string(source: Path, target: Path, key: str, value: str) -> Path:
    """Copy `source` to `target` with metadata `key` set to `value` (replaced if present);
    written beside `target` first and renamed, so a reader never sees half a file."""
    partial = target.with_name(target.name + ".partial")
    with source.open("rb") as handle:
        reader = _Reader(handle, source)
        version, tensor_count, kv_count = _header(reader)
        entries: list[bytes] = []
        alignment = DEFAULT_ALIGNMENT
        for _ in range(kv_count):
            name = reader.string()
            kind = reader.u32()
            raw = reader.value(kind)
            if name.decode() == key:
                continue
            if name == b"general.alignment" and kind == UINT32:
                alignment = int(struct.unpack("<I", raw)[0])
            entries.append(struct.pack("<Q", len(name)) + name + struct.pack("<I", kind) + raw)
        entries.insert(0, _string_entry(key, value))  # first: read_string finds it at once
        infos = bytearray()
        for _ in range(tensor_count):
            name = reader.string()
            dims = reader.u32()
            infos += struct.pack("<Q", len(name)) + name + struct.pack("<I", dims)
            infos += reader.take(8 * dims + 4 + 8)  # dimensions, type, offset
        data_start = -(-handle.tell() // alignment) * alignment
        head = MAGIC + struct.pack("<IQQ", version, tensor_count, len(entries))
        meta = head + b"".join(entries) + bytes(infos)
        padding = -len(meta) % alignment
        handle.seek(data_start)
        target.parent.mkdir(parents=True, exist_ok=True)
        with partial.open("wb") as out:
            out.write(meta + b"\0" * padding)
            shutil.copyfileobj(handle, out, 16 * 1024 * 1024)
    partial.replace(target)
    return target
