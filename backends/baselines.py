"""What llama.cpp does without us: the baselines ``samplescope bench`` measures us against.

Owns: ``llama_cpp_baselines`` (llama-cpp-python's own road, ``Llama.create_completion`` and the
``Llama.generate`` token loop: the one place a ``llama_cpp.Llama`` is made, on purpose) and
``bare_decode`` (a plain ``llama_decode`` loop on one of our engine contexts: the prompt once,
then one token per live sequence per decode, the next token the argmax of its logits row, no
analysis at all; with several sequences it is the batched limit N-sample work can reach).

These are measurements, not features: nothing else in the project calls them. Qt-free; they run
on the caller's thread (the bench's main thread).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Sequence as Seq

import numpy as np

from .base import GenerationError
from .llama_engine import THREADS, LlamaContext
from .llama_runtime import load_llama_cpp

__all__ = ["llama_cpp_baselines", "bare_decode", "BareRun"]


def llama_cpp_baselines(path: str, prompt: str, *, n: int, temperature: float, top_k: int, top_p: float,
                        min_p: float, seed: int, repeats: int, n_ctx: int, n_threads: int,
                        n_gpu_layers: int = 0) -> tuple[list[float], list[float]]:
    """Tokens per second of ``create_completion`` (``logits_all=False``, EOS banned through
    ``logit_bias``) and of the ``generate`` loop (no logits processor), ``repeats`` runs each
    after one warm-up run. Same threads and flash attention as our contexts (llama.cpp's "auto",
    on for CPU builds), so only the road differs."""
    Llama = load_llama_cpp().Llama
    llm = Llama(path, n_ctx=n_ctx, n_threads=n_threads, n_threads_batch=n_threads, n_gpu_layers=n_gpu_layers,
                flash_attn=True, logits_all=False, verbose=False, seed=seed)
    try:
        eos = llm.token_eos()
        cc, gen = [], []
        for r in range(repeats + 1):  # the first run warms up and is not counted
            llm.reset()
            t0 = time.perf_counter()
            res = llm.create_completion(prompt, max_tokens=n, temperature=temperature, top_k=top_k, top_p=top_p,
                                        min_p=min_p, seed=seed + r, logit_bias={eos: -1e9})
            dt = time.perf_counter() - t0
            if r:
                cc.append(res["usage"]["completion_tokens"] / dt)
            llm.reset()
            toks = llm.tokenize(prompt.encode())
            t0 = time.perf_counter()
            k = 0
            for _tok in llm.generate(toks, temp=temperature, top_k=top_k, top_p=top_p, min_p=min_p):
                k += 1
                if k >= n:
                    break
            dt = time.perf_counter() - t0
            if r:
                gen.append(k / dt)
        return cc, gen
    finally:
        llm.close()


@dataclass(frozen=True)
class BareRun:
    prompt_s: float  # evaluating the prompt (once, whatever the number of sequences)
    decode_s: float  # the token loop
    tokens: int  # generated tokens, all sequences together

    @property
    def seconds(self) -> float:
        return self.prompt_s + self.decode_s


def bare_decode(ctx: LlamaContext, prompt: Seq[int], lengths: Seq[int]) -> BareRun:
    """Generate ``lengths[i]`` tokens on sequence ``i`` of ``ctx`` the way a plain llama.cpp
    program does: the prompt evaluated once on sequence 0 and copied to the others, then each
    step ONE ``llama_decode`` of one token per live sequence, the next token the argmax of its
    logits row (``lengths[i] - 1`` decodes for sequence ``i``, as a generation of that many tokens
    needs). The context is emptied first and after."""
    ll, b, c = ctx._ll, ctx._batch, ctx._ctx
    lengths = [int(x) for x in lengths]
    if not 1 <= len(lengths) <= ctx.n_seq:
        raise GenerationError(f"bare_decode runs 1 to {ctx.n_seq} sequences on this context")
    prompt = [int(t) for t in prompt]
    if not prompt or len(prompt) + sum(lengths) >= ctx.n_ctx:  # the prompt's cells are shared
        raise GenerationError("the prompt and the tokens do not fit in the context")
    ctx.reset()
    threads = THREADS.share(id(ctx), ctx.wanted_threads)  # the threads our own decodes would get
    ll.llama_set_n_threads(c, threads, threads)
    ctx._threads = threads

    def run(entries: list[tuple[int, int, int, bool]]) -> None:
        for start in range(0, len(entries), ctx.n_batch):
            chunk = entries[start:start + ctx.n_batch]
            b.n_tokens = len(chunk)
            for i, (tok, pos, seq, want) in enumerate(chunk):
                b.token[i], b.pos[i], b.n_seq_id[i], b.logits[i] = tok, pos, 1, want
                b.seq_id[i][0] = seq
            if ll.llama_decode(c, b) != 0:
                ctx.reset()
                raise GenerationError("llama_decode failed in the bare loop")

    def argmax(row: int) -> int:
        ptr = ll.llama_get_logits_ith(c, row)
        return int(np.ctypeslib.as_array(ptr, shape=(ctx.n_vocab,)).argmax())

    try:
        t0 = time.perf_counter()
        run([(t, i, 0, i == len(prompt) - 1) for i, t in enumerate(prompt)])
        first = argmax(-1)
        for s in range(1, len(lengths)):
            ll.llama_memory_seq_cp(ctx._mem, 0, s, -1, -1)
        t1 = time.perf_counter()
        # each sequence's first token comes from the prompt's logits; every further one costs a
        # decode of the one before (the last token is not decoded: nothing follows it)
        nxt = [first] * len(lengths)
        done = [1 if n > 0 else 0 for n in lengths]
        while True:
            live = [s for s in range(len(lengths)) if done[s] < lengths[s]]
            if not live:
                break
            run([(nxt[s], len(prompt) + done[s] - 1, s, True) for s in live])
            for row, s in enumerate(live):
                nxt[s] = argmax(row)
                done[s] += 1
        t2 = time.perf_counter()
        return BareRun(t1 - t0, t2 - t1, sum(done))
    finally:
        ctx.reset()
