"""Label throughput: vLLM (CPU) vs the transformers + PEFT reference on the same prompts.

    python -m benchmarks.labeler [--prompts 512]

Both engines label the same EmoQ prompts (random soft tokens, transcripts of typical length) with
the small profile's bundle; the JSON has segments/s of each and their max posterior difference.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from benchmarks.common import write_result

SENTENCES = [
    "I told you twice already and nobody listened to a single word I said",
    "thank you so much for calling, it was really lovely to hear from you",
    "the delivery is scheduled for Thursday between nine and eleven",
    "I don't know what to do anymore, everything just keeps going wrong",
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--prompts", type=int, default=512)
    args = parser.parse_args()

    from annotator.config import default_home
    from annotator.models.bundle import Bundle
    from annotator.models.labeler.reference import ReferenceLabeler
    from annotator.models.labeler.vllm import VLLMLabeler
    from annotator.models.profiles import build_small_profile
    from annotator.models.prompt import PromptEmbedder

    root = build_small_profile(default_home())
    bundle = Bundle.load(root / "bundle")
    pe = PromptEmbedder.from_llm(root / "llm", bundle.labels)
    g = torch.Generator().manual_seed(0)
    prompts = [
        pe.build(SENTENCES[i % 4], torch.randn(pe.table.shape[1], generator=g) * pe.table.std())
        for i in range(args.prompts)
    ]
    tokens = sum(len(p) for p in prompts)

    ref = ReferenceLabeler(root / "llm", bundle.emotion_token_ids, bundle.lora_dir, batch_size=32)
    ref.posteriors(prompts[:8])  # warm-up
    t = time.perf_counter()
    ref_p = ref.posteriors(prompts)
    ref_s = time.perf_counter() - t

    t = time.perf_counter()
    vllm = VLLMLabeler(root / "llm", bundle.emotion_token_ids, bundle.lora_dir)
    startup_s = time.perf_counter() - t
    vllm.posteriors(prompts[:8])  # warm-up
    t = time.perf_counter()
    vllm_p = vllm.posteriors(prompts)
    vllm_s = time.perf_counter() - t
    vllm.close()

    write_result(
        "labeler",
        {
            "prompts": len(prompts),
            "prompt_tokens_mean": tokens / len(prompts),
            "reference_segments_per_s": len(prompts) / ref_s,
            "vllm_segments_per_s": len(prompts) / vllm_s,
            "vllm_startup_s": startup_s,
            "vllm_over_reference": ref_s / vllm_s,
            "max_abs_posterior_diff": float(np.abs(ref_p - vllm_p).max()),
            "torch_threads": torch.get_num_threads(),
        },
    )


if __name__ == "__main__":
    main()
