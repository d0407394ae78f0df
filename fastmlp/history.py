"""History: what ``Network.fit`` records per epoch (a plain dataclass, saved as JSON)."""

import json
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

MAX_HISTORY_BYTES = 16 * 1024 * 1024  #: a History of 10^5 epochs fits


def history_path(model_path):
    """``runs/model.npz`` -> ``runs/model.history.json``: the History (and the CLI's run
    record) that ``fastmlp train`` writes beside a model, which ``evaluate``, ``predict``
    and ``serve`` read."""
    p = Path(model_path)
    stem = p.name[:-4] if p.name.endswith(".npz") else p.name
    return p.with_name(stem + ".history.json")


def read_history_json(model_path):
    """The JSON saved beside a model (:func:`history_path`), parsed. OSError or ValueError
    when there is none, or it is not a regular file (a FIFO would block the reader forever),
    or larger than ``MAX_HISTORY_BYTES``, or not JSON."""
    path = history_path(model_path)
    with open(path, "rb", opener=lambda name, flags: os.open(name, flags | os.O_NONBLOCK)) as f:
        info = os.fstat(f.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise ValueError(f"{path} is not a regular file")
        if info.st_size > MAX_HISTORY_BYTES:
            raise ValueError(f"{path} is larger than {MAX_HISTORY_BYTES} bytes")
        data = f.read(MAX_HISTORY_BYTES + 1)
    return json.loads(data.decode("utf-8"))


@dataclass
class History:
    """Per-epoch training record. Validation lists stay empty without validation data."""

    loss: list = field(default_factory=list)
    accuracy: list = field(default_factory=list)
    val_loss: list = field(default_factory=list)
    val_accuracy: list = field(default_factory=list)
    seconds: list = field(default_factory=list)
    learning_rate: list = field(default_factory=list)
    best_epoch: int | None = None

    @property
    def epochs(self):
        return len(self.loss)

    def to_dict(self):
        return {k: (list(v) if isinstance(v, list) else v) for k, v in self.__dict__.items()}

    @classmethod
    def from_dict(cls, data):
        known = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        return cls(**known)
