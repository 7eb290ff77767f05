"""Types of the compiled step (models/_linear_core.c)."""

from typing import Any

Pairs = list[tuple[str, Any]]

class Core:
    def __init__(self, learning_rate: float, l2: float, decay: float) -> None: ...
    def predict(self, x: dict[str, float]) -> float: ...
    def learn(
        self, x: dict[str, float], label: bool, w: float, first: bool
    ) -> float | tuple[str, str]: ...
    def state(self) -> tuple[Pairs, Pairs, Pairs, Pairs, float, int]: ...
    def load(
        self,
        counts: Pairs,
        means: Pairs,
        vars: Pairs,
        weights: Pairs,
        intercept: float,
        n_iterations: int,
    ) -> bool: ...
    def params(self) -> tuple[float, float, float]: ...

def clean(x: object) -> dict[str, float] | None: ...
