"""Tree ensembles of XGBoost, LightGBM and CatBoost as numpy arrays, for fast small batches.

Every tree is padded to a complete binary tree of one depth and stored level by level. A node
sends a row to its second child when ``xext[feature] >= threshold``, where ``xext`` is the row
extended with its negation and with its float32-rounded copy (and that copy's negation). Each
library's own split rule (``x < t`` on float32 for XGBoost, ``x <= t`` on float64 for LightGBM,
``x > t`` on float32 for CatBoost) and its missing-value direction are rewritten into that one
form exactly, using ``nextafter`` for strictness and the negated copy so that NaN, which fails
every comparison, always takes the branch its library sends it to.

The arrays answer one row, or a few, in a handful of numpy calls for all trees of all models at
once, which beats the libraries' per-call overhead. Large batches go to the native predictors.
:func:`compile_forests` raises :class:`UnsupportedModel` for anything it does not cover
(categorical splits, linear trees, LightGBM zero-as-missing); the caller falls back to native.

>>> import numpy as np
>>> tree = _Tree(feature=[0, -1, -1], rule=["le64", "", ""], threshold=[0.5, 0, 0],
...              nan_left=[True, False, False], left=[1, -1, -1], right=[2, -1, -1],
...              value=[0.0, -1.0, 1.0])
>>> forest = _Forest(trees=[tree], feature_names=["a"], base=0.0, scale=1.0)
>>> packed = pack([forest])
>>> packed.raw(np.array([[0.5], [0.7], [np.nan]])).ravel().tolist()
[-1.0, 1.0, -1.0]
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["PackedForests", "UnsupportedModel", "compile_forests", "pack", "probe_rows"]


class UnsupportedModel(Exception):
    """The model uses a feature this evaluator does not reproduce exactly."""


@dataclass
class _Tree:
    """One tree in explicit form: node arrays, ``left[i] == -1`` marks a leaf."""

    feature: list[int]
    rule: list[str]
    threshold: list[float]
    nan_left: list[bool]
    left: list[int]
    right: list[int]
    value: list[float]

    def depth(self, node: int = 0) -> int:
        if self.left[node] < 0:
            return 0
        return 1 + max(self.depth(self.left[node]), self.depth(self.right[node]))


@dataclass
class _Forest:
    """All trees of one model with its output transform ``sigmoid(scale * (base + sum))``."""

    trees: list[_Tree]
    feature_names: list[str]
    base: float
    scale: float
    depth: int = field(init=False)

    def __post_init__(self) -> None:
        self.depth = max((t.depth() for t in self.trees), default=0)


def _up32(v: float) -> float:
    return float(np.nextafter(np.float32(v), np.float32(np.inf)))


def _encode(rule: str, thr: float, nan_left: bool) -> tuple[int, float, bool]:
    """(block, threshold, bit_is_right) such that bit = xext[block * F + f] >= threshold."""
    if rule == "lt32":  # XGBoost: left when float32(x) < t
        t32 = float(np.float32(thr))
        return (2, t32, True) if nan_left else (3, _up32(-t32), False)
    if rule == "le64":  # LightGBM: left when x <= t
        return (0, math.nextafter(thr, math.inf), True) if nan_left else (1, -thr, False)
    if rule == "gt32":  # CatBoost: right when float32(x) > t
        t32 = float(np.float32(thr))
        return (2, _up32(t32), True) if nan_left else (3, -t32, False)
    raise UnsupportedModel(f"unknown split rule {rule!r}")


class PackedForests:
    """Several models' trees in one set of level-ordered arrays (see the module docstring).

    Built by :func:`pack`. ``predict(x)`` takes rows whose columns are ``feature_names`` (NaN for
    missing) and returns one probability column per model, in the order the forests were packed.
    """

    def __init__(
        self,
        feature_names: list[str],
        node_feature: np.ndarray,
        node_threshold: np.ndarray,
        leaves: np.ndarray,
        tree_start: np.ndarray,
        base: np.ndarray,
        scale: np.ndarray,
        depth: int,
    ) -> None:
        n_trees, n_inner = node_feature.shape
        self.feature_names = list(feature_names)
        self.depth = depth
        self.n_trees = n_trees
        self._feature = np.ascontiguousarray(node_feature.ravel())
        self._threshold = np.ascontiguousarray(node_threshold.ravel())
        self._leaves = np.ascontiguousarray(leaves.ravel())
        trees = np.arange(n_trees, dtype=np.int64)
        self._level_offset = [trees * n_inner + ((1 << lv) - 1) for lv in range(depth)]
        self._leaf_offset = trees * leaves.shape[1]
        self._tree_start = tree_start
        self._base = base
        self._scale = scale

    def raw(self, x: np.ndarray) -> np.ndarray:
        """Per-model margins ``(n_rows, n_models)``."""
        x = np.asarray(x, dtype=np.float64)
        n = x.shape[0]
        xr = x.astype(np.float32).astype(np.float64)
        xext = np.concatenate([x, -x, xr, -xr], axis=1)
        feature, threshold = self._feature, self._threshold
        if n == 1:
            flat_x = xext[0]
            idx = np.zeros(self.n_trees, dtype=np.int64)
            for offset in self._level_offset:
                node = offset + idx
                idx <<= 1
                idx += flat_x.take(feature.take(node)) >= threshold.take(node)
        else:
            flat_x = xext.ravel()
            row = (np.arange(n, dtype=np.int64) * xext.shape[1])[:, None]
            idx = np.zeros((n, self.n_trees), dtype=np.int64)
            for offset in self._level_offset:
                node = offset + idx
                idx <<= 1
                idx += flat_x.take(feature.take(node) + row) >= threshold.take(node)
        values = self._leaves.take(self._leaf_offset + idx)
        return np.add.reduceat(values, self._tree_start, axis=-1).reshape(n, -1) + self._base

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Per-model probabilities ``(n_rows, n_models)``."""
        z = self.raw(x) * self._scale
        return 1.0 / (1.0 + np.exp(-z))


def pack(forests: list[_Forest]) -> PackedForests:
    """Lay the forests of several models out as one :class:`PackedForests`."""
    names: list[str] = []
    for f in forests:
        names.extend(n for n in f.feature_names if n not in names)
    n_feat = len(names)
    depth = max((f.depth for f in forests), default=0)
    n_inner, n_leaf = (1 << depth) - 1, 1 << depth
    all_trees = [(fi, t) for fi, f in enumerate(forests) for t in f.trees]
    node_feature = np.zeros((len(all_trees), max(n_inner, 1)), dtype=np.int64)
    node_threshold = np.full((len(all_trees), max(n_inner, 1)), np.inf)
    leaves = np.zeros((len(all_trees), n_leaf))
    for ti, (fi, tree) in enumerate(all_trees):
        col = [names.index(n) for n in forests[fi].feature_names]
        # (original node, complete-tree slot, level); a leaf above the bottom fills its subtree
        stack = [(0, 0, 0)]
        while stack:
            node, slot, level = stack.pop()
            if level == depth:
                leaves[ti, slot - n_inner] = tree.value[node]
                continue
            if tree.left[node] < 0:
                stack.append((node, 2 * slot + 1, level + 1))
                stack.append((node, 2 * slot + 2, level + 1))
                continue
            block, thr, bit_right = _encode(
                tree.rule[node], tree.threshold[node], tree.nan_left[node]
            )
            node_feature[ti, slot] = block * n_feat + col[tree.feature[node]]
            node_threshold[ti, slot] = thr
            one, zero = (tree.right, tree.left) if bit_right else (tree.left, tree.right)
            stack.append((zero[node], 2 * slot + 1, level + 1))
            stack.append((one[node], 2 * slot + 2, level + 1))
    starts = np.cumsum([0] + [len(f.trees) for f in forests[:-1]]).astype(np.int64)
    return PackedForests(
        feature_names=names,
        node_feature=node_feature,
        node_threshold=node_threshold,
        leaves=leaves,
        tree_start=starts,
        base=np.array([f.base for f in forests]),
        scale=np.array([f.scale for f in forests]),
        depth=depth,
    )


def _from_xgboost(booster: Any, names: list[str]) -> _Forest:
    model = json.loads(booster.save_raw("json"))["learner"]
    objective = model["objective"]["name"]
    if objective not in ("binary:logistic", "reg:squarederror"):
        raise UnsupportedModel(f"XGBoost objective {objective}")
    gb = model["gradient_booster"]
    if gb.get("name", "gbtree") != "gbtree" or "model" not in gb:
        raise UnsupportedModel("only gbtree boosters are supported")
    base_p = float(np.float32(model["learner_model_param"]["base_score"].strip("[]")))
    trees = []
    for t in gb["model"]["trees"]:
        if t["categories_nodes"]:
            raise UnsupportedModel("categorical splits")
        left, right = t["left_children"], t["right_children"]
        trees.append(
            _Tree(
                feature=t["split_indices"],
                rule=["lt32"] * len(left),
                threshold=t["split_conditions"],
                nan_left=[bool(d) for d in t["default_left"]],
                left=left,
                right=right,
                value=[float(np.float32(v)) for v in t["split_conditions"]],
            )
        )
    # binary:logistic stores base_score as a probability; a custom objective (focal loss) trains
    # on the default squared error, whose base_score is already a margin
    base = math.log(base_p / (1.0 - base_p)) if objective == "binary:logistic" else base_p
    return _Forest(trees=trees, feature_names=names, base=base, scale=1.0)


def _lgb_walk(node: dict[str, Any], tree: _Tree) -> int:
    i = len(tree.left)
    for lst in (tree.feature, tree.threshold, tree.left, tree.right, tree.value):
        lst.append(0)
    tree.rule.append("le64")
    tree.nan_left.append(False)
    if "leaf_value" in node:
        tree.left[i] = tree.right[i] = -1
        tree.value[i] = float(node["leaf_value"])
        return i
    if node["decision_type"] != "<=":
        raise UnsupportedModel("LightGBM categorical split")
    missing = node["missing_type"]
    thr = float(node["threshold"])
    if missing == "None":
        nan_left = thr >= 0.0
    elif missing == "NaN":
        nan_left = bool(node["default_left"])
    else:
        raise UnsupportedModel(f"LightGBM missing_type {missing}")
    tree.feature[i], tree.threshold[i], tree.nan_left[i] = int(node["split_feature"]), thr, nan_left
    tree.left[i] = _lgb_walk(node["left_child"], tree)
    tree.right[i] = _lgb_walk(node["right_child"], tree)
    return i


def _from_lightgbm(booster: Any, names: list[str]) -> _Forest:
    dump = booster.dump_model()
    objective = str(dump.get("objective", "custom")).split()
    if (
        objective[0] not in ("binary", "custom")
        or dump.get("average_output")
        or dump["num_class"] != 1
    ):
        raise UnsupportedModel(f"LightGBM objective {dump['objective']}")
    scale = 1.0
    for part in objective[1:]:
        if part.startswith("sigmoid:"):
            scale = float(part.split(":", 1)[1])
    trees = []
    for info in dump["tree_info"]:
        tree = _Tree([], [], [], [], [], [], [])
        _lgb_walk(info["tree_structure"], tree)
        trees.append(tree)
    return _Forest(trees=trees, feature_names=names, base=0.0, scale=scale)


def _from_catboost(model: Any, names: list[str]) -> _Forest:
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "model.json")
        model.save_model(path, format="json")
        with open(path, encoding="utf-8") as fh:
            dump = json.load(fh)
    if "oblivious_trees" not in dump or dump["features_info"].get("categorical_features"):
        raise UnsupportedModel("CatBoost model is not plain oblivious float trees")
    nan_left = {
        f["flat_feature_index"]: f.get("nan_value_treatment", "AsIs") != "AsTrue"
        for f in dump["features_info"]["float_features"]
    }
    trees = []
    for ot in dump["oblivious_trees"]:
        splits = ot["splits"]
        depth = len(splits)
        if any(s["split_type"] != "FloatFeature" for s in splits):
            raise UnsupportedModel("CatBoost non-float split")
        tree = _Tree([], [], [], [], [], [], [])
        # level-ordered complete tree; CatBoost's leaf index has split d as bit d
        n_inner = (1 << depth) - 1
        for slot in range(n_inner + (1 << depth)):
            level = (slot + 1).bit_length() - 1
            if slot < n_inner:
                s = splits[level]
                tree.feature.append(int(s["float_feature_index"]))
                tree.rule.append("gt32")
                tree.threshold.append(float(s["border"]))
                tree.nan_left.append(nan_left.get(int(s["float_feature_index"]), True))
                tree.left.append(2 * slot + 1)
                tree.right.append(2 * slot + 2)
                tree.value.append(0.0)
            else:
                bits = slot - n_inner  # decisions from the root, most significant first
                leaf = sum(((bits >> (depth - 1 - d)) & 1) << d for d in range(depth))
                for lst in (tree.feature, tree.threshold):
                    lst.append(0)
                tree.rule.append("")
                tree.nan_left.append(True)
                tree.left.append(-1)
                tree.right.append(-1)
                tree.value.append(float(ot["leaf_values"][leaf]))
        trees.append(tree)
    scale, bias = dump["scale_and_bias"]
    bias = float(bias[0]) if isinstance(bias, list) else float(bias)
    return _Forest(trees=trees, feature_names=names, base=bias / scale, scale=float(scale))


MAX_DEPTH = 12
"""Deeper trees are left to the native predictor (the padded arrays grow as ``2 ** depth``)."""


def compile_forests(native: Any, names: list[str]) -> _Forest:
    """Read an XGBoost, LightGBM or CatBoost model into explicit form."""
    module = type(native).__module__.split(".")[0]
    readers = {"xgboost": _from_xgboost, "lightgbm": _from_lightgbm, "catboost": _from_catboost}
    if module not in readers:
        raise UnsupportedModel(f"no tree reader for {type(native).__name__}")
    forest = readers[module](native, names)
    if forest.depth > MAX_DEPTH:
        raise UnsupportedModel(f"trees of depth {forest.depth} exceed {MAX_DEPTH}")
    return forest


def probe_rows(forests: list[_Forest], names: list[str], n: int = 256, seed: int = 0) -> np.ndarray:
    """Rows that sit on and next to every split threshold, with some NaN, to check a packing.

    Columns follow ``names``; each value is a threshold of a split on that column, or its nearest
    float32 or float64 neighbour, or 0, or NaN, so every rounding and tie rule is exercised.
    """
    rng = np.random.default_rng(seed)
    pools: list[set[float]] = [{0.0, -1.0, 1.0} for _ in names]
    inf32 = np.float32(np.inf)
    for forest in forests:
        col = [names.index(f) for f in forest.feature_names]
        for tree in forest.trees:
            for i, left in enumerate(tree.left):
                if left < 0:
                    continue
                v = float(tree.threshold[i])
                if not -3e38 < v < 3e38:  # beyond float32: "everything goes one way"
                    continue
                v32 = np.float32(v)
                pools[col[tree.feature[i]]].update(
                    (
                        v,
                        float(v32),
                        float(np.nextafter(v32, inf32)),
                        float(np.nextafter(v32, -inf32)),
                        math.nextafter(v, math.inf),
                        math.nextafter(v, -math.inf),
                    )
                )
    x = np.empty((n, len(names)))
    for j, pool in enumerate(pools):
        x[:, j] = rng.choice(np.array(sorted(v for v in pool if math.isfinite(v))), n)
    x[rng.random(x.shape) < 0.1] = np.nan
    return x
