"""The decoding lab's Qt parts: ``panel`` and ``presenter`` (GUI thread)."""
