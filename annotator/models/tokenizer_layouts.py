"""Tokenizer layouts made offline from the small profile's Whisper BPE (GPT-2's): the small
LLM's (shaped like Qwen2.5-Instruct's), and the paper models' exact ids for ``paper-random`` —
Qwen2.5-Instruct, RoBERTa-base and Whisper large-v3. Text pieces are GPT-2's; what matters is
where the special tokens sit, which the code paths read."""

from __future__ import annotations

import json
from pathlib import Path

# Qwen2.5-Instruct's chat template without its tool-calling branch: the same text for system, user
# and assistant turns, and the same default system prompt when a conversation has none.
CHATML_TEMPLATE = (
    "{%- if messages[0]['role'] == 'system' %}"
    "{{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}"
    "{%- else %}"
    "{{- '<|im_start|>system\\nYou are Qwen, created by Alibaba Cloud. You are a helpful "
    "assistant.<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- for message in messages %}"
    "{%- if message['role'] != 'system' or not loop.first %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)
# Qwen2.5-Instruct's added tokens after <|endoftext|>, in its order; the first 13 are its
# ``additional_special_tokens``, the rest (tool call, FIM) are added tokens all the same. Like
# Qwen2.5's vocabulary, this one has no <AUDIO>.
LLM_SPECIAL_TOKENS = [
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
]
LLM_OTHER_ADDED_TOKENS = [
    ("<tool_call>", False),
    ("</tool_call>", False),
    ("<|fim_prefix|>", True),
    ("<|fim_middle|>", True),
    ("<|fim_suffix|>", True),
    ("<|fim_pad|>", True),
    ("<|repo_name|>", True),
    ("<|file_sep|>", True),
]

# Llama 3.x Instruct's chat template without its tool-calling and date branches: a header per
# turn, the message trimmed, <|eot_id|> after it; no default system prompt.
LLAMA3_TEMPLATE = (
    "{{- bos_token }}"
    "{%- for message in messages %}"
    "{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' "
    "+ message['content'] | trim + '<|eot_id|>' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}"
    "{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}"
    "{%- endif %}"
)
LLAMA3_BASE_VOCAB = 128_000  # then 256 special tokens, <|begin_of_text|> first
LLAMA3_NAMED_SPECIALS = {
    0: "<|begin_of_text|>",
    1: "<|end_of_text|>",
    4: "<|finetune_right_pad_id|>",
    6: "<|start_header_id|>",
    7: "<|end_header_id|>",
    8: "<|eom_id|>",
    9: "<|eot_id|>",
    10: "<|python_tag|>",
}
QWEN_BASE_VOCAB = 151_643  # Qwen2.5's byte-level BPE; <|endoftext|> is the next id
# Whisper large-v3: <|endoftext|> 50,257, <|startoftranscript|> 50,258, 100 languages, six task
# tokens, 1,501 timestamps: 51,866 tokens.
WHISPER_BASE_VOCAB = 50_257
WHISPER_EOT = WHISPER_BASE_VOCAB  # <|endoftext|>


def gpt2_bpe(whisper_dir: Path) -> dict:
    """The byte-level BPE of the small profile's Whisper tiny.en (GPT-2's), without its added
    tokens: the text part every paper-random tokenizer is made from."""
    spec = json.loads((whisper_dir / "tokenizer.json").read_text())
    spec["post_processor"] = None
    spec["added_tokens"] = []
    spec["model"]["vocab"].pop("<|endoftext|>", None)
    return spec


def pad_vocab(spec: dict, size: int) -> None:
    """Fill the BPE vocabulary to ``size`` entries with tokens no merge produces, so that the
    added tokens land on the real model's ids."""
    vocab = spec["model"]["vocab"]
    for i in range(len(vocab), size):
        vocab[f"<|unused_{i}|>"] = i


def added_token(content: str, id_: int, special: bool = True) -> dict:
    return {
        "id": id_,
        "content": content,
        "single_word": False,
        "lstrip": False,
        "rstrip": False,
        "normalized": False,
        "special": special,
    }


def build_qwen_tokenizer(dst: Path, whisper_dir: Path):
    """A tokenizer with Qwen2.5-Instruct's layout: 151,643 BPE entries, then <|endoftext|> and
    its 21 added tokens at Qwen2.5's ids, ChatML template, eos <|im_end|>, pad <|endoftext|>."""

    spec = gpt2_bpe(whisper_dir)
    pad_vocab(spec, QWEN_BASE_VOCAB)
    added = [("<|endoftext|>", True)] + [(t, True) for t in LLM_SPECIAL_TOKENS]
    added += LLM_OTHER_ADDED_TOKENS
    spec["added_tokens"] = [
        added_token(t, QWEN_BASE_VOCAB + k, s) for k, (t, s) in enumerate(added)
    ]
    return save_chatml_tokenizer(spec, dst, model_max_length=131_072)


def build_roberta_tokenizer(dst: Path, whisper_dir: Path):
    """RoBERTa's layout: <s> 0, <pad> 1, </s> 2, <unk> 3, GPT-2's BPE, <mask> 50,264."""
    from tokenizers import Tokenizer, processors
    from transformers import PreTrainedTokenizerFast

    spec = gpt2_bpe(whisper_dir)
    vocab = spec["model"]["vocab"]
    shifted = {token: id_ + 4 for token, id_ in vocab.items() if id_ + 4 < 50_264}
    spec["model"]["vocab"] = shifted
    specials = [("<s>", 0), ("<pad>", 1), ("</s>", 2), ("<unk>", 3), ("<mask>", 50_264)]
    # As in RoBERTa's own tokenizer.json, the specials are in the BPE vocabulary too (an added
    # token that is not gets the next free id, whatever id it was given).
    shifted.update(dict(specials))
    spec["added_tokens"] = [added_token(t, id_) for t, id_ in specials]
    tokenizer = Tokenizer.from_str(json.dumps(spec))
    tokenizer.post_processor = processors.RobertaProcessing(("</s>", 2), ("<s>", 0))
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token="<s>",
        eos_token="</s>",
        sep_token="</s>",
        cls_token="<s>",
        unk_token="<unk>",
        pad_token="<pad>",
        mask_token="<mask>",
        model_max_length=512,
    )
    fast.save_pretrained(dst)
    return fast


def whisper_languages(whisper_dir: Path) -> list[str]:
    """Whisper's language codes in token order (not faster-whisper's alphabetical list): the 99
    of the small profile's tokenizer, then large-v3's ``yue``."""
    spec = json.loads((whisper_dir / "tokenizer.json").read_text())
    added = sorted(spec["added_tokens"], key=lambda t: t["id"])
    start = next(k for k, t in enumerate(added) if t["content"] == "<|startoftranscript|>")
    end = next(k for k, t in enumerate(added) if t["content"] == "<|translate|>")
    return [t["content"][2:-2] for t in added[start + 1 : end]] + ["yue"]


def whisper_special_tokens(languages: list[str]) -> list[str]:
    """Whisper large-v3's tokens from <|endoftext|> (50,257) on, in id order."""
    tasks = ["translate", "transcribe", "startoflm", "startofprev", "nospeech", "notimestamps"]
    return (
        ["<|endoftext|>", "<|startoftranscript|>"]
        + [f"<|{code}|>" for code in languages]
        + [f"<|{task}|>" for task in tasks]
        + [f"<|{0.02 * i:.2f}|>" for i in range(1501)]
    )


def build_whisper_tokenizer(dst: Path, whisper_dir: Path):
    """Whisper large-v3's layout (51,866 tokens; 100 languages, <|yue|> included)."""
    from tokenizers import Tokenizer
    from transformers import WhisperTokenizerFast

    spec = gpt2_bpe(whisper_dir)
    pad_vocab(spec, WHISPER_BASE_VOCAB - 1)
    # CTranslate2 takes a vocabulary that holds the empty token for multilingual (Whisper's
    # multilingual BPE has one; GPT-2's does not): without it, detect_language is refused.
    spec["model"]["vocab"][""] = WHISPER_BASE_VOCAB - 1
    tokens = whisper_special_tokens(whisper_languages(whisper_dir))
    spec["added_tokens"] = [added_token(t, WHISPER_BASE_VOCAB + k) for k, t in enumerate(tokens)]
    dst.mkdir(parents=True, exist_ok=True)
    Tokenizer.from_str(json.dumps(spec)).save(str(dst / "tokenizer.json"))
    tokenizer = WhisperTokenizerFast(
        tokenizer_file=str(dst / "tokenizer.json"),
        bos_token="<|endoftext|>",
        eos_token="<|endoftext|>",
        unk_token="<|endoftext|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=tokens[1:108],
    )
    tokenizer.save_pretrained(dst)
    return tokenizer


def build_llama3_tokenizer(dst: Path, whisper_dir: Path):
    """A tokenizer with Llama 3.x Instruct's layout (EmoSLLM's Llama-3.2-3B-Instruct): 128,000
    BPE entries, then 256 special tokens at Llama 3's ids (``<|eot_id|>`` 128,009, the rest
    ``<|reserved_special_token_k|>``), its chat template, bos ``<|begin_of_text|>``, eos
    ``<|eot_id|>`` and no pad token, as its tokenizer_config has. It has no ``<|im_end|>``."""
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    spec = gpt2_bpe(whisper_dir)
    pad_vocab(spec, LLAMA3_BASE_VOCAB)
    reserved = (f"<|reserved_special_token_{k}|>" for k in range(256))
    names = [LLAMA3_NAMED_SPECIALS.get(k) or next(reserved) for k in range(256)]
    spec["added_tokens"] = [added_token(t, LLAMA3_BASE_VOCAB + k) for k, t in enumerate(names)]
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer.from_str(json.dumps(spec)),
        bos_token="<|begin_of_text|>",
        eos_token="<|eot_id|>",
        model_max_length=131_072,
    )
    tokenizer.chat_template = LLAMA3_TEMPLATE
    tokenizer.save_pretrained(dst)
    return tokenizer


def build_small_llm_tokenizer(dst: Path, whisper_dir: Path):
    """Whisper's byte-level BPE without its task tokens, plus Qwen2.5-Instruct's added tokens;
    eos ``<|im_end|>`` and pad ``<|endoftext|>`` as in Qwen2.5-Instruct's tokenizer_config."""

    spec = json.loads((whisper_dir / "tokenizer.json").read_text())
    spec["post_processor"] = (
        None  # Whisper wraps text in <|startoftranscript|>…; a chat LLM must not
    )
    spec["added_tokens"] = [t for t in spec["added_tokens"] if t["content"] == "<|endoftext|>"]
    base = len(spec["model"]["vocab"])
    added = [(t, True) for t in LLM_SPECIAL_TOKENS] + LLM_OTHER_ADDED_TOKENS
    spec["added_tokens"] += [
        added_token(content, base + offset, special)
        for offset, (content, special) in enumerate(added)
    ]
    return save_chatml_tokenizer(spec, dst, model_max_length=2048)


def save_chatml_tokenizer(spec: dict, dst: Path, model_max_length: int):
    """A tokenizer.json spec saved as Qwen2.5-Instruct's tokenizer is configured: eos
    ``<|im_end|>``, pad ``<|endoftext|>``, its special tokens and ChatML template."""
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer.from_str(json.dumps(spec)),
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=LLM_SPECIAL_TOKENS,
        model_max_length=model_max_length,
    )
    tokenizer.chat_template = CHATML_TEMPLATE
    tokenizer.save_pretrained(dst)
    return tokenizer
