"""``samplescope bench``: what our instrumentation costs, measured against llama.cpp's own speed.

Owns: ``run_bench`` and its sections. Every ratio is measured in the same run, the two sides
interleaved (repeat after repeat) so a busy machine slows both alike; the first repeat warms up
and is not counted; medians. Figures are printed (with ``--json``: one JSON object); nothing is
asserted (a benchmark, not a test). The baselines live in ``backends.baselines``.

``analysis_kernels`` says whose arithmetic makes the chain's full-vocabulary sums
(``backends.vec_kernels``: llama.cpp's SIMD kernels, or numpy and why).

Sections (``--skip`` leaves any out):

- ``baseline``: llama-cpp-python's ``create_completion`` and ``generate`` loop against our
  instrumented stream (full-vocabulary entropy, top-N, every stage recorded), EOS suppressed in
  all; the per-step analysis time.
- ``engine``: ``single_vs_bare_decode``, the instrumented stream against a bare ``llama_decode``
  loop (argmax, no analysis) on the same context, same threads, same number of tokens.
- ``parallel``: ``parallel_tps_ratio_8``, 8 N-children of one node (the decoding lab) as parallel
  sequences of one batch against the same 8 one at a time; ``parallel_vs_bare_batched_8``, that
  parallel run against a bare batched decode of 8 sequences of the same lengths (the limit); the
  same two for 8 sampled answers of one shift-lab question (keys ending in ``_shift``); and
  llama.cpp's batch float noise (``batch_noise_*``: the KL between a sequence's next-token
  distribution decoded alone and inside a batch of 8).
- ``grammar``: ``grammar_vs_free``, tokens per second of a grammar-held VS answer against a free
  answer of the same length on the same context.
- ``whatif``: ``whatif_update_ms``, one live what-if update (a step of a finished run recomputed
  from its kept logits under changed knobs, as the window does), median over several changes.
- ``startup``: ``window_open_s``, from starting ``python -m app.bench_gui --startup`` (the
  interpreter, the imports, the window built, shown and painted, no model loaded) to the window's
  word that it is shown, median of 3 fresh processes; ``window_construct_s`` the window's share.
- ``gui``: ``gui_vs_headless``, the Workbench window streaming (offscreen, plots live;
  ``app.bench_gui``) against the headless ``samplescope generate`` command, same prompt, settings
  and seeds, each run in a fresh process of its own.
- ``remote``: ``remote_concurrency_ratio``, 8 sampled shift-lab answers as concurrent requests
  against one at a time, to a real local OpenAI-compatible server (``backends.local_server``).
- ``long``: a 2,048-token run's speed and memory.
- ``lens`` (only with ``--lens``, which runs it alone): the layer lens. ``lens_head_load_s`` and
  ``lens_head_memory_mb`` (the output head read from the GGUF file once per model),
  ``lens_step_ms`` (the lens of one step: its prefix teacher-forced on a lens context and its
  layers projected; median over steps spread along a run), ``lens_run_s`` for a ``--tokens``-token
  run's lens (``lens_run_ms_per_step``, of which ``lens_eval_ms_per_step`` is the evaluation with
  the layers captured), and ``lens_off_tps_before`` / ``lens_off_tps_after`` /
  ``lens_off_ratio``: the instrumented stream on a fresh Workbench context in child processes
  that never used the lens against child processes that computed a lens first (its head then
  held in memory), interleaved (``lens_callback_on_workbench_context``: whether a Workbench
  context had an eval callback; it never has).

Qt-free; runs on the CLI's main thread (the window runs in child processes).

Over 500 lines on purpose: one section per figure the issues name, each short, sharing one
``_Bench`` state; splitting them would scatter the measurement rules (interleaving, warm-up,
medians) that must stay identical.
"""

from __future__ import annotations

import gc
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from backends.base import SamplerSettings, Step

__all__ = ["run_bench", "SECTIONS", "BENCH_PROMPT", "lens_off_child"]

BENCH_PROMPT = "Once upon a time, in a village at the edge of a great forest, there lived"
SECTIONS = ("baseline", "engine", "parallel", "grammar", "whatif", "startup", "gui", "remote", "long")
N_PARALLEL = 8
CHILD_TOKENS = 32


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


def _median(xs) -> float:
    return float(statistics.median(xs)) if xs else float("nan")


def _ratio(a: float, b: float) -> float:
    return round(a / b, 3) if b and b == b and a == a else float("nan")


class _Bench:
    """The shared state of one bench run: arguments, the loaded model, the printer."""

    def __init__(self, a) -> None:
        from backends.base import LoadSettings
        from backends.models import ensure_embedded_model
        from backends.open import open_backend
        from backends.sources import LocalSource

        self.a = a
        self.n = max(128, a.tokens)
        self.repeats = max(1, a.repeats)
        # Balanced: temperature 0.8, top-k 40, top-p 0.95, min-p 0.05
        self.settings = SamplerSettings(max_tokens=self.n)
        self.path = a.model or str(ensure_embedded_model())
        load = LoadSettings(n_ctx=max(a.n_ctx, self.n + 64), n_gpu_layers=a.n_gpu_layers, n_threads=a.threads)
        load.validate()
        self.backend = open_backend(LocalSource(a.model or None, load))
        self.model = self.backend.model
        self.threads = self.backend.info.n_threads
        self.eos = self.model.eos_token
        where = sys.stderr if a.json else sys.stdout  # with --json the lines are progress, stdout the JSON
        self.out = lambda *x: print(*x, file=where, flush=True)

    def close(self) -> None:
        self.backend.close()


# ============================================================================ sections

def _instrumented_tps(b: _Bench, r: int) -> float:
    """Tokens per second of our instrumented stream on the Workbench's context, repeat ``r``
    (its own seed), EOS suppressed; the prompt's evaluation is not counted."""
    from app.core.session import GenerationSession

    s = b.settings
    b.backend.reset()
    session = GenerationSession(b.backend, BENCH_PROMPT, s.replace(seed=s.seed + r), banned_tokens=[b.eos])
    session.start()
    t0 = time.perf_counter()
    for _item in session.run():
        pass
    dt = time.perf_counter() - t0
    return session.finished.n_tokens / dt


def _baseline(b: _Bench) -> dict:
    from app.core import sampling
    from backends.baselines import llama_cpp_baselines

    s, n, a = b.settings, b.n, b.a
    cc, gen = llama_cpp_baselines(b.path, BENCH_PROMPT, n=n, temperature=s.temperature, top_k=s.top_k, top_p=s.top_p,
                                  min_p=s.min_p, seed=s.seed, repeats=b.repeats, n_ctx=max(a.n_ctx, n + 64),
                                  n_threads=b.threads, n_gpu_layers=a.n_gpu_layers)
    gc.collect()
    ours = []
    for r in range(b.repeats + 1):
        tps = _instrumented_tps(b, r)
        if r:
            ours.append(tps)
    analysis_ms = []  # the per-step analysis alone, on the logits of the last position
    rng = np.random.default_rng(s.seed)
    logits = b.backend.logits().copy()
    for _ in range(50):
        t0 = time.perf_counter()
        res = sampling.apply_chain(logits, s, (), top_n=s.top_n)
        res.to_step(int(res.draw(rng)), index=0, position=0, text="", piece="", piece_of=b.backend.piece)
        analysis_ms.append((time.perf_counter() - t0) * 1e3)
    r = {
        "baseline_create_completion_tps": round(_median(cc), 2),
        "baseline_generate_loop_tps": round(_median(gen), 2),
        "instrumented_tps": round(_median(ours), 2),
        "ratio_vs_create_completion": _ratio(_median(ours), _median(cc)),
        "ratio_vs_generate_loop": _ratio(_median(ours), _median(gen)),
        "analysis_ms_per_step_median": round(_median(analysis_ms), 3),
        "analysis_ms_per_step_p90": round(sorted(analysis_ms)[int(0.9 * len(analysis_ms))], 3),
    }
    r["analysis_share_of_step"] = round(r["analysis_ms_per_step_median"] / (1000.0 / r["instrumented_tps"]), 3)
    b.out(f"baseline create_completion (logits_all=False):  {r['baseline_create_completion_tps']:7.2f} tokens/s")
    b.out(f"baseline Llama.generate loop (no processor):    {r['baseline_generate_loop_tps']:7.2f} tokens/s")
    b.out(f"instrumented stream (entropy, top-{s.top_n}, stages):  {r['instrumented_tps']:7.2f} tokens/s")
    b.out(f"ratio vs create_completion: {r['ratio_vs_create_completion']:.3f}   (target >= 1.0)")
    b.out(f"ratio vs generate loop:     {r['ratio_vs_generate_loop']:.3f}")
    b.out(f"per-step analysis: {r['analysis_ms_per_step_median']:.3f} ms median, "
          f"{r['analysis_ms_per_step_p90']:.3f} ms p90 ({100 * r['analysis_share_of_step']:.1f}% of a step)")
    return r


def _engine(b: _Bench) -> dict:
    from backends.baselines import bare_decode

    n = b.n
    prompt = b.model.tokenize(BENCH_PROMPT)
    ours, bare = [], []
    for r in range(b.repeats + 1):
        run = bare_decode(b.backend.context, prompt, [n])
        tps = _instrumented_tps(b, r)
        if r:
            bare.append(run.tokens / run.decode_s)
            ours.append(tps)
    r = {"bare_decode_tps": round(_median(bare), 2), "engine_instrumented_tps": round(_median(ours), 2),
         "single_vs_bare_decode": _ratio(_median(ours), _median(bare))}
    b.out(f"bare llama_decode loop (argmax, no analysis):    {r['bare_decode_tps']:7.2f} tokens/s")
    b.out(f"instrumented stream, same context:               {r['engine_instrumented_tps']:7.2f} tokens/s")
    b.out(f"single_vs_bare_decode: {r['single_vs_bare_decode']:.3f}   (target >= 0.95)")
    return r


def _quiet(b: _Bench) -> None:
    """The Workbench context is done for now: the next context measured gets every thread at
    once (the thread budget would count it busy for another ``THREADS.window`` seconds)."""
    from backends.llama_engine import THREADS

    THREADS.forget(id(b.backend.context))


def _shift_question() -> str:
    from app.labs.shift.concepts import BUILTIN_CONCEPTS, render

    return render(BUILTIN_CONCEPTS[0], "sample", "completion")


def _answers_tokens(answers) -> list[int]:
    return [len(a.trace["steps"]) for a in answers]


NOISE_STEPS = 16


def _batch_noise(b: _Bench, prompt: list[int], k: int) -> dict:
    """llama.cpp's batch float noise, the reason parallel answers may differ from lone ones: the
    same k greedy paths (from the prompt's k best first tokens) on two contexts, one decoding
    each sequence's token alone (the exact path), one all k in one batch; per step the KL
    between the two next-token distributions of each sequence, and how often the argmax differs."""
    from app.core.metrics import kl_logits

    n_ctx = len(prompt) + k * (NOISE_STEPS + 2) + 64
    exact = b.model.context(n_ctx=n_ctx, n_seq=k, n_threads=b.threads)
    batched = b.model.context(n_ctx=n_ctx, n_seq=k, n_threads=b.threads)
    batched.batched = True
    kls, flips = [], 0
    try:
        for c in (exact, batched):
            c.prefill(0, prompt)
            for j in range(1, k):
                c.fork(0, j)
        nxt = [int(t) for t in np.argsort(-np.asarray(exact.logits(0)))[:k]]
        for _ in range(NOISE_STEPS):
            for j, t in enumerate(nxt):
                exact.feed(j, t)
                batched.feed(j, t)
            lone = [np.array(exact.logits(j), copy=True) for j in range(k)]
            for j in range(k):
                together = batched.logits(j)
                kls.append(kl_logits(lone[j], together))
                flips += int(np.argmax(lone[j])) != int(np.argmax(together))
            nxt = [int(np.argmax(x)) for x in lone]  # both follow the exact path
    finally:
        exact.close()
        batched.close()
    return {"batch_noise_kl_max_8": round(max(kls), 5), "batch_noise_kl_median_8": round(_median(kls), 6),
            "batch_noise_argmax_flips_8": flips, "batch_noise_steps_8": len(kls)}


def _parallel(b: _Bench) -> dict:
    """Two kinds of real N-sample work, 8 at once against one at a time and against the bare
    batched limit: 8 N-children of one node (the decoding lab: 32-token continuations, decode-
    bound; the headline keys) and 8 sampled answers of one shift-lab question (a few tokens
    each: mostly the shared prompt; keys ending in ``_shift``)."""
    from app.labs.decoding import BranchTree, children
    from app.labs.shift.engine import SAMPLE_SETTINGS, _answers
    from app.labs.vs.engine import LocalVSEngine
    from backends.baselines import bare_decode

    k = N_PARALLEL
    child_settings = b.settings.replace(max_tokens=CHILD_TOKENS)
    prompt = b.model.tokenize(BENCH_PROMPT)
    bare_ctx = b.model.context(n_ctx=len(prompt) + k * CHILD_TOKENS + 64, n_seq=k, n_threads=b.threads)
    par, seq, bare, lengths = [], [], [], []
    try:
        for r in range(b.repeats + 1):
            runs = {}
            for width in (k, 1):
                tree = BranchTree.for_backend(b.backend, BENCH_PROMPT)
                b.backend.reset()
                b.backend.prepare(prompt)  # both start from the evaluated prompt (the lab's node)
                _quiet(b)
                t0 = time.perf_counter()
                leaves = children(b.backend, tree, 0, k, child_settings, max_tokens=CHILD_TOKENS, seed=100 * r,
                                  max_parallel=width)
                runs[width] = (time.perf_counter() - t0, [tree.depth(x) for x in leaves])
            (t_par, lens), (t_seq, lens1) = runs[k], runs[1]
            _quiet(b)
            run = bare_decode(bare_ctx, prompt, lens)
            if r:
                par.append(sum(lens) / t_par)
                seq.append(sum(lens1) / t_seq)
                bare.append(run.tokens / run.seconds)
                lengths.extend(lens)
    finally:
        bare_ctx.close()
    r = {"parallel_work": f"{k} N-children of the prompt's node (the decoding lab; up to {CHILD_TOKENS} tokens each, "
                          f"temperature {child_settings.temperature})",
         "parallel_child_tokens_mean": round(sum(lengths) / max(1, len(lengths)), 2),
         "parallel_tps_8": round(_median(par), 2), "sequential_tps_8": round(_median(seq), 2),
         "bare_batched_tps_8": round(_median(bare), 2),
         "parallel_tps_ratio_8": _ratio(_median(par), _median(seq)),
         "parallel_vs_bare_batched_8": _ratio(_median(par), _median(bare))}
    b.out(f"{k} N-children (mean {r['parallel_child_tokens_mean']} tokens): parallel {r['parallel_tps_8']:.2f}, "
          f"one at a time {r['sequential_tps_8']:.2f}, bare batched decode {r['bare_batched_tps_8']:.2f} tokens/s")
    b.out(f"parallel_tps_ratio_8: {r['parallel_tps_ratio_8']:.3f}   (target >= 2.0)")
    b.out(f"parallel_vs_bare_batched_8: {r['parallel_vs_bare_batched_8']:.3f}   (target >= 0.85)")
    _quiet(b)
    r.update(_batch_noise(b, prompt, k))
    b.out(f"batch noise, {k} sequences alone vs in one batch over {r['batch_noise_steps_8']} sequence-steps: KL max "
          f"{r['batch_noise_kl_max_8']:.2g}, median {r['batch_noise_kl_median_8']:.2g} nats; argmax differs "
          f"{r['batch_noise_argmax_flips_8']} times")

    question = _shift_question()
    wide = LocalVSEngine(b.model, n_ctx=512, n_threads=b.threads, max_parallel=k)
    one = LocalVSEngine(b.model, n_ctx=512, n_threads=b.threads, max_parallel=1)
    prompt = b.model.tokenize(question)
    par, seq, bare, lengths = [], [], [], []
    try:
        for rep in range(b.repeats + 1):
            seeds = [1000 * rep + i for i in range(k)]
            t0 = time.perf_counter()
            got = _answers(wide, question, SAMPLE_SETTINGS, seeds, "completion", None)
            t_par = time.perf_counter() - t0
            t0 = time.perf_counter()
            alone = _answers(one, question, SAMPLE_SETTINGS, seeds, "completion", None)
            t_seq = time.perf_counter() - t0
            lens = _answers_tokens(got)
            run = bare_decode(wide.context, prompt, lens)
            if rep:
                par.append(sum(lens) / t_par)
                seq.append(sum(_answers_tokens(alone)) / t_seq)
                bare.append(run.tokens / run.seconds)
                lengths.extend(lens)
    finally:
        wide.close()
        one.close()
    r.update({"parallel_work_shift": f"{k} sampled answers of the shift-lab question {question!r} (temperature "
                                     f"{SAMPLE_SETTINGS.temperature}, at most {SAMPLE_SETTINGS.max_tokens} tokens)",
              "parallel_answer_tokens_mean_shift": round(sum(lengths) / max(1, len(lengths)), 2),
              "parallel_tps_8_shift": round(_median(par), 2), "sequential_tps_8_shift": round(_median(seq), 2),
              "bare_batched_tps_8_shift": round(_median(bare), 2),
              "parallel_tps_ratio_8_shift": _ratio(_median(par), _median(seq)),
              "parallel_vs_bare_batched_8_shift": _ratio(_median(par), _median(bare))})
    b.out(f"{k} shift-lab answers (mean {r['parallel_answer_tokens_mean_shift']} tokens, prompt evaluated once in "
          f"parallel, {k} times one at a time): parallel {r['parallel_tps_8_shift']:.2f}, one at a time "
          f"{r['sequential_tps_8_shift']:.2f}, bare batched {r['bare_batched_tps_8_shift']:.2f} tokens/s; ratios "
          f"{r['parallel_tps_ratio_8_shift']:.3f} and {r['parallel_vs_bare_batched_8_shift']:.3f}")
    return r


def _grammar(b: _Bench) -> dict:
    from app.labs.vs.engine import LocalVSEngine
    from app.core.session import GenerationSession
    from app.labs.vs.prompts import build_request

    req = build_request("VS-Standard", "Write a one-sentence story about a lighthouse.", 5)
    settings = SamplerSettings(temperature=0.7, top_k=0, top_p=1.0, min_p=0.0, max_tokens=256)  # the VS lab's
    vs = LocalVSEngine(b.model, n_ctx=1024, n_threads=b.threads, max_parallel=1)
    held, free, lengths = [], [], []
    try:
        for r in range(b.repeats + 1):
            ans = vs.generate(text=req.text, schema=req.json_schema, settings=settings, seed=r)
            fin = ans.trace["finished"]
            n = int(fin["n_tokens"])
            session = GenerationSession(vs.one(), req.text, settings.replace(max_tokens=n, seed=r),
                                        banned_tokens=[b.eos])
            for _item in session.run():
                pass
            if r and n:
                held.append(float(fin["tokens_per_s"]))
                free.append(session.finished.tokens_per_s)
                lengths.append(n)
    finally:
        vs.close()
    r = {"grammar_tps": round(_median(held), 2), "free_tps": round(_median(free), 2),
         "grammar_answer_tokens_mean": round(sum(lengths) / max(1, len(lengths)), 1),
         "grammar_vs_free": _ratio(_median(held), _median(free))}
    b.out(f"VS answer held by the JSON grammar: {r['grammar_tps']:.2f} tokens/s "
          f"({1000 / r['grammar_tps']:.1f} ms per token); free answer of the same length: {r['free_tps']:.2f} "
          f"({1000 / r['free_tps']:.1f} ms)")
    b.out(f"grammar_vs_free: {r['grammar_vs_free']:.3f}   (target >= 0.5)")
    return r


_HEADLESS_RE = re.compile(r"\[(\d+) tokens, ([\d.]+) tokens/s")


def _gui(b: _Bench) -> dict:
    s, a = b.settings, b.a
    n_ctx = max(a.n_ctx, b.n + 64)
    root = Path(__file__).resolve().parent.parent
    headless, gui, redraws = [], [], []
    with tempfile.TemporaryDirectory(prefix="samplescope-bench-") as tmp:
        env = dict(os.environ, QT_QPA_PLATFORM="offscreen")
        for var, sub in (("SAMPLESCOPE_CONFIG_DIR", "config"), ("SAMPLESCOPE_DATA_DIR", "data"),
                         ("SAMPLESCOPE_CACHE_DIR", "cache")):
            env[var] = str(Path(tmp) / sub)  # the user's settings and history stay untouched
        common = ["--model", b.path, "--n-ctx", str(n_ctx), "--threads", str(b.threads)]
        for r in range(b.repeats + 1):
            seed = s.seed + r
            cmd = [sys.executable, "-m", "app", "generate", "--prompt", BENCH_PROMPT, *common,
                   "--temperature", repr(s.temperature), "--top-k", str(s.top_k), "--top-p", repr(s.top_p),
                   "--min-p", repr(s.min_p), "--max-tokens", str(b.n), "--seed", str(seed)]
            res = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=root, timeout=600)
            m = _HEADLESS_RE.search(res.stderr)
            if res.returncode != 0 or m is None:
                raise RuntimeError(f"the headless command failed: {res.stderr[-800:]}")
            cmd = [sys.executable, "-m", "app.bench_gui", "--prompt", BENCH_PROMPT, *common,
                   "--settings", json.dumps(s.to_dict()), "--seeds", str(seed)]
            res2 = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=root, timeout=600)
            lines = [x for x in res2.stdout.splitlines() if x.startswith("{")]
            got = json.loads(lines[-1]) if lines else {"error": res2.stderr[-800:]}
            if "error" in got:
                raise RuntimeError(f"the window's run failed: {got['error']}")
            if r:  # the first pair warms the page cache and is not counted
                headless.append(float(m.group(2)))
                gui.append(float(got["tokens_per_s"][0]))
                redraws.append(int(got["plot_redraws"][0]))
    r = {"gui_tps": round(_median(gui), 2), "headless_tps": round(_median(headless), 2),
         "gui_plot_redraws_per_run": round(_median(redraws), 1),
         "gui_vs_headless": _ratio(_median(gui), _median(headless))}
    b.out(f"Workbench window streaming (offscreen, plots live): {r['gui_tps']:.2f} tokens/s "
          f"({r['gui_plot_redraws_per_run']:.0f} plot redraws per run); headless command: {r['headless_tps']:.2f}")
    b.out(f"gui_vs_headless: {r['gui_vs_headless']:.3f}   (target >= 0.9)")
    return r


def _startup(b: _Bench) -> dict:
    root = Path(__file__).resolve().parent.parent
    opened, built = [], []
    with tempfile.TemporaryDirectory(prefix="samplescope-bench-") as tmp:
        env = dict(os.environ, QT_QPA_PLATFORM="offscreen")
        # as an installed app starts: Python keeps the compiled modules (a shell or CI that sets
        # PYTHONDONTWRITEBYTECODE would make every start compile the app's 130 modules again)
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        for var, sub in (("SAMPLESCOPE_CONFIG_DIR", "config"), ("SAMPLESCOPE_DATA_DIR", "data"),
                         ("SAMPLESCOPE_CACHE_DIR", "cache")):
            env[var] = str(Path(tmp) / sub)
        for r in range(4):  # the first warms the page cache (and writes the compiled modules): not counted
            t0 = time.perf_counter()
            proc = subprocess.Popen([sys.executable, "-m", "app.bench_gui", "--startup"], stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True, env=env, cwd=root)
            assert proc.stdout is not None
            line = proc.stdout.readline()
            shown = time.perf_counter() - t0
            _, err = proc.communicate(timeout=120)
            if not line.startswith("{"):
                raise RuntimeError(f"the window did not open: {err[-800:]}")
            if r:
                opened.append(shown)
                built.append(float(json.loads(line)["construct_s"]))
    res = {"window_open_s": round(_median(opened), 3), "window_construct_s": round(_median(built), 3)}
    b.out(f"window_open_s: {res['window_open_s']:.3f} s from the process start to the window shown, no model "
          f"(the window's construction {res['window_construct_s']:.3f} s of it; target well under 1.5 s)")
    return res


def _remote(b: _Bench) -> dict:
    from app.labs.shift.engine import SAMPLE_SETTINGS, _answers
    from app.labs.vs.engine import RemoteVSEngine
    from backends.local_server import ServerUnavailable, start_local_server
    from backends.open import open_backend
    from backends.sources import RemoteConfig

    question = _shift_question()
    with tempfile.TemporaryDirectory(prefix="samplescope-bench-") as tmp:
        try:
            server = start_local_server(b.path, Path(tmp) / "server.log", alias="bench", n_ctx=2048,
                                        n_threads=b.threads)
        except ServerUnavailable as exc:
            b.out(f"remote: skipped ({exc})")
            return {"remote_concurrency_ratio": None, "remote_skipped": str(exc).splitlines()[0]}
        with server:
            backend = open_backend(RemoteConfig(base_url=server.base_url, model=server.model))
            try:
                wide = RemoteVSEngine(backend, max_parallel=N_PARALLEL)
                one = RemoteVSEngine(backend, max_parallel=1)
                conc, seq = [], []
                for r in range(b.repeats + 1):
                    seeds = [1000 * r + i for i in range(N_PARALLEL)]
                    t0 = time.perf_counter()
                    _answers(wide, question, SAMPLE_SETTINGS, seeds, "completion", None)
                    t_conc = time.perf_counter() - t0
                    t0 = time.perf_counter()
                    _answers(one, question, SAMPLE_SETTINGS, seeds, "completion", None)
                    t_seq = time.perf_counter() - t0
                    if r:
                        conc.append(t_conc)
                        seq.append(t_seq)
            finally:
                backend.close()
    r = {"remote_server": "llama-cpp-python's llama_cpp.server on 127.0.0.1",
         "remote_concurrent_s": round(_median(conc), 3), "remote_sequential_s": round(_median(seq), 3),
         "remote_concurrency_ratio": _ratio(_median(seq), _median(conc))}
    b.out(f"{N_PARALLEL} shift-lab answers from {r['remote_server']}: concurrent {r['remote_concurrent_s']:.2f} s, "
          f"one at a time {r['remote_sequential_s']:.2f} s; remote_concurrency_ratio {r['remote_concurrency_ratio']:.3f}")
    return r


def _long(b: _Bench) -> dict:
    from app.core.session import GenerationSession

    long_n = b.a.long_tokens
    if not long_n:
        return {}
    ctx = b.model.context(n_ctx=long_n + 64, n_threads=b.threads)  # the loaded model, a context of its own
    try:
        rss0 = _rss_mb()
        session = GenerationSession(ctx.sequence(0), BENCH_PROMPT, b.settings.replace(max_tokens=long_n),
                                    banned_tokens=[b.eos])
        steps: list[Step] = []
        t0 = time.perf_counter()
        for item in session.run():
            if isinstance(item, Step):
                steps.append(item)
        dt = time.perf_counter() - t0
        rss1 = _rss_mb()
    finally:
        ctx.close()
    r = {"long_run_tokens": len(steps), "long_run_tps": round(len(steps) / dt, 2),
         "long_run_rss_before_mb": round(rss0, 1), "long_run_rss_after_mb": round(rss1, 1),
         "long_run_rss_growth_mb": round(rss1 - rss0, 1), "peak_rss_mb": round(_peak_mb(), 1)}
    b.out(f"{len(steps)}-token run: {r['long_run_tps']:.2f} tokens/s; resident memory {rss0:.0f} MB with its "
          f"context made -> {rss1:.0f} MB after (+{rss1 - rss0:.1f} MB for the run's steps); process peak "
          f"{r['peak_rss_mb']:.0f} MB")
    return r


def _whatif(b: _Bench) -> dict:
    """``whatif_update_ms``: one live what-if update (a step of a finished run recomputed by our
    chain from its kept logits, as the window does when a knob moves), median over knob changes."""
    from app.core.session import GenerationSession
    from app.core.whatif import LogitMemory, what_if

    memory = LogitMemory()

    def keep(session, index, logits):
        if index == 0:
            memory.start(1, session.prompt_tokens)
        memory.put(1, index, logits)

    b.backend.reset()
    session = GenerationSession(b.backend, BENCH_PROMPT, b.settings.replace(max_tokens=32), banned_tokens=[b.eos],
                                on_logits=keep)
    steps = [x for x in session.run() if isinstance(x, Step)]
    changes = [dict(temperature=t) for t in (0.5, 0.9, 1.3)] + [dict(top_k=k) for k in (5, 0, 100)] \
        + [dict(top_p=p) for p in (0.8, 0.99)] + [dict(min_p=0.1), dict(top_k=0, top_p=1.0, min_p=0.0)]
    times = []
    for r in range(max(2, b.repeats)):
        for i, ch in enumerate(changes):
            idx = (i * 7 + r) % len(steps)
            prompt_tokens, logits = memory.get(1, idx)
            t0 = time.perf_counter()
            what_if(logits, b.settings.replace(**ch), prompt_tokens, steps, idx, b.backend, b.backend.piece)
            times.append((time.perf_counter() - t0) * 1e3)
    times = times[len(changes):]  # the first round warms up
    r = {"whatif_update_ms": round(_median(times), 3), "whatif_update_p90_ms": round(float(np.percentile(times, 90)), 3),
         "whatif_memory_mb_per_step": round(262144 * 4 / 2**20, 2)}
    b.out(f"what-if update: median {r['whatif_update_ms']:.2f} ms, p90 {r['whatif_update_p90_ms']:.2f} ms "
          f"(target: at most 50 ms); logits kept per step {r['whatif_memory_mb_per_step']} MB")
    return r


def lens_off_child(model: str, n_ctx: int, threads: int, n: int, seeds: list[int], use_lens: bool) -> None:
    """The child process of ``lens_off_*`` (``python -c``): the instrumented stream on a fresh
    Workbench context, after computing a 16-step run's layer lens first when ``use_lens`` (the
    head then stays loaded, as in the window), one 128-token run per seed; prints the tokens/s."""
    from app.core.lens import lens_run
    from app.core.session import GenerationSession
    from backends.base import LoadSettings
    from backends.open import open_backend
    from backends.sources import LocalSource

    backend = open_backend(LocalSource(model or None, LoadSettings(n_ctx=n_ctx, n_threads=threads)))
    eos = backend.model.eos_token
    settings = SamplerSettings(max_tokens=n)
    if use_lens:
        session = GenerationSession(backend, BENCH_PROMPT, settings.replace(max_tokens=16), banned_tokens=[eos])
        steps = [x for x in session.run() if isinstance(x, Step)]
        list(lens_run(backend, session.prompt_tokens, [int(x.token_id) for x in steps if x.token_id is not None]))
    out = []
    for seed in seeds:
        backend.reset()
        session = GenerationSession(backend, BENCH_PROMPT, settings.replace(seed=seed), banned_tokens=[eos])
        session.start()
        t0 = time.perf_counter()
        for _item in session.run():
            pass
        out.append(session.finished.n_tokens / (time.perf_counter() - t0))
    print(json.dumps({"tps": out, "callback": backend.context._eval_callback is not None}), flush=True)


def _lens_off(b: _Bench) -> tuple[list[float], list[float], bool]:
    """Tokens/s of the instrumented stream in fresh processes that never used the lens against
    fresh processes that computed a lens first, interleaved (the first pair warms up)."""
    root = Path(__file__).resolve().parent.parent
    before, after, callback = [], [], False
    for r in range(b.repeats + 1):
        for use_lens in (False, True):
            code = (f"from app.bench import lens_off_child; lens_off_child({str(b.a.model or '')!r}, "
                    f"{max(b.a.n_ctx, b.n + 64)}, {b.threads}, {b.n}, [{b.settings.seed + r}], {use_lens})")
            res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=root, timeout=900)
            lines = [x for x in res.stdout.splitlines() if x.startswith("{")]
            if res.returncode != 0 or not lines:
                raise RuntimeError(f"the lens-off child failed: {res.stderr[-800:]}")
            got = json.loads(lines[-1])
            callback = callback or bool(got["callback"])
            if r:
                (after if use_lens else before).extend(got["tps"])
    return before, after, callback


def _lens(b: _Bench) -> dict:
    """The layer lens's figures (see the module docstring)."""
    from app.core.lens import lens_run
    from app.core.session import GenerationSession
    from app.core.teacher_forcing import forced_layers
    from backends.output_head import model_head

    b.backend.reset()
    session = GenerationSession(b.backend, BENCH_PROMPT, b.settings, banned_tokens=[b.eos])
    steps = [x for x in session.run() if isinstance(x, Step)]
    run = [int(s.token_id) for s in steps if s.token_id is not None]
    prompt = session.prompt_tokens
    t0 = time.perf_counter()
    head = model_head(b.model)
    load_s = time.perf_counter() - t0
    step_ms = []
    for i in (0, len(run) // 4, len(run) // 2, 3 * len(run) // 4, len(run) - 1):
        t0 = time.perf_counter()
        list(lens_run(b.backend, prompt, run, indices=[i], head=head))
        step_ms.append((time.perf_counter() - t0) * 1e3)
    run_s = []
    for _ in range(b.repeats):
        t0 = time.perf_counter()
        lenses = list(lens_run(b.backend, prompt, run, head=head))
        run_s.append(time.perf_counter() - t0)
    t0 = time.perf_counter()
    n_eval = sum(1 for _ in forced_layers(b.backend, prompt + run, len(prompt) - 1, prompt_len=len(prompt)))
    eval_s = time.perf_counter() - t0
    before, after, callback = _lens_off(b)
    n = len(lenses)
    r = {"lens_head_load_s": round(load_s, 3), "lens_head_memory_mb": round(head.matrix.nbytes / 2**20, 1),
         "lens_step_ms": round(_median(step_ms), 1), "lens_step_ms_max": round(max(step_ms), 1),
         "lens_run_tokens": n, "lens_run_s": round(_median(run_s), 3),
         "lens_run_ms_per_step": round(_median(run_s) / max(1, n) * 1e3, 1),
         "lens_eval_ms_per_step": round(eval_s / max(1, n_eval) * 1e3, 1),
         "lens_off_tps_before": round(_median(before), 2), "lens_off_tps_after": round(_median(after), 2),
         "lens_off_ratio": _ratio(_median(after), _median(before)),
         "lens_callback_on_workbench_context": callback or b.backend.context._eval_callback is not None}
    b.out(f"output head: {r['lens_head_memory_mb']:.0f} MB as float32, read from the GGUF file in "
          f"{r['lens_head_load_s']:.2f} s (once per model)")
    b.out(f"lens of one step: {r['lens_step_ms']:.0f} ms median (max {r['lens_step_ms_max']:.0f} ms; its prefix "
          "evaluated again and 18 layers projected)")
    b.out(f"lens of a {n}-token run: {r['lens_run_s']:.2f} s ({r['lens_run_ms_per_step']:.0f} ms a step, of which "
          f"{r['lens_eval_ms_per_step']:.0f} ms the evaluation with the layers captured)")
    b.out(f"generation with the lens off: {r['lens_off_tps_before']:.2f} tokens/s in fresh processes that never used "
          f"the lens, {r['lens_off_tps_after']:.2f} in fresh processes after a lens; ratio {r['lens_off_ratio']:.3f} "
          f"(target ~1.0; eval callback on the Workbench's context: {r['lens_callback_on_workbench_context']})")
    return r


_RUN = {"baseline": _baseline, "engine": _engine, "parallel": _parallel, "grammar": _grammar, "whatif": _whatif,
        "startup": _startup, "gui": _gui, "remote": _remote, "long": _long, "lens": _lens}


def run_bench(a) -> dict:
    skip = {x.strip() for part in (getattr(a, "skip", None) or []) for x in part.split(",") if x.strip()}
    unknown = skip - set(SECTIONS)
    if unknown:
        raise ValueError(f"unknown bench section(s) {', '.join(sorted(unknown))}; choose from {', '.join(SECTIONS)}")
    b = _Bench(a)
    s = b.settings
    from backends.vec_kernels import kernel_note

    result = {"model": b.path, "new_tokens": b.n, "repeats": b.repeats, "threads": b.threads,
              "n_gpu_layers": a.n_gpu_layers, "cpu_count": os.cpu_count(), "analysis_kernels": kernel_note()}
    b.out(f"model {b.path}\n{b.n} new tokens per run, {b.repeats} repeats after a warm-up, {b.threads} threads, "
          f"settings: temperature {s.temperature}, top-k {s.top_k}, top-p {s.top_p}, min-p {s.min_p}; "
          f"EOS suppressed where lengths must match; the full-vocabulary sums by {result['analysis_kernels']}")
    sections = ("lens",) if getattr(a, "lens", False) else SECTIONS
    try:
        for name in sections:
            if name in skip:
                continue
            b.out(f"-- {name}")
            t0 = time.perf_counter()
            result.update(_RUN[name](b))
            result[f"{name}_seconds"] = round(time.perf_counter() - t0, 1)
            gc.collect()
    finally:
        b.close()
    return result
