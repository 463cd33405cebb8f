"""The Verbalized Sampling lab, Qt-free: ``engine`` (the VS engines, runs and comparisons),
``records`` (its typed params, records and summary, and ``RECORDS``), ``prompts`` (the paper's
prompts and schemas), ``parse`` (the lenient answer parser), ``reference`` (the US-state
reference data). Its Qt parts are in ``_qt``."""
