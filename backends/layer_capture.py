"""Every layer's output read while llama.cpp decodes: the layer lens's side of the engine.

Owns: ``LayerCapture`` (a context's ``cb_eval`` callback that copies the per-layer outputs
``l_out-0`` .. ``l_out-{n-1}`` of the rows wanted), ``LensContext`` (a context of its own on a
loaded ``LlamaModel`` with that callback installed, evaluating a token sequence in chunks and
giving, for each wanted position, every layer's output and the model's own logits there) and
``LensUnavailable`` (the lens cannot be shown for this model, and why).

How llama.cpp exposes the tensors (checked in the pinned llama.cpp, ggml-backend.cpp
``ggml_backend_sched_compute_splits``): with a ``cb_eval`` set, the scheduler asks the callback
about every node of the graph (``ask=True``); a node it says yes to ends a piece of the graph,
which is computed, then the callback is called again with ``ask=False`` to read it. Only the
``l_out-N`` nodes get a yes, so every other node is computed as usual (the graph runs in
n_layers pieces instead of one); a context without the callback, which every generation
uses, is not touched at all. The callback must return True when it has read a node: False
would stop the rest of that piece (and the logits would be wrong), so failures are recorded
and raised after the decode, never returned.

Which rows a layer's output holds: ``l_out-N`` has one column per token of the batch for every
layer but the last; llama.cpp's graphs cut the last layer down to the rows whose logits are
wanted (``ggml_get_rows(cur, inp_out_ids)`` before its last norm, seen here: ``l_out-17`` of a
6-token batch with 2 outputs has 2 rows). So the lens marks exactly the positions it wants as
outputs and reads those rows of every layer: the last layer's in output order, the others by
their place in the batch.

The ggml structures (``ggml.h`` of the pinned llama.cpp): ``struct ggml_tensor`` as
``_GgmlTensor`` below (type, buffer, ne[4], nb[4], op, op_params[16], flags, src[10], view_src,
view_offs, data, name[64], extra, padding[8]); the layout is checked against the library on the
first call (``ggml_get_name`` must return the address of ``name``, ``ggml_nelements`` the
product of ``ne``, ``ggml_nbytes`` the bytes of an F32 tensor) and the lens is refused when it
differs. The data are read with ``ggml_backend_tensor_get(tensor, data, offset, size)``, which
copies from host memory or from a GPU buffer alike. llama-cpp-python's ``cb_eval`` field and
``ggml_backend_sched_eval_callback`` type (bool (*)(struct ggml_tensor *, bool, void *)) were
checked against ``llama.h`` and ``ggml-backend.h``: the field order of ``llama_context_params``
matches (cb_eval at offset 88, cb_eval_user_data at 96 on 64-bit Linux).

Threads: the callback runs on the thread that calls ``llama_decode`` (the model worker, the
command line's main thread); a ``LensContext`` belongs to that thread. Qt-free.
"""

from __future__ import annotations

import ctypes
import threading
from typing import TYPE_CHECKING, Iterator, Sequence

import numpy as np

from .base import GenerationError
from .llama_runtime import load_llama_cpp

if TYPE_CHECKING:
    from .llama_engine import LlamaContext, LlamaModel

__all__ = ["LayerCapture", "LensContext", "LensUnavailable"]

_GGML_TYPE_F32 = 0


class LensUnavailable(GenerationError):
    """The layer lens cannot be shown for this model or run; the message says why."""


class _GgmlTensor(ctypes.Structure):
    """``struct ggml_tensor`` of ggml.h (GGML_MAX_DIMS 4, GGML_MAX_OP_PARAMS 64, GGML_MAX_SRC 10,
    GGML_MAX_NAME 64)."""

    _fields_ = [
        ("type", ctypes.c_int),
        ("buffer", ctypes.c_void_p),
        ("ne", ctypes.c_int64 * 4),
        ("nb", ctypes.c_size_t * 4),
        ("op", ctypes.c_int),
        ("op_params", ctypes.c_int32 * 16),
        ("flags", ctypes.c_int32),
        ("src", ctypes.c_void_p * 10),
        ("view_src", ctypes.c_void_p),
        ("view_offs", ctypes.c_size_t),
        ("data", ctypes.c_void_p),
        ("name", ctypes.c_char * 64),
        ("extra", ctypes.c_void_p),
        ("padding", ctypes.c_char * 8),
    ]


_NAME_OFFSET = _GgmlTensor.name.offset


class _Ggml:
    """The few ggml functions the capture calls, declared here from ggml.h / ggml-backend.h
    (looked up through libllama, which links libggml-base)."""

    _instance: "_Ggml | None" = None
    _lock = threading.Lock()

    def __init__(self) -> None:
        ll = load_llama_cpp()
        lib = ll.llama_cpp._lib
        vp, i64, sz = ctypes.c_void_p, ctypes.c_int64, ctypes.c_size_t
        self.get_name = ctypes.CFUNCTYPE(ctypes.c_void_p, vp)(("ggml_get_name", lib))
        self.nelements = ctypes.CFUNCTYPE(i64, vp)(("ggml_nelements", lib))
        self.nbytes = ctypes.CFUNCTYPE(sz, vp)(("ggml_nbytes", lib))
        self.tensor_get = ctypes.CFUNCTYPE(None, vp, vp, sz, sz)(("ggml_backend_tensor_get", lib))
        self.callback_type = ll.ggml_backend_sched_eval_callback

    @classmethod
    def get(cls) -> "_Ggml":
        with cls._lock:
            if cls._instance is None:
                cls._instance = _Ggml()
            return cls._instance


class LayerCapture:
    """The ``cb_eval`` of a lens context: copies the rows wanted of each ``l_out-N``.

    Before each decode ``expect(n_tokens, out_index)`` says how many tokens the batch holds and
    which of them are outputs (batch indices, ascending); after it ``take()`` returns an array of
    shape (n_layers, len(out_index), n_embd), float32, or raises ``LensUnavailable`` when a
    layer was not seen or could not be read. ``expect(n, [])`` turns the capture off for a decode
    (every node then answers no: the graph runs in one piece)."""

    def __init__(self, n_layers: int, n_embd: int) -> None:
        self.n_layers = int(n_layers)
        self.n_embd = int(n_embd)
        self._ggml = _Ggml.get()
        self._wanted = {f"l_out-{i}".encode(): i for i in range(self.n_layers)}
        self._active = False
        self._n_tokens = 0
        self._out_index: np.ndarray = np.zeros(0, dtype=np.int64)
        self._out = np.zeros((self.n_layers, 0, self.n_embd), dtype=np.float32)
        self._seen = np.zeros(self.n_layers, dtype=bool)
        self._error = ""
        self._layout_checked = False
        self.asked = 0  # nodes asked about in the last decode (the graph's size)
        self.callback = self._ggml.callback_type(self._callback)

    def expect(self, n_tokens: int, out_index: Sequence[int]) -> None:
        self._n_tokens = int(n_tokens)
        self._out_index = np.asarray(out_index, dtype=np.int64)
        self._active = len(self._out_index) > 0
        self._out = np.zeros((self.n_layers, len(self._out_index), self.n_embd), dtype=np.float32)
        self._seen[:] = False
        self._error = ""
        self.asked = 0

    def take(self) -> np.ndarray:
        if self._error:
            raise LensUnavailable(self._error)
        if self._active and not self._seen.all():
            missing = [i for i in range(self.n_layers) if not self._seen[i]]
            raise LensUnavailable(
                f"llama.cpp's graph of this model has no output named l_out-{missing[0]} (layer {missing[0]}"
                f"{' and ' + str(len(missing) - 1) + ' more' if len(missing) > 1 else ''}): the lens reads each "
                "layer's output by that name, which this architecture's graph does not give.")
        return self._out

    # -------------------------------------------------------------- the callback (C calls it)
    def _callback(self, t, ask, _user_data) -> bool:
        if not self._active or not t:
            return False if ask else True
        try:
            if ask:
                self.asked += 1
                return ctypes.string_at(t + _NAME_OFFSET) in self._wanted
            layer = self._wanted.get(ctypes.string_at(t + _NAME_OFFSET))
            if layer is not None:
                self._read(t, layer)
        except BaseException as exc:  # noqa: BLE001 - never into C: recorded and raised by take()
            self._error = self._error or f"Reading a layer's output failed: {exc}"
        return True  # False here would stop the rest of the graph's piece

    def _check_layout(self, t: int, tensor: _GgmlTensor) -> None:
        g = self._ggml
        ne = tuple(int(x) for x in tensor.ne)
        if (g.get_name(t) != t + _NAME_OFFSET or int(g.nelements(t)) != ne[0] * ne[1] * ne[2] * ne[3]
                or (tensor.type == _GGML_TYPE_F32 and int(g.nbytes(t)) != 4 * ne[0] * ne[1] * ne[2] * ne[3])):
            raise LensUnavailable("this llama.cpp build's ggml_tensor layout is not the one Samplescope reads "
                                  "(ggml.h changed): the lens cannot read layer outputs with it")
        self._layout_checked = True

    def _read(self, t: int, layer: int) -> None:
        tensor = _GgmlTensor.from_address(t)
        if not self._layout_checked:
            self._check_layout(t, tensor)
        ne = [int(x) for x in tensor.ne]
        nb = [int(x) for x in tensor.nb]
        n_out = len(self._out_index)
        if tensor.type != _GGML_TYPE_F32 or ne[0] != self.n_embd or ne[2] != 1 or ne[3] != 1 or nb[0] != 4:
            raise LensUnavailable(f"layer {layer}'s output is not an F32 matrix of {self.n_embd} x tokens "
                                  f"(type {tensor.type}, shape {ne[:2]})")
        if not (tensor.buffer or (tensor.view_src and _GgmlTensor.from_address(tensor.view_src).buffer)):
            raise LensUnavailable(f"layer {layer}'s output has no buffer to read from")
        if ne[1] == n_out:  # the last layer: only the output rows, in output order
            rows = np.arange(n_out)
        elif ne[1] == self._n_tokens:
            rows = self._out_index
        else:
            raise LensUnavailable(f"layer {layer}'s output has {ne[1]} rows for a batch of {self._n_tokens} "
                                  f"tokens with {n_out} outputs")
        dst = self._out[layer]
        row_bytes = 4 * self.n_embd
        total = int(self._ggml.nbytes(t))
        if len(rows) and int(rows[-1]) * nb[1] + row_bytes > total:
            raise LensUnavailable(f"layer {layer}'s output is smaller than its shape says")
        if len(rows) and nb[1] == row_bytes and int(rows[-1]) - int(rows[0]) == len(rows) - 1:
            self._ggml.tensor_get(t, dst.ctypes.data, int(rows[0]) * row_bytes, len(rows) * row_bytes)
        else:
            for j, r in enumerate(rows):
                self._ggml.tensor_get(t, dst[j].ctypes.data, int(r) * nb[1], row_bytes)
        self._seen[layer] = True


class LensContext:
    """A context of its own on ``model`` with a ``LayerCapture`` installed (see the module
    docstring). ``n_ctx`` cells; prompts are evaluated in batches of ``n_batch`` tokens (512, as the
    Workbench's context does)."""

    def __init__(self, model: LlamaModel, *, n_ctx: int, n_batch: int = 512, n_threads: int | None = None) -> None:
        self.model = model
        self.n_layers = int(model.info.n_layers)
        if self.n_layers <= 0:
            raise LensUnavailable(f"{model.info.name} reports no layers.")
        self.capture = LayerCapture(self.n_layers, model.n_embd)
        self.context: LlamaContext = model.context(n_ctx=max(16, int(n_ctx)), n_batch=max(1, int(n_batch)),
                                                   n_threads=n_threads, eval_callback=self.capture.callback)

    def evaluate(self, tokens: Sequence[int], first: int = 0, *, prompt_len: int | None = None, chunk: int = 1,
                 cancel: threading.Event | None = None) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
        """(position, layers, logits) for each position ``first`` .. len(tokens) - 2: ``layers``
        (n_layers, n_embd) is every layer's output at that position, ``logits`` the model's own
        next-token logits there (they predict the token at position + 1). Both are valid until the
        next item is asked for (copy them to keep them). Stops when ``cancel`` is set.

        The sequence is evaluated from an empty cache as a generation evaluates it: its first
        ``prompt_len`` tokens (default: up to ``first``) in batches of ``n_batch``, as
        ``LlamaContext.prefill`` does, then ``chunk`` tokens per decode (1: one at a time, as a
        generation feeds its tokens: the same batch shapes, so the logits equal the run's own bit
        for bit where the run was made from an empty cache; larger chunks are faster and differ by
        llama.cpp's batch noise). Only wanted positions are outputs; a decode without any is
        computed in one piece (the callback answers no)."""
        ctx, cap = self.context, self.capture
        toks = [int(t) for t in tokens]
        n = len(toks)
        if n < 2 or first > n - 2:
            return
        first = max(0, int(first))
        if n + 1 > ctx.n_ctx:
            raise GenerationError(f"The run is {n:,} tokens; the lens context holds {ctx.n_ctx:,}.")
        n_prompt = first + 1 if prompt_len is None else max(1, min(int(prompt_len), n - 1))
        spans = [(a, min(n_prompt, a + ctx.n_batch)) for a in range(0, n_prompt, ctx.n_batch)]
        step = max(1, min(int(chunk), ctx.n_batch))
        spans += [(a, min(n - 1, a + step)) for a in range(n_prompt, n - 1, step)]
        ctx.reset()
        for start, stop in spans:
            if stop <= first:  # nothing wanted here: no outputs, no capture
                cap.expect(stop - start, [])
                ctx.decode([(toks[i], i, 0, False) for i in range(start, stop)])
                continue
            if cancel is not None and cancel.is_set():
                return
            wanted = [i for i in range(start, stop) if i >= first]
            cap.expect(stop - start, [i - start for i in wanted])
            rows = ctx.decode([(toks[i], i, 0, i >= first) for i in range(start, stop)])
            layers = cap.take()
            for j, pos in enumerate(wanted):
                yield pos, layers[:, j, :], ctx.row(rows[j])

    def close(self) -> None:
        self.context.close()

    def __enter__(self) -> "LensContext":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
