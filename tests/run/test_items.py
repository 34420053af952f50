"""Item sources: folder expansion, collision-free output names, shards."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from flamefit.errors import ConfigError, InputImageError
from flamefit.run.items import Item, expand_inputs, image_items, output_names, shard


def test_same_stem_in_two_folders_gets_distinct_names():
    assert output_names([Path("a/face.png"), Path("b/face.png")]) == ["a_face", "b_face"]
    # the names do not depend on the order of the arguments
    assert output_names([Path("b/face.png"), Path("a/face.png")]) == ["b_face", "a_face"]
    assert output_names([Path("x/a/face.png"), Path("y/a/face.png")]) == ["x_a_face", "y_a_face"]


def test_names_never_collide():
    # a numbered name that already exists, case-only differences, an extension-only difference
    paths = [Path("face.png"), Path("face.jpg"), Path("face_1.png"), Path("FACE.png"), Path("d/face.png")]
    names = output_names(paths)
    assert len({n.lower() for n in names}) == len(names), names
    rng = random.Random(0)
    for _ in range(50):
        stems, exts = ["x", "x_1", "X"], [".png", ".jpg"]
        paths = [Path(rng.choice("ab")) / rng.choice("cd") / (rng.choice(stems) + rng.choice(exts)) for _ in range(8)]
        names = output_names(paths)
        assert len({n.lower() for n in names}) == len(names), (paths, names)


def test_folder_expands_to_its_images(tmp_path):
    (tmp_path / "sub").mkdir()
    for name in ("b.png", "a.JPG", "notes.txt", ".hidden.png", "sub/c.png"):
        (tmp_path / name).write_bytes(b"x")
    assert [p.name for p in expand_inputs([tmp_path])] == ["a.JPG", "b.png"]
    assert [p.name for p in expand_inputs([tmp_path], recursive=True)] == ["a.JPG", "b.png", "c.png"]
    # a file given twice (by name and through its folder) is processed once; a missing file stays (fails later)
    got = expand_inputs([tmp_path / "b.png", tmp_path, tmp_path / "missing.png"])
    assert [p.name for p in got] == ["b.png", "a.JPG", "missing.png"]
    items = image_items([tmp_path])
    assert [(i.name, Path(i.source).name) for i in items] == [("a", "a.JPG"), ("b", "b.png")]


def test_empty_folder_is_a_clear_error(tmp_path):
    with pytest.raises(InputImageError, match="no image files"):
        expand_inputs([tmp_path])


def test_shards_partition_the_items():
    items = [Item(f"i{k}", f"/x/{k}.png") for k in range(10)]
    parts = [shard(items, i, 3) for i in range(3)]
    assert sorted(i.name for p in parts for i in p) == sorted(i.name for i in items)
    assert [len(p) for p in parts] == [4, 3, 3]
    with pytest.raises(ConfigError):
        shard(items, 3, 3)


def test_item_round_trip():
    item = Item("v_000012", "/videos/v.mp4", {"frame": 12})
    assert Item.from_dict(item.to_dict()) == item and Item.from_dict(item.to_dict()).meta == {"frame": 12}
