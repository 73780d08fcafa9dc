"""Peak RSS of exporting one stage-2 checkpoint: the whole-model export (base LLM built, the way
export worked before) against the export from the checkpoint's tensors (annotator/kinds/emoq/export.py).

    python -m benchmarks.export

Each export runs in a fresh subprocess so its peak RSS is its own; a third child only imports
what both import, the floor under both. The small profile's LLM is tiny, so the paper profile's
arithmetic is printed beside the measurement: the bytes each path would load for
Qwen2.5-7B-Instruct, counted from its config on the meta device (nothing is downloaded or
allocated).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import write_result

PATHS = ("imports", "model", "tensors")
# Qwen/Qwen2.5-7B-Instruct's config.json (the shapes that decide the sizes).
QWEN25_7B = {
    "hidden_size": 3584,
    "intermediate_size": 18944,
    "num_hidden_layers": 28,
    "num_attention_heads": 28,
    "num_key_value_heads": 4,
    "vocab_size": 152064,
    "tie_word_embeddings": False,
}
# FacebookAI/roberta-base, the paper's EmoQ-Former start, cross-attending to hubert-large frames.
ROBERTA_BASE = {
    "hidden_size": 768,
    "num_heads": 12,
    "intermediate_size": 3072,
    "num_layers": 12,
    "vocab_size": 50265,
    "max_positions": 514,
    "type_vocab_size": 1,
    "position_offset": 2,
    "layer_norm_eps": 1e-5,
    "audio_dim": 1024,
}
GB = 1e9


def measure(path: str, checkpoint: str, out: str, home: str) -> None:
    """Child process: one export (or the imports alone); prints seconds and peak RSS."""
    from annotator.config import load_config
    from annotator.kinds.emoq.export import export_bundle
    from benchmarks.common import peak_rss_mib
    from tests.factories import export_bundle_by_model

    config = load_config(None, models={"home": home})
    stage1 = Path(home) / "small" / "bundle"
    start = time.perf_counter()
    version = None
    if path == "model":
        version = export_bundle_by_model(config, stage1, checkpoint, Path(out)).version
    elif path == "tensors":
        version = export_bundle(config, stage1, checkpoint, Path(out)).version
    wall = time.perf_counter() - start
    print(json.dumps({"wall_s": wall, "peak_rss_mib": peak_rss_mib(), "version": version}))


def paper_arithmetic(rank: int, num_queries: int) -> dict[str, float]:
    """Bytes (float32, as the stage-2 model trains and checkpoints) each export path loads."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from annotator.kinds.emoq.emoq_former import EmoQFormer, EmoQFormerConfig
    from annotator.kinds.emoq.projector import Projector
    from training.llm import lora_shapes

    llm_config = Qwen2Config(**QWEN25_7B)
    with torch.device("meta"):
        llm = sum(p.numel() for p in Qwen2ForCausalLM(llm_config).parameters())
        former_model = EmoQFormer(EmoQFormerConfig(**ROBERTA_BASE, num_queries=num_queries))
        former = sum(p.numel() for p in former_model.parameters())
        projector = sum(
            p.numel()
            for p in Projector(former_model.config.embed_dim, llm_config.hidden_size).parameters()
        )
    lora = sum(a * b for a, b in lora_shapes(llm_config, rank).values())
    return {
        "llm_params": llm,
        "lora_params": lora,
        "former_params": former,
        "projector_params": projector,
        # The whole-model path builds the base LLM and every trainable part, then reads the
        # checkpoint (trainable parts again) into it.
        "model_path_gb": 4 * (llm + 2 * (lora + former + projector)) / GB,
        # The tensor path reads the checkpoint and assigns its tensors to modules built without
        # storage: every trainable part once, no LLM weight.
        "tensors_path_gb": 4 * (former + projector + lora) / GB,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--child", choices=PATHS, help=argparse.SUPPRESS)
    parser.add_argument("--checkpoint", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("--home", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        measure(args.child, args.checkpoint, args.out, args.home)
        return

    from annotator.config import load_config
    from annotator.models.profiles import build_small_profile
    from tests.factories import stage2_checkpoint

    config = load_config(None)
    home = Path(config.models.home)
    build_small_profile(home)
    config = load_config(None, models={"home": str(home)})
    runs = {}
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = stage2_checkpoint(config, home / "small" / "bundle", Path(tmp) / "ckpt", 0)
        checkpoint_mib = (checkpoint / "state.safetensors").stat().st_size / 2**20
        for path in PATHS:
            command = [sys.executable, "-m", "benchmarks.export", "--child", path]
            command += ["--checkpoint", str(checkpoint), "--out", f"{tmp}/{path}"]
            command += ["--home", str(home)]
            done = subprocess.run(command, capture_output=True, text=True, check=True)
            runs[path] = json.loads(done.stdout.strip().splitlines()[-1])
            print(path, runs[path], flush=True)
    if runs["model"]["version"] != runs["tensors"]["version"]:
        raise SystemExit("the two exports wrote different bundles")
    paper_config = load_config(Path(__file__).parents[1] / "cluster" / "paper.yaml")
    paper = paper_arithmetic(paper_config.train.lora_rank, paper_config.train.num_queries)
    print(
        "Qwen2.5-7B-Instruct, float32: the whole-model export builds the LLM "
        f"({paper['llm_params'] / 1e9:.2f} B params = {4 * paper['llm_params'] / GB:.1f} GB) plus "
        f"the trainable parts twice → ≈ {paper['model_path_gb']:.1f} GB; the tensor export reads "
        f"LoRA r={paper_config.train.lora_rank} ({paper['lora_params'] / 1e6:.2f} M params = "
        f"{4 * paper['lora_params'] / 1e6:.0f} MB) + EmoQ-Former "
        f"({paper['former_params'] / 1e6:.1f} M = {4 * paper['former_params'] / 1e6:.0f} MB) + "
        f"projector ({paper['projector_params'] / 1e6:.1f} M = "
        f"{4 * paper['projector_params'] / 1e6:.0f} MB) → ≈ {paper['tensors_path_gb']:.2f} GB",
        flush=True,
    )
    write_result(
        "export",
        {
            "profile": "small",
            "checkpoint_mib": checkpoint_mib,
            "peak_rss_mib": {path: runs[path]["peak_rss_mib"] for path in PATHS},
            "wall_s": {path: runs[path]["wall_s"] for path in ("model", "tensors")},
            "same_bundle": True,
            "paper_arithmetic": paper,
        },
    )


if __name__ == "__main__":
    main()
