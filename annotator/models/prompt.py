"""The LLM kinds' prompt (EmoQ §2.3) and its embedding, with one position taken by the audio soft
token (several for a kind whose bundle says so, which may also put the audio before the
transcript: ``Kind.audio_first``).

The prompt is rendered with the LLM tokenizer's own chat template:

* system: act as an emotion recognition system;
* user: speaker info (if known), the transcript, and the audio placeholder;
* assistant: begins with ``Emotion:``; the next token is read off as the emotion.

Qwen2.5-Instruct's vocabulary has no ``<AUDIO>`` token, and none is added (a new row would be an
untrained embedding in a frozen table). Instead the prompt is rendered with a plain-text
placeholder, the text is split there, the two pieces are tokenized apart, and the soft token's
slot between them is recorded by position: a :class:`Prompt`. The id kept in that slot is the
pad id; it is never read, because its embedding row is always replaced.

Token embeddings come from the LLM's own embedding table, read as one tensor from its
safetensors, so the LLM is not built a second time next to vLLM.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from annotator.models.transcript import TranscriptTokenizer

SYSTEM_PROMPT = (
    "You are an emotion recognition system. Given a speech segment's transcript and its audio, "
    "answer with the speaker's emotion, one word from: {labels}."
)
ANSWER_PREFIX = "Emotion:"
NO_SPEECH_TEXT = "(no words recognised)"
# Marks the soft token's place in the rendered text; never tokenized (the text is split there).
AUDIO_PLACEHOLDER = "<AUDIO>"
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


def end_of_turn_id(tokenizer) -> int:
    """The token the LLM's chat template closes an assistant turn with (Qwen's ``<|im_end|>``,
    Llama 3's ``<|eot_id|>``): what a trained answer ends with, so that the model learns to stop
    where the served template would.

    Read off the template itself: an assistant message is rendered and the first token after its
    text is taken; refused when that is not one of the tokenizer's added tokens."""
    mark = "EndOfTurnProbe"
    messages = [{"role": "user", "content": "x"}, {"role": "assistant", "content": mark}]
    rendered = tokenizer.apply_chat_template(messages, tokenize=False)
    if mark not in rendered:
        raise PromptError("the LLM's chat template does not render an assistant message's text")
    after = tokenizer.encode(rendered.split(mark, 1)[1], add_special_tokens=False)
    added = set(tokenizer.get_added_vocab().values()) | set(tokenizer.all_special_ids)
    if not after or after[0] not in added:
        raise PromptError(
            "the LLM's chat template ends an assistant turn with no special token "
            f"(after the message: {rendered.split(mark, 1)[1][:40]!r})"
        )
    return after[0]


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


@dataclass(frozen=True)
class Prompt:
    """One EmoQ prompt as token ids with slots reserved for soft tokens.

    Attributes:
        ids: token ids of the whole prompt, ending with ``Emotion:``. The ids in the soft slots
            are placeholders (the pad id) whose embedding rows are always replaced.
        audio_position: index in ``ids`` of the first soft slot.
        audio_slots: how many consecutive soft slots begin there (one soft token per segment
            for EmoQ).
    """

    ids: tuple[int, ...]
    audio_position: int
    audio_slots: int = 1

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def audio_span(self) -> range:
        return range(self.audio_position, self.audio_position + self.audio_slots)


def channel_speaker(channel: int | None, names: Sequence[str]) -> str | None:
    """The speaker a split call's channel is named for in the prompt (``audio.channel_speakers``,
    e.g. agent and customer); None for a mixed recording or a channel without a name."""
    if channel is None or channel >= len(names):
        return None
    return names[channel] or None


class PromptEmbedder:
    """Renders EmoQ prompts to :class:`Prompt` s and to prompt embeddings with the soft token."""

    def __init__(
        self,
        tokenizer,
        embed_table: torch.Tensor,
        labels: Sequence[str],
        transcripts: TranscriptTokenizer | None = None,
        inputs: str = "both",
        audio_slots: int = 1,
        audio_first: bool = False,
    ) -> None:
        """``transcripts``: the EmoQ-Former's tokenizer, which cuts long transcripts (the prompt
        then carries exactly the words the EmoQ-Former read); training and serving both pass it.
        ``inputs``: ``audio`` for a bundle trained without transcripts (``Bundle.inputs``): the
        prompt then carries none either. ``audio_slots``: soft tokens per segment (the
        bundle's ``soft_tokens``); ``audio_first``: the audio line before the transcript's
        rather than after it (``Kind.audio_first``).
        """
        if audio_slots < 1:
            raise PromptError(f"a prompt takes at least one soft token, not {audio_slots}")
        self.tokenizer = tokenizer
        self.transcripts = transcripts
        self.hears_text = inputs != "audio"
        self.audio_slots = audio_slots
        self.audio_first = audio_first
        self.table = embed_table
        self.labels = list(labels)
        self.system = SYSTEM_PROMPT.format(labels=", ".join(self.labels))
        if AUDIO_PLACEHOLDER in self.system:
            raise PromptError(f"a label must not contain {AUDIO_PLACEHOLDER!r}")
        slot = tokenizer.pad_token_id
        if slot is None:
            slot = tokenizer.eos_token_id
        if slot is None:
            raise PromptError("the LLM tokenizer has neither a pad nor an eos token")
        self.slot_id = slot
        # Every added token (special or not: Qwen2.5's <tool_call> is not special) and the
        # placeholder; the longest first, so that no shorter one cuts a longer one in two.
        markup = {*tokenizer.get_added_vocab(), *tokenizer.all_special_tokens, AUDIO_PLACEHOLDER}
        self._markup = sorted((t for t in markup if t), key=lambda t: (-len(t), t))

    @classmethod
    def from_llm(
        cls,
        llm_dir: str | Path,
        labels: Sequence[str],
        text_tokenizer_dir: str | Path | None = None,
        inputs: str = "both",
        audio_slots: int = 1,
        audio_first: bool = False,
    ) -> PromptEmbedder:
        """As serving builds it: the LLM's tokenizer and embedding table, and the bundle's
        EmoQ-Former tokenizer (``text_tokenizer_dir``) for the transcript's cut and what it
        was trained to hear (``inputs``)."""
        from transformers import AutoTokenizer

        root = local_model_dir(str(llm_dir))
        transcripts = (
            TranscriptTokenizer.load(text_tokenizer_dir) if text_tokenizer_dir is not None else None
        )
        return cls(
            AutoTokenizer.from_pretrained(root),
            load_token_embeddings(root),
            labels,
            transcripts,
            inputs,
            audio_slots,
            audio_first,
        )

    @classmethod
    def for_bundle(cls, llm_dir: str | Path, bundle) -> PromptEmbedder:
        """The prompts a bundle of an LLM kind is served with (and evaluated and retrained with):
        its labels, transcript cut, inputs, soft-token count and layout."""
        return cls.from_llm(
            llm_dir,
            bundle.labels,
            bundle.text_tokenizer_dir,
            bundle.inputs,
            audio_slots=bundle.soft_tokens,
            audio_first=bundle.audio_first,
        )

    @functools.cached_property
    def end_of_turn(self) -> int:
        """:func:`end_of_turn_id` of the tokenizer, read off its chat template once."""
        return end_of_turn_id(self.tokenizer)

    def _clean(self, text: str) -> str:
        # A transcript must not smuggle in chat markup, special tokens or a second placeholder.
        # Each is replaced by a space, so what is left cannot join into a new one.
        while any(token in text for token in self._markup):
            for token in self._markup:
                text = text.replace(token, " ")
        return " ".join(text.split())

    def _encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False)

    def prompt(self, transcript: str | None, speaker: str | None = None) -> Prompt:
        """The prompt of one segment, its soft slot recorded by position."""
        if not self.hears_text:
            transcript = ""
        if self.transcripts is not None:
            transcript = self.transcripts.cut(transcript)
        text = self._clean(transcript or "") or NO_SPEECH_TEXT
        who = self._clean(speaker or "")
        lines = [f"Transcript: {text}", f"Audio: {AUDIO_PLACEHOLDER}"]
        if self.audio_first:
            lines.reverse()
        user = (f"Speaker: {who}\n" if who else "") + "\n".join(lines)
        messages = [{"role": "system", "content": self.system}, {"role": "user", "content": user}]
        rendered = self.tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, tokenize=False
        )
        pieces = rendered.split(AUDIO_PLACEHOLDER)
        if len(pieces) != 2:
            raise PromptError(
                f"the rendered prompt holds {AUDIO_PLACEHOLDER!r} {len(pieces) - 1} times, not once"
            )
        before, after = self._encode(pieces[0]), self._encode(pieces[1] + ANSWER_PREFIX)
        ids = before + [self.slot_id] * self.audio_slots + after
        return Prompt(tuple(ids), len(before), self.audio_slots)

    def embed(self, prompt: Prompt, audio_vector: torch.Tensor) -> torch.Tensor:
        """(len, hidden) prompt embeddings; the soft slots' rows become ``audio_vector``:
        (slots, hidden), or flattened to (slots × hidden,) as the ``soft`` column carries it."""
        width = self.table.shape[1]
        flat_or_rows = audio_vector.dim() == 1 or audio_vector.shape[-1] == width
        if not flat_or_rows or audio_vector.numel() != prompt.audio_slots * width:
            raise PromptError(
                f"audio vector has shape {tuple(audio_vector.shape)}; the prompt has "
                f"{prompt.audio_slots} soft slot(s) and the LLM width is {width}"
            )
        vectors = audio_vector.reshape(prompt.audio_slots, width)
        rows = self.table[torch.as_tensor(prompt.ids, dtype=torch.long)].clone()
        rows[prompt.audio_position : prompt.audio_position + prompt.audio_slots] = vectors.to(
            rows.dtype
        )
        return rows

    def build(
        self, transcript: str | None, audio_vector: torch.Tensor, speaker: str | None = None
    ) -> torch.Tensor:
        return self.embed(self.prompt(transcript, speaker), audio_vector)
