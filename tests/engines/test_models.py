"""`models prepare` gives the local model a chat template: in the GGUF's metadata for llama.cpp
(engines/gguf.py, tested here on a small GGUF built byte by byte) and in the Hugging Face
directory's tokenizer_config.json for vLLM. That both engines then chat is tested against them
in tests/gateway/test_real_engines.py."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest

from modelyard.engines import gguf
from modelyard.engines.chat_templates import CHAT_TEMPLATES, GEMMA3
from modelyard.engines.errors import EngineNotInstalledError
from modelyard.engines.models import write_chat_template

ALIGNMENT = 64
TENSOR_DATA = bytes(range(256)) * 3


def _string(text: str) -> bytes:
    raw = text.encode()
    return struct.pack("<Q", len(raw)) + raw


def _small_gguf(path: Path, template: str | None = None) -> Path:
    """A GGUF v3 file: a string, a uint32 alignment, a string array, one tensor."""
    entries = [
        _string("general.name") + struct.pack("<I", gguf.STRING) + _string("tiny"),
        _string("general.alignment") + struct.pack("<II", gguf.UINT32, ALIGNMENT),
        _string("tokenizer.ggml.tokens")
        + struct.pack("<IIQ", gguf.ARRAY, gguf.STRING, 3)
        + b"".join(_string(t) for t in ("<bos>", "a", "b")),
    ]
    if template is not None:
        entries.append(
            _string(gguf.TEMPLATE_KEY) + struct.pack("<I", gguf.STRING) + _string(template)
        )
    # one 2-D tensor: name, dims, shape, type (f32), offset within the data section
    info = (
        _string("weight")
        + struct.pack("<I", 2)
        + struct.pack("<QQ", 8, 24)
        + struct.pack("<IQ", 0, 0)
    )
    head = b"GGUF" + struct.pack("<IQQ", 3, 1, len(entries)) + b"".join(entries) + info
    path.write_bytes(head + b"\0" * (-len(head) % ALIGNMENT) + TENSOR_DATA)
    return path


def _tensor_data(path: Path) -> bytes:
    data = path.read_bytes()
    return data[-len(TENSOR_DATA) :]


def test_a_string_is_added_and_the_tensors_stay_where_their_offsets_say(tmp_path: Path) -> None:
    source = _small_gguf(tmp_path / "tiny.gguf")
    assert gguf.read_string(source, gguf.TEMPLATE_KEY) is None
    target = gguf.write_with_string(source, tmp_path / "out.gguf", gguf.TEMPLATE_KEY, GEMMA3)
    assert gguf.read_string(target, gguf.TEMPLATE_KEY) == GEMMA3
    assert gguf.read_string(target, "general.name") == "tiny"
    written = target.read_bytes()
    data_start = len(written) - len(TENSOR_DATA)
    assert data_start % ALIGNMENT == 0  # the file's own alignment, not the default 32
    assert _tensor_data(target) == TENSOR_DATA
    assert struct.unpack("<Q", written[16:24])[0] == 4  # key-value count: one more
    assert not (tmp_path / "out.gguf.partial").exists()


def test_a_string_already_there_is_replaced_not_repeated(tmp_path: Path) -> None:
    source = _small_gguf(tmp_path / "tiny.gguf", template="old")
    target = gguf.write_with_string(source, tmp_path / "out.gguf", gguf.TEMPLATE_KEY, "new")
    assert gguf.read_string(target, gguf.TEMPLATE_KEY) == "new"
    assert target.read_bytes().count(b"old") == 0
    assert struct.unpack("<Q", target.read_bytes()[16:24])[0] == 4
    assert _tensor_data(target) == TENSOR_DATA


def test_not_a_gguf_is_one_clear_error(tmp_path: Path) -> None:
    bogus = tmp_path / "bogus.gguf"
    bogus.write_bytes(b"not a gguf file at all")
    with pytest.raises(EngineNotInstalledError, match=r"bogus\.gguf: not a GGUF file"):
        gguf.read_string(bogus, gguf.TEMPLATE_KEY)
    truncated = tmp_path / "short.gguf"
    truncated.write_bytes(_small_gguf(tmp_path / "t.gguf").read_bytes()[:40])
    with pytest.raises(EngineNotInstalledError, match=r"short\.gguf: truncated GGUF file"):
        gguf.write_with_string(truncated, tmp_path / "x.gguf", gguf.TEMPLATE_KEY, "t")


def test_the_tokenizer_config_gets_the_template_once(tmp_path: Path) -> None:
    config = tmp_path / "tokenizer_config.json"
    config.write_text(json.dumps({"bos_token": "<bos>", "tokenizer_class": "GemmaTokenizer"}))
    assert write_chat_template(tmp_path, GEMMA3) is True
    written = json.loads(config.read_text())
    assert written == {
        "bos_token": "<bos>",
        "tokenizer_class": "GemmaTokenizer",
        "chat_template": GEMMA3,
    }
    assert write_chat_template(tmp_path, GEMMA3) is False  # a second prepare changes nothing


def test_gemmas_template_has_its_turns_and_hermes_tool_calls() -> None:
    template = CHAT_TEMPLATES["gemma-3-270m"]
    for marker in (
        "<start_of_turn>",
        "<end_of_turn>",
        "'model' if message['role'] == 'assistant'",
        "<tool_call>",
        "<tool_response>",
        "add_generation_prompt",
    ):
        assert marker in template
    assert "<|im_start|>" not in template and "<|im_end|>" not in template
