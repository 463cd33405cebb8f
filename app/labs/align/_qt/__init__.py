"""The P(token) vs P(task) lab's Qt parts: ``panel``, ``plots`` and ``presenter`` (GUI thread)."""
