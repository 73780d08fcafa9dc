"""annotator: label large audio archives with transcripts and emotions (EmoQ) on Ray Data."""

__version__ = "0.1.0"
