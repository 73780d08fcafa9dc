"""Parameters of each bundle kind, part by part (each kind's ``parameters`` module, annotator/kinds/
plugin.py): at paper size counted on PyTorch's ``meta`` device from the published configurations
(no weights, no memory), at the small profile's size read from its safetensors headers.
``benchmarks/kinds.py`` writes both into the README's kinds table. LoRA rank 8 on q/k/v/o for the
LLM kinds."""

from __future__ import annotations

from pathlib import Path

LORA_RANK = 8


def count(model) -> int:
    return sum(p.numel() for p in model.parameters())


def lora_parameters(llm_config) -> int:
    from training.llm import lora_shapes

    return sum(a * b for a, b in lora_shapes(llm_config, LORA_RANK).values())


def paper_parameters() -> dict[str, dict[str, int]]:
    """kind → part → parameters at paper size (each kind's ``parameters.paper``)."""
    from annotator.kinds import KINDS

    return {
        k.name: k.part("parameters").paper() for k in KINDS.values() if k.has_part("parameters")
    }


def safetensors_parameters(directory: Path) -> int:
    """Parameters stored in a directory's safetensors files (headers only, nothing loaded)."""
    import math

    from safetensors import safe_open

    total = 0
    for path in sorted(Path(directory).rglob("*.safetensors")):
        with safe_open(str(path), framework="pt") as handle:
            for key in handle.keys():  # noqa: SIM118 (safe_open is not a dict)
                total += math.prod(handle.get_slice(key).get_shape())
    return total


def small_parameters(small_dir: Path) -> dict[str, dict[str, int]]:
    """kind → part → parameters in the small profile (its untrained bundles' shapes; each kind's
    ``parameters.small``)."""
    from annotator.kinds import KINDS

    return {
        k.name: k.part("parameters").small(Path(small_dir))
        for k in KINDS.values()
        if k.has_part("parameters")
    }
