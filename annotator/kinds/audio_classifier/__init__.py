"""Any transformers ``AutoModelForAudioClassification`` checkpoint (a wav2vec2/HuBERT/WavLM with a
classification head, say one fine-tuned on IEMOCAP's four classes): its own labels mapped onto one
of our label sets; audio only, no LLM, and no training needed before it serves
(annotator/kinds/audio_classifier/model.py). ``annotator models import audio-classifier`` writes
the bundle; ``review retrain`` fine-tunes its head."""

from annotator.kinds.plugin import Kind, StageSpec

KIND = Kind(
    name="audio_classifier",
    summary="any transformers audio-classification checkpoint, its labels mapped onto a label "
    "set; audio only, no LLM, no training needed",
    # The mapping and tuning; tuned weights (audio_classifier.safetensors) only once retrained.
    required=("audio_classifier.json",),
    specs=(
        # The checkpoint in one stage. Not yet measured; sized like the other kinds' encoder
        # stages (paper: a HuBERT-large and its head).
        StageSpec(
            name="audio_classifier",
            actor="annotator.kinds.audio_classifier.stage:AudioClassifierStage",
            small={"batch_size": 8, "num_cpus": 0.25, "memory_gb": 1.0},
            paper={"batch_size": 32, "num_cpus": 2, "num_gpus": 0.1, "memory_gb": 6},
        ),
    ),
    hears="audio",
    # The checkpoint: small:audio-classifier, a path, an s3:// URI or a hub name.
    models=("base.classifier",),
    small_bundle="audio-classifier-bundle",
)
