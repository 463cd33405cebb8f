"""Grammar constraints: which tokens a GBNF grammar (or a JSON schema) allows next.

Owns: ``Grammar`` — llama.cpp's own grammar sampler (``llama_sampler_init_grammar``) for one
sequence: ``allowed(ids)`` says which of the given candidate tokens the grammar accepts in its
current state (llama.cpp's ``llama_sampler_apply`` on exactly those candidates, so the kept set is
llama.cpp's), ``accept(token)`` advances the state, ``clone()`` copies it for another sequence.
``from_json_schema`` turns a JSON schema into GBNF with llama-cpp-python's converter. The
sampler chain (``app.core.sampling``) applies it as a stage; this module only answers questions.

Qt-free. One thread uses an instance (the thread of the sequence it constrains).
"""

from __future__ import annotations

import ctypes
import json

import numpy as np

from .base import GenerationError
from .llama_runtime import last_log_error, load_llama_cpp

__all__ = ["Grammar", "TOKEN_DATA", "schema_to_gbnf"]

#: llama.cpp's ``llama_token_data`` as a numpy record (id, logit, p), for candidate arrays.
TOKEN_DATA = np.dtype([("id", "<i4"), ("logit", "<f4"), ("p", "<f4")])


def schema_to_gbnf(schema: dict) -> str:
    """GBNF of the JSON documents that follow ``schema`` (llama-cpp-python's converter)."""
    from llama_cpp.llama_grammar import json_schema_to_gbnf

    try:
        return json_schema_to_gbnf(json.dumps(schema))
    except Exception as exc:  # noqa: BLE001 - the converter raises assorted errors
        raise GenerationError(f"The JSON schema cannot be turned into a grammar: {exc}") from None


class Grammar:
    """A grammar's parse state for one sequence (see the module docstring)."""

    def __init__(self, model, gbnf: str, root: str = "root", *, _sampler=None) -> None:
        ll = load_llama_cpp()
        self._ll = ll
        self.model = model
        self.gbnf = gbnf
        self.root = root
        if _sampler is None:
            _sampler = ll.llama_sampler_init_grammar(model._vocab, gbnf.encode("utf-8"), root.encode("utf-8"))
            if not _sampler:
                detail = last_log_error()
                raise GenerationError("llama.cpp could not read the grammar" + (f": {detail}" if detail else "."))
        self._s = _sampler
        self.accepted = 0

    @classmethod
    def from_json_schema(cls, model, schema: dict) -> "Grammar":
        """The grammar of JSON documents that follow ``schema``."""
        return cls(model, schema_to_gbnf(schema))

    def allowed(self, ids: np.ndarray) -> np.ndarray:
        """A boolean mask over ``ids``: True where the grammar accepts that token next."""
        ids = np.asarray(ids, dtype=np.int32).reshape(-1)
        n = ids.shape[0]
        if n == 0:
            return np.zeros(0, dtype=bool)
        arr = np.zeros(n, dtype=TOKEN_DATA)
        arr["id"] = ids
        cur = self._ll.llama_token_data_array(arr.ctypes.data_as(self._ll.llama_token_data_p), n, -1, False)
        self._ll.llama_sampler_apply(self._s, ctypes.byref(cur))
        if cur.size != n:  # the grammar sampler masks, it never drops: if that changes, be loud
            raise GenerationError("llama.cpp's grammar sampler changed the candidate array's size")
        return np.isfinite(arr["logit"])

    def accept(self, token: int) -> None:
        """Advance past ``token`` (which must be allowed: llama.cpp aborts on a refused one)."""
        if not bool(self.allowed(np.array([int(token)]))[0]):
            raise GenerationError(f"The grammar does not allow token {token} here.")
        self._ll.llama_sampler_accept(self._s, int(token))
        self.accepted += 1

    def clone(self) -> "Grammar":
        """A copy in the same state, for another sequence."""
        g = Grammar(self.model, self.gbnf, self.root, _sampler=self._ll.llama_sampler_clone(self._s))
        g.accepted = self.accepted
        return g

    def reset(self) -> None:
        self._ll.llama_sampler_reset(self._s)
        self.accepted = 0

    def close(self) -> None:
        if getattr(self, "_s", None):
            self._ll.llama_sampler_free(self._s)
            self._s = None

    def __del__(self) -> None:  # pragma: no cover - best effort
        try:
            self.close()
        except Exception:  # noqa: BLE001
            pass
