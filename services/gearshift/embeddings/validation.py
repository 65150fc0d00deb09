"""A caller's embedding, checked at a service's edge (the cache and the retriever take one).

A vector of the wrong size or with no direction would be compared with stored unit
vectors and give meaningless distances, so it is refused with the field named.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from gearshift.embeddings.model import DIM, MODEL_NAME
from gearshift.runtime.errors import FieldViolation, InvalidArgument


def caller_embedding(values: Sequence[float]) -> npt.NDArray[np.float32] | None:
    """The caller's embedding as a unit vector; None when none was given."""
    if len(values) == 0:
        return None
    if len(values) != DIM:
        raise InvalidArgument(
            [
                FieldViolation(
                    "embedding", f"must have {DIM} values ({MODEL_NAME}), not {len(values)}"
                )
            ]
        )
    vector = np.asarray(values, dtype=np.float32)
    norm = float(np.linalg.norm(vector))
    if not math.isfinite(norm) or norm == 0.0:
        raise InvalidArgument([FieldViolation("embedding", "must be finite and non-zero")])
    return vector / norm
