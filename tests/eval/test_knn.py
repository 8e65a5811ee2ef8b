import numpy as np
import pytest
import torch

from dino_boc.errors import InputError
from dino_boc.eval.knn import knn, nearest_neighbors


def numpy_neighbors(ref, qry, metric):
    """Independent brute force: full distance matrix, numpy argsort (stable)."""
    if metric == "l2":
        d = ((qry[:, None, :] - ref[None, :, :]) ** 2).sum(-1)
    else:
        rn = ref / np.linalg.norm(ref, axis=1, keepdims=True)
        qn = qry / np.linalg.norm(qry, axis=1, keepdims=True)
        d = -(qn @ rn.T)
    return np.argsort(d, axis=1, kind="stable")


@pytest.mark.parametrize("metric", ["cosine", "l2"])
@pytest.mark.parametrize("chunk_size", [None, 1, 7])
def test_nearest_neighbors_exact_and_chunk_invariant(metric, chunk_size):
    rng = np.random.default_rng(0)
    ref = rng.normal(size=(50, 6)) * rng.uniform(0.1, 10, size=(50, 1))  # varying norms
    qry = rng.normal(size=(23, 6))
    got = nearest_neighbors(ref, qry, k=3, metric=metric, chunk_size=chunk_size, device="cpu")
    np.testing.assert_array_equal(got, numpy_neighbors(ref, qry, metric)[:, :3])


def test_cosine_and_l2_differ_as_defined():
    # q points along x; a is far but in the same direction, b is near but off-direction
    ref = np.array([[10.0, 0.5], [0.5, 0.6]])
    labels = np.array(["same-direction", "nearby"])
    q = np.array([[1.0, 0.0]])
    assert knn(ref, labels, q, metric="cosine")[0] == "same-direction"
    assert knn(ref, labels, q, metric="l2")[0] == "nearby"


def test_cosine_normalises_the_whole_vector():
    rng = np.random.default_rng(1)
    ref, qry = rng.normal(size=(30, 8)), rng.normal(size=(10, 8))
    labels = np.arange(30)
    scaled = ref * rng.uniform(0.01, 100, size=(30, 1))  # rescaling a row changes nothing for cosine
    np.testing.assert_array_equal(knn(ref, labels, qry), knn(scaled, labels, qry))


def test_l2_tie_goes_to_lower_index_and_majority_vote():
    ref = np.array([[1.0, 0.0], [1.0, 0.0], [5.0, 5.0]])
    assert knn(ref, np.array([7, 3, 3]), np.array([[1.0, 0.0]]), metric="l2")[0] == 7
    # k=3: votes {3: 2, 7: 1}
    assert knn(ref, np.array([7, 3, 3]), np.array([[1.0, 0.0]]), k=3, metric="l2")[0] == 3
    # k=2 tie between labels 9 and 2 -> smallest label, as argmax(bincount)
    assert knn(ref, np.array([9, 2, 2]), np.array([[1.0, 0.0]]), k=2, metric="l2")[0] == 2


def test_knn_accepts_torch_and_keeps_label_dtype():
    rng = np.random.default_rng(2)
    ref, qry = rng.normal(size=(20, 4)), rng.normal(size=(5, 4))
    labels = np.array([f"c{i % 3}" for i in range(20)])
    a = knn(torch.from_numpy(ref), labels, torch.from_numpy(qry), metric="l2")
    b = labels[numpy_neighbors(ref, qry, "l2")[:, 0]]
    np.testing.assert_array_equal(a, b)


def test_bad_inputs():
    with pytest.raises(InputError, match="same feature width"):
        knn(np.zeros((3, 4)), [0, 1, 2], np.zeros((2, 5)))
    with pytest.raises(InputError, match="NaN"):
        knn(np.full((3, 4), np.nan), [0, 1, 2], np.zeros((2, 4)))
    with pytest.raises(InputError, match="metric"):
        knn(np.ones((3, 4)), [0, 1, 2], np.ones((2, 4)), metric="manhattan")
    with pytest.raises(InputError, match="one label per reference row"):
        knn(np.ones((3, 4)), [0, 1], np.ones((2, 4)))
