"""The labs, one package each: its Qt-free parts (engine, prompts, parsers, measures) in the
package, its Qt parts (panel, plots, presenter) beside them in ``_qt``, as napari pairs
``components/`` with ``_qt/``. Each lab declares itself once in ``app.lab_registry``.

``vs`` (Verbalized Sampling), ``shift`` (sampled vs ideal), ``align`` (P(token) vs P(task)),
``decoding`` (strategies, beams, lockstep, branches, A/B). The Qt-free parts run on the thread
that calls them (the lab worker in the window, the main thread in the CLI); import-linter keeps
Qt out of them.
"""
