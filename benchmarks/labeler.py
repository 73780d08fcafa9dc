"""Label throughput: vLLM (CPU) with and without prefix caching, and the transformers + PEFT
reference, on the same prompts in the same run.

    python -m benchmarks.labeler [--prompts 512] [--batch 64]

Every prompt has its own transcript (words drawn at random, 8–16 of them) and a random soft token,
so what the cache can reuse is the template alone, as in a real archive. Each engine starts with a
cold cache. The JSON has prompts/s of each, the share of prompt tokens served from the cache, the
posteriors' largest difference from the reference, for each engine fed the way the label
stage feeds it (batches of ``--batch`` one after another), two callers at once, and every
prompt at once; each the best of ``--repeats`` passes from a cold cache.
"""

from __future__ import annotations

import argparse
import random
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

from benchmarks.common import write_result

WORDS = [
    "I",
    "you",
    "we",
    "told",
    "twice",
    "already",
    "nobody",
    "listened",
    "to",
    "a",
    "single",
    "word",
    "said",
    "thank",
    "so",
    "much",
    "for",
    "calling",
    "it",
    "was",
    "really",
    "lovely",
    "hear",
    "from",
    "the",
    "delivery",
    "is",
    "scheduled",
    "Thursday",
    "between",
    "nine",
    "and",
    "eleven",
    "don't",
    "know",
    "what",
    "do",
    "anymore",
    "everything",
    "just",
    "keeps",
    "going",
    "wrong",
]


def transcripts(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(8, 16))) for _ in range(n)]


def timed(labeler, prompts, batch: int, threads: int) -> tuple[float, np.ndarray]:
    """Prompts/s of ``prompts`` served in batches of ``batch`` by ``threads`` callers."""
    batches = [prompts[i : i + batch] for i in range(0, len(prompts), batch)]
    t = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        probs = np.concatenate(list(pool.map(labeler.posteriors, batches)))
    return len(prompts) / (time.perf_counter() - t), probs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--prompts", type=int, default=512)
    parser.add_argument("--batch", type=int, default=64, help="the label stage's batch (small)")
    parser.add_argument("--repeats", type=int, default=3)
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
    width = pe.table.shape[1]
    prompts = [
        pe.build(text, torch.randn(width, generator=g) * pe.table.std())
        for text in transcripts(args.prompts)
    ]
    warm = [pe.build(text, torch.zeros(width)) for text in transcripts(8, seed=1)]
    a, b = pe.prompt("yes").ids, pe.prompt("no").ids
    template = next(i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y)
    tokens = sum(len(p) for p in prompts)

    ref = ReferenceLabeler(root / "llm", bundle.emotion_token_ids, bundle.lora_dir, batch_size=32)
    ref.posteriors(warm)
    t = time.perf_counter()
    ref_p = ref.posteriors(prompts)
    ref_s = time.perf_counter() - t

    result: dict = {
        "prompts": len(prompts),
        "prompt_tokens_mean": tokens / len(prompts),
        "reference_prompts_per_s": len(prompts) / ref_s,
        "torch_threads": torch.get_num_threads(),
    }
    feeds = {  # how prompts reach the engine: (batch, caller threads)
        f"batches_of_{args.batch}": (args.batch, 1),
        f"batches_of_{args.batch}_two_threads": (args.batch, 2),
        "all_at_once": (len(prompts), 1),
    }
    for name, caching in (("uncached", False), ("cached", True)):
        t = time.perf_counter()
        vllm = VLLMLabeler(
            root / "llm",
            bundle.emotion_token_ids,
            bundle.lora_dir,
            in_process=True,
            prefix_caching=caching,
        )
        result[f"vllm_{name}_startup_s"] = time.perf_counter() - t
        vllm.posteriors(warm)
        for feed, (batch, threads) in feeds.items():
            best = 0.0
            for _ in range(args.repeats):  # each from a cold cache; the best of them
                vllm.reset_prefix_cache()
                vllm.prompt_tokens = vllm.cached_tokens = 0
                rate, probs = timed(vllm, prompts, batch, threads)
                best = max(best, rate)
            result[f"vllm_{name}_{feed}_prompts_per_s"] = best
            result[f"vllm_{name}_{feed}_cached_token_share"] = (
                vllm.cached_tokens / vllm.prompt_tokens
            )
            result[f"vllm_{name}_{feed}_max_abs_posterior_diff"] = float(
                np.abs(ref_p - probs).max()
            )
        vllm.close()
    for feed in feeds:
        result[f"cached_over_uncached_{feed}"] = (
            result[f"vllm_cached_{feed}_prompts_per_s"]
            / result[f"vllm_uncached_{feed}_prompts_per_s"]
        )
    first = f"vllm_cached_batches_of_{args.batch}_prompts_per_s"
    result["cached_over_reference"] = result[first] / result["reference_prompts_per_s"]
    result["template_tokens_before_transcript"] = template
    write_result("labeler", result)


if __name__ == "__main__":
    main()
