"""Replay and training reports: the JSON figures equal what models/ computes directly."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import orjson
import pytest

from alphapulse._replay import replay
from alphapulse._rows import read_rows
from alphapulse.report import write_replay_report, write_training_report
from models.blend import blend
from models.keyed import KeyedOnline
from models.scoring import BatchScorer
from models.synthetic import TradeGenerator
from models.trainer import Trainer, TrainingConfig, TrainingData, evaluate, train


def _write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_bytes(b"\n".join(orjson.dumps(r) for r in rows) + b"\n")
    return path


def _trade_dicts(gen: TradeGenerator, n: int) -> list[dict]:
    return [
        {
            "signal_id": r.signal_id,
            "outcome_id": r.outcome_id,
            "symbol": r.symbol,
            "ts": r.ts,
            "features": r.features,
            "label": r.label,
            "realized_rr": r.realized_rr,
            "regime": r.regime,
        }
        for r in gen.rows(n)
    ]


def _metric_equal(got: dict, want: dict) -> None:
    for k, v in want.items():
        if v != v:  # NaN is written as null
            assert got[k] is None, k
        else:
            assert got[k] == pytest.approx(v, rel=1e-12, abs=1e-15), k


def test_replay_of_10000_events_equals_the_models_computed_directly(tmp_path: Path) -> None:
    gen = TradeGenerator(n_features=8, n_informative=4, drift_points=(5000,), seed=4)
    rows = _trade_dicts(gen, 10_000)
    shuffled = rows[:]
    random.Random(0).shuffle(shuffled)  # the replay puts them back in time order
    src = _write_jsonl(tmp_path / "history.jsonl", shuffled)

    keyed = KeyedOnline()
    ys, ps, rrs, drifts = [], [], [], []
    for i, r in enumerate(rows):
        p, _ = keyed.predict(r["symbol"], r["features"])
        res = keyed.learn(
            r["outcome_id"], r["symbol"], r["features"], bool(r["label"]), r["realized_rr"]
        )
        ys.append(r["label"])
        ps.append(p)
        rrs.append(r["realized_rr"])
        if res.drift:
            drifts.append(i)
    want = evaluate(np.array(ys), np.array(ps), np.array(rrs))

    result = replay(read_rows(src))
    html_path, json_path = write_replay_report(result, tmp_path / "out" / "replay.html", window=500)
    figures = json.loads(json_path.read_text())
    for name in ("online", "blend"):  # no batch model: the blend is the online model
        _metric_equal(figures["metrics"][name], want)
        assert figures["metrics"][name]["n"] == 10_000
    assert figures["drift_points"] == drifts
    assert figures["regime_changes"] == [5000]
    assert drifts and drifts[0] > 5000, "the online model should notice the regime change"
    assert figures["summary"]["outcomes learned"] == 10_000
    assert set(figures["feature_importance"]["online"]) == {f"f{i}" for i in range(8)}
    auc = [v for v in figures["rolling_auc"]["series"]["blend"] if v is not None]
    assert len(auc) > 100 and min(auc) < 0.75 < max(auc)  # the dip after the change shows
    cal = figures["calibration"]["blend"]
    assert sum(cal["count"]) == 10_000
    page = html_path.read_text()
    assert page.count("data:image/png;base64,") == 4
    assert "http://" not in page and "https://" not in page
    assert json_path.name in page


def test_replay_with_a_batch_model_scores_like_the_predictor(tmp_path: Path) -> None:
    gen = TradeGenerator(n_features=5, n_informative=3, seed=2)
    frame = gen.frame(900)
    data = TrainingData.from_frame(frame.iloc[:600], exclude=["regime"])
    model = train(TrainingConfig(model_type="lightgbm", n_estimators=20), data).model
    rows = _trade_dicts(gen, 900)[600:]
    for r in rows:
        r["features"]["f4"] = None  # a missing value: the batch model may still answer
    scorer = BatchScorer({"monthly_full": model})
    keyed, ys, scores = KeyedOnline(), [], []
    for r in rows:
        comps = scorer.score_one(r["features"]).components
        online, _ = keyed.predict(r["symbol"], r["features"])
        scores.append(blend({**comps, "online": online}).score)
        keyed.learn(r["outcome_id"], r["symbol"], r["features"], bool(r["label"]), r["realized_rr"])
        ys.append(r["label"])
    want = evaluate(np.array(ys), np.array(scores), np.array([r["realized_rr"] for r in rows]))

    result = replay(read_rows(_write_jsonl(tmp_path / "h.jsonl", rows)), {"monthly_full": model})
    _, json_path = write_replay_report(result, tmp_path / "r.html", window=100)
    figures = json.loads(json_path.read_text())
    _metric_equal(figures["metrics"]["blend"], want)
    assert set(figures["metrics"]) >= {"blend", "online"}
    assert "monthly_full" in figures["feature_importance"]


def test_signals_and_outcomes_as_separate_rows_are_joined(tmp_path: Path) -> None:
    lines = [
        {"signal_id": "a", "symbol": "X", "features": {"f": 1.0}, "ts": 1},
        {"signal_id": "b", "symbol": "X", "features": {"f": -1.0}, "ts": 2},
        {"outcome_id": "oa", "signal_id": "a", "symbol": "X", "label": True, "ts": 3},
        {"outcome_id": "oa", "signal_id": "a", "symbol": "X", "label": True, "ts": 4},
        {"outcome_id": "oz", "signal_id": "zz", "symbol": "X", "label": False, "ts": 5},
        {"outcome_id": "ob", "signal_id": "b", "symbol": "X", "label": 0, "ts": 6},
    ]
    result = replay(read_rows(_write_jsonl(tmp_path / "e.jsonl", lines)))
    assert (result.n_signals, result.n_outcomes, result.unjoinable) == (2, 2, 2)
    assert [s.score for s in result.steps] == [0.5, 0.5]  # both predicted before any outcome


def test_csv_and_jsonl_replay_the_same(tmp_path: Path) -> None:
    gen = TradeGenerator(n_features=3, n_informative=2, seed=5)
    frame = gen.frame(300)
    frame.to_csv(tmp_path / "h.csv", index=False)
    a = replay(read_rows(tmp_path / "h.csv"))
    b = replay(read_rows(_write_jsonl(tmp_path / "h.jsonl", _trade_dicts(gen, 300))))
    assert [s.score for s in a.steps] == pytest.approx([s.score for s in b.steps], abs=1e-12)


def test_training_report(tmp_path: Path) -> None:
    gen = TradeGenerator(n_features=6, n_informative=3, seed=3)
    data = TrainingData.from_frame(gen.frame(1500), exclude=["regime"])
    result = Trainer(TrainingConfig(model_type="xgboost", n_estimators=20)).fit(data)
    champion = train(TrainingConfig(model_type="catboost", n_estimators=10), data).model
    html_path, json_path = write_training_report(
        result, tmp_path / "train.html", compare={"champion v1": champion}
    )
    figures = json.loads(json_path.read_text())
    for key in ("roc_auc", "log_loss", "brier"):
        assert figures["metrics"]["model"][key] == pytest.approx(result.metrics[key], rel=1e-9)
    assert set(figures["metrics"]) == {"model", "champion v1"}
    importance = figures["feature_importance"]["model"]
    assert set(importance) == set(data.feature_names)
    assert sum(importance.values()) == pytest.approx(1.0)
    assert max(importance, key=importance.get) in {"f0", "f1", "f2"}  # the informative ones
    assert figures["summary"]["holdout rows"] == result.n_valid
    assert html_path.read_text().count("data:image/png;base64,") == 4
