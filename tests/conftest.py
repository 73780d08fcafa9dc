"""Session-scoped fixtures: the expensive real parts (model profile, Ray, vLLM) start once."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.blind import machine_token

# Every Ray cluster of the session runs with token authentication, as real ones do
# (cluster/README.md), all with this machine's token: a process fixes its auth mode and token
# at its first use of Ray, and subprocesses (ray job submit, the CLI) inherit them.
os.environ.setdefault("RAY_AUTH_MODE", "token")
os.environ.setdefault("RAY_AUTH_TOKEN", machine_token())

# Nothing in the tests may reach a model hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def small_home() -> Path:
    """ANNOTATOR_HOME with the small profile built (quick when `make setup` already built it)."""
    from annotator.config import default_home
    from annotator.models.profiles import build_small_profile

    home = default_home()
    build_small_profile(home)
    return home


@pytest.fixture(scope="session")
def small_dir(small_home: Path) -> Path:
    return small_home / "small"


@pytest.fixture(scope="session")
def lora_bundle(small_dir: Path, tmp_path_factory) -> Path:
    """The untrained bundle with a random, non-zero LoRA, so that the adapter visibly acts."""
    from tests.factories import bundle_with_random_lora

    return bundle_with_random_lora(small_dir, tmp_path_factory.mktemp("lora-bundle"), seed=1)


@pytest.fixture(scope="session")
def vllm_labeler(small_dir: Path, lora_bundle: Path):
    """One real vLLM engine on the CPU for the whole session (start-up ≈ 40 s on 2 cores)."""
    from annotator.models.bundle import Bundle
    from annotator.models.labeler.vllm import VLLMLabeler

    bundle = Bundle.load(lora_bundle)
    labeler = VLLMLabeler(small_dir / "llm", bundle.emotion_token_ids, bundle.lora_dir)
    yield labeler
    labeler.close()


@pytest.fixture(scope="session")
def ray_local():
    """A real Ray local cluster with 2 CPUs."""
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def s3_server():
    """A real S3 API (moto's server) on 127.0.0.1, as s3fs's own tests use; yields an S3Config."""
    from annotator.config import S3Config
    from tests.factories import moto_server

    with moto_server() as endpoint:
        yield S3Config(endpoint_url=endpoint, key="testing", secret="testing", region="us-east-1")


@pytest.fixture(scope="session")
def corpus(tmp_path_factory):
    """A small espeak-ng archive (loose files, a tar, one broken file) and what was spoken."""
    from tests.factories import speech_corpus

    root = tmp_path_factory.mktemp("corpus")
    return root, speech_corpus(root)


@pytest.fixture(scope="session")
def baseline(corpus, small_home, ray_local, tmp_path_factory):
    """One uninterrupted annotate run over the corpus: (output dir, summary)."""
    from annotator.config import load_config
    from annotator.pipeline.run import annotate

    root, _ = corpus
    out = tmp_path_factory.mktemp("baseline") / "out"
    config = load_config(None, output=str(out), models={"home": str(small_home)})
    return out, annotate(config, [str(root)])


@pytest.fixture(scope="session")
def synth_manifest(tmp_path_factory) -> Path:
    """The synthetic espeak-ng emotion corpus (six voices, four emotions; two voices held out)."""
    from training.synthetic_corpora import synthetic_corpus

    return synthetic_corpus(tmp_path_factory.mktemp("synth"))


@pytest.fixture(scope="session")
def wording_manifest(tmp_path_factory) -> Path:
    """The synthetic corpus with the emotion in the words only (every sentence spoken with the
    same neutral prosody): what a model learns from it, it learns through the transcript."""
    from training.synthetic_corpora import synthetic_corpus

    return synthetic_corpus(tmp_path_factory.mktemp("wording"), carries="wording")


@pytest.fixture(scope="session")
def s3_models(s3_server, small_home) -> str:
    """The small profile pushed to the test S3 server (``annotator models push``): what
    ``models.store`` names on a cluster whose nodes cannot see ``small_home``."""
    from annotator.models.profiles import push_profile
    from tests.factories import make_bucket

    make_bucket(s3_server, "models")
    push_profile(small_home, "small", "s3://models", s3_server)
    return "s3://models"
