"""The P(token) vs P(task) lab, Qt-free: ``engine`` (decision steps, local and remote),
``task`` (task distributions, prompts, decision sequences), ``measures`` (the distances and the
verdict). Its Qt parts are in ``_qt``."""
