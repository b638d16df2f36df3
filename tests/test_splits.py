"""Group-level splits: whole lectures / patients go to one split, seeded, every held-out split non-empty."""
from medvid.training.data import group_splits


def test_groups_are_never_split_and_held_out_splits_exist():
    groups = [f"p{i % 10}" for i in range(100)]  # 10 patients, 10 loops each
    split_of = group_splits(groups, 0.15, 0.15, seed=3)
    assert set(split_of) == {f"p{i}" for i in range(10)}
    counts = {s: sum(v == s for v in split_of.values()) for s in ("train", "val", "test")}
    assert counts == {"train": 6, "val": 2, "test": 2}
    assert group_splits(groups, 0.15, 0.15, seed=3) == split_of
    assert group_splits(groups, 0.15, 0.15, seed=4) != split_of


def test_tiny_sets_stay_in_train():
    assert group_splits(["a", "b"], 0.2, 0.2) == {"a": "train", "b": "train"}
