"""The Verbalized Sampling lab's Qt parts: ``panel`` and ``presenter`` (GUI thread)."""
