"""The sampled-vs-ideal lab's Qt parts: ``panel``, ``plots`` and ``presenter`` (GUI thread)."""
