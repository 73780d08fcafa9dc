"""The review loop: the segments a model is least sure of go to people in Label Studio, and their
corrections come back as a training manifest.

- ``labelstudio.py``: Label Studio's formats — the tasks it imports (with the model's label as a
  pre-annotation), the labeling configuration, and the labels read back from its JSON export.
- ``export.py``: which segments to review (least confident first, a quota per label, a budget)
  and their audio cut from the sources into the export folder.
"""
