"""Live what-if: a step of a run recomputed under other sampler settings, from its full logits.

Owns:
- ``LogitMemory``: the full next-token logits of every step of recent runs (float32 copies,
  1 MB per step for a 262,144-token vocabulary), with the prompt's tokens, bounded by a number
  of bytes (a setting, shown in the window); the oldest runs are dropped first. The generation
  worker writes (``put``, through ``GenerationSession``'s ``on_logits``), the GUI thread reads;
  a lock guards the dict, and an array, once stored, is never written again;
- ``what_if``: one step again: our chain on that step's logits with new settings, the same
  token taken (teacher-forced), as a ``Step`` record whose ``p_final`` 0 means the new settings
  would have cut the token;
- ``rescore`` -> ``Rescored``: every step of a run again under new settings ("Apply to this
  run"), with the stateful samplers' state carried along the run's tokens;
- ``recompute_logits``: a run whose logits are not kept (a stored run, a lab generation, one
  the bound pushed out) evaluated again through the engine, teacher-forced on its own tokens
  (``teacher_forcing``), its steps' logits put in the memory (on the model worker); they equal
  the run's own within llama.cpp's batch noise.

Mirostat and adaptive-p start from their initial state in a one-step what-if (the state a run
carried to that step depends on the steps before it under the new settings: ``rescore`` carries
it).

Any thread; no Qt.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np

from backends.base import GenerationError, SamplerSettings, Step

from .sampling import ChainResult, SamplerState, apply_chain, history_needed, resolve_inputs
from .sampling.chain import TokenizingEngine
from .teacher_forcing import forced_logits

if TYPE_CHECKING:
    from backends.kinds import LocalEngine

__all__ = ["LogitMemory", "Rescored", "what_if", "chain_at", "rescore", "recompute_logits", "DEFAULT_MEMORY_MB"]

#: the default bound of the what-if memory, in MiB (about 256 steps of a 262,144-token vocabulary)
DEFAULT_MEMORY_MB = 256


class LogitMemory:
    """Full logits per (run, step) of recent runs, at most ``max_bytes`` in all."""

    def __init__(self, max_bytes: int = DEFAULT_MEMORY_MB << 20) -> None:
        self._lock = threading.Lock()
        self._runs: OrderedDict[int, tuple[tuple[int, ...], dict[int, np.ndarray]]] = OrderedDict()
        self._bytes = 0
        self.max_bytes = int(max_bytes)

    @property
    def used_bytes(self) -> int:
        with self._lock:
            return self._bytes

    def start(self, run: int, prompt_tokens: Sequence[int]) -> None:
        """A new run: its prompt's tokens (the history of its first step)."""
        with self._lock:
            old = self._runs.pop(run, None)
            if old is not None:
                self._bytes -= sum(a.nbytes for a in old[1].values())
            self._runs[run] = (tuple(int(t) for t in prompt_tokens), {})

    def put(self, run: int, index: int, logits: np.ndarray) -> None:
        """Keep a copy of step ``index``'s logits (nothing when the bound is 0 or the run unknown)."""
        if self.max_bytes <= 0:
            return
        copy = np.array(logits, dtype=np.float32, copy=True)
        with self._lock:
            entry = self._runs.get(run)
            if entry is None:
                return
            steps = entry[1]
            if index in steps:
                self._bytes -= steps[index].nbytes
            steps[index] = copy
            self._bytes += copy.nbytes
            self._runs.move_to_end(run)
            self._evict()

    def _evict(self) -> None:
        while self._bytes > self.max_bytes and self._runs:
            run, (_, steps) = next(iter(self._runs.items()))
            if len(self._runs) == 1:  # the newest run: drop its oldest steps
                if not steps:
                    break
                first = min(steps)
                self._bytes -= steps.pop(first).nbytes
                continue
            self._runs.pop(run)
            self._bytes -= sum(a.nbytes for a in steps.values())

    def set_max_bytes(self, n: int) -> None:
        with self._lock:
            self.max_bytes = int(n)
            self._evict()

    def holds(self, run: int) -> bool:
        """Whether any of ``run``'s steps are kept."""
        with self._lock:
            entry = self._runs.get(run)
            return entry is not None and bool(entry[1])

    def get(self, run: int, index: int) -> tuple[tuple[int, ...], np.ndarray] | None:
        """(prompt tokens, logits) of step ``index`` of ``run``, or None when not kept."""
        with self._lock:
            entry = self._runs.get(run)
            if entry is None or index not in entry[1]:
                return None
            return entry[0], entry[1][index]


def what_if(logits: np.ndarray, settings: SamplerSettings, prompt_tokens: Sequence[int], steps: Sequence[Step],
            index: int, engine: TokenizingEngine, piece_of: Callable[[int], str]) -> Step:
    """Step ``index`` of a run (``steps``, its records) recomputed with ``settings``: the chain
    on that step's ``logits`` (the history is the prompt's tokens and the run's tokens before
    it), the run's token taken. ``engine`` tokenizes a logit-bias text and gives DRY's
    vocabulary (``resolve_inputs``)."""
    step = steps[index]
    assert step.token_id is not None
    res = chain_at(logits, settings, prompt_tokens, steps, index, engine)
    return res.to_step(int(step.token_id), index=step.index, position=step.position, text=step.token,
                       piece=step.piece, piece_of=piece_of, forced=step.forced)


def chain_at(logits: np.ndarray, settings: SamplerSettings, prompt_tokens: Sequence[int], steps: Sequence[Step],
             index: int, engine: TokenizingEngine) -> ChainResult:
    """Our chain with ``settings`` on step ``index``'s ``logits`` of a run (``steps``): the
    history is the prompt's tokens and the run's tokens before it, XTC acts where the run's did;
    Mirostat and adaptive-p start from their initial state."""
    history = list(prompt_tokens) + [int(s.token_id) for s in steps[:index] if s.token_id is not None]
    need = history_needed(settings)
    bias, breakers = resolve_inputs(settings, engine)
    return apply_chain(logits, settings, history[-need:] if need > 0 else (), top_n=settings.top_n,
                       logit_bias=bias, dry_breakers=breakers,
                       xtc_draw=_xtc_draw(steps[index]) if index < len(steps) else None)


@dataclass(frozen=True)
class Rescored:
    """A whole run recomputed under other settings, token for token (``rescore``): ``steps``
    (None where the step's logits are not kept), and per step the new final entropy, the
    chosen token's new final probability and whether the new settings cut it (NaN / False
    where not computed)."""

    settings: SamplerSettings
    steps: tuple[Step | None, ...]
    entropy_final: np.ndarray
    p_final: np.ndarray
    cut: np.ndarray

    @property
    def n_cut(self) -> int:
        return int(self.cut.sum())

    @property
    def n_missing(self) -> int:
        return sum(s is None for s in self.steps)


def rescore(memory: LogitMemory, run: int, settings: SamplerSettings, steps: Sequence[Step],
            engine: TokenizingEngine, piece_of: Callable[[int], str]) -> Rescored:
    """Every step of ``run`` (its records ``steps``) recomputed with ``settings`` and the run's
    tokens (teacher-forced). Unlike one what-if, Mirostat's mu and adaptive-p's average are
    carried from step to step along the run's tokens, as a generation would."""
    need = history_needed(settings)
    bias, breakers = resolve_inputs(settings, engine)
    state = SamplerState.initial(settings)
    out: list[Step | None] = []
    for i, step in enumerate(steps):
        kept = memory.get(run, i)
        if kept is None or step.token_id is None:
            out.append(None)
            state = SamplerState.initial(settings)  # the chain of states breaks at a gap
            continue
        prompt_tokens, logits = kept
        history = list(prompt_tokens) + [int(s.token_id) for s in steps[:i] if s.token_id is not None]
        res = apply_chain(logits, settings, history[-need:] if need > 0 else (), top_n=settings.top_n,
                          logit_bias=bias, dry_breakers=breakers, xtc_draw=_xtc_draw(step), state=state)
        new = res.to_step(int(step.token_id), index=step.index, position=step.position, text=step.token,
                          piece=step.piece, piece_of=piece_of, forced=step.forced)
        state = res.next_state(int(step.token_id)) or state
        out.append(new)
    ent = np.array([s.entropy_final if s is not None else np.nan for s in out], dtype=np.float64)
    pf = np.array([s.p_final if s is not None else np.nan for s in out], dtype=np.float64)
    cut = np.array([s is not None and s.p_final <= 0 for s in out], dtype=bool)
    return Rescored(settings, tuple(out), ent, pf, cut)


def run_prompt_tokens(backend: LocalEngine, prompt: str, steps: Sequence[Step]) -> list[int]:
    """The tokens ``prompt`` became in the run of ``steps``: tokenized as a generation does,
    with special tokens parsed when that is what makes the first step's position right (a chat
    template's text). Raises ``GenerationError`` when neither tokenization fits the run."""
    plain = backend.tokenize(prompt, add_special=True)
    if not steps or steps[0].position == len(plain):
        return plain
    special = backend.tokenize(prompt, add_special=True, parse_special=True)
    if steps[0].position == len(special):
        return special
    raise GenerationError(f"the run's prompt does not tokenize the way it did in the run ({len(plain):,} tokens, the "
                          f"run says {steps[0].position:,}): was it made with another model?")


def recompute_logits(backend: LocalEngine, memory: LogitMemory, run: int, prompt: str, steps: Sequence[Step], *,
                     chunk: int = 32, cancel: threading.Event | None = None) -> int:
    """Evaluate ``prompt`` and the run's tokens once on ``backend`` (teacher-forced) and keep
    each step's logits in ``memory`` under ``run``; returns how many steps were evaluated (fewer
    when ``cancel`` was set). Raises ``GenerationError`` when the run cannot be recomputed on
    this model (a step without a token id, a prompt that tokenizes otherwise, a run longer than
    the context can hold)."""
    if any(s.token_id is None for s in steps):
        raise GenerationError("the run has steps without token ids (text from a server): it cannot be recomputed")
    if memory.max_bytes <= 0:
        raise GenerationError("the what-if memory is set to 0 MB (Model panel): raise it to keep logits")
    prompt_tokens = run_prompt_tokens(backend, prompt, steps)
    tokens = prompt_tokens + [int(s.token_id) for s in steps if s.token_id is not None]
    limit = backend.model.n_ctx_train
    if limit and len(tokens) > limit:
        raise GenerationError(f"the run is {len(tokens):,} tokens, more than the model's {limit:,}-token context")
    memory.start(run, prompt_tokens)
    done = 0
    for pos, logits in forced_logits(backend, tokens, len(prompt_tokens) - 1, chunk=chunk, cancel=cancel):
        memory.put(run, pos - (len(prompt_tokens) - 1), logits)  # put copies
        done += 1
    return done


def _xtc_draw(step: Step) -> float | None:
    """The run's own XTC draw at this step, when it had one (so XTC acts where it acted)."""
    for st in step.stages:
        if st.name == "xtc" and st.value is not None:
            return float(st.value)
    return None
