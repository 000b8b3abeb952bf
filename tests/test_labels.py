from __future__ import annotations

import numpy as np
import pytest
from omegaconf import OmegaConf

from iqs.core.config import conf_dir
from iqs.core.scale import assign_labels
from iqs.data.mixture import ConfigError, parse_thresholds
from iqs.metrics.label_rule import pair_name

THRESHOLD_FILES = sorted((conf_dir() / "thresholds").glob("*.yaml"))


def test_default_pair_boundaries() -> None:
    t1, t2 = parse_thresholds(OmegaConf.load(conf_dir() / "thresholds" / "t5_6.yaml"))
    assert (t1, t2) == (5.0, 6.0)
    scores = np.array([1.0, 4.99, 5.0, 5.0001, 5.5, 6.0, 6.01, 10.0])
    assert assign_labels(scores, t1, t2).tolist() == [0, 0, 0, 1, 1, 1, 2, 2]


@pytest.mark.parametrize("path", THRESHOLD_FILES, ids=lambda p: p.stem)
def test_every_threshold_file_labels_every_score_once(path) -> None:
    cfg = OmegaConf.load(path)
    t1, t2 = parse_thresholds(cfg, str(path))
    # the option is `t` + the pair's name, a plain string for Hydra (`thresholds=5_6` would be the int 56)
    assert path.stem == "t" + cfg.name == "t" + pair_name(t1, t2), "a thresholds file is named after its pair"
    rng = np.random.default_rng(0)
    grid = np.concatenate([np.linspace(1, 10, 90_001), rng.uniform(1, 10, 10_000), [t1, t2]])
    labels = assign_labels(grid, t1, t2)
    # an independent reference: searchsorted with side="left" puts a score equal to an edge below it
    expected = np.searchsorted(np.array([t1, t2]), grid, side="left")
    np.testing.assert_array_equal(labels, expected)
    one_hot = np.stack([grid <= t1, (grid > t1) & (grid <= t2), grid > t2])
    assert (one_hot.sum(axis=0) == 1).all()
    np.testing.assert_array_equal(one_hot.argmax(axis=0), labels)


def test_ava_scores_between_five_and_six_are_normal() -> None:
    # AVA means are vote averages such as 5.4504; the old scripts' `<5` / `>6` tests left them unlabelled
    scores = np.random.default_rng(1).uniform(5.0, 6.0, 1000)
    scores = scores[(scores > 5.0) & (scores <= 6.0)]
    assert (assign_labels(scores, 5.0, 6.0) == 1).all()


@pytest.mark.parametrize(
    ("cfg", "message"),
    [
        ({"t1": 6.0, "t2": 5.0}, "t1 < t2"),
        ({"t1": 5.0, "t2": 5.0}, "t1 < t2"),
        ({"t1": 0.5, "t2": 5.0}, "common scale"),
        ({"t1": 5.0}, "missing key 't2'"),
        ({"t1": 5.0, "t2": 6.0, "t3": 7.0}, "unknown key 't3'"),
        ({"t_1": 5.0, "t2": 6.0}, "Did you mean 't1'"),
        ({"t1": "five", "t2": 6.0}, "must be numbers"),
    ],
)
def test_bad_thresholds_are_clear_errors(cfg, message) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_thresholds(cfg, "conf/thresholds/x.yaml")
