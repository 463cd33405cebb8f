"""Samplescope: a desktop workbench for looking inside how language models pick their words."""

__version__ = "0.1.0"
