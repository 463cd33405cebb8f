"""``python -m app.core.sampling``: the chain's timings."""

from .timing import benchmark_chain

benchmark_chain()
