"""Command line: ``samplescope`` (the window), ``samplescope generate``, ``vs``, ``align``, ``shift``,
``compare`` and ``bench``.

Owns: argument parsing and the headless commands. ``generate`` runs the same
``GenerationSession`` as the window and prints one JSON object per step. Runs on the main
thread; Qt is imported only when the window is launched.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import signal
import sys
import threading
from typing import Sequence

from app.core.streams import drain
from backends.base import BackendError, Finished, LoadSettings, SamplerSettings, Step, require_prompt
from backends.text import clean_text

__all__ = ["main", "build_parser"]


def _add_sampler_args(p: argparse.ArgumentParser) -> None:
    d = SamplerSettings()
    p.add_argument("--temperature", type=float, default=d.temperature, help="0 = greedy")
    p.add_argument("--top-k", type=int, default=d.top_k, help="0 = off")
    p.add_argument("--top-p", type=float, default=d.top_p, help="1 = off")
    p.add_argument("--min-p", type=float, default=d.min_p, help="0 = off")
    p.add_argument("--typical-p", type=float, default=d.typical_p, help="1 = off")
    p.add_argument("--repeat-penalty", type=float, default=d.repeat_penalty, help="1 = off")
    p.add_argument("--frequency-penalty", type=float, default=d.frequency_penalty)
    p.add_argument("--presence-penalty", type=float, default=d.presence_penalty)
    p.add_argument("--penalty-last-n", type=int, default=d.penalty_last_n)
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--max-tokens", type=int, default=d.max_tokens)
    p.add_argument("--stop", action="append", default=[], help="stop string (repeatable)")
    p.add_argument("--top-n", type=int, default=d.top_n, help="alternatives recorded per step")


def _add_model_args(p: argparse.ArgumentParser, remote: bool = False) -> None:
    p.add_argument("--model", help="GGUF file (default: the embedded Gemma 3 270M); with --base-url, "
                   "the server's model name" if remote else "GGUF file (default: the embedded Gemma 3 270M)")
    if remote:
        p.add_argument("--base-url", help="an OpenAI-compatible server, e.g. http://127.0.0.1:8080/v1")
        p.add_argument("--api-key-env", help="name of the environment variable holding the API key")
        p.add_argument("--keyring-entry", help="name of the system-keyring entry holding the API key")
        p.add_argument("--connect-timeout", type=float, default=5.0, help="seconds to open the connection")
        p.add_argument("--chat", action="store_true", help="use /v1/chat/completions (the prompt is the user message)")
        p.add_argument("--system", help="system message in --chat mode")
        p.add_argument("--read-timeout", type=float, default=60.0)
    lo = LoadSettings.LIMITS
    p.add_argument("--n-ctx", type=int, default=2048,
                   help=f"context size in tokens, {LoadSettings.MIN_CTX}..{lo['n_ctx'][1]:,} (0 = the model's training context)")
    p.add_argument("--n-gpu-layers", type=int, default=0, help="layers offloaded to the GPU (-1 = all, 0 = none)")
    p.add_argument("--threads", type=int, default=0, help=f"CPU threads, up to {lo['n_threads'][1]} (0 = automatic)")
    p.add_argument("--parallel", type=int, default=0, metavar="N",
                   help="the most generations at once for N-sample work: sequences of one batch locally, requests "
                   "to a server (0 = automatic: up to 8 locally, 4 remotely; 1 = one at a time, exact)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="samplescope", description="Look inside how language models pick their words.")
    sub = parser.add_subparsers(dest="command")
    gui = sub.add_parser("gui", help="open the window (the default)")
    gui.add_argument("--prompt", help="start with this prompt in the editor")
    gui.add_argument("--run", action="store_true", help="generate as soon as the model is ready")
    gui.add_argument("--step-mode", action="store_true", help="start in step mode (classroom demos)")
    gui.add_argument("--lab", choices=["workbench", "vs", "shift", "align", "decoding"],
                     help="open on this tab (the workbench by default)")
    g = sub.add_parser("generate", help="generate headless and print every step")
    g.add_argument("--prompt", required=True)
    _add_model_args(g, remote=True)
    _add_sampler_args(g)
    g.add_argument("--json", action="store_true", help="one JSON object per step, then a summary line")
    v = sub.add_parser("vs", help="Verbalized Sampling: compare Direct against a VS method headless")
    v.add_argument("--prompt", required=True)
    v.add_argument("--method", default="VS-Standard",
                   choices=["Sequence", "Multi-turn", "VS-Standard", "VS-CoT", "VS-Multi"])
    v.add_argument("--k", type=int, default=5, help="candidates per VS run")
    v.add_argument("--n", type=int, default=30, help="runs per arm")
    v.add_argument("--t", type=float, default=None, help="tails threshold: ask for every probability below t")
    v.add_argument("--tau", type=float, default=None, help="post-filter: draw only among candidates with p >= tau")
    v.add_argument("--chat-style", action="store_true", help="send messages (chat) instead of a completion text")
    v.add_argument("--reference", choices=["us-states"], help="enumerable question: precision, coverage-N, KL")
    v.add_argument("--direct-max-tokens", type=int, default=None, help="token limit of the Direct answers")
    _add_model_args(v, remote=True)
    _add_sampler_args(v)
    v.set_defaults(temperature=0.7, top_p=1.0, top_k=0, min_p=0.0, max_tokens=256)
    v.add_argument("--json", action="store_true", help="one JSON record per run, then a summary line")
    v.add_argument("--traces", action="store_true",
                    help="with --json: add every generation's step records (the shape of generate --json, "
                    "sampler stages included) to the records (key trace / traces)")
    al = sub.add_parser("align", help="P_token vs P_task: how a model's next-token probabilities follow a "
                        "stated distribution, step by step (D-model or E-model)",
                        description="The model writes R lists of N draws from a stated distribution; at every "
                        "decision step P_token over the outcomes is measured against it. Sampling defaults to "
                        "the model's own distribution (temperature 1, no top-k/top-p/min-p); --max-tokens 0 "
                        "(the default) means 6 per draw + 16.")
    which = al.add_mutually_exclusive_group()
    which.add_argument("--preset", choices=["extreme", "flat"],
                       help="the paper's task distributions (default: extreme)")
    which.add_argument("--task", metavar="FILE.json", help='own task: {"name": ..., "outcomes": {"red": 0.5, ...}}')
    al.add_argument("--draws", type=int, default=20, help="draws per run (N)")
    al.add_argument("--runs", type=int, default=3, help="runs (R); run r uses seed + r")
    al.add_argument("--style", choices=["completion", "chat"], default=None,
                    help="completion (default) or chat (the model's chat template; --chat is the same)")
    tmpl = al.add_mutually_exclusive_group()
    tmpl.add_argument("--template", help="prompt template with {n}, {distribution}, {outcomes}")
    tmpl.add_argument("--template-file", help="read the prompt template from this file")
    al.add_argument("--threshold-tv", type=float, default=None,
                    help="verdict: mean TV(P_token, P_task) at or below which the model is close (default 0.25)")
    al.add_argument("--threshold-variability", type=float, default=None,
                    help="verdict: mean TV between consecutive steps at or below which it is steady (default 0.15)")
    al.add_argument("--threshold-mass", type=float, default=None,
                    help="verdict: warn when the mean mass outside the outcomes is above this (default 0.5)")
    _add_model_args(al, remote=True)
    _add_sampler_args(al)
    al.set_defaults(temperature=1.0, top_k=0, top_p=1.0, min_p=0.0, max_tokens=0)
    al.add_argument("--json", action="store_true",
                    help="one JSON record per decision step and per run, then a summary line")
    al.add_argument("--traces", action="store_true",
                    help="with --json: add every generation's step records (the shape of generate --json, "
                    "sampler stages included) to the records (key trace / traces)")
    sh = sub.add_parser("shift", help="sampled vs ideal: does a sampled value drift from the average toward "
                        "an ideal? (S = A + alpha_hat (I - A) per concept)",
                        description="Asks every concept's average A, ideal I and a sample S in fresh contexts. "
                        "exact (local models, the default there): the distribution of every numeric answer from "
                        "the token tree; sampled (the default for --base-url): the mean of N answers.")
    sh.add_argument("--concepts", default="builtin", help="'builtin' (48 concepts, 8 domains) or a CSV file "
                    "with columns id,domain,name,unit,question,notes")
    sh.add_argument("--limit", type=int, default=0, help="only the first N concepts (0 = all)")
    sh.add_argument("--mode", choices=["exact", "sampled"], default=None)
    sh.add_argument("--samples", type=int, default=10, help="sampled mode: answers per question")
    sh.add_argument("--min-mass", type=float, default=1e-3, help="exact mode: do not expand branches below this")
    sh.add_argument("--style", choices=["completion", "chat"], default=None,
                    help="completion (default; base models) or chat (--chat is the same)")
    _add_model_args(sh, remote=True)
    _add_sampler_args(sh)
    sh.set_defaults(temperature=0.8, top_k=0, top_p=1.0, min_p=0.0, max_tokens=12, seed=0)
    sh.add_argument("--json", action="store_true", help="one JSON record per concept, then a summary line")
    sh.add_argument("--traces", action="store_true",
                    help="with --json: add every generation's step records (the shape of generate --json, "
                    "sampler stages included) to the records (key trace / traces)")
    cp = sub.add_parser("compare", help="decoding strategies side by side on one prompt, in lockstep (greedy, "
                        "beam search, top-k, top-p, min-p, temperature, typical)",
                        description="Every sampled column uses the same seed and differs from plain sampling "
                        "at temperature 1 by the one knob it names (temp:T only changes the temperature); "
                        "step k of every column is drawn before step k+1. Beam search (local models only) ranks "
                        "beams by their summed log-probabilities and is shown as its best beam.")
    cp.add_argument("--prompt", required=True)
    cp.add_argument("--strategies", default="greedy,beam:4,top-k:40,top-p:0.9",
                    help="comma-separated: greedy, beam:W[:lp=ALPHA], top-k:K, top-p:P, min-p:P, temp:T, typical:P")
    cp.add_argument("--max-tokens", type=int, default=24)
    cp.add_argument("--seed", type=int, default=42, help="the seed of every sampled column")
    cp.add_argument("--top-n", type=int, default=5, help="alternatives recorded per step")
    cp.add_argument("--stop", action="append", default=[], help="stop string (repeatable)")
    cp.add_argument("--beam-method", choices=["auto", "sequences", "prefix"], default="auto",
                    help="sequences: llama.cpp sequences sharing the prompt in one KV cache (the default); prefix: "
                    "one sequence with prefix reuse")
    cp.add_argument("--beam-batched", action="store_true",
                    help="decode all live beams in one batch per step: faster, but llama.cpp's batch kernels move "
                    "the beams' log-probabilities slightly (by default each beam is decoded alone: exact)")
    _add_model_args(cp, remote=True)
    cp.add_argument("--json", action="store_true", help="one JSON record per column step as it arrives, a fork "
                    "record, then a summary line")
    cp.add_argument("--traces", action="store_true",
                    help="with --json: add every generation's step records (the shape of generate --json, "
                    "sampler stages included) to the records (key trace / traces)")
    b = sub.add_parser("bench", help="measure what the instrumentation costs against llama.cpp's own speed "
                       "(docs/BENCHMARKS.md)")
    _add_model_args(b)
    b.add_argument("--tokens", type=int, default=128, help="new tokens per measured run (>= 128)")
    b.add_argument("--repeats", type=int, default=2)
    b.add_argument("--long-tokens", type=int, default=2048, help="length of the peak-memory run (0 = skip)")
    b.add_argument("--skip", action="append", default=[], metavar="SECTIONS",
                   help="leave sections out (comma-separated, repeatable): baseline, engine, parallel, grammar, gui, "
                   "remote, long")
    b.add_argument("--json", action="store_true")
    return parser


def settings_from_args(a: argparse.Namespace) -> SamplerSettings:
    return SamplerSettings(
        temperature=a.temperature,
        top_k=a.top_k,
        top_p=a.top_p,
        min_p=a.min_p,
        typical_p=a.typical_p,
        repeat_penalty=a.repeat_penalty,
        frequency_penalty=a.frequency_penalty,
        presence_penalty=a.presence_penalty,
        penalty_last_n=a.penalty_last_n,
        seed=a.seed,
        max_tokens=a.max_tokens,
        stop=tuple(a.stop),
        top_n=a.top_n,
    )


def load_settings_from_args(a: argparse.Namespace) -> LoadSettings:
    """``--n-ctx``, ``--n-gpu-layers`` and ``--threads``, checked (``ValueError`` says what is wrong)."""
    ls = LoadSettings(n_ctx=a.n_ctx, n_gpu_layers=a.n_gpu_layers, n_threads=a.threads)
    ls.validate()
    return ls


def load_backend(a: argparse.Namespace, *, n_ctx: int | None = None):
    """The local backend of ``--model`` (default: the embedded model) and the load flags."""
    from dataclasses import replace

    from backends.open import open_backend
    from backends.sources import LocalSource

    ls = load_settings_from_args(a)
    return open_backend(LocalSource(a.model or None, replace(ls, n_ctx=n_ctx or ls.n_ctx)))


@contextlib.contextmanager
def interruptible(enabled: bool = True):
    """A cancel event that the first Ctrl+C sets: the run stops at the next token, keeps what
    it produced and its summary is still printed (the command then exits with 130). A second
    Ctrl+C raises ``KeyboardInterrupt`` at once. Off the main thread (tests), or not
    ``enabled`` (a command that cannot stop early), it is a plain event and Ctrl+C stays
    Python's ``KeyboardInterrupt``."""
    cancel = threading.Event()
    if not enabled or threading.current_thread() is not threading.main_thread():
        yield cancel
        return

    def on_sigint(signum, frame):  # noqa: ARG001
        if cancel.is_set():
            raise KeyboardInterrupt
        cancel.set()
        print("\nsamplescope: stopping after the current token (Ctrl+C again to quit at once)",
              file=sys.stderr, flush=True)

    previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        yield cancel
    finally:
        signal.signal(signal.SIGINT, previous)


class _UsageError(ValueError):
    """Bad command-line input: exit code 2."""


def remote_backend(a: argparse.Namespace):
    """The OpenAI-compatible backend of ``--base-url`` (key from ``--api-key-env`` or the
    keyring entry ``--keyring-entry``; ``--connect-timeout``, ``--read-timeout``)."""
    from backends.open import open_backend
    from backends.sources import RemoteConfig

    config = RemoteConfig(a.base_url, a.model or "", api_key_env=a.api_key_env or "",
                          keyring_entry=getattr(a, "keyring_entry", None) or "",
                          connect_timeout=getattr(a, "connect_timeout", 5.0), read_timeout=a.read_timeout,
                          chat=bool(getattr(a, "chat", False)))
    try:
        config.validate()
    except ValueError as exc:
        raise _UsageError(str(exc)) from None
    if a.api_key_env:
        from backends.secrets import resolve_api_key

        if not resolve_api_key(a.api_key_env, None):
            raise _UsageError(f"the environment variable {a.api_key_env} is not set.")
    return open_backend(config)


def _json_default(x):
    if isinstance(x, float) and not math.isfinite(x):
        return None
    raise TypeError(type(x))


def _dumps(obj) -> str:
    """One JSON line; non-ASCII text is written as is when the terminal takes UTF-8, else escaped."""
    encoding = (getattr(sys.stdout, "encoding", None) or "").lower().replace("-", "")
    return json.dumps(obj, ensure_ascii=encoding != "utf8", allow_nan=False, default=_json_default)


def _print_items(items, as_json: bool) -> Finished | None:
    """Print each ``Step`` (a JSON line, or its text) as it arrives; return the ``Finished``."""
    fin: Finished | None = None
    for item in items:
        if isinstance(item, Step):
            if as_json:
                print(_dumps(_clean(item.to_dict())), flush=True)
            else:
                print(item.token, end="", flush=True)
        else:
            fin = item
    return fin


def cmd_generate(a: argparse.Namespace) -> int:
    from app.core.session import GenerationSession

    settings = settings_from_args(a)
    try:
        settings.validate()
    except ValueError as exc:
        print(f"samplescope: {exc}", file=sys.stderr)
        return 2
    if getattr(a, "base_url", None):
        return _generate_remote(a, settings)
    session = None
    try:
        backend = load_backend(a)
        session = GenerationSession(backend, a.prompt, settings)
        fin = _print_items(session.run(a.cancel), a.json)
    except BackendError as exc:
        print(f"samplescope: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # a second Ctrl+C: end now, with what was produced
        if session is None:
            return 130
        fin = session.cancel()
    summary = {
        "text": fin.text,
        "n_tokens": fin.n_tokens,
        "tokens_per_s": round(fin.tokens_per_s, 2),
        "finish_reason": fin.reason,
        "prompt_tokens": fin.prompt_tokens,
        "model": backend.info.name,
        "model_path": backend.info.path,
        "settings": settings.to_dict(),
    }
    if a.json:
        print(_dumps({"summary": summary}))
    else:
        print(f"\n[{fin.n_tokens} tokens, {fin.tokens_per_s:.1f} tokens/s, {fin.reason}]", file=sys.stderr)
    return 130 if fin.reason == "cancelled" else 0


def _generate_remote(a: argparse.Namespace, settings: SamplerSettings) -> int:
    """``generate --base-url``: the same per-step JSON from an OpenAI-compatible server;
    ``token_id`` is null where the server gives none and ``estimated`` marks values computed
    from the top-N alternatives only."""
    try:
        backend = remote_backend(a)
    except _UsageError as exc:
        print(f"samplescope: {exc}", file=sys.stderr)
        return 2
    except (BackendError, ValueError) as exc:
        print(f"samplescope: {exc}", file=sys.stderr)
        return 1
    messages = None
    if a.chat:
        messages = ([{"role": "system", "content": a.system}] if a.system else []) + [
            {"role": "user", "content": a.prompt}]
    fin: Finished | None = None
    steps: list[Step] = []

    def collect(items):
        for item in items:
            if isinstance(item, Step):
                steps.append(item)
            yield item

    try:
        try:
            items = backend.stream(None if a.chat else a.prompt, settings, messages=messages, cancel=a.cancel,
                                   on_wait=lambda left, why: print(f"[{why}: retrying in {left:.0f} s]",
                                                                   file=sys.stderr))
            fin = _print_items(collect(items), a.json)
        except KeyboardInterrupt:  # a second Ctrl+C: the stream is abandoned, its steps kept
            a.cancel.set()
        finally:
            backend.close()
    except BackendError as exc:
        print(f"samplescope: {exc}", file=sys.stderr)
        return 1
    summary = {
        "text": fin.text if fin else "".join(s.token for s in steps),
        "n_tokens": fin.n_tokens if fin else len(steps),
        "tokens_per_s": round(fin.tokens_per_s, 2) if fin else 0.0,
        "finish_reason": fin.reason if fin else "cancelled",
        "message": fin.message if fin else "Stopped by the user; the partial output is kept.",
        "model": a.model,
        "base_url": a.base_url,
        "chat": bool(a.chat),
        "estimated": True,
        "settings": settings.to_dict(),
    }
    if a.json:
        print(_dumps({"summary": summary}))
    else:
        print(f"\n[{summary['n_tokens']} tokens, {summary['finish_reason']}]", file=sys.stderr)
    return 130 if summary["finish_reason"] == "cancelled" else 0


def _print_records(gen, as_json: bool, print_row, traces: bool = False) -> object:
    """Run a lab generator to its end, printing each record as a JSON line (``as_json``; the
    generations' step records only with ``traces``) or with ``print_row``; return its summary."""
    return drain(gen, lambda rec: print(_dumps(_clean(_traced(rec, traces))), flush=True) if as_json else print_row(rec))


def _traced(obj, keep: bool):
    """``obj`` without its generations' step records (the keys ``trace`` and ``traces``, at any
    depth) unless ``keep`` (``--traces``)."""
    if keep:
        return obj
    if isinstance(obj, dict):
        return {k: _traced(v, False) for k, v in obj.items() if k not in ("trace", "traces")}
    if isinstance(obj, list):
        return [_traced(v, False) for v in obj]
    return obj


def _clean(d):
    """Replace non-finite floats (JSON has none) with None, recursively."""
    if isinstance(d, dict):
        return {k: _clean(v) for k, v in d.items()}
    if isinstance(d, list):
        return [_clean(v) for v in d]
    if isinstance(d, float) and not math.isfinite(d):
        return None
    return d


def cmd_vs(a: argparse.Namespace) -> int:
    """``samplescope vs``: Direct against a VS method, one record per run as it arrives."""
    from app.core.experiments.vs import LocalVSEngine, RemoteVSEngine, compare

    settings = settings_from_args(a)
    try:
        settings.validate()
        if a.k < 1 or a.n < 1:
            raise ValueError("--k and --n must be at least 1")
    except ValueError as exc:
        print(f"samplescope: {exc}", file=sys.stderr)
        return 2
    reference = None
    if a.reference == "us-states":
        from app.core.reference_data import load_us_state_reference

        reference = load_us_state_reference()
    cancel = a.cancel

    def record(r: dict) -> None:
        if a.json:
            print(_dumps(_clean(_traced(r, a.traces))), flush=True)
        else:
            shown = r["drawn"] if r["drawn"] is not None else f"[{r['error']}]"
            print(f"{r['arm']:>6} #{r['run'] + 1}: {shown}", flush=True)

    engine = local = None
    try:
        if getattr(a, "base_url", None):
            backend = remote_backend(a)
            engine = RemoteVSEngine(backend, backend.probe(), max_parallel=a.parallel or 4)
        else:
            local = load_backend(a)
            engine = LocalVSEngine(local.model, n_ctx=a.n_ctx, n_threads=a.threads or None,
                                   max_parallel=a.parallel or None)
        try:
            result = compare(engine, a.prompt, a.method, k=a.k, n=a.n, t=a.t, tau=a.tau, settings=settings,
                             seed=a.seed, cancel=cancel, on_record=record, reference=reference,
                             reference_name=a.reference, style="chat" if a.chat_style else "completion",
                             direct_max_tokens=a.direct_max_tokens)
        except KeyboardInterrupt:
            cancel.set()
            return 130
    except _UsageError as exc:
        print(f"samplescope: {exc}", file=sys.stderr)
        return 2
    except (BackendError, ValueError) as exc:
        print(f"samplescope: {exc}", file=sys.stderr)
        return 1
    finally:
        if engine is not None:
            engine.close()
        if local is not None:
            local.close()
    summary = {**result.summary(), "model": engine.name, "settings": settings.to_dict()}
    if a.json:
        print(_dumps(_clean(_traced({"summary": summary}, a.traces))))
    else:
        print(json.dumps(_clean(summary), indent=2, ensure_ascii=False))
    return 0


def _align_inputs(a: argparse.Namespace):
    """The task, template, thresholds and settings of ``align``; ValueError says what is wrong."""
    from app.core.align_measures import Thresholds
    from app.core.align_task import PRESETS, render_prompt, task_from_json

    task = task_from_json(a.task) if a.task else PRESETS[a.preset or "extreme"]
    template = None
    if a.template_file:
        try:
            with open(a.template_file, encoding="utf-8") as f:
                template = f.read()
        except OSError as exc:
            raise ValueError(f"cannot read the template file {a.template_file!r}: {exc.strerror or exc}") from exc
    elif a.template is not None:
        template = a.template
    style = a.style or ("chat" if a.chat else "completion")
    if isinstance(a.runs, bool) or a.runs < 1:
        raise ValueError(f"--runs must be at least 1, got {a.runs}")
    if a.max_tokens < 0:
        raise ValueError(f"--max-tokens must be at least 1 (0 = automatic), got {a.max_tokens}")
    render_prompt(task, a.draws, style, template)  # checks --draws and the template
    d = Thresholds()
    thresholds = Thresholds(
        max_mean_tv=d.max_mean_tv if a.threshold_tv is None else a.threshold_tv,
        max_variability=d.max_variability if a.threshold_variability is None else a.threshold_variability,
        warn_mass_outside=d.warn_mass_outside if a.threshold_mass is None else a.threshold_mass)
    settings = settings_from_args(a).replace(max_tokens=a.max_tokens or 128)
    settings.validate()
    if a.seed + a.runs - 1 > 2**32 - 1:
        raise ValueError("--seed plus --runs goes past the largest seed (2**32 - 1)")
    return task, template, style, thresholds, settings


def _fmt(x, spec: str = ".3f") -> str:
    return "-" if x is None else format(x, spec)


def _print_align_record(r: dict, outcomes: Sequence[str]) -> None:
    if r["kind"] == "step":
        p = "  ".join(f"{o}:{_fmt(v, '.2f')}" for o, v in zip(outcomes, r["p_token"]))
        print(f"run {r['run'] + 1} step {r['step']:>3}  {p}  | outside {_fmt(r['mass_outside'], '.2f')}"
              f"  TV {_fmt(r['tv'])}  " + (f"drew {r['drawn']}" if r["drawn"] is not None else f"wrote {r['item']!r}"),
              flush=True)
    else:
        print(f"run {r['run'] + 1}: {r['n_draws']} draws in {r['n_steps']} steps ({r['finish_reason']}); "
              f"mean TV {_fmt(r['mean_tv'])}, variability {_fmt(r['mean_variability'])}, "
              f"P_result TV {_fmt(r['result_tv'])} -> {r['verdict']['label']}", flush=True)
        for problem in r["problems"]:
            print(f"  note: {problem}", flush=True)


def cmd_align(a: argparse.Namespace) -> int:
    """``samplescope align``: P_token at every decision step of R lists of N draws, then the verdict."""
    from app.core.experiments.align import iter_align

    try:
        task, template, style, thresholds, settings = _align_inputs(a)
    except ValueError as exc:
        print(f"samplescope: {exc}", file=sys.stderr)
        return 2
    cancel = a.cancel
    backend = None
    try:
        if getattr(a, "base_url", None):
            backend = remote_backend(a)
            backend.probe()
            model_name = backend.model or a.base_url
        else:
            backend = load_backend(a)
            model_name = backend.info.name
        gen = iter_align(backend, task, a.draws, a.runs, settings, a.seed, style=style, template=template,
                         max_parallel=a.parallel or 8,
                         cancel=cancel, max_tokens=a.max_tokens or None, thresholds=thresholds, system=a.system)
        try:
            result = _print_records(gen, a.json, lambda rec: _print_align_record(rec, task.outcomes), a.traces)
        except KeyboardInterrupt:
            cancel.set()
            return 130
    except ValueError as exc:  # e.g. chat style on a model without a chat template
        print(f"samplescope: {exc}", file=sys.stderr)
        return 2
    except BackendError as exc:
        print(f"samplescope: {exc}", file=sys.stderr)
        return 1
    finally:
        if backend is not None:
            backend.close()
    result = {**result, "model": model_name}
    if a.json:
        print(_dumps(_clean(_traced({"summary": result}, a.traces))))
    else:
        v = result["verdict"]
        print(f"\n{model_name} on {task.name!r}: {v['label']}")
        for reason in v["reasons"]:
            print(f"  {reason}")
        th = result["thresholds"]
        print(f"  thresholds: mean TV <= {th['max_mean_tv']:g}, variability <= {th['max_variability']:g}, "
              f"mass-outside warning above {th['warn_mass_outside']:g}")
        if result["diversity_across_runs"] is not None:
            print(f"  diversity across runs (Hamming): {result['diversity_across_runs']:.3f}")
    return 0


def cmd_bench(a: argparse.Namespace) -> int:
    from app.bench import run_bench

    try:
        result = run_bench(a)
    except ValueError as exc:  # an unknown section
        print(f"samplescope: {exc}", file=sys.stderr)
        return 2
    except (BackendError, RuntimeError) as exc:
        print(f"samplescope: {exc}", file=sys.stderr)
        return 1
    if a.json:
        print(_dumps(result))
    return 0


def _print_shift_record(rec: dict) -> None:
    f = lambda x: "-" if x is None else f"{x:9.3g}"  # noqa: E731
    why = "kept" if rec["kept"] else rec["reason"]
    print(f"{rec['name'][:44]:<44} {f(rec['A'])} {f(rec['I'])} {f(rec['S'])} {f(rec['alpha_hat'])}  {why}",
          flush=True)


def cmd_shift(a: argparse.Namespace) -> int:
    """``samplescope shift``: A, I and S per concept as they arrive, then the set's statistics."""
    from dataclasses import replace

    from app.core.experiments.shift import LocalShiftEngine, RemoteShiftEngine, iter_shift
    from app.core.shift_concepts import BUILTIN_CONCEPTS, ConceptFileError, concepts_from_csv

    remote = bool(getattr(a, "base_url", None))
    mode = a.mode or ("sampled" if remote else "exact")
    style = a.style or ("chat" if a.chat else "completion")
    try:
        settings = settings_from_args(a)
        if not settings.stop:
            settings = replace(settings, stop=("\n",))
        settings.validate()
        if remote and mode == "exact":
            raise _UsageError("--mode exact needs a local model (the next-token probabilities of every digit); "
                              "use --mode sampled with --base-url")
        if a.samples < 1 or a.limit < 0 or not 0 < a.min_mass < 1:
            raise _UsageError("--samples must be at least 1, --limit at least 0 and --min-mass in (0, 1)")
        if a.concepts == "builtin":
            concepts = list(BUILTIN_CONCEPTS)
        else:
            concepts, problems = concepts_from_csv(a.concepts)
            for problem in problems:
                print(f"samplescope: {a.concepts}: {problem}", file=sys.stderr)
        concepts = concepts[: a.limit] if a.limit else concepts
        if not concepts:
            raise _UsageError("no concept to run")
    except (ValueError, ConceptFileError, OSError) as exc:
        print(f"samplescope: {exc}", file=sys.stderr)
        return 2
    cancel = a.cancel
    engine = None
    try:
        if remote:
            engine = RemoteShiftEngine(remote_backend(a), max_parallel=a.parallel or 4)
        else:
            engine = LocalShiftEngine(load_backend(a), max_parallel=a.parallel or None)
        gen = iter_shift(engine, concepts, mode=mode, samples=a.samples, settings=settings, seed=a.seed,
                         style=style, min_mass=a.min_mass, cancel=cancel)
        if not a.json:
            print(f"{'concept':<44} {'A':>9} {'I':>9} {'S':>9} {'alpha_hat':>9}  kept / why dropped")
        try:
            summary = _print_records(gen, a.json, _print_shift_record, a.traces)
        except KeyboardInterrupt:
            cancel.set()
            return 130
    except _UsageError as exc:
        print(f"samplescope: {exc}", file=sys.stderr)
        return 2
    except (BackendError, ValueError) as exc:
        print(f"samplescope: {exc}", file=sys.stderr)
        return 1
    finally:
        if engine is not None:
            engine.close()
    if a.json:
        print(_dumps(_clean(_traced({"summary": summary}, a.traces))))
    else:
        frac = summary["fraction"]
        print(f"\n{summary['n_used']} of {summary['n_total']} concepts used; alpha_hat > 0 for "
              f"{summary['n_positive']}" + (f" ({100 * frac:.1f}%)" if frac is not None else "")
              + f"; p = {summary['p_one_sided']} one-sided, {summary['p_two_sided']} two-sided; r = {summary['r']}")
        for d in summary["dropped"]:
            print(f"  dropped {d['concept_id']}: {d['reason']}")
    return 0


def _cell(text: str, width: int) -> str:
    shown = text.replace("\n", "\\n").replace("\t", "\\t")
    return (shown if len(shown) <= width else shown[: width - 1] + "~").ljust(width)


def _print_compare_row(k: int, row: dict[int, dict], n_cols: int, width: int) -> None:
    cells = []
    for c in range(n_cols):
        r = row.get(c)
        if r is None:
            cells.append(" " * (width + 6))
        else:
            p = r["p_raw"]
            cells.append(_cell(r["token"] or r["piece"], width) + (f" {p:5.2f}" if p is not None else "     -"))
    print(f"{k:>4}  " + "  ".join(cells), flush=True)


def cmd_compare(a: argparse.Namespace) -> int:
    """``samplescope compare``: decoding strategies side by side in lockstep, then their figures."""
    from app.core.experiments.decoding import lockstep, parse_strategies

    remote = bool(getattr(a, "base_url", None))
    try:
        strategies = parse_strategies(a.strategies)
        if a.max_tokens < 1:
            raise _UsageError(f"--max-tokens must be at least 1, got {a.max_tokens}")
        if not 1 <= a.top_n <= 200:
            raise _UsageError(f"--top-n must be 1..200, got {a.top_n}")
        if not 0 <= a.seed <= 2**32 - 1:
            raise _UsageError(f"--seed must be 0..{2**32 - 1}, got {a.seed}")
    except ValueError as exc:
        print(f"samplescope: {exc}", file=sys.stderr)
        return 2
    cancel = a.cancel
    backend = None
    messages = None
    try:
        if remote:
            from app.core.experiments.decoding import remote_support

            for s in strategies:  # refused before any request
                if s.kind in ("beam", "typical"):
                    raise _UsageError(f"{s.spec}: {remote_support(s)}")
            backend = remote_backend(a)
            backend.probe()
            model_name = backend.model or a.base_url
            prompt, parse_special = a.prompt, False
            if a.chat:
                messages = ([{"role": "system", "content": a.system}] if a.system else []) + [
                    {"role": "user", "content": a.prompt}]
        else:
            backend = load_backend(a)
            model_name = backend.info.name
            prompt, parse_special = a.prompt, False
            if a.chat:
                from backends.base import GenerationError

                try:
                    prompt = backend.format_chat(([{"role": "system", "content": a.system}] if a.system else [])
                                                 + [{"role": "user", "content": a.prompt}])
                except GenerationError as exc:
                    raise _UsageError(f"--chat is not possible with this model: {exc}") from None
                parse_special = True
        gen = lockstep(backend, prompt, strategies, a.max_tokens, a.seed, cancel, top_n=a.top_n, stop=tuple(a.stop),
                       beam_method=a.beam_method, beam_batched=a.beam_batched, parse_special=parse_special,
                       messages=messages)
        labels: list[str] = []
        width = 14
        row: dict[int, dict] = {}
        row_step = 0
        header = False

        def show(rec: dict) -> None:
            """One side-by-side table row per step, printed when the next step (or the fork) arrives."""
            nonlocal row, row_step, header
            if rec["kind"] == "column":
                labels.append(rec["label"])
            elif rec["kind"] == "step":
                if not header:
                    header = True
                    print("step  " + "  ".join(_cell(lab, width + 6) for lab in labels), flush=True)
                if row and rec["step"] != row_step:
                    _print_compare_row(row_step, row, len(labels), width)
                    row = {}
                row_step = rec["step"]
                row[rec["column"]] = rec
            elif rec["kind"] == "fork":
                if row:
                    _print_compare_row(row_step, row, len(labels), width)
                    row = {}
                groups = " | ".join(",".join(labels[i] for i in g) for g in rec["groups"])
                print(f"      ^ the columns part here (step {rec['step']}): {groups}", flush=True)

        try:
            summary = _print_records(gen, a.json, show, a.traces)
            if row and not a.json:
                _print_compare_row(row_step, row, len(labels), width)
        except KeyboardInterrupt:
            cancel.set()
            return 130
    except _UsageError as exc:
        print(f"samplescope: {exc}", file=sys.stderr)
        return 2
    except ValueError as exc:  # a strategy the backend cannot run (beam search on a server, ...)
        print(f"samplescope: {exc}", file=sys.stderr)
        return 2
    except BackendError as exc:
        print(f"samplescope: {exc}", file=sys.stderr)
        return 1
    finally:
        if backend is not None:
            backend.close()
    summary = {**summary, "model": model_name}
    if a.json:
        print(_dumps(_clean(_traced({"summary": summary}, a.traces))))
        return 0
    print(f"\n{'strategy':<18} {'logprob':>9} {'perplexity':>10} {'entropy':>8} {'length':>6}  {'end':<9} text")
    for c in summary["columns"]:
        print(f"{c['label']:<18} {_fmt(c['total_logprob'], '9.3f')} {_fmt(c['perplexity'], '10.3f')} "
              f"{_fmt(c['mean_entropy'], '8.3f')} {c['length']:>6}  {c['finish_reason']:<9} {c['text']!r}")
        for i, beam in enumerate((c.get("beam") or {}).get("beams", [])):
            print(f"{'':<4}beam {i + 1}: sum {beam['logprob']:.3f}, score {beam['score']:.3f}, "
                  f"{'finished' if beam['finished'] else 'unfinished'} ({beam['finish_reason']}) {beam['text']!r}")
    fork = summary["fork_step"]
    print("first fork: " + (f"step {fork}" if fork is not None else "none (the columns never part)")
          + (" [cancelled]" if summary["cancelled"] else "") + f"; {model_name}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    a = parser.parse_args(argv)
    for name in ("prompt", "system", "template"):  # text typed by the user: valid Unicode from here on
        if isinstance(getattr(a, name, None), str):
            setattr(a, name, clean_text(getattr(a, name)))
    if isinstance(getattr(a, "stop", None), list):
        a.stop = [clean_text(x) for x in a.stop]
    command = {"generate": cmd_generate, "bench": cmd_bench, "vs": cmd_vs, "align": cmd_align,
               "shift": cmd_shift, "compare": cmd_compare}.get(a.command)
    if command is not None:
        _safe_stdout()
        try:  # the checks every command shares, before any model is opened
            if hasattr(a, "prompt"):
                require_prompt(a.prompt)
            if hasattr(a, "n_ctx"):
                load_settings_from_args(a)
        except (ValueError, BackendError) as exc:
            print(f"samplescope: {exc}", file=sys.stderr)
            return 2
        with interruptible(enabled=command is not cmd_bench) as a.cancel:
            rc = command(a)
        return 130 if rc == 0 and a.cancel.is_set() else rc
    from app.main import run_gui

    return run_gui(
        prompt=getattr(a, "prompt", None), autorun=getattr(a, "run", False),
        step_mode=getattr(a, "step_mode", False), lab=getattr(a, "lab", None),
    )


def _safe_stdout() -> None:
    """A terminal that cannot show a character gets a replacement instead of a traceback."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.reconfigure(errors="replace")
        except (AttributeError, ValueError):  # a captured stream (tests) or not a text stream
            pass


if __name__ == "__main__":
    sys.exit(main())
