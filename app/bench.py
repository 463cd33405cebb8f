"""``samplescope bench``: our instrumented stream against plain llama-cpp-python, in one run.

Owns: ``run_bench``. Measures, on the same model, prompt, settings and number of new tokens
(EOS suppressed in both):

- baseline: ``Llama.create_completion`` with ``logits_all=False`` (llama.cpp's C sampler
  chain; EOS suppressed through ``logit_bias``), and, for reference, the same high-level
  ``Llama.generate`` token loop without any logits processor;
- ours: ``GenerationSession`` (full-vocabulary entropy, top-N, every stage recorded);
- their ratio, the per-step analysis time, and the peak memory of a 2,048-token run.

Prints figures; asserts nothing. Qt-free; runs on the main thread of the CLI.
"""

from __future__ import annotations

import gc
import resource
import statistics
import sys
import time

from backends.base import SamplerSettings, Step

__all__ = ["run_bench"]

BENCH_PROMPT = "Once upon a time, in a village at the edge of a great forest, there lived"


def _rss_mb() -> float:
    try:
        with open("/proc/self/statm") as f:
            pages = int(f.read().split()[1])
        return pages * resource.getpagesize() / 1e6
    except OSError:  # not Linux
        return float("nan")


def _peak_mb() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak * 1024 / 1e6 if sys.platform != "darwin" else peak / 1e6  # KiB on Linux, bytes on macOS


def run_bench(a) -> dict:
    from app.cli import load_backend
    from backends.llama_local import load_llama_cpp

    Llama = load_llama_cpp().Llama
    from app.core import sampling
    from app.core.session import GenerationSession
    from backends.models import ensure_embedded_model

    n = max(128, a.tokens)
    s = SamplerSettings(max_tokens=n)  # Balanced: temperature 0.8, top-k 40, top-p 0.95, min-p 0.05
    path = a.model or str(ensure_embedded_model())
    threads = a.threads or None
    out = lambda *x: None if a.json else print(*x, flush=True)  # noqa: E731
    out(f"model {path}\n{n} new tokens per run, {a.repeats} repeats, settings: temperature {s.temperature}, "
        f"top-k {s.top_k}, top-p {s.top_p}, min-p {s.min_p}; EOS suppressed in all runs")

    # ---------------------------------------------------------------- baseline
    llm = Llama(path, n_ctx=max(a.n_ctx, n + 64), n_threads=threads, n_gpu_layers=a.n_gpu_layers,
                logits_all=False, verbose=False, seed=s.seed)
    eos = llm.token_eos()
    base_cc, base_gen = [], []
    for r in range(a.repeats + 1):  # the first run warms up and is not counted
        llm.reset()
        t0 = time.perf_counter()
        res = llm.create_completion(BENCH_PROMPT, max_tokens=n, temperature=s.temperature, top_k=s.top_k,
                                    top_p=s.top_p, min_p=s.min_p, seed=s.seed + r, logit_bias={eos: -1e9})
        dt = time.perf_counter() - t0
        got = res["usage"]["completion_tokens"]
        if r:
            base_cc.append(got / dt)
        llm.reset()
        toks = llm.tokenize(BENCH_PROMPT.encode())
        t0 = time.perf_counter()
        k = 0
        for _tok in llm.generate(toks, temp=s.temperature, top_k=s.top_k, top_p=s.top_p, min_p=s.min_p):
            k += 1
            if k >= n:
                break
        dt = time.perf_counter() - t0
        if r:
            base_gen.append(k / dt)
    llm.close()
    del llm
    gc.collect()

    # ---------------------------------------------------------------- ours
    backend = load_backend(a, n_ctx=max(a.n_ctx, n + 64))
    ours, analysis_ms = [], []
    for r in range(a.repeats + 1):
        backend.reset()
        session = GenerationSession(backend, BENCH_PROMPT, s.replace(seed=s.seed + r), banned_tokens=[eos])
        session.start()
        t0 = time.perf_counter()
        for _item in session.run():
            pass
        dt = time.perf_counter() - t0
        if r:
            ours.append(session.finished.n_tokens / dt)
    # per-step analysis cost alone, on the logits of the last position
    logits = backend.logits().copy()
    for _ in range(50):
        t0 = time.perf_counter()
        res = sampling.apply_chain(logits, s, (), top_n=s.top_n)
        res.to_step(int(res.draw(session.rng)), index=0, position=0, text="", piece="", piece_of=backend.piece)
        analysis_ms.append((time.perf_counter() - t0) * 1e3)

    result = {
        "model": path,
        "new_tokens": n,
        "repeats": a.repeats,
        "baseline_create_completion_tps": round(statistics.median(base_cc), 2),
        "baseline_generate_loop_tps": round(statistics.median(base_gen), 2),
        "instrumented_tps": round(statistics.median(ours), 2),
        "ratio_vs_create_completion": round(statistics.median(ours) / statistics.median(base_cc), 3),
        "ratio_vs_generate_loop": round(statistics.median(ours) / statistics.median(base_gen), 3),
        "analysis_ms_per_step_median": round(statistics.median(analysis_ms), 3),
        "analysis_ms_per_step_p90": round(sorted(analysis_ms)[int(0.9 * len(analysis_ms))], 3),
    }
    out(f"baseline create_completion (logits_all=False):  {result['baseline_create_completion_tps']:7.2f} tokens/s")
    out(f"baseline Llama.generate loop (no processor):    {result['baseline_generate_loop_tps']:7.2f} tokens/s")
    out(f"instrumented stream (entropy, top-{s.top_n}, stages):  {result['instrumented_tps']:7.2f} tokens/s")
    out(f"ratio vs create_completion: {result['ratio_vs_create_completion']:.3f}   (target >= 1.0)")
    out(f"ratio vs generate loop:     {result['ratio_vs_generate_loop']:.3f}")
    out(f"per-step analysis: {result['analysis_ms_per_step_median']:.3f} ms median, "
        f"{result['analysis_ms_per_step_p90']:.3f} ms p90")
    backend.close()
    del backend
    gc.collect()

    # ---------------------------------------------------------------- long run memory
    if a.long_tokens:
        long_n = a.long_tokens
        backend = load_backend(a, n_ctx=long_n + 64)
        rss0 = _rss_mb()
        session = GenerationSession(backend, BENCH_PROMPT, s.replace(max_tokens=long_n), banned_tokens=[eos])
        steps: list[Step] = []
        t0 = time.perf_counter()
        for item in session.run():
            if isinstance(item, Step):
                steps.append(item)
        dt = time.perf_counter() - t0
        rss1 = _rss_mb()
        result.update(
            long_run_tokens=len(steps),
            long_run_tps=round(len(steps) / dt, 2),
            long_run_rss_before_mb=round(rss0, 1),
            long_run_rss_after_mb=round(rss1, 1),
            long_run_rss_growth_mb=round(rss1 - rss0, 1),
            peak_rss_mb=round(_peak_mb(), 1),
        )
        out(f"{len(steps)}-token run: {result['long_run_tps']:.2f} tokens/s; resident memory "
            f"{rss0:.0f} MB before -> {rss1:.0f} MB after (+{rss1 - rss0:.1f} MB for the run, model "
            f"already loaded); process peak {result['peak_rss_mb']:.0f} MB")
        backend.close()
    return result
