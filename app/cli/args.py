"""The command line's arguments: the parser of every command and what its flags mean.

Owns: ``build_parser`` (the subcommands and their flags, with llama.cpp's names where they
exist), ``settings_from_args`` and ``load_settings_from_args`` (flags to the frozen settings the
engine takes). Runs on the main thread; no model, no Qt.
"""

from __future__ import annotations

import argparse

from app.bench import SECTIONS
from app.lab_registry import LABS
from backends.base import LoadSettings, SamplerSettings, parse_logit_bias, samplers_from_string, samplers_to_string

__all__ = ["build_parser", "settings_from_args", "load_settings_from_args", "TRACES_HELP"]

TRACES_HELP = ("with --json: add every generation's step records (the shape of generate --json, sampler stages "
               "included) to the records (key trace / traces)")


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
    p.add_argument("--top-nsigma", "--top-n-sigma", dest="top_n_sigma", type=float, default=d.top_n_sigma,
                   help="keep tokens within N standard deviations of the best logit (-1 = off)")
    p.add_argument("--xtc-probability", type=float, default=d.xtc_probability,
                   help="XTC: chance per step of removing the top choices (0 = off)")
    p.add_argument("--xtc-threshold", type=float, default=d.xtc_threshold,
                   help="XTC: tokens at or above this probability are the top choices (> 0.5 = off)")
    p.add_argument("--dynatemp-range", type=float, default=d.dynatemp_range,
                   help="dynamic temperature: temperature +/- this range by the step's entropy (0 = off)")
    p.add_argument("--dynatemp-exp", dest="dynatemp_exponent", type=float, default=d.dynatemp_exponent,
                   help="dynamic temperature exponent")
    p.add_argument("--dry-multiplier", type=float, default=d.dry_multiplier,
                   help="DRY: penalty multiplier for tokens that extend a repeat (0 = off)")
    p.add_argument("--dry-base", type=float, default=d.dry_base, help="DRY: base of the penalty's growth")
    p.add_argument("--dry-allowed-length", type=int, default=d.dry_allowed_length,
                   help="DRY: repeats up to this many tokens go unpenalised")
    p.add_argument("--dry-penalty-last-n", type=int, default=d.dry_penalty_last_n,
                   help="DRY: how many recent tokens are searched for repeats (0 = off)")
    p.add_argument("--dry-sequence-breaker", action="append", default=None, metavar="TEXT",
                   help="DRY: a text that ends a repeat (repeatable; replaces the defaults "
                   + ", ".join(repr(b) for b in d.dry_sequence_breakers) + "; 'none' for no breaker; \\n and the like are read as escapes)")
    p.add_argument("--mirostat", type=int, default=d.mirostat, choices=(0, 1, 2),
                   help="Mirostat: 1 or 2 replaces top-k, top-p and the rest of the chain (0 = off)")
    p.add_argument("--mirostat-lr", dest="mirostat_eta", type=float, default=d.mirostat_eta,
                   help="Mirostat learning rate, eta")
    p.add_argument("--mirostat-ent", dest="mirostat_tau", type=float, default=d.mirostat_tau,
                   help="Mirostat target entropy (surprise in bits), tau")
    p.add_argument("--adaptive-target", type=float, default=d.adaptive_target,
                   help="adaptive-p: pick tokens near this probability, 0..1 (negative = off); runs last")
    p.add_argument("--adaptive-decay", type=float, default=d.adaptive_decay,
                   help="adaptive-p: decay of its moving average, 0..0.99 (history about 1/(1-decay) tokens)")
    p.add_argument("--samplers", type=_sampler_order, default=d.samplers, metavar="ORDER",
                   help="the chain's order, separated by ';' (default: " + samplers_to_string(d.samplers) + ")")
    p.add_argument("-l", "--logit-bias", action="append", type=_logit_bias, default=[],
                   metavar="TOKEN(+/-)BIAS",
                   help="add BIAS to a token's logit, e.g. 15043+1 or 15043-inf (ban); TOKEN may be a text, "
                   "biasing each of its tokens (repeatable)")


def _sampler_order(text: str) -> tuple[str, ...]:
    try:
        return samplers_from_string(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _logit_bias(text: str) -> tuple[int | str, float]:
    try:
        return parse_logit_bias(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


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
    gui.add_argument("--lab", choices=["workbench", *(spec.name for spec in LABS)],
                     help="open on this tab (the workbench by default)")
    g = sub.add_parser("generate", help="generate headless and print every step")
    g.add_argument("--prompt", required=True)
    _add_model_args(g, remote=True)
    _add_sampler_args(g)
    g.add_argument("--json", action="store_true", help="one JSON object per step, then a summary line")
    sc = sub.add_parser("score", help="score every token of a text: log-probability, rank, alternatives, perplexity")
    sc.add_argument("--prompt", required=True)
    sc.add_argument("--continuation", help="score this continuation of the prompt (the perplexity is its own)")
    sc.add_argument("--top", type=int, default=5, help="alternatives listed per token (1..100)")
    _add_model_args(sc, remote=True)
    sc.add_argument("--json", action="store_true", help="one JSON object per token, then a summary line")
    ln = sub.add_parser("lens", help="the layer lens: each layer's prediction at every step of a generation "
                        "(top tokens, the chosen token's probability and rank, entropy, commitment layer)",
                        description="Generates with our sampler chain (the flags of generate), then projects every "
                        "layer's output at each step through the model's own final norm and unembedding, "
                        "teacher-forced on the run's tokens. Local models only.")
    ln.add_argument("--prompt", required=True)
    ln.add_argument("--top", type=int, default=5, help="top tokens listed per layer (1..50)")
    _add_model_args(ln, remote=True)
    _add_sampler_args(ln)
    ln.set_defaults(max_tokens=16)
    ln.add_argument("--json", action="store_true", help="one JSON object per step (index, token_id, token, "
                    "commitment_layer, layers), then a summary line")
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
    v.add_argument("--traces", action="store_true", help=TRACES_HELP)
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
    al.add_argument("--traces", action="store_true", help=TRACES_HELP)
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
    sh.add_argument("--traces", action="store_true", help=TRACES_HELP)
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
    cp.add_argument("--traces", action="store_true", help=TRACES_HELP)
    b = sub.add_parser("bench", help="measure what the instrumentation costs against llama.cpp's own speed "
                       "(docs/BENCHMARKS.md)")
    _add_model_args(b)
    b.add_argument("--tokens", type=int, default=128, help="new tokens per measured run (>= 128)")
    b.add_argument("--repeats", type=int, default=2)
    b.add_argument("--long-tokens", type=int, default=2048, help="length of the peak-memory run (0 = skip)")
    b.add_argument("--skip", action="append", default=[], metavar="SECTIONS",
                   help="leave sections out (comma-separated, repeatable): " + ", ".join(SECTIONS))
    b.add_argument("--lens", action="store_true", help="measure the layer lens only: one step's lens, a "
                   "run's lens, and generation with the lens off before and after a lens was used")
    b.add_argument("--json", action="store_true")
    md = sub.add_parser("models", help="list the GGUF models already on disk (Hugging Face cache, LM Studio, Ollama, "
                        "llama.cpp's cache, added folders) with what their headers say, without loading any",
                        description="Searches HF_HUB_CACHE (else $HF_HOME/hub, else ~/.cache/huggingface/hub), "
                        "~/.lmstudio/models and ~/.cache/lm-studio/models, OLLAMA_MODELS (else ~/.ollama/models), "
                        "LLAMA_CACHE (else llama.cpp's cache folder), the folders added in the window's model "
                        "picker and every --folder.")
    md.add_argument("--folder", action="append", default=[], metavar="DIR",
                    help="also search this folder and its subfolders (repeatable)")
    md.add_argument("--no-saved-folders", action="store_true",
                    help="leave out the folders added in the window's model picker")
    md.add_argument("--json", action="store_true", help="one JSON list of records: path, source, name, architecture, "
                    "size_label, quantization, file_size, context_length, error (null when the file is usable)")
    _choices_in_any_case(parser)
    return parser


class _AnyCase:
    """The ``type`` of an argument with text choices: a value in any letter case becomes the
    choice it spells (``vs-standard`` -> ``VS-Standard``); anything else is left for argparse to
    refuse with the list of choices."""

    def __init__(self, choices, base=None) -> None:
        self.choices = {str(c).casefold(): c for c in choices}
        self.base = base
        self.__name__ = getattr(base, "__name__", "choice")  # argparse names the type in its errors

    def __call__(self, text: str):
        value = self.base(text) if self.base is not None else text
        return self.choices.get(value.casefold(), value) if isinstance(value, str) else value


def _choices_in_any_case(parser: argparse.ArgumentParser) -> None:
    """Every argument with text ``choices=``, in every subcommand, takes them in any letter case
    (one mechanism, so a new argument with choices needs nothing of its own)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in dict.fromkeys(action.choices.values()):  # aliases name the same parser
                _choices_in_any_case(sub)
        elif action.choices and all(isinstance(c, str) for c in action.choices) and not isinstance(action.type, _AnyCase):
            action.type = _AnyCase(action.choices, action.type)


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
        top_n_sigma=a.top_n_sigma,
        xtc_probability=a.xtc_probability,
        xtc_threshold=a.xtc_threshold,
        dynatemp_range=a.dynatemp_range,
        dynatemp_exponent=a.dynatemp_exponent,
        samplers=tuple(a.samplers),
        logit_bias=tuple(a.logit_bias),
        dry_multiplier=a.dry_multiplier,
        dry_base=a.dry_base,
        dry_allowed_length=a.dry_allowed_length,
        dry_penalty_last_n=a.dry_penalty_last_n,
        dry_sequence_breakers=_breakers(a.dry_sequence_breaker),
        mirostat=a.mirostat,
        mirostat_tau=a.mirostat_tau,
        mirostat_eta=a.mirostat_eta,
        adaptive_target=a.adaptive_target,
        adaptive_decay=a.adaptive_decay,
    )


def _breakers(given: list[str] | None) -> tuple[str, ...]:
    """``--dry-sequence-breaker`` as llama.cpp reads it: the defaults when none is given, "none"
    for no breaker, "\\n" and the like unescaped."""
    if given is None:
        return SamplerSettings().dry_sequence_breakers
    if "none" in given:  # llama.cpp: "none" clears what came before it
        given = given[len(given) - given[::-1].index("none"):]
    return tuple(b.encode("latin-1", "backslashreplace").decode("unicode_escape") for b in given if b)


def load_settings_from_args(a: argparse.Namespace) -> LoadSettings:
    """``--n-ctx``, ``--n-gpu-layers`` and ``--threads``, checked (``ValueError`` says what is wrong)."""
    ls = LoadSettings(n_ctx=a.n_ctx, n_gpu_layers=a.n_gpu_layers, n_threads=a.threads)
    ls.validate()
    return ls
