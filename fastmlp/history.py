"""History: what ``Network.fit`` records per epoch (a plain dataclass, saved as JSON)."""

from dataclasses import dataclass, field


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
