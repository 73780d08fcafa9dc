"""The EmoQ prompt (§2.3) and its embedding, with the ``<AUDIO>`` row replaced by a soft token.

The prompt is rendered with the LLM tokenizer's own chat template:

* system: act as an emotion recognition system;
* user: speaker info (if known), the transcript, and the ``<AUDIO>`` placeholder;
* assistant: begins with ``Emotion:``; the next token is read off as the emotion.

Token embeddings come from the LLM's own embedding table, read as one tensor from its
safetensors, so the LLM is not built a second time next to vLLM.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import torch

from annotator.models.profiles import AUDIO_TOKEN

SYSTEM_PROMPT = (
    "You are an emotion recognition system. Given a speech segment's transcript and its audio, "
    "answer with the speaker's emotion, one word from: {labels}."
)
ANSWER_PREFIX = "Emotion:"
NO_SPEECH_TEXT = "(no words recognised)"
EMBED_KEYS = (
    "model.embed_tokens.weight",
    "embed_tokens.weight",
    "model.language_model.embed_tokens.weight",
)


class PromptError(ValueError):
    """A prompt or label set that cannot be used."""


def local_model_dir(name_or_path: str) -> Path:
    """A local directory for a model: the path itself, or (cluster) a hub snapshot of its files."""
    path = Path(name_or_path)
    if path.is_dir():
        return path
    from huggingface_hub import snapshot_download

    return Path(
        snapshot_download(
            name_or_path, allow_patterns=["*.json", "*.safetensors", "*.txt", "*.model"]
        )
    )


def load_token_embeddings(llm_dir: str | Path) -> torch.Tensor:
    """The LLM's input embedding table (vocab, hidden), read alone from its safetensors."""
    from safetensors import safe_open

    root = local_model_dir(str(llm_dir))
    index = root / "model.safetensors.index.json"
    if index.is_file():
        weight_map = json.loads(index.read_text())["weight_map"]
        candidates = [(k, root / weight_map[k]) for k in EMBED_KEYS if k in weight_map]
    else:
        candidates = [(k, root / "model.safetensors") for k in EMBED_KEYS]
    for key, file in candidates:
        with safe_open(str(file), framework="pt") as handle:
            if key in handle.keys():  # noqa: SIM118 (safe_open is not a dict)
                return handle.get_tensor(key)
    raise PromptError(f"no token-embedding table ({' or '.join(EMBED_KEYS)}) in {root}")


def emotion_token_ids(tokenizer, labels: Sequence[str]) -> list[int]:
    """First token of each label as it follows ``Emotion:`` (with its leading space).

    Refuses a label set whose words share a first token: their probabilities could not be told
    apart from one output position.
    """
    firsts = [tokenizer.encode(" " + label, add_special_tokens=False)[0] for label in labels]
    seen: dict[int, str] = {}
    for label, token in zip(labels, firsts, strict=True):
        if token in seen:
            raise PromptError(
                f"labels {seen[token]!r} and {label!r} begin with the same token "
                f"({tokenizer.convert_ids_to_tokens(token)!r}); choose words that differ in their first token"
            )
        seen[token] = label
    return firsts


class PromptEmbedder:
    """Renders EmoQ prompts to token ids and to prompt embeddings with the audio soft token."""

    def __init__(self, tokenizer, embed_table: torch.Tensor, labels: Sequence[str]) -> None:
        self.tokenizer = tokenizer
        self.table = embed_table
        self.labels = list(labels)
        self.audio_id = tokenizer.convert_tokens_to_ids(AUDIO_TOKEN)
        if self.audio_id is None or self.audio_id == tokenizer.unk_token_id:
            raise PromptError(f"the LLM tokenizer has no {AUDIO_TOKEN} token")
        self.system = SYSTEM_PROMPT.format(labels=", ".join(self.labels))
        self._special = [t for t in tokenizer.all_special_tokens if t]

    @classmethod
    def from_llm(cls, llm_dir: str | Path, labels: Sequence[str]) -> PromptEmbedder:
        from transformers import AutoTokenizer

        root = local_model_dir(str(llm_dir))
        return cls(AutoTokenizer.from_pretrained(root), load_token_embeddings(root), labels)

    def _clean(self, text: str) -> str:
        # A transcript must not smuggle in chat markup or a second <AUDIO>.
        for token in self._special:
            text = text.replace(token, " ")
        return " ".join(text.split())

    def token_ids(self, transcript: str | None, speaker: str | None = None) -> list[int]:
        text = self._clean(transcript or "") or NO_SPEECH_TEXT
        user = (
            f"Speaker: {self._clean(speaker)}\n" if speaker else ""
        ) + f"Transcript: {text}\nAudio: {AUDIO_TOKEN}"
        messages = [{"role": "system", "content": self.system}, {"role": "user", "content": user}]
        rendered = self.tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, tokenize=False
        )
        return self.tokenizer.encode(rendered + ANSWER_PREFIX, add_special_tokens=False)

    def embed(self, token_ids: Sequence[int], audio_vector: torch.Tensor) -> torch.Tensor:
        """(len, hidden) prompt embeddings; the single ``<AUDIO>`` row becomes ``audio_vector``."""
        ids = torch.as_tensor(list(token_ids), dtype=torch.long)
        where = (ids == self.audio_id).nonzero().flatten()
        if len(where) != 1:
            raise PromptError(f"a prompt needs exactly one {AUDIO_TOKEN} token, found {len(where)}")
        if audio_vector.shape != (self.table.shape[1],):
            raise PromptError(
                f"audio vector has shape {tuple(audio_vector.shape)}, the LLM width is {self.table.shape[1]}"
            )
        rows = self.table[ids].clone()
        rows[where[0]] = audio_vector.to(rows.dtype)
        return rows

    def build(
        self, transcript: str | None, audio_vector: torch.Tensor, speaker: str | None = None
    ) -> torch.Tensor:
        return self.embed(self.token_ids(transcript, speaker), audio_vector)
