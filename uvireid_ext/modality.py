"""The one modality vocabulary of the package.

``Modality`` is what data sets, the label stage and the trainer store per image (0 visible, 1 infrared).
``StemFlag`` is the flag of the standard VI-ReID model interface, ``model(x, flag)`` with 1 = visible and
2 = infrared (the convention of the AGW-style test code), which ``TwoStreamNet.forward`` accepts.
"""

from __future__ import annotations

from enum import IntEnum

__all__ = ["Modality", "StemFlag", "stem_flag"]


class Modality(IntEnum):
    VISIBLE = 0
    INFRARED = 1

    @property
    def stem_flag(self) -> StemFlag:
        return StemFlag(int(self) + 1)


class StemFlag(IntEnum):
    VISIBLE = 1
    INFRARED = 2

    @property
    def modality(self) -> Modality:
        return Modality(int(self) - 1)


def stem_flag(flag: object) -> StemFlag:
    """``flag`` as a StemFlag: a StemFlag or the int 1 (visible) / 2 (infrared); anything else (a bool, a
    Modality, 0) raises, since 0/1 is the stored-modality convention and would pick the wrong stem."""
    if isinstance(flag, StemFlag):
        return flag
    if isinstance(flag, int) and not isinstance(flag, (bool, Modality)) and flag in (1, 2):
        return StemFlag(flag)
    raise ValueError(f"model: flag must be a StemFlag or 1 (visible) / 2 (infrared), got {flag!r}")
