"""The connection to Ray: a running cluster (``ray_address``) or a local one."""

from __future__ import annotations

from annotator.config import AnnotatorConfig


def connect(config: AnnotatorConfig) -> None:
    """Join the cluster ``ray_address`` names, or start a local one; quiet Ray Data's own bars."""
    import ray
    import ray.data

    if not ray.is_initialized():
        ray.init(address=config.ray_address, log_to_driver=False, include_dashboard=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
