"""The one modality vocabulary of the package.

``Modality`` is what data sets, the label stage and the trainer store per image (0 visible, 1 infrared).
``StemFlag`` is the flag of the standard VI-ReID model interface, ``model(x, flag)`` with 1 = visible and
2 = infrared (the convention of the AGW-style test code), which ``TwoStreamNet.forward`` accepts.
"""

from __future__ import annotations

from enum import IntEnum

__all__ = ["Modality", "StemFlag"]


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
