"""A model's output head, read from its GGUF file without llama.cpp: what the layer lens projects through.

Owns: ``HeadSpec`` (what the head applies after the last layer, for one file: the final norm's
kind and epsilon, the unembedding tensor and its quantization, any output bias, logit scale
or soft-capping, and the memory the unembedding needs, stated before it is loaded), ``head_spec``
(the spec from the header alone), ``OutputHead`` (the weights: the final norm's, the
unembedding as a float32 matrix) and ``model_head`` (the head of a loaded ``LlamaModel``,
loaded once per model on first use and kept with it).

What the head applies is read from llama.cpp's graph of each architecture (``src/models/*.cpp``
of the pinned llama.cpp): after the last layer's output ``l_out-{n-1}``, ``build_norm(...,
output_norm, LLM_NORM_RMS)`` (an RMSNorm with the weights ``output_norm.weight`` and the
epsilon ``{arch}.attention.layer_norm_rms_epsilon``; LayerNorm with ``output_norm.bias`` and
``{arch}.attention.layer_norm_epsilon`` for the architectures that have them), the product with
``output.weight`` (or, for tied embeddings, ``token_embd.weight``), ``output.bias`` where the file
has one, ``{arch}.logit_scale`` (a factor for Cohere's command-r / cohere2, a divisor for the
Granite family), and ``{arch}.final_logit_softcapping`` (c * tanh(x / c): Gemma 2, and Gemma 3
where the key is set). Gemma's converter already writes the norm weights with the +1 of
Gemma's ``(1 + w)`` RMSNorm added (checked against the model's own logits by the lens's
self-check, not assumed). An architecture with anything else in its head (a scale this table
does not know) is caught by that self-check (``app.core.lens``), which refuses the lens.

The tensors are located with ``backends.gguf_header.read_tensor_table`` (0.04 s here; the ``gguf``
package's ``GGUFReader`` takes 12 s on the embedded model, building a numpy view for each of
the 786,000 parts of its tokenizer arrays) and dequantized with the ``gguf`` package's
``gguf.quants.dequantize`` (ggml-org's own numpy implementation of every ggml quantization),
in slices of rows into one preallocated matrix, so the peak is the matrix plus one slice.

float32, not float16: every quantized weight (a small integer times a float16 scale) is exact in
float32, so the lens's only difference from llama.cpp's own head is llama.cpp's rounding of the
activations (it quantizes them to 8 bits for its quantized matrix product); and numpy has no
fast float16 matrix product (it would convert the whole matrix on every projection). The price
is ``n_vocab x n_embd x 4`` bytes: 640 MiB for the embedded Gemma 3 270M (262,144 x 640).

Qt-free; loads on the thread that asks first (the model worker, the command line's main
thread); a loaded head is read-only and may be shared by any thread.
"""

from __future__ import annotations

import mmap
import threading
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .base import GenerationError
from .gguf_header import GGUFHeader, TensorInfo, read_tensor_table

if TYPE_CHECKING:
    from .llama_engine import LlamaModel

__all__ = ["HeadSpec", "OutputHead", "head_spec", "load_head", "model_head", "loaded_head", "format_bytes"]

#: architectures whose graph multiplies the logits by ``{arch}.logit_scale``
_SCALE_MULTIPLY = ("command-r", "cohere2", "cohere2moe")
#: architectures whose graph divides the logits by ``{arch}.logit_scale``
_SCALE_DIVIDE = ("granite", "granitemoe", "granitehybrid")
#: rows dequantized at a time (a slice of the float32 matrix: 40 MB for n_embd 640)
_SLICE_ROWS = 16384


def format_bytes(n: int) -> str:
    """``n`` bytes in words: 640 MiB, 1.5 GiB."""
    if n >= 1 << 30:
        return f"{n / (1 << 30):.1f} GiB"
    return f"{n / (1 << 20):.0f} MiB"


@dataclass(frozen=True)
class HeadSpec:
    """What a model's output head applies after its last layer (see the module docstring)."""

    path: str
    architecture: str
    norm: str  # "rms" or "layer"
    eps: float
    #: the unembedding's tensor: "output.weight", or "token_embd.weight" when tied
    unembedding: str
    unembedding_type: str  # its quantization ("Q8_0")
    n_vocab: int
    n_embd: int
    has_norm_bias: bool = False
    has_output_bias: bool = False
    #: the logits are multiplied by this (1.0: no scale)
    logit_scale: float = 1.0
    #: c of c * tanh(x / c) on the logits (0: none)
    softcap: float = 0.0

    @property
    def tied(self) -> bool:
        return self.unembedding == "token_embd.weight"

    @property
    def memory_bytes(self) -> int:
        """What the float32 unembedding takes in memory once loaded."""
        return self.n_vocab * self.n_embd * 4

    def describe(self) -> str:
        """One line: what the head applies and what it costs."""
        parts = [f"{'RMSNorm' if self.norm == 'rms' else 'LayerNorm'} (eps {self.eps:g})",
                 f"{'tied ' if self.tied else ''}unembedding {self.n_vocab:,} x {self.n_embd} "
                 f"({self.unembedding_type}, {format_bytes(self.memory_bytes)} as float32)"]
        if self.has_output_bias:
            parts.append("output bias")
        if self.logit_scale != 1.0:
            parts.append(f"logits x {self.logit_scale:g}")
        if self.softcap:
            parts.append(f"soft-capping {self.softcap:g}")
        return ", ".join(parts)


def _number(header: GGUFHeader, key: str) -> float | None:
    v = header.get(key)
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def head_spec(path: str | Path) -> HeadSpec:
    """The output head of the GGUF file at ``path`` from its header alone (nothing of the
    weights is read). ``GenerationError`` saying why when the file has no head the lens can use."""
    header, table = read_tensor_table(path)
    return _spec(Path(path), header, table)


def _spec(path: Path, header: GGUFHeader, table: dict[str, TensorInfo]) -> HeadSpec:
    import gguf

    arch = header.text("general.architecture") or "unknown"
    if "output_norm.weight" not in table:
        raise GenerationError(f"The layer lens needs the final norm (output_norm.weight), which {path.name} "
                              f"({arch}) does not have.")
    unembedding = "output.weight" if "output.weight" in table else "token_embd.weight"
    if unembedding not in table:
        raise GenerationError(f"{path.name} has neither output.weight nor token_embd.weight: no unembedding.")
    t = table[unembedding]
    if len(t.dims) != 2:
        raise GenerationError(f"{path.name}'s {unembedding} is not a matrix (shape {t.dims}).")
    n_embd, n_vocab = int(t.dims[0]), int(t.dims[1])
    try:
        qtype = gguf.GGMLQuantizationType(t.ggml_type)
    except ValueError:
        raise GenerationError(f"{path.name}'s {unembedding} has ggml type {t.ggml_type}, which the gguf "
                              "package cannot dequantize.") from None
    rms_eps = _number(header, f"{arch}.attention.layer_norm_rms_epsilon")
    ln_eps = _number(header, f"{arch}.attention.layer_norm_epsilon")
    if "output_norm.bias" in table or (rms_eps is None and ln_eps is not None):
        norm, eps = "layer", ln_eps if ln_eps is not None else 1e-5
    elif rms_eps is not None:
        norm, eps = "rms", rms_eps
    else:
        raise GenerationError(f"{path.name} ({arch}) states no norm epsilon "
                              f"({arch}.attention.layer_norm_rms_epsilon): its output head is unknown.")
    scale = _number(header, f"{arch}.logit_scale") or 0.0
    logit_scale = 1.0
    if scale:
        if arch in _SCALE_MULTIPLY:
            logit_scale = scale
        elif arch in _SCALE_DIVIDE:
            logit_scale = 1.0 / scale
        else:  # a scale whose direction we do not know: the self-check will tell
            logit_scale = scale
    return HeadSpec(path=str(path), architecture=arch, norm=norm, eps=float(eps), unembedding=unembedding,
                    unembedding_type=qtype.name, n_vocab=n_vocab, n_embd=n_embd,
                    has_norm_bias="output_norm.bias" in table, has_output_bias="output.bias" in table,
                    logit_scale=float(logit_scale), softcap=float(_number(header, f"{arch}.final_logit_softcapping") or 0.0))


@dataclass(frozen=True, eq=False)
class OutputHead:
    """A model's output head in memory: ``spec``, ``norm_weight`` (n_embd, float32),
    ``norm_bias`` and ``output_bias`` (or None) and ``matrix`` (n_vocab x n_embd, float32, read-only)."""

    spec: HeadSpec
    norm_weight: np.ndarray
    norm_bias: np.ndarray | None
    matrix: np.ndarray
    output_bias: np.ndarray | None
    load_seconds: float = 0.0


def _read(buf, t: TensorInfo, out: np.ndarray | None = None) -> np.ndarray:
    """Tensor ``t`` of the mapped file dequantized to float32, of shape (rows, dims[0])."""
    import gguf

    qtype = gguf.GGMLQuantizationType(t.ggml_type)
    block, type_size = gguf.GGML_QUANT_SIZES[qtype]
    row_len = int(t.dims[0])
    if row_len % block:
        raise GenerationError(f"tensor {t.name}: a row of {row_len} is not whole blocks of {block}")
    row_bytes = row_len // block * type_size
    rows = 1
    for d in t.dims[1:]:
        rows *= int(d)
    if t.offset + rows * row_bytes > len(buf):
        raise GenerationError(f"tensor {t.name} runs past the end of the file")
    raw = np.frombuffer(buf, dtype=np.uint8, count=rows * row_bytes, offset=t.offset).reshape(rows, row_bytes)
    if out is None:
        out = np.empty((rows, row_len), dtype=np.float32)
    for start in range(0, rows, _SLICE_ROWS):
        stop = min(rows, start + _SLICE_ROWS)
        out[start:stop] = gguf.quants.dequantize(raw[start:stop], qtype).reshape(stop - start, row_len)
    return out


def load_head(path: str | Path, spec: HeadSpec | None = None) -> OutputHead:
    """Read and dequantize the output head of the GGUF file at ``path`` (``spec.memory_bytes``
    of memory for the matrix; 2.5 s for the embedded model's here)."""
    import time

    t0 = time.perf_counter()
    path = Path(path)
    header, table = read_tensor_table(path)
    spec = spec or _spec(path, header, table)
    with path.open("rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
        try:
            matrix = np.empty((spec.n_vocab, spec.n_embd), dtype=np.float32)
        except MemoryError:
            raise GenerationError(f"The layer lens needs {format_bytes(spec.memory_bytes)} for {path.name}'s "
                                  "unembedding, and that much memory is not free.") from None
        _read(buf, table[spec.unembedding], matrix)
        norm_w = _read(buf, table["output_norm.weight"]).reshape(-1)
        norm_b = _read(buf, table["output_norm.bias"]).reshape(-1) if spec.has_norm_bias else None
        out_b = _read(buf, table["output.bias"]).reshape(-1) if spec.has_output_bias else None
    if norm_w.shape != (spec.n_embd,):
        raise GenerationError(f"{path.name}'s output_norm.weight has {norm_w.size} values for {spec.n_embd} dimensions.")
    for arr in (matrix, norm_w, norm_b, out_b):
        if arr is not None:
            arr.flags.writeable = False
    return OutputHead(spec, norm_w, norm_b, matrix, out_b, time.perf_counter() - t0)


_heads: "weakref.WeakKeyDictionary[LlamaModel, OutputHead]" = weakref.WeakKeyDictionary()
_heads_lock = threading.Lock()


def model_head(model: LlamaModel) -> OutputHead:
    """The output head of a loaded model, read from its file on first use and kept for as long
    as the model lives (once per model; a second caller waits for the first's load)."""
    with _heads_lock:
        head = _heads.get(model)
        if head is None:
            head = load_head(model.path)
            _heads[model] = head
        return head


def loaded_head(model: LlamaModel) -> OutputHead | None:
    """The model's head if it is loaded already (None: the next ``model_head`` reads it)."""
    with _heads_lock:
        return _heads.get(model)
