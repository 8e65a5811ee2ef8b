import numpy as np
import pytest
from sklearn.metrics import f1_score

from dino_boc.errors import InputError
from dino_boc.eval.metrics import accuracy, macro_f1, per_class_f1


@pytest.mark.parametrize("seed", range(5))
def test_macro_f1_matches_sklearn_over_classes_in_ground_truth(seed):
    rng = np.random.default_rng(seed)
    y_true = rng.integers(0, 4, size=40)
    y_pred = rng.integers(0, 7, size=40)  # classes 4..6 never true: false positives of no scored class
    expected = f1_score(y_true, y_pred, labels=np.unique(y_true), average="macro")
    assert macro_f1(y_true, y_pred) == pytest.approx(expected, abs=1e-12)


def test_macro_f1_string_labels_and_unpredicted_class():
    y_true = np.array(["golgi", "golgi", "mito", "mito", "nucleoli"])
    y_pred = np.array(["golgi", "mito", "mito", "mito", "cytosol"])
    # golgi: tp1 fp0 fn1 -> 2/3; mito: tp2 fp1 fn0 -> 4/5; nucleoli never predicted -> 0
    assert macro_f1(y_true, y_pred) == pytest.approx((2 / 3 + 4 / 5 + 0) / 3)
    assert per_class_f1(y_true, y_pred) == pytest.approx({"golgi": 2 / 3, "mito": 0.8, "nucleoli": 0.0})
    expected = f1_score(y_true, y_pred, labels=np.unique(y_true), average="macro")
    assert macro_f1(y_true, y_pred) == pytest.approx(expected)


def test_explicit_labels_follow_sklearn():
    y_true, y_pred = [0, 1, 1, 2], [0, 1, 2, 2]
    labels = [0, 1, 2, 3]  # 3 neither true nor predicted: scores 0, as sklearn
    expected = f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0)
    assert macro_f1(y_true, y_pred, labels=labels) == pytest.approx(expected)


def test_accuracy():
    assert accuracy([1, 2, 3, 4], [1, 2, 0, 0]) == 0.5


def test_bad_inputs_raise():
    with pytest.raises(InputError, match="y_pred has 2"):
        macro_f1([1, 2, 3], [1, 2])
    with pytest.raises(InputError, match="empty"):
        accuracy([], [])
