"""The serving labeler: vLLM with prompt embeddings and the bundle's LoRA adapter.

One output token is generated with ``allowed_token_ids`` = the emotion tokens and
``logprobs_mode="processed_logprobs"``: vLLM then returns exactly the log-softmax over the
emotion-word logits (EmoQ Eq. 9), so nothing is parsed from free text. Prefix caching stays off:
cached prefixes of prompt-embedding requests can be mixed up (vLLM issue #56655).

``vllm.LLM`` starts worker processes: create it under a ``__main__`` guard or inside a Ray actor.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch


class VLLMLabeler:
    def __init__(
        self,
        llm: str | Path,
        emotion_token_ids: Sequence[int],
        lora_dir: str | Path | None = None,
        max_lora_rank: int = 8,
        dtype: str = "float32",
        max_model_len: int = 1024,
        kv_cache_gb: int = 1,
        gpu_memory_utilization: float = 0.3,
        seed: int = 0,
        in_process: bool = False,
    ) -> None:
        # The CPU backend sizes its KV cache from this variable (GiB); ignored on GPUs.
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(kv_cache_gb))
        # in_process: the engine core and its one worker run in this process. vLLM otherwise
        # spawns an engine-core process and a worker process, each importing torch and vLLM
        # again: 32.5 s to start against 6.3 s in process, measured on 2 cores with the same
        # throughput after. The label stage asks for it on CPU, in its own Ray actor process. Not
        # by default: the CPU worker's start scans every module the process has imported, and
        # one whose globals raise on attribute access (flask's current_app, which moto's server
        # imports in the test process) makes it fail. On a GPU the engine-core process overlaps
        # scheduling with the GPU's work, so it is kept there.
        if in_process:
            os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
        from vllm import LLM, SamplingParams

        self.ids = [int(i) for i in emotion_token_ids]
        self.llm = LLM(
            model=str(llm),
            enable_prompt_embeds=True,
            enable_lora=lora_dir is not None,
            max_lora_rank=max_lora_rank if lora_dir is not None else None,
            max_loras=1,
            enable_prefix_caching=False,
            logprobs_mode="processed_logprobs",
            dtype=dtype,
            max_model_len=max_model_len,
            gpu_memory_utilization=gpu_memory_utilization,
            seed=seed,
            **({"distributed_executor_backend": "uni"} if in_process else {}),
        )
        self.params = SamplingParams(
            max_tokens=1, temperature=1.0, allowed_token_ids=self.ids, logprobs=len(self.ids)
        )
        self.lora = None
        if lora_dir is not None:
            from vllm.lora.request import LoRARequest

            self.lora = LoRARequest("bundle", 1, str(lora_dir))

    def use_adapter(self, lora_dir: str | Path) -> None:
        """Serve another bundle's adapter from now on, in the same engine (one engine scores every
        fold of a cross-validation). The engine must have started with an adapter of a rank at
        least this one's."""
        from vllm.lora.request import LoRARequest

        if self.lora is None:
            raise ValueError("this engine was started without LoRA; start one with lora_dir")
        n = self.lora.lora_int_id + 1  # a new id: vLLM caches adapters by id
        self.lora = LoRARequest(f"bundle{n}", n, str(lora_dir))

    def posteriors(
        self, prompt_embeds: Sequence[torch.Tensor], with_lora: bool = True
    ) -> np.ndarray:
        """(n, labels) posteriors; ``with_lora=False`` serves the base LLM alone."""
        requests = [{"prompt_embeds": e.float().contiguous()} for e in prompt_embeds]
        lora = self.lora if with_lora else None
        outputs = self.llm.generate(requests, self.params, lora_request=lora, use_tqdm=False)
        probs = np.empty((len(outputs), len(self.ids)))
        for row, out in enumerate(outputs):
            top = out.outputs[0].logprobs[0]
            probs[row] = [math.exp(top[i].logprob) for i in self.ids]
        return probs

    def close(self) -> None:
        """Stop the engine's worker processes now rather than at interpreter exit."""
        engine = getattr(self.llm, "llm_engine", None)
        shutdown = getattr(engine, "engine_core", None)
        if shutdown is not None and hasattr(shutdown, "shutdown"):
            shutdown.shutdown()
        del self.llm
