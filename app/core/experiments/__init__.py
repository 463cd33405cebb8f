"""Headless experiment runners of the labs (no Qt). ``vs``: the Verbalized Sampling lab.
Each runner runs on the thread that calls it (the lab's worker thread in the window, the main
thread in the CLI)."""
