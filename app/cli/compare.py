"""``samplescope compare``: decoding strategies side by side on one prompt, in lockstep.

Owns: ``cmd_compare`` and its table (one row per step, a column per strategy, the fork marked;
then each column's figures and its beams), printed from the lab's typed records
(``app.labs.decoding.records``: ``ColumnRecord``, ``StepRecord``, ``ForkRecord``, the
``LockstepSummary``). With ``--json``: one JSON line per record, then ``{"summary": ...}`` with
``model``; the lines hold the keys they held before records were typed (the records' dict forms
without ``schema``). Strategies a server cannot run (beam search, typical) are refused before
any request. Main thread; no Qt.
"""

from __future__ import annotations

import argparse
import math
from typing import TYPE_CHECKING, Any, cast

from app.core.records import plain
from app.core.streams import drain

from .scaffold import UsageError, chat_messages, checking_input, fmt as _fmt, open_model, print_record

if TYPE_CHECKING:
    from app.labs.decoding.records import ColumnRecord, ForkRecord, LockstepSummary, StepRecord

__all__ = ["cmd_compare"]


def _as_before(record: Any) -> dict[str, Any]:
    """A record's dict form as ``--json`` prints it: without ``schema`` (the keys of before)."""
    return {k: v for k, v in plain(record).items() if k != "schema"}


def _cell(text: str, width: int) -> str:
    shown = text.replace("\n", "\\n").replace("\t", "\\t")
    return (shown if len(shown) <= width else shown[: width - 1] + "~").ljust(width)


def _print_compare_row(k: int, row: dict[int, StepRecord], n_cols: int, width: int) -> None:
    cells = []
    for c in range(n_cols):
        r = row.get(c)
        if r is None:
            cells.append(" " * (width + 6))
        else:
            p = r.p_raw
            cells.append(_cell(r.token or r.piece, width) + (f" {p:5.2f}" if not math.isnan(p) else "     -"))
    print(f"{k:>4}  " + "  ".join(cells), flush=True)


def cmd_compare(a: argparse.Namespace) -> int:
    """``samplescope compare``: decoding strategies side by side in lockstep, then their figures."""
    from app.labs.decoding import lockstep, parse_strategies
    from app.labs.decoding.records import ColumnRecord, ForkRecord, StepRecord

    remote = bool(getattr(a, "base_url", None))
    with checking_input():
        strategies = parse_strategies(a.strategies)
        if a.max_tokens < 1:
            raise UsageError(f"--max-tokens must be at least 1, got {a.max_tokens}")
        if not 1 <= a.top_n <= 200:
            raise UsageError(f"--top-n must be 1..200, got {a.top_n}")
        if not 0 <= a.seed <= 2**32 - 1:
            raise UsageError(f"--seed must be 0..{2**32 - 1}, got {a.seed}")
    cancel = a.cancel
    messages = None
    if remote:
        from app.labs.decoding import remote_support

        for s in strategies:  # refused before any request
            if s.kind in ("beam", "typical"):
                raise UsageError(f"{s.spec}: {remote_support(s)}")
    backend, model_name = open_model(a, probe=True)
    try:
        prompt, parse_special = a.prompt, False
        if a.chat and remote:
            messages = chat_messages(a)
        elif a.chat:
            from backends.base import GenerationError

            try:
                prompt = backend.format_chat(chat_messages(a))
            except GenerationError as exc:
                raise UsageError(f"--chat is not possible with this model: {exc}") from None
            parse_special = True
        gen = lockstep(backend, prompt, strategies, a.max_tokens, a.seed, cancel, top_n=a.top_n, stop=tuple(a.stop),
                       beam_method=a.beam_method, beam_batched=a.beam_batched, parse_special=parse_special,
                       messages=messages)
        labels: list[str] = []
        width = 14
        row: dict[int, StepRecord] = {}
        row_step = 0
        header = False

        def show(rec: ColumnRecord | StepRecord | ForkRecord) -> None:
            """One side-by-side table row per step, printed when the next step (or the fork) arrives."""
            nonlocal row, row_step, header
            if isinstance(rec, ColumnRecord):
                labels.append(rec.label)
            elif isinstance(rec, StepRecord):
                if not header:
                    header = True
                    print("step  " + "  ".join(_cell(lab, width + 6) for lab in labels), flush=True)
                if row and rec.step != row_step:
                    _print_compare_row(row_step, row, len(labels), width)
                    row = {}
                row_step = rec.step
                row[rec.column] = rec
            elif isinstance(rec, ForkRecord):
                if row:
                    _print_compare_row(row_step, row, len(labels), width)
                    row = {}
                groups = " | ".join(",".join(labels[i] for i in g) for g in rec.groups)
                print(f"      ^ the columns part here (step {rec.step}): {groups}", flush=True)

        summary = cast("LockstepSummary", drain(gen, (lambda rec: print_record(_as_before(rec), a)) if a.json
                                                else show))
        if row and not a.json:
            _print_compare_row(row_step, row, len(labels), width)
    finally:
        backend.close()
    if a.json:
        print_record({"summary": {**_as_before(summary), "model": model_name}}, a)
        return 0
    print(f"\n{'strategy':<18} {'logprob':>9} {'perplexity':>10} {'entropy':>8} {'length':>6}  {'end':<9} text")
    for c in summary.columns:
        print(f"{c.label:<18} {_fmt(c.total_logprob, '9.3f')} {_fmt(c.perplexity, '10.3f')} "
              f"{_fmt(c.mean_entropy, '8.3f')} {c.length:>6}  {c.finish_reason:<9} {c.text!r}")
        for i, beam in enumerate(c.beam.beams if c.beam is not None else ()):
            print(f"{'':<4}beam {i + 1}: sum {beam.logprob:.3f}, score {beam.score:.3f}, "
                  f"{'finished' if beam.finished else 'unfinished'} ({beam.finish_reason}) {beam.text!r}")
    fork = summary.fork_step
    print("first fork: " + (f"step {fork}" if fork is not None else "none (the columns never part)")
          + (" [cancelled]" if summary.cancelled else "") + f"; {model_name}")
    return 0
