"""One generation on a local model: read logits, run our sampler chain, record the step.

Owns: ``GenerationSession`` (the loop shared by the window, ``samplescope generate`` and the
benchmark). ``Utf8Stream`` (token bytes to text, never splitting a character) lives in
``backends.text`` and is re-exported here. Qt-free. A session runs on the thread that owns its
backend (the model worker); it yields frozen ``Step`` and ``Finished`` values that may cross to
the GUI thread.

A session works against any object with the small "logits engine" surface of
``backends.llama_local.LlamaCppBackend``: ``tokenize, prepare, feed, logits, piece,
token_bytes, is_eog, n_ctx`` (and ``vocab_bytes`` when DRY has sequence breakers).

The stateful samplers (Mirostat's mu, adaptive-p's average) advance with each token taken:
``state`` holds the state for the next step, and each step's chain stages record the value
they used (``StageInfo.value``).
"""

from __future__ import annotations

import threading
import time
from typing import Callable, Iterator, Protocol, Sequence

import numpy as np

from backends.base import Finished, GenerationError, PromptTooLongError, SamplerSettings, Step, require_prompt
from backends.text import Utf8Stream

from .sampling import ChainResult, DryBreakers, SamplerState, apply_chain, history_needed, resolve_inputs

__all__ = ["GenerationSession", "LogitsEngine", "Utf8Stream"]


class LogitsEngine(Protocol):
    """What a ``GenerationSession`` drives: a local sequence (``backends.llama_engine.Sequence``)."""

    @property
    def n_ctx(self) -> int: ...

    def tokenize(self, text: str, *, add_special: bool = True, parse_special: bool = False) -> list[int]: ...
    def prepare(self, tokens: Sequence[int]) -> int: ...
    def feed(self, token: int) -> None: ...
    def logits(self) -> np.ndarray: ...
    def piece(self, token: int) -> str: ...
    def token_bytes(self, token: int, *, special: bool = False) -> bytes: ...
    def is_eog(self, token: int) -> bool: ...


class GenerationSession:
    """Generate from ``prompt`` with ``settings`` on ``engine``, one token per ``commit``.

    ``start()`` evaluates the prompt (reusing the cached prefix); then either iterate
    ``run(cancel)`` or, in step mode, call ``analyze()`` to see the pending distribution and
    ``commit(token_id)`` to take a token (``None`` samples it with the chain). ``grammar`` (a
    ``backends.grammar.Grammar`` in its start state) constrains every token; it is a recorded
    stage of the chain and advances with each token taken.
    """

    def __init__(
        self,
        engine: LogitsEngine,
        prompt: str,
        settings: SamplerSettings,
        *,
        banned_tokens: Sequence[int] = (),
        parse_special: bool = False,
        grammar=None,
        on_logits: Callable[["GenerationSession", int, np.ndarray], None] | None = None,
    ) -> None:
        settings.validate()
        #: called with (this session, step index, the step's full logits) before the chain runs
        #: (the what-if memory keeps a copy); the array is the engine's: copy it to keep it
        self.on_logits = on_logits
        self.grammar = grammar  # a backends.grammar.Grammar: the "grammar" stage of the chain
        self.parse_special = parse_special  # a chat prompt from ``format_chat``
        self.banned_tokens = tuple(int(t) for t in banned_tokens)
        self._banned = np.asarray(self.banned_tokens, dtype=np.int64)  # the chain's ``banned``
        self.engine = engine
        self.prompt = prompt
        self.settings = settings
        self.rng = np.random.Generator(np.random.PCG64(settings.seed))
        # XTC's draw ("does it act this step?") has a generator of its own, so switching XTC on
        # does not change which tokens the main draw picks where XTC leaves the candidates alone
        self.xtc_rng = np.random.Generator(np.random.PCG64([settings.seed, 0x585443]))
        self._logit_bias: tuple[np.ndarray, np.ndarray] | None = None  # resolved at start (a text needs the tokenizer)
        self._dry_breakers: DryBreakers | None = None  # resolved at start (they need the vocabulary)
        #: what Mirostat and adaptive-p carry into the next step
        self.state = SamplerState.initial(settings)
        self.prompt_tokens: list[int] = []
        self.generated: list[int] = []
        self.text = ""
        self.steps: list[Step] = []
        self.finished: Finished | None = None
        self.reused_tokens = 0
        self._utf8 = Utf8Stream()
        self._pending: ChainResult | None = None
        self._t0 = 0.0
        self._started = False
        self._stop_scan_from = 0

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        require_prompt(self.prompt)
        if self.parse_special:
            self.prompt_tokens = self.engine.tokenize(self.prompt, add_special=True, parse_special=True)
        else:
            self.prompt_tokens = self.engine.tokenize(self.prompt, add_special=True)
        if len(self.prompt_tokens) + 1 > self.engine.n_ctx:
            raise PromptTooLongError(
                f"The prompt is {len(self.prompt_tokens):,} tokens but the context holds "
                f"{self.engine.n_ctx:,}. Shorten the prompt or load the model with a larger context."
            )
        self._logit_bias, self._dry_breakers = resolve_inputs(self.settings, self.engine)
        self.reused_tokens = self.engine.prepare(self.prompt_tokens)
        self._t0 = time.perf_counter()  # tokens/s counts generation, not prompt evaluation
        self._started = True

    @property
    def position(self) -> int:
        return len(self.prompt_tokens) + len(self.generated)

    def analyze(self) -> ChainResult:
        """The chain applied to the logits of the next position (cached until ``commit``)."""
        if not self._started:
            raise GenerationError("The session has not been started.")
        if self._pending is None:
            s = self.settings
            need = history_needed(s)
            window = (self.prompt_tokens + self.generated)[-need:] if need > 0 else ()
            logits = self.engine.logits()
            if self.on_logits is not None:
                self.on_logits(self, len(self.steps), logits)
            self._pending = apply_chain(logits, s, window, top_n=s.top_n, grammar=self.grammar,
                                        logit_bias=self._logit_bias, rng=self.xtc_rng, state=self.state,
                                        dry_breakers=self._dry_breakers, banned=self._banned)
        return self._pending

    def commit(self, token_id: int | None = None) -> Step:
        """Take the next token (sampled when ``token_id`` is None), record it and feed it."""
        if self.finished is not None:
            raise GenerationError("This generation has already finished.")
        result = self.analyze()
        forced = token_id is not None
        tok = int(token_id) if token_id is not None else int(result.draw(self.rng))
        if forced and self.grammar is not None and not bool(self.grammar.allowed([tok])[0]):
            raise GenerationError(f"The grammar does not allow {self.engine.piece(tok)!r} here; pick another token.")
        eog = self.engine.is_eog(tok)
        text = "" if eog else self._utf8.push(self.engine.token_bytes(tok))
        step = result.to_step(
            tok,
            index=len(self.steps),
            position=self.position,
            text=text,
            piece=self.engine.piece(tok),
            piece_of=self.engine.piece,
            forced=forced,
        )
        self.steps.append(step)
        self.generated.append(tok)
        self.state = result.next_state(tok, drawn=not forced) or self.state
        self._pending = None
        if self.grammar is not None and not eog:
            self.grammar.accept(tok)
        self.text += text
        if eog:
            self._finish("eos")
        elif self._hit_stop():
            self._finish("stop")
        elif len(self.generated) >= self.settings.max_tokens:
            self._finish("length")
        elif self.position >= self.engine.n_ctx:
            self._finish("context", "The context window is full; load the model with a larger context.")
        else:
            self.engine.feed(tok)
        return step

    def _hit_stop(self) -> bool:
        for stop in self.settings.stop:
            if not stop:
                continue
            at = self.text.find(stop, max(0, self._stop_scan_from - len(stop)))
            if at >= 0:
                self.text = self.text[:at]
                return True
        self._stop_scan_from = len(self.text)
        return False

    def _finish(self, reason: str, message: str = "") -> Finished:
        if reason not in ("stop",):
            self.text += self._utf8.flush()
        self.finished = Finished(
            reason=reason,
            text=self.text,
            n_tokens=len(self.steps),
            seconds=time.perf_counter() - self._t0 if self._t0 else 0.0,
            prompt_tokens=len(self.prompt_tokens),
            reused_tokens=self.reused_tokens,
            message=message,
        )
        return self.finished

    def end(self, reason: str, message: str = "") -> Finished:
        """End the generation now for ``reason`` (a caller's own end, e.g. "draws": the P(token)
        lab has read enough items), keeping everything produced so far."""
        if self.finished is None:
            self._finish(reason, message)
        return self._ended()

    def cancel(self) -> Finished:
        """End the generation now, keeping everything produced so far."""
        if self.finished is None:
            self._finish("cancelled", "Stopped by the user; the partial output is kept.")
        return self._ended()

    def _ended(self) -> Finished:
        assert self.finished is not None, "called after _finish"
        return self.finished

    def run(self, cancel: threading.Event | None = None) -> Iterator[Step | Finished]:
        """Start (if needed) and generate to the end, yielding each Step and then Finished.
        ``cancel`` is checked between steps."""
        if not self._started:
            self.start()
        while self.finished is None:
            if cancel is not None and cancel.is_set():
                self.cancel()
                break
            yield self.commit()
        yield self._ended()
