"""Bundle kinds (annotator/kinds/__init__.py): a bundle names its kind, the kind decides what the
bundle must hold and which stages the annotate graph runs after ASR."""

from __future__ import annotations

import json
import shutil

import pytest

from annotator.config import load_config
from annotator.kinds import DEFAULT_KIND, KINDS, kind, stage_specs
from annotator.models.bundle import META, Bundle, BundleError, content_version
from annotator.pipeline.graph import pools
from annotator.pipeline.pools import Node
from annotator.pipeline.stages import Stage


def _rewrite(root, **changes):
    """Edit bundle.json as a writer would have written it, version recomputed."""
    meta = json.loads((root / META).read_text())
    for key, value in changes.items():
        if value is None:
            meta.pop(key, None)
        else:
            meta[key] = value
    meta["version"] = content_version(root, meta)
    (root / META).write_text(json.dumps(meta, indent=2, sort_keys=True))


@pytest.fixture
def bundle_copy(lora_bundle, tmp_path):
    root = tmp_path / "bundle"
    shutil.copytree(lora_bundle, root)
    return root


def test_a_written_bundle_names_its_kind(lora_bundle):
    assert json.loads((lora_bundle / META).read_text())["kind"] == "emoq"
    assert Bundle.load(lora_bundle).kind == "emoq"


def test_a_bundle_written_before_kinds_is_emoq(bundle_copy):
    _rewrite(bundle_copy, kind=None)
    assert Bundle.load(bundle_copy).kind == DEFAULT_KIND == "emoq"


def test_an_unknown_kind_is_refused_naming_the_known_ones(bundle_copy):
    _rewrite(bundle_copy, kind="wav2vec-magic")
    with pytest.raises(BundleError, match=r"'wav2vec-magic'.*known: emoq"):
        Bundle.load(bundle_copy)


def test_the_kind_decides_what_a_bundle_must_hold(bundle_copy):
    (bundle_copy / "projector.safetensors").unlink()
    with pytest.raises(BundleError, match=r"missing: projector\.safetensors"):
        Bundle.load(bundle_copy)


@pytest.mark.parametrize("name", list(KINDS))
def test_every_kind_has_its_stages_and_their_resources(name):
    """The graph can run each kind: every stage it names has an actor class and a
    ``stages.<name>`` section of the configuration, and gets a pool."""
    config = load_config(None)
    node = Node(cpus=8, gpus=0, memory_bytes=32 * 2**30)
    sizes = pools(config, [node], kind(name))
    assert list(sizes) == ["asr", *KINDS[name].stages]
    for stage in KINDS[name].stages:
        assert stage in stage_specs() and hasattr(config.stages, stage)
        assert issubclass(stage_specs()[stage].actor_class(), Stage)
