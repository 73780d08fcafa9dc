"""annotator: label large audio archives with transcripts and emotions on Ray Data."""

__version__ = "0.1.0"
