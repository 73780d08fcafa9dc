"""Test factories: small real objects built in code with fixed seeds."""

from __future__ import annotations

import json
import shutil
from pathlib import Path


def bundle_with_random_lora(small_dir: Path, dst: Path, seed: int) -> Path:
    """Copy of the small profile's untrained bundle whose LoRA has random A *and* B.

    The untrained bundle's LoRA is zero (B = 0, PEFT's default), so it changes nothing; parity and
    "the adapter is applied" tests need one that does.
    """
    import torch
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM

    from annotator.models.bundle import META, Bundle, content_version, lora_config, save_lora

    src = Bundle.load(small_dir / "bundle")
    root = dst / "bundle"
    shutil.copytree(src.root, root)
    shutil.rmtree(root / "lora")
    torch.manual_seed(seed)
    llm = AutoModelForCausalLM.from_pretrained(small_dir / "llm", dtype=torch.float32)
    peft_model = get_peft_model(llm, lora_config(src.lora_rank, init=False))
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_" in name:
                param.normal_(0.0, 0.05)
    save_lora(peft_model, root / "lora", src.base["llm"])
    meta = json.loads((root / META).read_text())
    meta["extra"] = {"trained": False, "test": "random LoRA"}
    meta["version"] = content_version(root, meta)
    (root / META).write_text(json.dumps(meta, indent=2, sort_keys=True))
    return root


def upload_dir(s3_config, local: Path, dest: str) -> None:
    """Copy a local directory tree to ``dest`` (``bucket/prefix``) on the test S3 server."""
    import s3fs

    fs = s3fs.S3FileSystem(
        key=s3_config.key,
        secret=s3_config.secret,
        client_kwargs={"endpoint_url": s3_config.endpoint_url},
    )
    fs.mkdir(dest.split("/")[0])
    fs.put(str(local) + "/", dest.rstrip("/") + "/", recursive=True)
