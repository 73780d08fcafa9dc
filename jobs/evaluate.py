"""Ray job entrypoint for ``annotator eval``: same arguments. The models run in a Ray actor that
asks for a GPU where the config says so; the driver writes the result.

ray job submit --working-dir . -- python -m jobs.evaluate registry:current --manifest m.jsonl --out eval/
"""

from __future__ import annotations

import sys

from annotator.cli import main

if __name__ == "__main__":
    sys.exit(main(["eval", *sys.argv[1:]]))
