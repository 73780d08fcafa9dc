"""Configuration for the whole system: one pydantic model, loaded from YAML with environment overrides.

Precedence, lowest first: the profile's defaults (``small`` or ``paper``), the YAML file, then
environment variables ``ANNOTATOR_<SECTION>__<FIELD>`` (for example
``ANNOTATOR_STAGES__ASR__BATCH_SIZE=16`` or ``ANNOTATOR_OUTPUT=s3://bucket/out``).

Every mistake is reported once, as a :class:`ConfigError` that names the field, never as a
traceback from deep inside a stage.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

ENV_PREFIX = "ANNOTATOR_"


def default_home() -> Path:
    """``ANNOTATOR_HOME``, else ``$XDG_CACHE_HOME/annotator``, else ``~/.cache/annotator``."""
    if os.environ.get("ANNOTATOR_HOME"):
        return Path(os.environ["ANNOTATOR_HOME"]).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "annotator"


class ConfigError(ValueError):
    """A configuration that cannot be used; the message names the field and the problem."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class TaskResources(_Strict):
    """Resources of one task of a cheap stage (decode). Tasks are not counted: Ray Data runs as
    many as the cluster has room for, and backpressure keeps them from running far ahead.

    Attributes:
        batch_size: rows handed to one call of the stage.
        num_cpus: CPUs reserved per task.
        memory_gb: memory reserved per task (GiB; Ray's ``memory`` request); 0 reserves none.
    """

    batch_size: int = Field(1, ge=1)
    num_cpus: float = Field(1.0, ge=0)
    memory_gb: float = Field(0.0, ge=0)

    @model_validator(mode="before")
    @classmethod
    def _no_fixed_concurrency(cls, data: Any) -> Any:
        if isinstance(data, dict) and "concurrency" in data:
            raise ValueError(
                "concurrency was a fixed cluster-wide pool size and is gone: pools follow the "
                "cluster. Say how one actor packs a GPU (num_gpus, per_gpu) or a node "
                "(per_node); max_actors caps a pool if you must"
            )
        return data


class StageResources(TaskResources):
    """Resources of one model stage: a pool of actors that grows with the cluster.

    The pool's size is not a number in the config: it follows the GPUs (GPU stages) or nodes
    (CPU stages) the cluster has, so adding nodes, or the Ray autoscaler adding them, adds actors
    (``annotator/pipeline/pools.py``).

    Attributes:
        batch_size: rows handed to one ``__call__`` (for ASR: windows of up to 30 s of packed
            speech segments).
        num_cpus / memory_gb: CPUs and memory (GiB) reserved per actor.
        num_gpus: GPU share per actor; fractions let several model stages share one GPU.
        per_gpu: GPU stages: actors of this stage on each GPU. The stage takes
            ``per_gpu × num_gpus`` of every GPU; over all stages that must be at most 1.
        per_node: CPU stages (``num_gpus`` 0): actors of this stage on each node that has room.
        min_actors: the pool never shrinks below this.
        max_actors: a cap on the cluster-wide pool; None lets it follow the cluster.
    """

    num_gpus: float = Field(0.0, ge=0)
    per_gpu: int = Field(1, ge=1)
    per_node: int = Field(1, ge=1)
    min_actors: int = Field(1, ge=1)
    max_actors: int | None = Field(None, ge=1)

    @model_validator(mode="after")
    def _min_within_max(self) -> StageResources:
        if self.max_actors is not None and self.min_actors > self.max_actors:
            raise ValueError(f"min_actors {self.min_actors} > max_actors {self.max_actors}")
        return self


class StagesConfig(_Strict):
    """Per-stage resources; the names follow the data flow in docs/architecture.

    ``decode`` and ``asr`` are the core's; every other section is a stage of a bundle kind,
    declared with its defaults by the kind (annotator/kinds/plugin.py, ``StageSpec``): its fields
    are a :class:`StageResources`, and a section that no registered kind runs is an error.
    """

    model_config = ConfigDict(extra="allow", validate_assignment=True)
    __pydantic_extra__: dict[str, StageResources] = Field(init=False)

    # Defaults fit the small profile on 2-CPU nodes: on each node one actor of every model stage
    # reserves 1.5 CPUs, leaving room for a decode task. Ray counts these as logical CPUs;
    # threads are set apart. Memory: what each one was measured to use (benchmarks/stages.py).
    decode: TaskResources = TaskResources(batch_size=1, num_cpus=0.5, memory_gb=0.5)
    asr: StageResources = StageResources(batch_size=8, num_cpus=1, memory_gb=0.6)

    @model_validator(mode="before")
    @classmethod
    def _kind_stages(cls, data: Any) -> Any:
        """Each kind's stage sections, its own defaults under what is given."""
        from annotator.kinds import stage_specs

        if not isinstance(data, dict):
            return data
        specs = stage_specs()
        unknown = sorted(set(data) - set(cls.model_fields) - set(specs))
        if unknown:
            raise ValueError(
                f"no bundle kind has a stage {', '.join(unknown)} (the stages: "
                f"{', '.join([*cls.model_fields, *specs])})"
            )
        data = dict(data)
        for name, spec in specs.items():
            given = data.get(name, {})
            data[name] = {**spec.small, **given} if isinstance(given, dict) else given
        return data

    @model_validator(mode="after")
    def _gpu_shares_fit_one_gpu(self) -> StagesConfig:
        # The stages that run together: ASR and one bundle kind's (annotator/kinds/__init__.py).
        from annotator.kinds import KINDS

        for kind in KINDS.values():
            models = {name: getattr(self, name) for name in ("asr", *kind.stages)}
            share = sum(s.num_gpus * s.per_gpu for s in models.values())
            if share > 1 + 1e-9:
                parts = " + ".join(
                    f"{name} {s.per_gpu}×{s.num_gpus:g}" for name, s in models.items() if s.num_gpus
                )
                raise ValueError(
                    f"the model stages of a {kind.name} bundle ask for {share:g} of every GPU "
                    f"({parts}); at most 1 fits"
                )
        return self


class ClusterConfig(_Strict):
    """The size the cluster may reach, for pools on an autoscaling cluster.

    Attributes:
        max_gpus: GPUs the Ray autoscaler may grow the cluster to; GPU pools may grow to
            ``max_gpus × per_gpu`` actors (Ray Data asks the autoscaler for the nodes).
            None: the GPUs present when the run starts.
        max_nodes: the same for CPU stages (``max_nodes × per_node``).
    """

    max_gpus: int | None = Field(None, ge=0)
    max_nodes: int | None = Field(None, ge=1)


class CommitConfig(_Strict):
    """How the sink commits finished input files to the output's tables.

    Attributes:
        every_s: commit the files finished so far at least this often (seconds); a crash loses at
            most this much finished work, which the rerun redoes. 0 commits each file as soon as
            it is complete (tests).
        max_files: commit at once when this many files are finished; bounds the driver's memory.
    """

    every_s: float = Field(30.0, ge=0)
    max_files: int = Field(2000, ge=1)


class RunConfig(_Strict):
    """How a run meets failures (docs/failures.md).

    Attributes:
        retries: attempts at opening a source when the failure may pass (throttling, network,
            credentials); between them ``retry_backoff_s``, doubled each time. A source still
            failing is recorded as a transient error and left not done: the next run retries it.
        retry_backoff_s: the first wait between those attempts (seconds).
        max_failures_in_a_row: a stage actor whose files fail this many times in a row with no
            success between stops the run: the fault is the stage's (a dead engine, GPU memory),
            not the files'.
        stall_timeout_s: the run stops, naming the resource its stages wait for, when no file
            finishes for this long while work is pending; training and evaluation are bounded
            by the same figure without progress. 0: never.
    """

    retries: int = Field(3, ge=1)
    retry_backoff_s: float = Field(2.0, ge=0)
    max_failures_in_a_row: int = Field(25, ge=1)
    stall_timeout_s: float = Field(1800.0, ge=0)


class S3Config(_Strict):
    """Where ``s3://`` URIs go. Credentials may also come from the usual AWS variables.

    Attributes:
        endpoint_url: a non-AWS endpoint (MinIO, a test server); None for AWS itself.
        key / secret: credentials; None defers to the AWS credential chain.
        region: region name passed to the client.
    """

    endpoint_url: str | None = None
    key: str | None = None
    secret: str | None = None
    region: str | None = None


class AudioConfig(_Strict):
    """Decoding, archive safety and segmentation.

    Attributes:
        sample_rate: every recording is resampled to this rate (Hz).
        channels: ``mix`` averages channels to mono; ``split`` makes one recording per channel.
        channel_speakers: with ``split``, who speaks on each channel, in channel order (e.g.
            ``[agent, customer]``): the model's prompt names the segment's speaker so, as the
            paper uses speaker information where it is known. Empty: no speaker in the prompt.
        extensions: file endings treated as audio when listing directories and archives.
        max_archive_bytes: refuse an archive whose members decompress to more than this.
        max_member_bytes: refuse a single archive member larger than this.
        max_segment_s: longest speech segment handed to ASR (seconds).
        chunk_s: decode and run VAD over windows of this length, so memory stays flat.
        vad_threshold / min_silence_ms / speech_pad_ms: Silero VAD options.
    """

    sample_rate: int = 16_000
    channels: Literal["mix", "split"] = "mix"
    channel_speakers: list[str] = Field(default_factory=list)
    extensions: list[str] = Field(
        default_factory=lambda: [
            ".wav",
            ".flac",
            ".mp3",
            ".ogg",
            ".opus",
            ".m4a",
            ".aac",
            ".webm",
            ".mp4",
        ]
    )
    max_archive_bytes: int = Field(20 * 1024**3, ge=1)
    max_member_bytes: int = Field(4 * 1024**3, ge=1)
    max_segment_s: float = Field(30.0, gt=0)
    chunk_s: float = Field(300.0, gt=0)
    vad_threshold: float = Field(0.5, gt=0, lt=1)
    min_silence_ms: int = Field(500, ge=0)
    speech_pad_ms: int = Field(200, ge=0)


class ASRConfig(_Strict):
    """faster-whisper options.

    Attributes:
        model: a CTranslate2 model directory or a faster-whisper model name (cluster only).
        compute_type: CTranslate2 compute type (``int8`` on CPU, ``float16`` on GPU).
        device: ``cpu``, ``cuda`` or ``auto``.
        beam_size: beam width of the decoder; 1 is greedy (fewer errors at 5: benchmarks/asr_beam.py).
        language: force a language, or None to detect it once per recording (from its first
            10 s of speech) with a multilingual model; English-only models need none.
        max_new_tokens: cap on tokens decoded per 30 s window (None: Whisper's own, 448 with the
            prompt); ~100 is what 30 s of speech holds, and what a random model is held to.
        cpu_threads: CTranslate2 threads per actor (0 = CTranslate2's default, 4, capped by the
            CPUs available; not Ray's OMP_NUM_THREADS, which is the actor's num_cpus).
    """

    model: str = "small:whisper"
    compute_type: str = "int8"
    device: str = "cpu"
    beam_size: int = Field(5, ge=1)
    language: str | None = None
    max_new_tokens: int | None = Field(None, ge=1, le=440)
    cpu_threads: int = Field(0, ge=0)


class ModelsConfig(_Strict):
    """Which models the annotator loads.

    Every model and the bundle are named the same way (annotator/models/locate.py): ``small:<part>``
    / ``paper-random:<part>`` a part of a built profile (under ``home``, or under ``store`` when
    set), ``registry:<pointer-or-version>`` a bundle of the registry at ``registry``, ``s3://…`` a
    tree in object storage (fetched once per node into its cache), else a local path or a hub
    name. On a cluster whose nodes share no disk, name everything by ``s3://``, ``store`` or
    ``registry``: a local path must exist on every node (runs check that before any work).

    Attributes:
        home: cache directory of built profiles and bundles (env ``ANNOTATOR_HOME``).
        store: an ``s3://`` prefix holding built profiles as ``annotator models push`` uploads
            them (``<store>/small/<part>``); ``small:`` and ``paper-random:`` names resolve there
            instead of under ``home``, so nodes that cannot see ``home`` fetch them.
        registry: the bundle registry (``s3://bucket/bundles``; annotator/models/registry.py)
            that ``registry:`` names and ``annotator bundles`` use.
        cache_dir: this node's cache of fetched models (None: ``ANNOTATOR_CACHE_DIR``, else
            ``<ANNOTATOR_HOME>/objects``, read on each node; annotator/models/cache.py).
        hubert: HuBERT checkpoint (name or path).
        hubert_layer: which hidden layer feeds the EmoQ-Former (-1 = last).
        text_encoder: BERT-family checkpoint that initialises the EmoQ-Former.
        llm: base LLM (Qwen2 family) name or path.
        bundle: the bundle to serve (any kind): a directory, `s3://…`, or `registry:current`.
        dtype: dtype the LLM runs in.
        unsure_below: abstention: a segment whose emotion's probability (calibrated, if the
            bundle is) is under this is written as ``unsure``, its posterior kept. None: the
            bundle's own threshold (``annotator calibrate --coverage``), else 0 (never).
        features_dtype: dtype of HuBERT, the EmoQ-Former and the projector in the features stage
            and in evaluation; ``auto`` is float16 on a GPU (what cluster/paper.yaml's memory
            arithmetic assumes) and float32 on CPU.
        context_window / context_overlap: a context bundle reads a recording's
            utterances in windows of ``context_window``, each utterance labelled with at least
            ``context_overlap`` utterances of context on either side
            (the context kind's windows).
    """

    home: Path = Field(default_factory=default_home)
    store: str | None = None
    registry: str | None = None
    cache_dir: str | None = None
    hubert: str = "small:hubert"
    hubert_layer: int = -1
    text_encoder: str = "small:text-encoder"
    llm: str = "small:llm"
    bundle: str = "small:bundle"
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    features_dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    unsure_below: float | None = Field(None, ge=0, le=1)
    context_window: int = Field(256, ge=2)
    context_overlap: int = Field(32, ge=0)
    asr: ASRConfig = Field(default_factory=ASRConfig)

    @model_validator(mode="after")
    def _context_fits(self) -> ModelsConfig:
        if self.context_window <= 2 * self.context_overlap:
            raise ValueError(
                f"models.context_window {self.context_window} cannot keep "
                f"models.context_overlap {self.context_overlap} utterances of context on each side"
            )
        return self


class TrainSchedule(_Strict):
    """One kind's own training schedule (``train.schedules.<kind>``): each field set here takes
    the place of the top-level ``train.<field>`` when that kind trains; unset (null) fields take
    the top-level value. Defaults per profile come from the kind (``Kind.schedule``).

    Attributes:
        epochs_stage1 / epochs_stage2 / lr_stage1 / lr_stage2 / gamma / batch_size: as in
            :class:`TrainConfig`.
    """

    epochs_stage1: int | None = Field(None, ge=0)
    epochs_stage2: int | None = Field(None, ge=1)
    lr_stage1: float | None = Field(None, gt=0)
    lr_stage2: float | None = Field(None, gt=0)
    gamma: float | None = Field(None, ge=0)
    batch_size: int | None = Field(None, ge=2)


class TrainConfig(_Strict):
    """Two-stage retraining (EmoQ §2.2–2.4) on Ray Train.

    Attributes:
        storage: where checkpoints go (local path or s3:// URI); a stopped run resumes from there.
        keep_checkpoints: checkpoints kept per run, newest first (each holds the trainable weights
            and the optimizer state: ~300 MB for the small profile, GBs at paper size).
        num_workers / use_gpu / cpus_per_worker: the Ray Train worker group.
        batch_size: the global batch, examples per optimizer step over all workers together
            (the paper: 8); each worker takes batch_size / num_workers, which must divide.
        epochs_stage1 / epochs_stage2, lr_stage1 / lr_stage2: AdamW schedules.
        temperature / gamma / mal_lambda: SupCon τ, focal γ, MAL's λ.
        emotion_token_weight: weight of emotion-word tokens in the stage-2 LM loss (Eq. 7).
        lora_rank / lora_dropout: the adapter of stage 2.
        num_queries: EmoQ-Former query vectors.
        label_set: which labels (see annotator/schema.py).
        transcripts: what training and ``eval`` read as each clip's words: ``reference`` (the
            manifest's text), ``asr`` (what the ASR ``annotate`` runs, ``models.asr``, makes of
            the clip: transcribed once and cached beside the manifest,
            training/asr_transcripts.py) or ``both`` (each training clip once with each; eval
            and dev scoring with the ASR's). The bundle records it. ``corpus`` is the old name
            of ``reference``.
        features: ``stream`` (each batch's audio read and its frozen encoder run when the batch
            is drawn, every epoch: a worker's memory does not grow with the manifest) or
            ``memory`` (every example's frames computed once and held: faster epochs, but a
            worker holds its whole share's frames, ~1 GB per 1,000 clips of 4.5 s at HuBERT-large's
            width in float32).
        standardise_frames: EmoQ: standardise HuBERT's frames per feature by the training
            split's statistics before the EmoQ-Former projects them (not in the paper; off by
            default). On the small profile's random HuBERT it is what lets stage 1 learn from
            the audio (prosody-only corpus: e stops collapsing), but 3 + 8 epochs on the
            wording-only corpus then reach UA 0.75 instead of 1.0 (README, "Which input does
            the model learn from?").
        seed: everything random is seeded from it.
        schedules: per kind, the fields of its own schedule (:class:`TrainSchedule`), which win
            over the top-level ones for that kind (MiSTER-E's γ 3, and its published schedule on
            the paper profile); ``for_kind`` applies them.

    The paper's ablations are settings of these (named in ``annotator/kinds/emoq/ablations.py``, chosen with
    ``--ablation`` on the train commands):
    ``inputs`` ``audio`` / ``text`` (Table 4: the other input taken away in training and, as the
    bundle records it, in serving), ``stage1_loss`` ``supcon`` / ``focal`` (Table 5: one term of
    MAL alone) and ``epochs_stage1: 0`` (Table 6: no stage 1, stage 2 starts from the EmoQ-Former
    as initialised).
    """

    storage: str | None = None
    keep_checkpoints: int = Field(2, ge=1)
    num_workers: int = Field(2, ge=1)
    use_gpu: bool = False
    cpus_per_worker: float = Field(0.5, gt=0)
    batch_size: int = Field(8, ge=2)
    epochs_stage1: int = Field(10, ge=0)
    epochs_stage2: int = Field(12, ge=1)
    lr_stage1: float = Field(2e-4, gt=0)
    lr_stage2: float = Field(3e-3, gt=0)
    temperature: float = Field(0.07, gt=0)
    gamma: float = Field(2.0, ge=0)
    mal_lambda: float = Field(1.0, ge=0)
    emotion_token_weight: float = Field(5.0, gt=0)
    lora_rank: int = Field(8, ge=1)
    lora_dropout: float = Field(0.1, ge=0, lt=1)
    num_queries: int = Field(16, ge=1)
    label_set: str = "iemocap4"
    transcripts: Literal["reference", "asr", "both"] = "reference"
    inputs: Literal["both", "audio", "text"] = "both"
    stage1_loss: Literal["mal", "supcon", "focal"] = "mal"
    features: Literal["stream", "memory"] = "stream"
    standardise_frames: bool = False
    seed: int = 0
    schedules: dict[str, TrainSchedule] = Field(default_factory=dict)

    @field_validator("transcripts", mode="before")
    @classmethod
    def _old_transcripts_name(cls, value: Any) -> Any:
        return "reference" if value == "corpus" else value

    @field_validator("schedules")
    @classmethod
    def _known_kinds(cls, schedules: dict[str, TrainSchedule]) -> dict[str, TrainSchedule]:
        from annotator.kinds import KINDS

        unknown = sorted(set(schedules) - set(KINDS))
        if unknown:
            raise ValueError(f"no kind named {unknown}; the kinds are {sorted(KINDS)}")
        return schedules

    def for_kind(self, kind: str) -> TrainConfig:
        """The training settings ``kind`` trains with: its schedule over the top-level fields."""
        own = self.schedules.get(kind)
        if own is None:
            return self
        return TrainConfig.model_validate(
            {**self.model_dump(), **own.model_dump(exclude_none=True)}
        )

    @model_validator(mode="after")
    def _batch_divides_over_workers(self) -> TrainConfig:
        if self.batch_size % self.num_workers:
            raise ValueError(
                f"batch_size {self.batch_size} is the global batch and must divide evenly over "
                f"num_workers {self.num_workers}"
            )
        return self


class AnnotatorConfig(BaseSettings):
    """The whole system's configuration.

    Attributes:
        profile: ``small`` (CPU, offline, tests and demo) or ``paper`` (GPU cluster, paper sizes).
        output: where the tables go (local path or ``s3://bucket/prefix``): Delta Lake tables
            segments, errors, files and runs.
        ray_address: None for a local cluster, ``auto`` or ``ray://host:10001`` for a running one.
    """

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_nested_delimiter="__", extra="forbid", validate_assignment=True
    )

    profile: Literal["small", "paper"] = "small"
    output: str | None = None
    ray_address: str | None = None
    audio: AudioConfig = Field(default_factory=AudioConfig)
    s3: S3Config = Field(default_factory=S3Config)
    models: ModelsConfig = Field(default_factory=ModelsConfig)
    stages: StagesConfig = Field(default_factory=StagesConfig)
    cluster: ClusterConfig = Field(default_factory=ClusterConfig)
    commit: CommitConfig = Field(default_factory=CommitConfig)
    run: RunConfig = Field(default_factory=RunConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)

    @field_validator("output")
    @classmethod
    def _output_not_blank(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("must be a path or s3:// URI, not empty")
        return value

    def for_kind(self, kind: str) -> AnnotatorConfig:
        """This configuration as ``kind`` trains with it: ``train`` with the kind's own schedule
        applied (``TrainConfig.for_kind``)."""
        return self.model_copy(update={"train": self.train.for_kind(kind)})

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The environment wins over the YAML file (passed as init kwargs), as the docstring says.
        return env_settings, init_settings


def _kind_schedules(profile: str) -> dict[str, dict[str, Any]]:
    from annotator.kinds import KINDS

    return {name: dict(k.schedule[profile]) for name, k in KINDS.items() if profile in k.schedule}


def _kind_stages(profile: str) -> dict[str, dict[str, Any]]:
    from annotator.kinds import stage_specs

    return {name: dict(getattr(spec, profile)) for name, spec in stage_specs().items()}


# Defaults that differ per profile, applied under the YAML file.
PROFILES: dict[str, dict[str, Any]] = {
    "small": {"train": {"schedules": _kind_schedules("small")}},
    "paper": {
        # EmoQ's paper gives no learning rates that we have: 2e-4 for the LoRA and the projector
        # is QLoRA's for 7B models [guess]; the small profile's 3e-3 was tuned on the toy LLM.
        "train": {"lr_stage2": 2e-4, "schedules": _kind_schedules("paper")},
        "models": {
            "hubert": "facebook/hubert-large-ll60k",
            "text_encoder": "FacebookAI/roberta-base",
            "llm": "Qwen/Qwen2.5-7B-Instruct",
            "bundle": "bundles/emoq-paper",
            "dtype": "bfloat16",
            "asr": {
                "model": "large-v3-turbo",
                "compute_type": "float16",
                "device": "cuda",
                "beam_size": 5,
            },
        },
        # How the stages pack one 80 GB GPU (2 × 0.25 + 0.10 + 0.35 = 0.95); the pools follow
        # the GPUs present. cluster/paper.yaml and cluster/README.md show the arithmetic.
        "stages": {
            "decode": {"batch_size": 1, "num_cpus": 1, "memory_gb": 1},
            "asr": {
                "batch_size": 16,
                "num_cpus": 2,
                "num_gpus": 0.25,
                "per_gpu": 2,
                "memory_gb": 8,
            },
            # Each kind's stages: their paper-profile sections, from the kinds.
            **_kind_stages("paper"),
        },
    },
}


def _deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _describe(error: ValidationError, source: str) -> str:
    lines = [f"invalid configuration ({source}):"]
    for item in error.errors():
        field = ".".join(str(part) for part in item["loc"]) or "(top level)"
        env = ENV_PREFIX + "__".join(str(p).upper() for p in item["loc"])
        got = item.get("input")
        shown = "" if isinstance(got, dict) else f" (got {got!r})"
        lines.append(f"  {field}: {item['msg']}{shown}  [env {env}]")
    return "\n".join(lines)


def load_config(path: str | Path | None = None, **overrides: Any) -> AnnotatorConfig:
    """Build the configuration from the profile, an optional YAML file, env and overrides.

    ``overrides`` are nested dicts as in the YAML (the CLI passes ``--out`` and ``--address`` so).
    Raises :class:`ConfigError` with one line per bad field.
    """
    data: dict[str, Any] = {}
    source = "defaults"
    if path is not None:
        source = str(path)
        try:
            text = Path(path).read_text()
        except OSError as exc:
            raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
        try:
            loaded = yaml.safe_load(text) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {path} is not valid YAML: {exc}") from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {path} must be a mapping of sections, not {loaded!r}")
        data = loaded
    data = _deep_merge(data, {k: v for k, v in overrides.items() if v is not None})
    profile = os.environ.get(ENV_PREFIX + "PROFILE") or data.get("profile", "small")
    if profile not in PROFILES:
        raise ConfigError(
            f"invalid configuration ({source}):\n  profile: must be one of "
            f"{', '.join(PROFILES)} (got {profile!r})  [env {ENV_PREFIX}PROFILE]"
        )
    # The stage defaults go in as data too: an environment override of one field of a stage
    # (ANNOTATOR_STAGES__ASR__BATCH_SIZE) must keep that stage's other defaults.
    defaults = {"stages": StagesConfig().model_dump(), "train": TrainConfig().model_dump()}
    data = _deep_merge(_deep_merge(defaults, PROFILES[profile]), data)
    try:
        return AnnotatorConfig(**data)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, source)) from None
