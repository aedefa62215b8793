import shutil

import pytest

from deepzip.data import load_text, read_passages, split_passages
from deepzip.data.text import parse_passages
from deepzip.errors import DataNotFoundError

BIBLE_OUTPUT = """
Genesis 1

  1 In the beginning God created the heaven and the earth.
  2 And the earth was without form, and void.

Genesis 2

  1 Thus the heavens and the earth were finished, and all the host of them.
"""


def test_the_bible_programs_output_is_parsed_into_verses_by_chapter():
    passages = parse_passages(BIBLE_OUTPUT)
    assert [p.where for p in passages] == ["Genesis 1:1", "Genesis 1:2", "Genesis 2:1"]
    assert [p.chapter for p in passages] == [0, 0, 1]
    assert passages[1].text == "And the earth was without form, and void."
    assert split_passages(passages, "evaluation", every=2) == [passages[2].text]
    assert split_passages(passages, "calibration", every=2) == [p.text for p in passages[:2]]


def test_a_plain_text_file_is_one_passage_per_line_and_the_parts_are_disjoint(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text("\n".join(f"line number {i} has some words" for i in range(100)) + "\n\n")
    calibration, evaluation = load_text("calibration", path), load_text("evaluation", path)
    assert len(calibration) == 90 and len(evaluation) == 10 and not set(calibration) & set(evaluation)
    assert evaluation[0] == "line number 90 has some words"
    assert load_text("calibration", path, limit=3) == ["line number 0 has some words", "line number 30 has some words",
                                                      "line number 60 has some words"]
    with pytest.raises(ValueError, match="choose from calibration, evaluation"):
        load_text("train", path)


def test_missing_corpus_says_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.delenv("DEEPZIP_KJV", raising=False)
    with pytest.raises(DataNotFoundError, match="apt-get install bible-kjv"):
        read_passages(tmp_path / "nothing.txt")
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(DataNotFoundError, match="no 'bible' program on PATH.*apt-get install bible-kjv"):
        read_passages()


@pytest.mark.skipif(shutil.which("bible") is None, reason="Debian's bible-kjv is not installed (make data as root)")
def test_the_installed_king_james_bible():
    passages = read_passages()
    assert len(passages) == 31102 and passages[0].where == "Genesis 1:1" and passages[-1].where == "Revelation 22:21"
    assert len(split_passages(passages, "evaluation")) == 3057
