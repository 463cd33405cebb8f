"""Values and errors shared by every backend and by the core.

Owns: the frozen value types that cross threads (``SamplerSettings``, ``TokenAlt``,
``StageInfo``, ``Step``, ``Finished``, ``ModelInfo``, ``Capabilities``) and the
``BackendError`` tree. Pure Python, no Qt, no llama.cpp import: safe on any thread.

Every value here is immutable (``frozen=True, slots=True``) so a worker thread can hand
it to the GUI thread without copying or locking.

Over 500 lines on purpose: the frozen value types every thread exchanges and the error tree,
kept in one module so both backends and the app share one definition.
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass, field
from typing import Any, Sequence

__all__ = [
    "SamplerSettings",
    "SAMPLER_ORDER",
    "SAMPLER_STAGES",
    "parse_logit_bias",
    "samplers_from_string",
    "samplers_to_string",
    "GRAMMAR_FORCED",
    "TokenAlt",
    "StageInfo",
    "Step",
    "Finished",
    "ModelInfo",
    "Capabilities",
    "BackendError",
    "ModelLoadError",
    "PromptTooLongError",
    "GenerationError",
    "ConnectionFailed",
    "ChatPrompt",
    "LoadSettings",
    "require_prompt",
]

#: A grammar-held token the model gave less than this before the constraint is flagged.
GRAMMAR_FORCED = 0.01

#: The default order of llama.cpp's chain (common/sampling.cpp, ``--samplers``), by our stage
#: names (llama.cpp's ``typ_p`` is our ``typical``; ``samplers_from_string`` reads its names).
SAMPLER_ORDER: tuple[str, ...] = ("penalties", "dry", "top_n_sigma", "top_k", "typical", "top_p", "min_p", "xtc",
                                  "temperature")

#: Every stage a chain order may name: the default order's, and adaptive-p, which (like
#: llama.cpp's) is never in the default order and always runs last, since it picks the token.
SAMPLER_STAGES: tuple[str, ...] = SAMPLER_ORDER + ("adaptive_p",)

#: llama.cpp's name of each stage in a ``--samplers`` string, where it differs from ours
_LLAMA_NAME = {"typical": "typ_p"}
#: every spelling llama.cpp's ``common_sampler_types_from_names`` accepts (canonical, kebab-case,
#: without the underscore, and its aliases), lower case, to our stage names; plus "typical"
_SAMPLER_NAMES: dict[str, str] = {}
for _stage in SAMPLER_STAGES:
    _canon = _LLAMA_NAME.get(_stage, _stage)
    for _spelling in {_canon, _canon.replace("_", "-"), _canon.replace("_", ""), _stage}:
        _SAMPLER_NAMES[_spelling] = _stage
_SAMPLER_NAMES.update({"nucleus": "top_p", "temp": "temperature", "typ": "typical"})
#: llama.cpp's one-letter names (``--sampling-seq``)
_SAMPLER_CHARS = {"e": "penalties", "d": "dry", "s": "top_n_sigma", "k": "top_k", "y": "typical", "p": "top_p",
                  "m": "min_p", "x": "xtc", "t": "temperature", "a": "adaptive_p"}


def samplers_from_string(text: str) -> tuple[str, ...]:
    """A chain order from llama.cpp's ``--samplers`` syntax ("top_k;top_p;temperature", any
    letter case, llama.cpp's aliases such as "top-p", "nucleus", "temp") or its one-letter form
    (``--sampling-seq`` "kpt"). ValueError names what it cannot read (llama.cpp only warns and
    drops it; a workbench should say so)."""
    text = text.strip()
    if not text:
        raise ValueError("the sampler order is empty: name at least one sampler, e.g. "
                         + samplers_to_string(SAMPLER_ORDER))
    if ";" not in text and text.lower() not in _SAMPLER_NAMES and all(ch in _SAMPLER_CHARS for ch in text.lower()):
        return tuple(_SAMPLER_CHARS[ch] for ch in text.lower())
    out = []
    for part in text.split(";"):
        name = part.strip().lower()
        if not name:
            continue
        if name not in _SAMPLER_NAMES:
            known = ", ".join(_LLAMA_NAME.get(n, n) for n in SAMPLER_STAGES)
            raise ValueError(f"unknown sampler {part.strip()!r} in the order; the samplers are {known}")
        out.append(_SAMPLER_NAMES[name])
    return tuple(out)


def parse_logit_bias(text: str) -> tuple[int | str, float]:
    """One logit bias in llama.cpp's TOKEN_ID(+/-)BIAS form ("15043+1", "15043-inf"); a TOKEN
    that is not a number is a text (" Paris-inf" biases the tokens of " Paris"). ValueError
    says what it cannot read; +inf is refused (it would force the token)."""
    m = re.fullmatch(r"(.+?)([+-])(inf|\d+(?:\.\d*)?|\.\d+)", text, flags=re.S | re.I)
    if m is None:
        raise ValueError(f"{text!r} is not TOKEN+BIAS or TOKEN-BIAS (e.g. 15043+1, 15043-inf)")
    token, sign, amount = m.groups()
    bias = float(amount) * (1 if sign == "+" else -1)
    if bias == math.inf:
        raise ValueError(f"{text!r}: a bias of +inf would force the token; use a large number")
    return (int(token) if token.strip().isdigit() else token), bias


def samplers_to_string(order: Sequence[str]) -> str:
    """``order`` in llama.cpp's ``--samplers`` syntax."""
    return ";".join(_LLAMA_NAME.get(n, n) for n in order)


@dataclass(frozen=True, slots=True)
class SamplerSettings:
    """Every knob of the sampler chain, with llama.cpp's meaning for each.

    A value that switches a stage off: top_k <= 0, top_p >= 1, min_p <= 0, typical_p >= 1,
    repeat_penalty == 1 with frequency and presence 0, top_n_sigma <= 0, xtc_probability <= 0
    or xtc_threshold > 0.5, dynatemp_range <= 0 (plain temperature). temperature <= 0 means
    greedy. ``samplers`` is the order of the chain (``SAMPLER_ORDER`` by default; llama.cpp's
    ``--samplers``); ``logit_bias`` holds (token id or text, bias) pairs, added to the logits
    before the chain as llama.cpp does (a text biases each of its tokens; -inf bans a token).

    DRY is off with dry_multiplier 0 (or dry_base < 1, or dry_penalty_last_n 0); it penalizes a
    token that would extend a repeat longer than dry_allowed_length, seen in the last
    dry_penalty_last_n tokens, by multiplier * base ** (length - allowed); a sequence breaker
    ends the repeats it interrupts. ``mirostat`` 1 or 2 replaces the ordered chain by the
    temperature and Mirostat (target surprise ``mirostat_tau``, learning rate
    ``mirostat_eta``), as llama.cpp does. adaptive-p is off with a negative
    ``adaptive_target``; with a target in 0..1 it runs last (llama.cpp also needs it named in
    ``--samplers``; here the target is enough).
    """

    temperature: float = 0.8
    top_k: int = 40
    top_p: float = 0.95
    min_p: float = 0.05
    typical_p: float = 1.0
    repeat_penalty: float = 1.0
    frequency_penalty: float = 0.0
    presence_penalty: float = 0.0
    penalty_last_n: int = 64
    min_keep: int = 1
    seed: int = 42
    max_tokens: int = 128
    stop: tuple[str, ...] = ()
    top_n: int = 20
    top_n_sigma: float = -1.0
    xtc_probability: float = 0.0
    xtc_threshold: float = 0.1
    dynatemp_range: float = 0.0
    dynatemp_exponent: float = 1.0
    logit_bias: tuple[tuple[int | str, float], ...] = ()
    samplers: tuple[str, ...] = SAMPLER_ORDER
    dry_multiplier: float = 0.0
    dry_base: float = 1.75
    dry_allowed_length: int = 2
    dry_penalty_last_n: int = 64
    dry_sequence_breakers: tuple[str, ...] = ("\n", ":", "\"", "*")
    mirostat: int = 0
    mirostat_tau: float = 5.0
    mirostat_eta: float = 0.1
    adaptive_target: float = -1.0
    adaptive_decay: float = 0.9

    #: (name, minimum, maximum) checked by ``validate``; the widgets use the same limits.
    LIMITS = {
        "temperature": (0.0, 5.0),
        "top_k": (0, 262144),
        "top_p": (0.0, 1.0),
        "min_p": (0.0, 1.0),
        "typical_p": (0.0, 1.0),
        "repeat_penalty": (0.01, 5.0),  # llama.cpp divides positive logits by it: 0 is no penalty
        "frequency_penalty": (-2.0, 2.0),
        "presence_penalty": (-2.0, 2.0),
        "penalty_last_n": (0, 4096),
        "min_keep": (1, 1000),
        "seed": (0, 2**32 - 1),
        "max_tokens": (1, 32768),
        "top_n": (1, 200),
        "top_n_sigma": (-1.0, 100.0),
        "xtc_probability": (0.0, 1.0),
        "xtc_threshold": (0.0, 1.0),
        "dynatemp_range": (0.0, 5.0),
        "dynatemp_exponent": (0.0, 100.0),
        "dry_multiplier": (0.0, 100.0),
        "dry_base": (0.0, 100.0),
        "dry_allowed_length": (0, 4096),
        "dry_penalty_last_n": (0, 32768),
        "mirostat": (0, 2),
        "mirostat_tau": (0.0, 100.0),
        "mirostat_eta": (0.0, 10.0),
        "adaptive_target": (-1.0, 1.0),
        "adaptive_decay": (0.0, 0.99),  # llama.cpp clamps the decay to this range
    }

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0.0

    def validate(self) -> None:
        """Raise ``ValueError`` naming the knob and its allowed range if a value is out of range."""
        for name, (lo, hi) in self.LIMITS.items():
            value = getattr(self, name)
            if isinstance(value, float) and math.isnan(value):
                raise ValueError(f"{name} is not a number")
            if not lo <= value <= hi:
                raise ValueError(f"{name} = {value} is outside the allowed range {lo} .. {hi}")
        unknown = [n for n in self.samplers if n not in SAMPLER_STAGES]
        if unknown:
            raise ValueError(f"unknown sampler {unknown[0]!r} in the order; the samplers are "
                             f"{samplers_to_string(SAMPLER_STAGES)}")
        if any(not isinstance(b, str) for b in self.dry_sequence_breakers):
            raise ValueError("a DRY sequence breaker is a text")
        for entry in self.logit_bias:
            if len(entry) != 2:
                raise ValueError(f"a logit bias is a (token, bias) pair, not {entry!r}")
            tok, bias = entry
            if isinstance(tok, bool) or not isinstance(tok, (int, str)) or (isinstance(tok, str) and not tok):
                raise ValueError(f"a logit bias names a token id or a non-empty text, not {tok!r}")
            if isinstance(tok, int) and tok < 0:
                raise ValueError(f"logit bias token id {tok} is negative")
            if math.isnan(float(bias)) or float(bias) == math.inf:
                raise ValueError(f"the logit bias of {tok!r} must be a number or -inf, not {bias!r}")

    @property
    def order_string(self) -> str:
        """The chain order in llama.cpp's ``--samplers`` syntax."""
        return samplers_to_string(self.samplers)

    def replace(self, **changes: Any) -> "SamplerSettings":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        d["stop"] = list(self.stop)
        d["samplers"] = list(self.samplers)
        d["dry_sequence_breakers"] = list(self.dry_sequence_breakers)
        # JSON has no infinity: a ban is written "-inf" (float("-inf") reads it back)
        d["logit_bias"] = [[t, b if math.isfinite(b) else "-inf"] for t, b in self.logit_bias]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "SamplerSettings":
        names = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in d.items() if k in names}
        for name in ("stop", "dry_sequence_breakers"):
            if name in kwargs:
                kwargs[name] = tuple(kwargs[name])
        if "samplers" in kwargs:
            order = kwargs["samplers"]
            kwargs["samplers"] = samplers_from_string(order) if isinstance(order, str) else tuple(order)
        if "logit_bias" in kwargs:
            kwargs["logit_bias"] = tuple((t, -math.inf if b is None else float(b)) for t, b in kwargs["logit_bias"])
        return cls(**kwargs)


class ChatPrompt(str):
    """A chat formatted by a model's template (``LlamaCppBackend.format_chat``): the text, plus
    ``parts``, ``(text, is_template)`` pairs in order. Tokenized with ``parse_special=True``,
    only the template's parts may become control tokens; the messages' contents stay text, so
    a user message holding ``<end_of_turn>`` cannot open a turn of its own. Anything that
    takes a ``str`` takes it; concatenating gives a plain ``str`` (and forgets the parts)."""

    parts: tuple[tuple[str, bool], ...]

    def __new__(cls, parts) -> "ChatPrompt":
        parts = tuple((str(t), bool(special)) for t, special in parts)
        self = super().__new__(cls, "".join(t for t, _ in parts))
        self.parts = parts
        return self

    def __reduce__(self):
        return (ChatPrompt, (self.parts,))


@dataclass(frozen=True, slots=True)
class LoadSettings:
    """How a local model is loaded: the context size, the layers offloaded to a GPU and the CPU
    threads. The one place their ranges live: the command line, the model panel and the engine
    all check them here.

    ``n_ctx`` 0 means the model's training context (it can be very large: 32,768 tokens for the
    embedded model, 131,072 for many others); ``n_gpu_layers`` -1 offloads every layer;
    ``n_threads`` 0 picks min(4, CPUs).
    """

    n_ctx: int = 2048
    n_gpu_layers: int = 0
    n_threads: int = 0

    LIMITS = {
        "n_ctx": (0, 16_777_216),
        "n_gpu_layers": (-1, 100_000),
        "n_threads": (0, 1024),
    }
    #: the smallest context other than 0 (llama.cpp needs room for a prompt and an answer)
    MIN_CTX = 16

    def validate(self) -> None:
        """Raise ``ValueError`` naming the setting, its meaning and its allowed range."""
        for name, (lo, hi) in self.LIMITS.items():
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"{name} must be a whole number, not {value!r}")
            if not lo <= value <= hi:
                raise ValueError(f"{name} = {value} is outside the allowed range {lo} .. {hi} ({self.meaning(name)})")
        if 0 < self.n_ctx < self.MIN_CTX:
            raise ValueError(f"n_ctx = {self.n_ctx} is too small: use at least {self.MIN_CTX} "
                             f"({self.meaning('n_ctx')})")

    @staticmethod
    def meaning(name: str) -> str:
        return {"n_ctx": "0 = the model's training context",
                "n_gpu_layers": "-1 = all layers, 0 = CPU only",
                "n_threads": "0 = automatic"}[name]


def require_prompt(prompt: str | None) -> None:
    """``GenerationError`` for an empty prompt: a local model would continue from its BOS token
    alone and a server would refuse it, so nobody gets a run from nothing (one rule for the
    command line, the window, the labs and both backends)."""
    if not prompt:
        raise GenerationError("The prompt is empty: type something to continue from.")


@dataclass(frozen=True, slots=True)
class TokenAlt:
    """One candidate token of a step: its raw probability (softmax of the model's logits)
    and its final probability (after the whole sampler chain; 0 when a stage removed it)."""

    id: int | None
    token: str
    p_raw: float
    p_final: float

    @property
    def logprob_raw(self) -> float:
        return math.log(self.p_raw) if self.p_raw > 0 else float("-inf")


@dataclass(frozen=True, slots=True)
class StageInfo:
    """What one stage of the chain did at one step.

    ``probs`` holds, for each entry of ``Step.top`` in the same order, its probability in the
    distribution after this stage (renormalised over the tokens still kept).
    ``removed_mass`` is the probability mass, in the distribution entering the stage, of the
    tokens the stage dropped; ``removed_raw`` is the same tokens' mass in the raw distribution.
    """

    name: str
    kept: int
    removed_mass: float
    removed_raw: float
    probs: tuple[float, ...]
    #: what the stage decided from this step's distribution: the temperature dynamic
    #: temperature used, XTC's draw (it acts when the draw is at most ``xtc_probability``)
    value: float | None = None


@dataclass(frozen=True, slots=True)
class Step:
    """Everything recorded about one generated token. Nothing of vocabulary size.

    ``token`` is the text this step made visible: a token carrying part of a UTF-8 character
    shows ``""`` and the step that completes the character shows the whole character.
    ``piece`` is the token's own text (bytes escaped as ``<0xE2>`` when incomplete).
    ``rank`` is 1 for the most likely raw token. ``estimated`` marks values computed from a
    truncated top-N (remote backends), with ``unseen_mass`` the raw mass outside it.
    """

    index: int
    position: int
    token_id: int | None
    token: str
    piece: str
    p_raw: float
    p_final: float
    rank: int
    entropy_raw: float
    entropy_final: float
    kl_final_raw: float
    top: tuple[TokenAlt, ...]
    stages: tuple[StageInfo, ...] = ()
    kept: int = 0
    forced: bool = False
    estimated: bool = False
    unseen_mass: float = 0.0
    #: with a grammar stage: the chosen token's probability entering it and leaving it
    grammar_p_before: float | None = None
    grammar_p_after: float | None = None

    @property
    def grammar_forced(self) -> bool:
        """The grammar held the model to a token it gave less than ``GRAMMAR_FORCED`` before the
        constraint (flagged in the views)."""
        return self.grammar_p_before is not None and self.grammar_p_before < GRAMMAR_FORCED

    @property
    def surprisal(self) -> float:
        """-log p_raw of the chosen token, in nats."""
        return -math.log(self.p_raw) if self.p_raw > 0 else float("inf")

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "position": self.position,
            "token_id": self.token_id,
            "token": self.token,
            "piece": self.piece,
            "p_raw": self.p_raw,
            "p_final": self.p_final,
            "rank": self.rank,
            "entropy_raw": self.entropy_raw,
            "entropy_final": self.entropy_final,
            "kl_final_raw": self.kl_final_raw,
            "surprisal": _finite(self.surprisal),
            "kept": self.kept,
            "forced": self.forced,
            "estimated": self.estimated,
            "unseen_mass": self.unseen_mass,
            **({"grammar_p_before": self.grammar_p_before, "grammar_p_after": self.grammar_p_after}
               if self.grammar_p_before is not None else {}),
            "top": [
                {"id": a.id, "token": a.token, "p_raw": a.p_raw, "p_final": a.p_final}
                for a in self.top
            ],
            "stages": [
                {
                    "name": s.name,
                    "kept": s.kept,
                    "removed_mass": s.removed_mass,
                    "removed_raw": s.removed_raw,
                    "probs": list(s.probs),
                    **({"value": s.value} if s.value is not None else {}),
                }
                for s in self.stages
            ],
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Step":
        return cls(
            index=d["index"],
            position=d.get("position", d["index"]),
            token_id=d.get("token_id"),
            token=d.get("token", ""),
            piece=d.get("piece", d.get("token", "")),
            p_raw=d["p_raw"],
            p_final=d["p_final"],
            rank=d.get("rank", 0),
            entropy_raw=d["entropy_raw"],
            entropy_final=d["entropy_final"],
            kl_final_raw=d["kl_final_raw"],
            top=tuple(TokenAlt(a["id"], a["token"], a["p_raw"], a["p_final"]) for a in d.get("top", ())),
            stages=tuple(
                StageInfo(s["name"], s["kept"], s["removed_mass"], s["removed_raw"], tuple(s["probs"]), s.get("value"))
                for s in d.get("stages", ())
            ),
            kept=d.get("kept", 0),
            forced=d.get("forced", False),
            estimated=d.get("estimated", False),
            unseen_mass=d.get("unseen_mass", 0.0),
            grammar_p_before=d.get("grammar_p_before"),
            grammar_p_after=d.get("grammar_p_after"),
        )


def _finite(x: float) -> float | None:
    return x if math.isfinite(x) else None


@dataclass(frozen=True, slots=True)
class Finished:
    """The end of a generation. ``reason`` is one of: "eos", "stop", "length", "cancelled",
    "context" (the context window filled up), "error"."""

    reason: str
    text: str
    n_tokens: int
    seconds: float
    prompt_tokens: int = 0
    reused_tokens: int = 0
    message: str = ""

    @property
    def tokens_per_s(self) -> float:
        return self.n_tokens / self.seconds if self.seconds > 0 else 0.0


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """The model card of a loaded model."""

    path: str
    name: str
    architecture: str
    size_label: str
    quantization: str
    n_vocab: int
    n_ctx_train: int
    n_layers: int
    file_size: int
    has_chat_template: bool
    n_ctx: int = 0
    n_gpu_layers: int = 0
    n_threads: int = 0
    gpu_offload_supported: bool = False
    bos_token: int | None = None
    eos_token: int | None = None
    #: the GGUF's ``general.sampling.*`` entries (the model maker's recommended sampler settings)
    sampling: tuple[tuple[str, str], ...] = ()

    def card_lines(self) -> list[tuple[str, str]]:
        return [
            ("Name", self.name),
            ("Architecture", self.architecture),
            ("Size", self.size_label or "unknown"),
            ("Quantization", self.quantization or "unknown"),
            ("Vocabulary", f"{self.n_vocab:,}"),
            ("Training context", f"{self.n_ctx_train:,}"),
            ("Layers", str(self.n_layers)),
            ("File size", _human_bytes(self.file_size)),
            ("Chat template", "yes" if self.has_chat_template else "no"),
        ]


def _human_bytes(n: int) -> str:
    x = float(n)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if x < 1000 or unit == "TB":
            return f"{x:.0f} {unit}" if unit == "B" else f"{x:.1f} {unit}"
        x /= 1000
    return f"{n} B"


#: Why a feature is missing, by feature (``Capabilities.why_not``): what a user reads on a
#: greyed-out control.
_MISSING = {
    "full_logits": "needs the model's full next-token distribution, which a server does not give: use a local model",
    "sampler_stages": "needs the model's full distribution to show each sampler stage: use a local model",
    "step_mode": "needs the full distribution before each token (a server samples by itself): use a local model",
    "sequences": "needs several sequences in one llama.cpp KV cache (beams, forks): use a local model",
    "grammar": "needs a grammar stage in our own sampler chain: use a local model",
    "json_schema": "the server did not accept a JSON-schema response format in the probe",
    "embeddings": "needs embeddings from the model: the server gave none",
    "chat": "needs a chat template (this model has none: it is a base model) or a chat endpoint",
    "seed": "the server ignored the seed in the probe, so runs cannot be repeated",
    "token_ids": "needs token ids, which this server does not send",
    "prompt_logprobs": ("needs each prompt token's log-probability, which the server did not return for an echoed "
                        "prompt in the probe (vLLM and llama-cpp-python's server with --logits_all true do; "
                        "llama.cpp's own server does not): use a local model"),
    "layer_lens": ("needs every layer's hidden state while the model decodes, which only a model run here through "
                   "llama.cpp exposes (a server sends its final distribution at most): use a local model"),
}


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What a backend can reveal and do: one value per backend (``backend.capabilities``).
    Every panel and lab reads it to enable a control, or grey it out with ``why_not(feature)``;
    nothing probes a backend's attributes to guess.

    ``kind`` is "local" or "remote". ``full_logits``: the whole next-token distribution (exact
    entropy, exact answer distributions, P_token at every step, what the model does vs says).
    ``sequences``: several sequences in one KV cache (beams, forks, exact lockstep columns).
    ``max_parallel``: how many generations run at once by default (sequences or requests).
    ``prompt_logprobs``: each prompt token's log-probability given what precedes it (the
    prompt X-ray). ``layer_lens``: every layer's output read while decoding (the layer lens)."""

    full_logits: bool = False
    sampler_stages: bool = False
    step_mode: bool = False
    top_n_max: int = 0
    seed: bool = False
    notes: tuple[str, ...] = field(default_factory=tuple)
    kind: str = "remote"
    sequences: bool = False
    grammar: bool = False
    json_schema: bool = False
    embeddings: bool = False
    chat: bool = False
    token_ids: bool = False
    max_parallel: int = 1
    prompt_logprobs: bool = False
    #: each layer's output read while decoding (the layer lens): local models only
    layer_lens: bool = False

    @property
    def local(self) -> bool:
        return self.kind == "local"

    def has(self, feature: str) -> bool:
        return bool(getattr(self, feature))

    def why_not(self, feature: str) -> str:
        """"" when ``feature`` is available, else the reason in words a user can act on."""
        if feature not in _MISSING:
            raise ValueError(f"unknown feature {feature!r}")
        return "" if self.has(feature) else _MISSING[feature]


class BackendError(Exception):
    """Base of every error a backend raises. The message is written for the user: it says
    what happened and what to do about it."""


class ModelLoadError(BackendError):
    """The model file is missing, truncated, not GGUF, or not supported by this build."""


class PromptTooLongError(BackendError):
    """The prompt does not fit in the context window."""


class GenerationError(BackendError):
    """llama.cpp failed while evaluating tokens."""


class ConnectionFailed(BackendError):
    """A remote server could not be reached or answered badly."""


# --- remote servers (backends.openai_compat) -------------------------------------------------
# Every one is a ConnectionFailed, so code that only knows that class still catches them all.
# ``status`` is the HTTP status when the server answered (None otherwise).


class RemoteError(ConnectionFailed):
    """A remote OpenAI-compatible server failed; the subclass says how."""

    status: int | None = None

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class ServerUnreachable(RemoteError):
    """No connection could be opened (refused, unknown host, TLS failure, connect timeout)."""


class ConnectionRefused(ServerUnreachable):
    """Nothing listens at the server's host and port."""


class HostNotFound(ServerUnreachable):
    """The server's host name does not resolve."""


class TLSFailed(ServerUnreachable):
    """The TLS (https) handshake failed: certificate, protocol or plain http on an https port."""


class RemoteTimeout(RemoteError):
    """The server did not answer in time."""


class ConnectTimeout(RemoteTimeout, ServerUnreachable):
    """Opening the connection took longer than the connect timeout."""


class ReadTimeout(RemoteTimeout):
    """The server went silent for longer than the read timeout."""


class AuthenticationFailed(RemoteError):
    """HTTP 401/403: the API key is missing, wrong, or not allowed to use this model."""


class NotFound(RemoteError):
    """HTTP 404."""


class ModelNotFound(NotFound):
    """The server does not know the requested model."""


class EndpointNotFound(NotFound):
    """The server has no such endpoint (usually a wrong base URL)."""


class RateLimited(RemoteError):
    """HTTP 429 and the retries ran out (or the server asked for too long a wait)."""

    retry_after: float | None = None


class ServerFailed(RemoteError):
    """HTTP 5xx and the retries ran out."""


class RequestRejected(RemoteError):
    """HTTP 400/422 (or another 4xx): the server refused the request's content."""


class BadResponse(RemoteError):
    """The server's answer is not what an OpenAI-compatible API sends (not JSON, malformed)."""


__all__ += [
    "RemoteError", "ServerUnreachable", "ConnectionRefused", "HostNotFound", "TLSFailed",
    "RemoteTimeout", "ConnectTimeout", "ReadTimeout", "AuthenticationFailed", "NotFound",
    "ModelNotFound", "EndpointNotFound", "RateLimited", "ServerFailed", "RequestRejected",
    "BadResponse",
]
