"""Benchmark loaders on the real reference cases and on hand-made files in both schemas."""

import json
import shutil

import pytest

from workbench.benchmarks.loaders import (
    BenchmarkFileError,
    load_benchmark,
    load_mat_coding,
    load_mat_search,
    load_multihop,
)


def write(path, content):
    path.write_text(content if isinstance(content, str) else json.dumps(content, ensure_ascii=False),
                    encoding="utf-8")
    return path


def test_real_mat_coding_cases(shared_reference):
    folder = shared_reference / "mat-coding-cases"
    items = load_mat_coding(folder / "coding_case.json")  # images next to the JSON by default
    assert [i.id for i in items] == ["12", "22", "63", "71", "119", "124"]
    by_id = {i.id: i for i in items}
    assert by_id["71"].types == ["rotation90", "dark"] and by_id["71"].split == "hard"
    assert by_id["71"].image.name == "rotation90+dark_0_proc.png"
    # crop items show the original image; the processed crop files do not even exist
    assert by_id["119"].image.name == "crop_8_ori.png" and by_id["119"].clean_image is None
    assert all(i.image.is_file() for i in items)
    # the originals of non-crop items are not shipped, so there is no clean reference
    assert by_id["12"].clean_image is None
    assert by_id["124"].answers == ["Spaghetti\nGOEMON"]
    assert [i.position for i in items] == list(range(6))


def test_real_mat_search_cases(shared_reference):
    folder = shared_reference / "mat-search-cases"
    items = load_benchmark("mat-search", folder / "search_cases.json", images_dir=folder)
    assert [(i.id, i.answers, i.image.name, i.split) for i in items] == [
        ("demo-1", ["Yes"], "23.jpg", "hard"), ("demo-2", ["Play well"], "annotation2.jpg", "hard")]


def test_mat_coding_clean_image_and_images_dir(shared_reference, tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    source = shared_reference / "mat-coding-cases" / "dark_1_proc.png"
    shutil.copy(source, images / "dark_1_proc.png")
    shutil.copy(source, images / "dark_1_ori.png")  # stands in for the undegraded original
    data = write(tmp_path / "mat.json", [{
        "id": 5, "question": "q?", "answers": "42", "ori_image_path": "/somewhere/else/dark_1_ori.png",
        "processed_image_path": "MAT-Coding/dark_1_proc.png", "type": "dark"}])
    (item,) = load_mat_coding(data, images_dir=images)
    assert item.image == images / "dark_1_proc.png"  # nested/absolute released paths fall back to the name
    assert item.clean_image == images / "dark_1_ori.png"
    assert item.answers == ["42"] and item.types == ["dark"] and item.split == "simple"


def test_missing_image_names_the_item(shared_reference, tmp_path):
    records = json.loads((shared_reference / "mat-coding-cases" / "coding_case.json").read_text(encoding="utf-8"))
    records[3]["processed_image_path"] = "gone.png"
    data = write(tmp_path / "mat.json", records)
    with pytest.raises(BenchmarkFileError, match=r"item 3 \(id 71\): image processed_image_path='gone.png' not found"):
        load_mat_coding(data, images_dir=shared_reference / "mat-coding-cases")
    items = load_mat_coding(data, images_dir=shared_reference / "mat-coding-cases", check_images=False)
    assert items[3].image.name == "gone.png"


def test_published_search_schema_with_string_answer_and_position_splits(tmp_path):
    (tmp_path / "a.jpg").write_bytes(b"x")
    records = [{"id": i, "question": f"q{i}", "answer": "Amsterdam", "image_path": "a.jpg"} for i in range(80)]
    items = load_mat_search(write(tmp_path / "s.json", records))
    assert items[0].answers == ["Amsterdam"]
    assert items[74].split == "simple" and items[75].split == "hard"
    assert items[0].corpus is None


def test_search_items_may_name_their_own_corpus_next_to_the_file(tmp_path):
    (tmp_path / "a.jpg").write_bytes(b"x")
    (tmp_path / "corpus_3.jsonl").write_text('{"text": "doc"}\n')
    record = {"id": 0, "question": "q", "answer": "a", "image_path": "a.jpg", "corpus": "corpus_3.jsonl"}
    assert load_mat_search(write(tmp_path / "s.json", [record]))[0].corpus == tmp_path / "corpus_3.jsonl"
    with pytest.raises(BenchmarkFileError, match="corpus 'corpus_4.jsonl' not found next to s.json"):
        load_mat_search(write(tmp_path / "s.json", [{**record, "corpus": "corpus_4.jsonl"}]))


def test_multihop_json_and_jsonl(tmp_path):
    items = load_multihop(write(tmp_path / "qa.json", [
        {"question": "Who?", "answer": ["A", "B"]}, {"id": "x9", "question": "When?", "golden_answers": ["1999"]}]))
    assert [(i.id, i.answers, i.image, i.split) for i in items] == [("0", ["A", "B"], None, None),
                                                                    ("x9", ["1999"], None, None)]
    jsonl = write(tmp_path / "qa.jsonl", '{"id": 1, "question": "Q1", "answers": ["a"]}\n'
                                         '{"id": 2, "question": "Q2", "answer": "b"}\n')
    assert [i.answers for i in load_benchmark("multihop", jsonl)] == [["a"], ["b"]]


@pytest.mark.parametrize("records, message", [
    ({"a": 1}, "expected a JSON list"),
    ([], "holds no items"),
    ([{"id": 1, "question": "q"}], r"item 0 \(id 1\): missing field 'answers' or 'answer' or 'golden_answers'"),
    ([{"id": 1, "question": "", "answer": "a"}], "'question' must be a non-empty string"),
    ([{"id": 1, "question": "q", "answer": []}], "'answer' must be a string or a non-empty list"),
    ([{"id": 1, "question": "q", "answer": "a"}, {"id": 1, "question": "r", "answer": "b"}],
     r"item 1 \(id 1\): duplicate id '1' \(first seen at item 0\)"),
    ([["not", "an", "object"]], "item 0: expected an object"),
])
def test_bad_multihop_files_name_the_item(tmp_path, records, message):
    with pytest.raises(BenchmarkFileError, match=message):
        load_multihop(write(tmp_path / "qa.json", records))


def test_bad_mat_fields(tmp_path):
    (tmp_path / "p.png").write_bytes(b"x")
    base = {"id": 1, "question": "q", "answers": ["a"], "ori_image_path": "p.png", "processed_image_path": "p.png"}
    with pytest.raises(BenchmarkFileError, match="'type' must be a non-empty list"):
        load_mat_coding(write(tmp_path / "m.json", [base]))
    with pytest.raises(BenchmarkFileError, match="'split' must be one of simple, hard"):
        load_mat_coding(write(tmp_path / "m.json", [{**base, "type": ["dark"], "split": "medium"}]))
    with pytest.raises(BenchmarkFileError, match="missing field 'id'"):
        load_mat_search(write(tmp_path / "s.json", [{"question": "q", "answer": "a", "image_path": "p.png"}]))
    with pytest.raises(BenchmarkFileError, match="images folder .* does not exist"):
        load_mat_search(write(tmp_path / "s.json", [{**base, "image_path": "p.png"}]), images_dir=tmp_path / "no")


def test_non_utf8_benchmark_names_the_item(tmp_path):
    text = json.dumps([{"id": "ok", "question": "q", "answer": "a"}, {"id": "bad", "question": "QQ", "answer": "a"}])
    path = tmp_path / "qa.json"
    path.write_bytes(text.encode("utf-8").replace(b"QQ", b"\xff\xfe"))
    with pytest.raises(BenchmarkFileError, match=r"item 1 \(id 'bad'\): byte 0xff .* not valid UTF-8"):
        load_multihop(path)


def test_unknown_benchmark_name(tmp_path):
    with pytest.raises(ValueError, match="unknown benchmark 'trivia'"):
        load_benchmark("trivia", tmp_path / "x.json")
