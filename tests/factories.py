"""Test factories: small real objects built in code with fixed seeds."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from pathlib import Path

import numpy as np


def bundle_with_random_lora(small_dir: Path, dst: Path, seed: int) -> Path:
    """Copy of the small profile's untrained bundle whose LoRA has random A *and* B.

    The untrained bundle's LoRA is zero (B = 0, PEFT's default), so it changes nothing; parity and
    "the adapter is applied" tests need one that does.
    """
    import torch
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM

    from annotator.models.bundle import META, Bundle, content_version
    from annotator.models.lora import lora_config, save_lora

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


def stage2_checkpoint(config, stage1_dir: Path, dst: Path, seed: int) -> Path:
    """A stage-2 checkpoint as ``training.common.save_checkpoint`` writes it (``state.safetensors``
    of the trainable parameters), with every trainable weight randomised (LoRA B included) so
    that nothing in it equals an initial value; no training run."""
    import torch
    from safetensors.torch import save_file

    from annotator.kinds.emoq.stage2 import build
    from annotator.schema import label_set
    from training.common import trainable_state

    torch.manual_seed(seed)
    model, _, _ = build(config, stage1_dir, list(label_set(config.train.label_set)))
    with torch.no_grad():
        for param in model.parameters():
            if param.requires_grad:
                param.add_(torch.randn_like(param) * 0.05)
    dst.mkdir(parents=True, exist_ok=True)
    save_file(trainable_state(model), dst / "state.safetensors")
    (dst / "progress.json").write_text(json.dumps({"epoch": 0}))
    return dst


def export_bundle_by_model(config, stage1_dir: Path, checkpoint_dir: str, out: Path, extra=None):
    """The export as it was before ``annotator.kinds.emoq.export`` read tensors: build the whole stage-2 model
    (base LLM included), load the checkpoint into it, and ``write_bundle`` it. The reference the
    tensor-based export is tested and benchmarked against."""
    from transformers import AutoTokenizer

    from annotator.kinds.emoq.bundle import write_bundle
    from annotator.kinds.emoq.stage2 import build
    from annotator.schema import label_set
    from training import common
    from training.llm import training_record

    labels = list(label_set(config.train.label_set))
    model, text_tok, _ = build(config, stage1_dir, labels)
    result = model.load_state_dict(common.checkpoint_state(checkpoint_dir), strict=False)
    if result.unexpected_keys:
        raise RuntimeError(
            f"checkpoint does not fit the stage-2 model: {result.unexpected_keys[:3]}"
        )
    model.eval()
    base = {
        "hubert": config.models.hubert,
        "text_encoder": config.models.text_encoder,
        "llm": config.models.llm,
    }
    return write_bundle(
        out,
        model.former,
        model.projector,
        text_tok.tokenizer,
        model.llm,
        labels,
        AutoTokenizer.from_pretrained(common.model_path(config.models.llm, config)),
        base,
        config.train.lora_rank,
        extra={**training_record(config), **(extra or {})},
    )


def s3_filesystem(s3_config):
    import s3fs

    return s3fs.S3FileSystem(
        key=s3_config.key,
        secret=s3_config.secret,
        client_kwargs={"endpoint_url": s3_config.endpoint_url},
    )


@contextlib.contextmanager
def moto_server():
    """A real S3 API (moto's server) on a free port of 127.0.0.1; yields its endpoint URL."""
    import logging
    import socket

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one log line per request otherwise
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


def make_bucket(s3_config, name: str) -> None:
    """Create a bucket on the test S3 server (us-east-1: no location constraint), if it is not
    there yet."""
    with contextlib.suppress(FileExistsError):
        s3_filesystem(s3_config).mkdir(name)


def upload_dir(s3_config, local: Path, dest: str) -> None:
    """Copy a local directory tree to ``dest`` (``bucket/prefix``) on the test S3 server."""
    fs = s3_filesystem(s3_config)
    make_bucket(s3_config, dest.split("/")[0])
    fs.put(str(local) + "/", dest.rstrip("/") + "/", recursive=True)


# Sentences Whisper tiny.en gets (nearly) word for word from espeak-ng.
SENTENCES = [
    "the weather is lovely today and I feel great",
    "I cannot believe you did that to me again",
    "please send the invoice by friday morning",
    "we will meet at the station at noon",
    "the train was late and everybody was angry",
    "thank you for calling how can I help you",
    "my order never arrived and nobody answered",
]


def speech_corpus(root: Path) -> dict[tuple[str, str], str]:
    """A small archive to annotate: loose files in three formats, a tar archive of two calls, and
    one file that is not audio. Returns {(source_uri, member): spoken text} of the good ones."""
    import tarfile

    import numpy as np

    from annotator.audio.synth import encode, silence, speak

    root.mkdir(parents=True, exist_ok=True)
    spoken: dict[tuple[str, str], str] = {}
    ep1 = np.concatenate([speak(SENTENCES[0]), silence(1.5), speak(SENTENCES[1], voice="en-gb")])
    encode(ep1, root / "loose" / "ep1.wav")
    spoken[(str(root / "loose" / "ep1.wav"), "")] = f"{SENTENCES[0]} {SENTENCES[1]}"
    encode(speak(SENTENCES[2]), root / "loose" / "ep2.mp3")
    spoken[(str(root / "loose" / "ep2.mp3"), "")] = SENTENCES[2]
    encode(speak(SENTENCES[3], voice="en-us+f3"), root / "loose" / "ep3.flac")
    spoken[(str(root / "loose" / "ep3.flac"), "")] = SENTENCES[3]
    (root / "loose" / "broken.wav").write_bytes(b"RIFF\x00\x00\x00\x00not really audio" * 16)
    staging = root / "staging"
    call1 = np.concatenate([speak(SENTENCES[4]), silence(1.5), speak(SENTENCES[5])])
    encode(call1, staging / "c1.wav")
    encode(speak(SENTENCES[6], voice="en-gb"), staging / "c2.ogg")
    with tarfile.open(root / "calls.tar", "w") as tar:
        for name in ("c1.wav", "c2.ogg"):
            tar.add(staging / name, arcname=f"calls/{name}")
    spoken[(str(root / "calls.tar"), "calls/c1.wav")] = f"{SENTENCES[4]} {SENTENCES[5]}"
    spoken[(str(root / "calls.tar"), "calls/c2.ogg")] = SENTENCES[6]
    for name in ("c1.wav", "c2.ogg"):
        (staging / name).unlink()
    staging.rmdir()
    return spoken


# Output rows of annotate runs, compared between runs that must agree.
def table_of(out: Path | str, name: str, s3=None):
    """(Parquet files of the snapshot, the rows the views show) of table ``name`` of an output.

    Rows through the same views ``annotator query`` uses (committed rows, latest commit per file);
    ``raw_rows`` gives every row the Delta table holds."""
    from annotator.query import Annotations

    ann = Annotations(out, s3)
    files = ann.tables.file_uris(name)
    table = ann.arrow(f"SELECT * FROM {name}")
    ann.close()
    return files, (table if table.num_rows else None)


def raw_rows(out: Path | str, name: str, s3=None):
    """Every row of Delta table ``name`` as delta-rs reads it (no view, no join)."""
    from annotator.output.tables import OutputTables

    return OutputTables(str(out), s3).read(name)


def rows_of(table, root: str | Path | None = None) -> dict[str, dict]:
    """segment_id → what must not change between equivalent runs. With ``root``, keyed by where
    the segment is instead (source path under ``root``, member, channel, index): runs over the
    same files at another place (a local corpus and its copy on S3) compare equal."""

    def key(r) -> str:
        if root is None:
            return r["segment_id"]
        where = r["source_uri"].removeprefix(str(root).rstrip("/") + "/")
        return f"{where}!{r['member']}#{r['channel']}:{r['segment_index']}"

    return {
        key(r): {
            "text": r["text"],
            "start_s": round(r["start_s"], 3),
            "emotion": r["emotion"],
            "probs": [p["prob"] for p in r["emotion_probs"]],
        }
        for r in table.to_pylist()
    }


def assert_same_rows(a: dict, b: dict) -> None:
    assert sorted(a) == sorted(b)
    for key in a:
        assert a[key]["text"] == b[key]["text"], key
        assert a[key]["start_s"] == b[key]["start_s"], key
        np.testing.assert_allclose(a[key]["probs"], b[key]["probs"], atol=1e-4)


def assert_same_bundle(a: Path, b: Path) -> None:
    """Every file of both bundles: the same names, tensor for tensor equal, byte for byte equal."""
    import torch
    from safetensors import safe_open
    from safetensors.torch import load_file

    files = sorted(p.relative_to(a).as_posix() for p in a.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(b).as_posix() for p in b.rglob("*") if p.is_file())
    for name in files:
        if name.endswith(".safetensors"):
            left, right = load_file(a / name), load_file(b / name)
            assert left.keys() == right.keys(), name
            for key in left:
                assert left[key].dtype == right[key].dtype, (name, key)
                assert torch.equal(left[key], right[key]), (name, key)
            with safe_open(str(a / name), "pt") as x, safe_open(str(b / name), "pt") as y:
                assert x.metadata() == y.metadata(), name
        if name.endswith(".json"):
            assert json.loads((a / name).read_text()) == json.loads((b / name).read_text()), name
        assert (a / name).read_bytes() == (b / name).read_bytes(), name


IEMOCAP_CODES = {"neutral": "neu", "angry": "ang", "sad": "sad", "happy": "exc"}


def iemocap_corpus(root: Path, per_class: int = 1) -> Path:
    """Five sessions in IEMOCAP's release layout, spoken by espeak-ng: per session one dialog of
    a female and a male voice, ``per_class`` utterances of each emotion (its words and prosody
    from the synthetic corpus), EmoEvaluation label lines ("exc" for happy, merged as IEMOCAP's
    4-class protocol does) and transcription lines. Returns ``root``."""
    from annotator.audio.synth import encode, speak
    from training.synthetic_corpora import SYNTH_PROSODY, SYNTH_VOICES, SYNTH_WORDS

    for n in range(1, 6):
        dialog = f"Ses0{n}F_impro01"
        session = root / f"Session{n}"
        labels, texts = ["% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]"], []
        t = 0.0
        k = 0
        for i in range(per_class):
            for emotion, sentences in SYNTH_WORDS.items():
                gender = "FM"[k % 2]
                utt = f"{dialog}_{gender}{k:03d}"
                text = sentences[(n + i) % len(sentences)]
                voice = SYNTH_VOICES[(n + k) % len(SYNTH_VOICES)]
                audio = speak(text, voice=voice, **SYNTH_PROSODY[emotion])
                encode(audio, session / "sentences" / "wav" / dialog / f"{utt}.wav")
                end = t + len(audio) / 16000
                labels.append(
                    f"[{t:.4f} - {end:.4f}]\t{utt}\t{IEMOCAP_CODES[emotion]}\t[2.5, 2.5, 2.5]"
                )
                texts.append(f"{utt} [{t:08.4f}-{end:08.4f}]: {text}")
                t, k = end + 0.5, k + 1
        for folder, lines in (("EmoEvaluation", labels), ("transcriptions", texts)):
            (session / "dialog" / folder).mkdir(parents=True, exist_ok=True)
            (session / "dialog" / folder / f"{dialog}.txt").write_text("\n".join(lines) + "\n")
    return root


MELD_EMOTIONS = {"neutral": "neutral", "angry": "anger", "sad": "sadness", "happy": "joy"}


def meld_corpus(root: Path, per_split: dict[str, int]) -> Path:
    """MELD's release layout spoken by espeak-ng: ``{split}_sent_emo.csv`` and
    ``{split}/dia<D>_utt<U>.wav``, ``per_split[split]`` utterances of each of the four MELD
    emotions (words and prosody from the synthetic corpus), a voice per split so that dev and
    test speakers are unseen in training. Returns ``root``."""
    import csv

    from annotator.audio.synth import encode, speak
    from training.data import MELD_SPLITS
    from training.synthetic_corpora import SYNTH_PROSODY, SYNTH_VOICES, SYNTH_WORDS

    for s, (split, table) in enumerate(MELD_SPLITS.items()):
        rows = []
        for i in range(per_split[split]):
            for u, (emotion, meld) in enumerate(MELD_EMOTIONS.items()):
                text = SYNTH_WORDS[emotion][i % len(SYNTH_WORDS[emotion])]
                voice = SYNTH_VOICES[2 * s + i % 2]  # two voices per split
                audio = speak(text, voice=voice, **SYNTH_PROSODY[emotion])
                encode(audio, root / split / f"dia{i}_utt{u}.wav")
                rows.append(
                    {
                        "Sr No.": len(rows) + 1,
                        "Utterance": text,
                        "Speaker": voice,
                        "Emotion": meld,
                        "Sentiment": "neutral",
                        "Dialogue_ID": i,
                        "Utterance_ID": u,
                    }
                )
        with (root / table).open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    return root


def review_calls(
    root: Path, manifest: Path, sentences: int = 4, gap_s: float = 1.2
) -> dict[str, list[tuple[float, float, str]]]:
    """Calls made of a synthetic corpus' utterances, for the review loop: one call per (voice,
    sentence index), that sentence of each emotion in turn (the order rotated per call), silence
    between. Returns {call path: [(start_s, end_s, label)]}, what a reviewer would hear."""
    from annotator.audio.decode import decode_source
    from annotator.audio.synth import SAMPLE_RATE, encode, silence
    from training.data import read_manifest

    root.mkdir(parents=True, exist_ok=True)
    by_place: dict[tuple[str, int], dict[str, str]] = {}
    for example in read_manifest(manifest):
        index = int(Path(example.audio_uri).stem.rsplit("_", 1)[1])
        if index < sentences:
            by_place.setdefault((example.speaker, index), {})[example.label] = example.audio_uri
    truth: dict[str, list[tuple[float, float, str]]] = {}
    for n, ((voice, index), files) in enumerate(sorted(by_place.items())):
        labels = sorted(files)
        labels = labels[n % len(labels) :] + labels[: n % len(labels)]
        parts, spans, t = [], [], 0.0
        for label in labels:
            audio = decode_source(files[label])[0]
            spans.append((t, t + len(audio) / SAMPLE_RATE, label))
            parts += [audio, silence(gap_s)]
            t += len(audio) / SAMPLE_RATE + gap_s
        path = root / f"{voice.replace('+', '_')}-{index}.wav"
        encode(np.concatenate(parts), path)
        truth[str(path)] = spans
    return truth


def review_retrain_ua(output: str) -> dict[str, float]:
    """Held-out UA of the old and the new bundle from ``annotator review retrain``'s output."""
    import re

    return {
        which: float(value)
        for which, value in re.findall(r"^\s+(old|new) \S+: WA [\d.]+ · UA ([\d.]+)", output, re.M)
    }


def labelstudio_annotation(ident: int, label: str, when: str) -> dict:
    """One completed annotation of a choices task as Label Studio's JSON export writes it."""
    return {
        "id": ident,
        "result": [
            {
                "id": f"r{ident}",
                "from_name": "emotion",
                "to_name": "audio",
                "type": "choices",
                "value": {"choices": [label]},
                "origin": "manual",
            }
        ],
        "was_cancelled": False,
        "ground_truth": False,
        "created_at": when,
        "updated_at": when,
        "lead_time": 4.2,
        "completed_by": 1,
    }


def one_per_voice_and_label(manifest: Path, dest: Path) -> Path:
    """A manifest of the first recording of each (voice, emotion) of ``manifest``: for tests
    whose point is the wiring of a training run, not what it learns (24 rows of the synthetic
    corpus' 144: 16 train, 8 held out)."""
    rows, seen = [], set()
    for line in Path(manifest).read_text().splitlines():
        entry = json.loads(line)
        if (entry["speaker"], entry["label"]) not in seen:
            seen.add((entry["speaker"], entry["label"]))
            rows.append(line)
    dest.write_text("\n".join(rows) + "\n")
    return dest
