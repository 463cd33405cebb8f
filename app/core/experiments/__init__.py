"""The labs' engines, headless (no Qt): ``vs`` (Verbalized Sampling), ``shift`` (sampled vs
ideal), ``align`` (P(token) vs P(task)) and ``decoding`` (strategies, beams, lockstep, branches,
A/B; a package). Each runs on the thread that calls it (the lab's worker thread in the window,
the main thread in the CLI)."""
