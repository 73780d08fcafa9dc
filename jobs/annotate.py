"""Ray job entrypoint for the annotate run.

    RAY_AUTH_MODE=token RAY_AUTH_TOKEN=... \
    ray job submit --address http://HEAD:8265 --working-dir . -- \
        python -m jobs.annotate 's3://archive/2026-11-21/' --out s3://bucket/annotations \
        --config cluster/paper.yaml

Takes exactly the arguments of ``annotator annotate``. Inside a Ray job, ``RAY_ADDRESS`` names the
cluster, so the run joins it instead of starting a local one; progress goes to the job log as
plain lines, and the exit status is the job's status.

The cluster runs with token authentication: the client needs the cluster's token
(cluster/README.md, "The job-submission token").
"""

from __future__ import annotations

import sys

from annotator.cli import main

if __name__ == "__main__":
    sys.exit(main(["annotate", *sys.argv[1:]]))
