"""``trainer`` section: Lightning Trainer settings, with the ``max_time`` and ``devices`` parsers."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from medsr.errors import InvalidParameterError
from medsr.training.config._checks import positive_int


@dataclass
class TrainerConfig:
    """Lightning Trainer settings (see :func:`medsr.training.run.train`)."""

    max_epochs: int = 100
    max_steps: int = -1
    max_time: str | None = None
    precision: str = "32-true"
    gradient_clip_val: float | None = None
    ema_decay: float | None = None
    accelerator: str = "auto"
    devices: int | str = "auto"
    num_nodes: int = 1
    strategy: str = "auto"
    log_every_n_steps: int = 50
    check_val_every_n_epoch: int = 1
    image_log_every_n_epochs: int = 5
    progress_bar: Literal["rich", "tqdm", "none"] = "rich"
    seed: int = 0
    out_dir: str | None = None

    def validate(self, where: str) -> None:
        if self.max_epochs < -1 or self.max_epochs == 0:
            raise InvalidParameterError(f"{where}.max_epochs must be ≥ 1 (or -1 for no limit)")
        if self.max_steps < -1 or self.max_steps == 0:
            raise InvalidParameterError(f"{where}.max_steps must be ≥ 1 (or -1 for no limit)")
        if self.max_time is not None:
            parse_max_time(self.max_time, f"{where}.max_time")
        if self.max_epochs == -1 and self.max_steps == -1 and self.max_time is None:
            raise InvalidParameterError(
                f"{where}: set at least one of max_epochs, max_steps or max_time, or training never ends"
            )
        allowed = ("32-true", "32", "16-mixed", "bf16-mixed", "bf16-true", "16-true", "64-true")
        self.precision = str(self.precision)
        if self.precision not in allowed:
            raise InvalidParameterError(f"{where}.precision must be one of {', '.join(allowed)}")
        if self.gradient_clip_val is not None and not self.gradient_clip_val > 0:
            raise InvalidParameterError(f"{where}.gradient_clip_val must be > 0 (or null)")
        if self.ema_decay is not None and not 0.0 < self.ema_decay < 1.0:
            raise InvalidParameterError(f"{where}.ema_decay must be in (0, 1) (e.g. 0.999) or null")
        positive_int(self.num_nodes, f"{where}.num_nodes")
        positive_int(self.log_every_n_steps, f"{where}.log_every_n_steps")
        positive_int(self.check_val_every_n_epoch, f"{where}.check_val_every_n_epoch")
        if self.image_log_every_n_epochs < 0:
            raise InvalidParameterError(f"{where}.image_log_every_n_epochs must be ≥ 0 (0: never)")
        self.devices = parse_devices(self.devices, f"{where}.devices")


def parse_max_time(value: Any, where: str = "max_time") -> Any:
    """``"HH:MM:SS"`` or ``"DD:HH:MM:SS"`` → :class:`datetime.timedelta` (``None`` passes)."""
    import datetime

    if value is None:
        return None
    if isinstance(value, datetime.timedelta):
        return value
    parts = str(value).strip().split(":")
    try:
        nums = [int(p) for p in parts]
    except ValueError:
        nums = []
    if len(nums) not in (3, 4) or any(n < 0 for n in nums):
        raise InvalidParameterError(
            f"{where} must look like HH:MM:SS or DD:HH:MM:SS, got {value!r}"
        )
    if len(nums) == 3:
        nums = [0, *nums]
    d, h, m, s = nums
    if m > 59 or s > 59:
        raise InvalidParameterError(f"{where}: minutes and seconds must be < 60, got {value!r}")
    td = datetime.timedelta(days=d, hours=h, minutes=m, seconds=s)
    if td.total_seconds() <= 0:
        raise InvalidParameterError(f"{where} must be longer than zero, got {value!r}")
    return td


def parse_devices(value: Any, where: str = "devices") -> int | str:
    """``auto``, a count (``2``) or a device list (``"0,1"``) as Lightning expects."""
    if isinstance(value, bool):
        raise InvalidParameterError(f"{where} must be 'auto', a count or a list like '0,1'")
    if isinstance(value, int):
        if value < 1 and value != -1:
            raise InvalidParameterError(f"{where} must be ≥ 1 (or -1 for all), got {value}")
        return value
    s = str(value).strip()
    if s == "auto":
        return s
    try:
        return parse_devices(int(s), where)
    except ValueError:
        pass
    items = [p.strip() for p in s.split(",") if p.strip()]
    if items and all(p.isdigit() for p in items):
        return ",".join(items) + ("," if len(items) == 1 else "")
    raise InvalidParameterError(
        f"{where} must be 'auto', a count or a list like '0,1', got {value!r}"
    )
