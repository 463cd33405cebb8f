"""Qt-free core: sampler chain, metrics, traces, the generation session, run store, settings."""
