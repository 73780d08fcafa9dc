"""Ray job entrypoint for ``annotator eval``: same arguments.

ray job submit --working-dir . -- python -m jobs.evaluate bundles/emoq --manifest m.jsonl --out eval/
"""

from __future__ import annotations

import sys

from annotator.cli import main

if __name__ == "__main__":
    sys.exit(main(["eval", *sys.argv[1:]]))
