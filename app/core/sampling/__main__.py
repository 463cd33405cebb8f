"""``python -m app.core.sampling``: the chain's timings."""

from .timing import benchmark_chain

if __name__ == "__main__":
    benchmark_chain()
