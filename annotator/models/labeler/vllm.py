"""The serving labeler: vLLM with prompt embeddings and the bundle's LoRA adapter.

One output token is generated with ``allowed_token_ids`` = the emotion tokens and
``logprobs_mode="processed_logprobs"``: vLLM then returns exactly the log-softmax over the
emotion-word logits (EmoQ Eq. 9), so nothing is parsed from free text.

Prefix caching is on. About half of every prompt is the same template (system prompt and chat
markup before the transcript); vLLM keys a cached block of a prompt-embedding request by the
block's embedding bytes (``_gen_prompt_embeds_extra_hash_keys`` in vLLM's ``kv_cache_utils``) and
by the LoRA adapter, so the template's blocks are computed once and reused, and two prompts that
differ in one row (a soft token) share only the blocks before it. (vLLM #56655, which kept it off
here before, is about prompts that mix token ids and embeddings; these are pure embeddings.)

Requests go to one engine thread that owns the engine: callers on several threads (the label
stage runs two Ray Data batches at once) hand it prompts and wait on futures, and the engine
steps over everything queued, so it does not drain between batches.

``vllm.LLM`` starts worker processes: create it under a ``__main__`` guard or inside a Ray actor.
"""

from __future__ import annotations

import itertools
import math
import os
import queue
import threading
from collections.abc import Sequence
from concurrent.futures import Future
from pathlib import Path

import numpy as np
import torch

# The CPU attention backend takes blocks in multiples of 32 tokens and defaults to 128: a
# ~75-token prompt would then cache nothing. 32 caches the template's first blocks.
CPU_BLOCK_SIZE = 32
_STOP = object()


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
        prefix_caching: bool = True,
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
        from vllm.platforms import current_platform

        self.ids = [int(i) for i in emotion_token_ids]
        self.llm = LLM(
            model=str(llm),
            enable_prompt_embeds=True,
            enable_lora=lora_dir is not None,
            max_lora_rank=max_lora_rank if lora_dir is not None else None,
            max_loras=1,
            enable_prefix_caching=prefix_caching,
            **({"block_size": CPU_BLOCK_SIZE} if current_platform.is_cpu() else {}),
            logprobs_mode="processed_logprobs",
            dtype=dtype,
            max_model_len=max_model_len,
            gpu_memory_utilization=gpu_memory_utilization,
            seed=seed,
            **({"distributed_executor_backend": "uni"} if in_process else {}),
        )
        # Prompt embeddings go to the engine in the model's own dtype (bf16 on a GPU: half the
        # bytes of fp32 per prompt, and what the engine would cast them to anyway).
        self.dtype = self.llm.llm_engine.model_config.dtype
        self.params = SamplingParams(
            max_tokens=1, temperature=1.0, allowed_token_ids=self.ids, logprobs=len(self.ids)
        )
        self.lora = None
        if lora_dir is not None:
            from vllm.lora.request import LoRARequest

            self.lora = LoRARequest("bundle", 1, str(lora_dir))
        # Prompt tokens asked for and those served from the prefix cache, over the engine's life.
        self.prompt_tokens = 0
        self.cached_tokens = 0
        self._requests: queue.SimpleQueue = queue.SimpleQueue()
        self._numbers = itertools.count()
        self._thread: threading.Thread | None = None
        self._starting = threading.Lock()

    def use_adapter(self, lora_dir: str | Path) -> None:
        """Serve another bundle's adapter from now on, in the same engine (one engine scores every
        fold of a cross-validation). The engine must have started with an adapter of a rank at
        least this one's."""
        from vllm.lora.request import LoRARequest

        if self.lora is None:
            raise ValueError("this engine was started without LoRA; start one with lora_dir")
        n = self.lora.lora_int_id + 1  # a new id: vLLM caches adapters by id
        self.lora = LoRARequest(f"bundle{n}", n, str(lora_dir))

    def submit(self, prompt_embeds: Sequence[torch.Tensor], with_lora: bool = True) -> list[Future]:
        """Queue prompts for the engine thread; each future gives one (labels,) posterior."""
        with self._starting:
            if self._thread is None:
                self._thread = threading.Thread(target=self._serve, name="vllm-engine", daemon=True)
                self._thread.start()
        lora = self.lora if with_lora else None
        futures = []
        for e in prompt_embeds:
            future: Future = Future()
            request = {"prompt_embeds": e.to(self.dtype).contiguous()}
            self._requests.put((str(next(self._numbers)), request, lora, future))
            futures.append(future)
        return futures

    def posteriors(
        self, prompt_embeds: Sequence[torch.Tensor], with_lora: bool = True
    ) -> np.ndarray:
        """(n, labels) posteriors; ``with_lora=False`` serves the base LLM alone. Safe to call
        from several threads at once: their prompts share the engine's batches."""
        futures = self.submit(prompt_embeds, with_lora)
        probs = np.empty((len(futures), len(self.ids)))
        for row, future in enumerate(futures):
            probs[row] = future.result()
        return probs

    def _serve(self) -> None:
        """The engine thread: add what is queued, step, hand out what finished; sleep when idle."""
        engine = self.llm.llm_engine
        waiting: dict[str, tuple[Future, int]] = {}  # request → its future, its prompt's length
        while True:
            try:
                item = self._requests.get(block=not waiting)  # idle: wait for work
            except queue.Empty:
                item = None
            while item is not None:
                if item is _STOP:
                    for future, _ in waiting.values():
                        future.set_exception(RuntimeError("the vLLM labeler was closed"))
                    return
                number, request, lora, future = item
                try:
                    engine.add_request(number, request, self.params, lora_request=lora)
                except Exception as exc:  # this prompt's alone (e.g. longer than the model's)
                    future.set_exception(exc)
                else:
                    waiting[number] = (future, len(request["prompt_embeds"]))
                try:
                    item = self._requests.get_nowait()
                except queue.Empty:
                    item = None
            if not waiting:
                continue
            try:
                outputs = engine.step()
            except Exception as exc:  # every prompt in flight fails with the engine's error
                for future, _ in waiting.values():
                    future.set_exception(exc)
                waiting.clear()
                continue
            for out in outputs:
                if not out.finished:
                    continue
                future, length = waiting.pop(out.request_id)
                self.prompt_tokens += length
                self.cached_tokens += out.num_cached_tokens or 0
                top = out.outputs[0].logprobs[0]
                future.set_result([math.exp(top[i].logprob) for i in self.ids])

    def reset_prefix_cache(self) -> None:
        """Forget cached blocks (benchmarks measure a cold cache)."""
        self.llm.reset_prefix_cache()

    def close(self) -> None:
        """Stop the engine thread and the engine's worker processes now rather than at
        interpreter exit."""
        if self._thread is not None:
            self._requests.put(_STOP)
            self._thread.join()
        engine = getattr(self.llm, "llm_engine", None)
        shutdown = getattr(engine, "engine_core", None)
        if shutdown is not None and hasattr(shutdown, "shutdown"):
            shutdown.shutdown()
        del self.llm
