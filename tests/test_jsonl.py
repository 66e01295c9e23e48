"""rolekit.jsonl.read_records: a user's JSONL file, errors naming the file and the line."""

import pytest

from rolekit.jsonl import read_records


def name(record):
    if not record["name"]:
        raise ValueError("empty name")
    return record["name"]


def test_records_skip_blank_lines_and_errors_name_the_line(tmp_path):
    path = tmp_path / "people.jsonl"
    path.write_text('{"name": "Ada"}\n\n  \n{"name": "Lin"}\n')
    assert read_records(path, "person", name, '{"name": str}') == ("Ada", "Lin")
    for second, why in (('{"name": ', "JSONDecodeError"), ('{"nom": "x"}', "KeyError"),
                        ('{"name": ""}', "ValueError: empty name"), ("[1]", "TypeError")):
        path.write_text('{"name": "Ada"}\n' + second + "\n")
        with pytest.raises(ValueError, match=rf'people.jsonl:2: expected {{"name": str}} \({why}'):
            read_records(path, "person", name, '{"name": str}')


def test_a_missing_or_empty_file_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="persons file .*none.jsonl does not exist"):
        read_records(tmp_path / "none.jsonl", "person", name, "{}")
    (tmp_path / "empty.jsonl").write_text("\n\n")
    with pytest.raises(ValueError, match="holds no person"):
        read_records(tmp_path / "empty.jsonl", "person", name, "{}")
