"""Reads Gemma GGUF files: metadata, tokenizer vocabulary and tensors.

A GGUF file (llama.cpp's format) is a header of typed key/value metadata and
tensor descriptors, followed by the (often quantized) tensor data. The
`gguf` package's reader builds one object per array element, which takes
20 s on a 262k-token vocabulary; `GgufFile` parses the header with bulk numpy
reads instead (well under a second) and leaves dequantization to
`gguf.quants`.

Two conventions of llama.cpp's Gemma converter are undone on import: RMSNorm
weights are stored as (1 + w), and torch Linear weights keep their [out, in]
layout. Hyper-parameters a GGUF does not record take the values of the
released models of that generation (local RoPE base 10k, the local / global
layer pattern, queries scaled by 1/sqrt(head_dim)), as transformers does.
"""

import dataclasses
import os
from typing import Any, Optional

import numpy as np

from gecko_jax.errors import UserError
from gecko_jax.models.gemma import GemmaConfig
from gecko_jax.models.gemma_import import GEMMA3_270M, GemmaCheckpoint, gemma_params

_MAGIC = b"GGUF"
_DEFAULT_ALIGNMENT = 32
# GGUF value type -> numpy dtype; 8 is a string, 9 an array.
_SCALARS = {0: np.uint8, 1: np.int8, 2: np.uint16, 3: np.int16, 4: np.uint32,
            5: np.int32, 6: np.float32, 7: np.bool_, 10: np.uint64,
            11: np.int64, 12: np.float64}
_STRING, _ARRAY = 8, 9
_ARCHITECTURES = {"gemma": 1, "gemma2": 2, "gemma3": 3}
# (local/global pattern, local RoPE base) of the released models.
_GENERATION_DEFAULTS = {1: (1, 10_000.0), 2: (2, 10_000.0), 3: (6, 10_000.0)}


@dataclasses.dataclass(frozen=True)
class _TensorInfo:
    shape: tuple[int, ...]  # numpy order (GGUF lists dimensions innermost first)
    qtype: int
    offset: int


class GgufFile:
    """The metadata and tensors of a GGUF file (version 2 or 3).

    Attributes:
      path: the file.
      metadata: key -> value; arrays are numpy arrays, or lists of str.
    """

    def __init__(self, path: str):
        """Parses the header of `path`.

        Raises:
          UserError: the file is missing, not GGUF, or truncated.
        """
        if not os.path.isfile(path):
            raise UserError(f"{path} not found; pass the path of a .gguf file.")
        self.path = path
        self._data = np.memmap(path, dtype=np.uint8, mode="r")
        self._pos = 0
        try:
            self._parse_header()
        except (IndexError, ValueError, UnicodeDecodeError) as e:
            raise UserError(f"{path} is not a readable GGUF file ({e}); "
                            "re-download it.") from e

    def _read(self, dtype, count: int = 1) -> np.ndarray:
        size = np.dtype(dtype).itemsize * count
        if self._pos + size > len(self._data):
            raise ValueError("unexpected end of file")
        out = self._data[self._pos:self._pos + size].view(dtype)
        self._pos += size
        return out

    def _string(self) -> str:
        length = int(self._read(np.uint64)[0])
        return bytes(self._read(np.uint8, length)).decode("utf-8")

    def _strings(self, count: int) -> list[str]:
        # A plain loop over a memoryview: 262k strings in ~0.1 s.
        buf = memoryview(self._data)
        pos, out = self._pos, []
        for _ in range(count):
            length = int.from_bytes(buf[pos:pos + 8], "little")
            out.append(bytes(buf[pos + 8:pos + 8 + length]).decode("utf-8"))
            pos += 8 + length
        if pos > len(self._data):
            raise ValueError("unexpected end of file")
        self._pos = pos
        return out

    def _value(self, kind: int) -> Any:
        if kind == _STRING:
            return self._string()
        if kind == _ARRAY:
            item_kind = int(self._read(np.uint32)[0])
            count = int(self._read(np.uint64)[0])
            if item_kind == _STRING:
                return self._strings(count)
            if item_kind in _SCALARS:
                return np.array(self._read(_SCALARS[item_kind], count))
            return [self._value(item_kind) for _ in range(count)]
        if kind not in _SCALARS:
            raise ValueError(f"unknown metadata type {kind}")
        return self._read(_SCALARS[kind])[0].item()

    def _parse_header(self) -> None:
        if bytes(self._read(np.uint8, 4)) != _MAGIC:
            raise ValueError("no GGUF magic number")
        version = int(self._read(np.uint32)[0])
        if version not in (2, 3):
            raise ValueError(f"GGUF version {version} is not supported")
        tensor_count, kv_count = (int(n) for n in self._read(np.uint64, 2))
        self.metadata = {}
        for _ in range(kv_count):
            key = self._string()
            self.metadata[key] = self._value(int(self._read(np.uint32)[0]))
        self._tensors = {}
        for _ in range(tensor_count):
            name = self._string()
            dims = int(self._read(np.uint32)[0])
            shape = tuple(int(d) for d in self._read(np.uint64, dims))[::-1]
            qtype = int(self._read(np.uint32)[0])
            offset = int(self._read(np.uint64)[0])
            self._tensors[name] = _TensorInfo(shape, qtype, offset)
        alignment = int(self.metadata.get("general.alignment", _DEFAULT_ALIGNMENT))
        self._data_start = -(-self._pos // alignment) * alignment

    @property
    def tensor_names(self) -> list[str]:
        return list(self._tensors)

    def tensor(self, name: str) -> np.ndarray:
        """Returns tensor `name` dequantized to float32, in numpy order."""
        from gguf import quants  # pylint: disable=g-import-not-at-top
        from gguf.constants import GGMLQuantizationType  # pylint: disable=g-import-not-at-top
        info = self._tensors[name]
        qtype = GGMLQuantizationType(info.qtype)
        byte_shape = quants.quant_shape_to_byte_shape(info.shape, qtype)
        start = self._data_start + info.offset
        raw = self._data[start:start + int(np.prod(byte_shape))]
        if raw.size != int(np.prod(byte_shape)):
            raise UserError(f"{self.path} is truncated (tensor {name}); "
                            "re-download it.")
        if qtype in (GGMLQuantizationType.F32, GGMLQuantizationType.F16):
            dtype = np.float32 if qtype == GGMLQuantizationType.F32 else np.float16
            return raw.view(dtype).reshape(info.shape).astype(np.float32)
        return np.asarray(quants.dequantize(raw.reshape(byte_shape), qtype),
                          np.float32)


def gguf_config(gguf: GgufFile) -> GemmaConfig:
    """The `GemmaConfig` (causal) that a Gemma GGUF file describes."""
    arch = gguf.metadata.get("general.architecture")
    if arch not in _ARCHITECTURES:
        raise UserError(f"{gguf.path}: architecture {arch!r} is not a Gemma; "
                        f"use a GGUF of {sorted(_ARCHITECTURES)}.")
    version = _ARCHITECTURES[arch]

    def get(key, default=None):
        value = gguf.metadata.get(f"{arch}.{key}", default)
        if value is None:
            raise UserError(f"{gguf.path}: metadata {arch}.{key} is missing.")
        return value

    pattern, local_base = _GENERATION_DEFAULTS[version]
    heads = int(get("attention.head_count"))
    hidden = int(get("embedding_length"))
    head_dim = int(get("attention.key_length", hidden // heads))
    return GemmaConfig(
        vocab_size=len(gguf.metadata["tokenizer.ggml.tokens"]),
        hidden_size=hidden,
        num_layers=int(get("block_count")),
        num_heads=heads,
        num_kv_heads=int(get("attention.head_count_kv", heads)),
        head_dim=head_dim,
        intermediate_size=int(get("feed_forward_length")),
        version=version,
        norm_eps=float(get("attention.layer_norm_rms_epsilon")),
        query_pre_attn_scalar=head_dim,
        sliding_window=int(get("attention.sliding_window", 0)),
        sliding_window_pattern=pattern,
        rope_global_base=float(get("rope.freq_base", 10_000.0)),
        rope_local_base=local_base,
        rope_scaling_factor=float(get("rope.scaling.factor", 1.0)),
        attn_logit_softcap=float(get("attn_logit_softcapping", 0.0)),
        final_logit_softcap=float(get("final_logit_softcapping", 0.0)),
    )


# llama.cpp's tensor names, by role (see `gemma_import.gemma_params`).
_GGUF_NAMES = {
    "embedding": "token_embd.weight", "final_norm": "output_norm.weight",
    "q": "blk.{i}.attn_q.weight", "k": "blk.{i}.attn_k.weight",
    "v": "blk.{i}.attn_v.weight", "out": "blk.{i}.attn_output.weight",
    "q_norm": "blk.{i}.attn_q_norm.weight", "k_norm": "blk.{i}.attn_k_norm.weight",
    "pre_attention_norm": "blk.{i}.attn_norm.weight",
    "post_attention_norm": "blk.{i}.post_attention_norm.weight",
    "pre_mlp_norm": "blk.{i}.ffn_norm.weight", "post_mlp_norm": "blk.{i}.post_ffw_norm.weight",
    "gate": "blk.{i}.ffn_gate.weight", "up": "blk.{i}.ffn_up.weight",
    "down": "blk.{i}.ffn_down.weight",
}


def _gguf_params(gguf: GgufFile, config: GemmaConfig) -> dict[str, Any]:
    """Dequantizes the tensors onto the `Gemma` parameter tree."""
    names = set(gguf.tensor_names)
    used = set()

    def get(name):
        if name not in names:
            raise UserError(f"{gguf.path} has no tensor {name!r}; is it a "
                            "complete Gemma GGUF?")
        used.add(name)
        return gguf.tensor(name)

    def norm(name):
        # llama.cpp stores the effective gain 1 + w.
        return {"scale": get(name) - 1.0}

    params = gemma_params(config, get, norm, _GGUF_NAMES)
    # An untied output matrix, say, would change the model: refuse it.
    unused = sorted(names - used)
    if unused:
        raise UserError(f"{gguf.path}: tensors {unused[:5]} do not fit a Gemma "
                        f"version {config.version} model.")
    return params


def load_gguf(path: str, spec: Optional[str] = None) -> GemmaCheckpoint:
    """Imports a Gemma GGUF file (parameters and tokenizer).

    Args:
      path: the .gguf file.
      spec: the spec to record (default 'gguf:PATH').

    Returns:
      The `GemmaCheckpoint`; its vocabulary spec reads the same file.

    Raises:
      UserError: unreadable file, not a Gemma, or missing tensors.
    """
    gguf = GgufFile(path)
    config = gguf_config(gguf)
    spec = spec or f"gguf:{path}"
    return GemmaCheckpoint(config=config, params=_gguf_params(gguf, config),
                           vocab=spec if spec == GEMMA3_270M else f"gguf:{path}",
                           spec=spec)
