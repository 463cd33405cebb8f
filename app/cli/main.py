"""``samplescope``'s entry point: which command runs, and the checks every command shares.

Owns: ``main`` (parse, make text valid Unicode, check the prompt and the load flags before any
model is opened, run the command inside ``scaffold.run_command`` with a Ctrl+C that stops at the
next token, or open the window) and ``cmd_bench``. Main thread; Qt only for the window.
"""

from __future__ import annotations

import argparse
from typing import Callable, Sequence

from backends.base import BackendError, require_prompt
from backends.text import clean_text

from .args import build_parser, load_settings_from_args
from .compare import cmd_compare
from .generate import cmd_generate
from .lens import cmd_lens
from .align import cmd_align
from .models import cmd_models
from .score import cmd_score
from .shift import cmd_shift
from .vs import cmd_vs
from .scaffold import UsageError, dumps, interruptible, run_command, safe_stdout, say

__all__ = ["main", "cmd_bench"]


def cmd_bench(a: argparse.Namespace) -> int:
    from app.bench import run_bench

    try:
        result = run_bench(a)
    except ValueError as exc:  # an unknown section
        raise UsageError(str(exc)) from None
    except RuntimeError as exc:
        raise BackendError(str(exc)) from None
    if a.json:
        print(dumps(result))
    return 0


#: each command and the exit code of a ValueError it did not check first (2: a flag the model or
#: the backend cannot take; 1: the run itself failed)
COMMANDS: dict[str, tuple[Callable[[argparse.Namespace], int], int]] = {
    "generate": (cmd_generate, 1), "bench": (cmd_bench, 1), "vs": (cmd_vs, 1), "align": (cmd_align, 2),
    "shift": (cmd_shift, 1), "compare": (cmd_compare, 2), "score": (cmd_score, 1),
    "models": (cmd_models, 2), "lens": (cmd_lens, 1),
}


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    a = parser.parse_args(argv)
    for name in ("prompt", "system", "template"):  # text typed by the user: valid Unicode from here on
        if isinstance(getattr(a, name, None), str):
            setattr(a, name, clean_text(getattr(a, name)))
    if isinstance(getattr(a, "stop", None), list):
        a.stop = [clean_text(x) for x in a.stop]
    entry = COMMANDS.get(a.command)
    if entry is not None:
        command, value_error_exit = entry
        safe_stdout()
        try:  # the checks every command shares, before any model is opened
            if hasattr(a, "prompt"):
                require_prompt(a.prompt)
            if hasattr(a, "n_ctx"):
                load_settings_from_args(a)
        except (ValueError, BackendError) as exc:
            say(exc)
            return 2
        with interruptible(enabled=command is not cmd_bench) as a.cancel:
            rc = run_command(command, a, value_error_exit=value_error_exit)
        return 130 if rc == 0 and a.cancel.is_set() else rc
    from app.main import run_gui

    return run_gui(
        prompt=getattr(a, "prompt", None), autorun=getattr(a, "run", False),
        step_mode=getattr(a, "step_mode", False), lab=getattr(a, "lab", None),
    )
