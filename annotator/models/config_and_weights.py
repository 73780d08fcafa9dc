"""A model stored as its configuration (a dataclass, as JSON) beside its weights (safetensors):
what a bundle kind's own model writes into the bundle.
Loading reads JSON and safetensors only, so nothing in a bundle can run code."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any, ClassVar


class ConfigAndWeights:
    """Mixin for an ``nn.Module`` built from one dataclass, ``self.config``: the subclass names
    its two files (``CONFIG``, ``WEIGHTS``) and its configuration type (``CONFIG_TYPE``)."""

    CONFIG: ClassVar[str]
    WEIGHTS: ClassVar[str]
    CONFIG_TYPE: ClassVar[type]

    def save(self, directory: Path) -> None:
        from safetensors.torch import save_file

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / self.CONFIG).write_text(json.dumps(asdict(self.config), sort_keys=True))
        state = {k: v.contiguous() for k, v in self.state_dict().items()}
        save_file(state, directory / self.WEIGHTS)

    @classmethod
    def load(cls, directory: Path) -> Any:
        """The model in eval mode, every weight from the file (a missing or extra one refused)."""
        from safetensors.torch import load_file

        directory = Path(directory)
        model = cls(cls.CONFIG_TYPE(**json.loads((directory / cls.CONFIG).read_text())))
        model.load_state_dict(load_file(directory / cls.WEIGHTS))
        return model.eval()
