"""Unlabeled English text for calibration, distillation and evaluation of pretrained language models.

The corpus is the King James Bible (1611; public domain), as Debian's ``bible-kjv`` package ships it:
``bible-kjv-text`` holds the text (compressed in its own format) and ``bible-kjv`` the ``bible``
program that prints it, 31,102 verses, in 0.1 s. ``make data`` installs it when run as root
(``sudo apt-get install bible-kjv`` otherwise). A file with the program's output, or any text file with
one passage per line, can be given instead (``path=``, or ``$DEEPZIP_KJV``).

Splits are deterministic and disjoint by chapter: every tenth chapter (118 of the 1189) is
evaluation text, the others calibration / distillation text, so no evaluation verse, nor its chapter,
is ever seen while compressing.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from ..errors import DataError, DataNotFoundError

PROGRAM = "bible"
WHOLE_BIBLE = "Gen1:1-Rev22:21"
HOW_TO_GET = ("install Debian's bible-kjv ('sudo apt-get install bible-kjv', or 'make data' as root), or give "
              "a text file with one passage per line (path=... or $DEEPZIP_KJV)")
_CHAPTER = re.compile(r"^(?P<book>\S.*?) (?P<chapter>\d+)$")
_VERSE = re.compile(r"^\s+(?P<verse>\d+) (?P<text>.*)$")


@dataclass(frozen=True)
class Passage:
    text: str
    chapter: int  # running chapter number (0-based) in the file: the unit of the split
    where: str  # 'Genesis 1:1', or 'line 12' for a plain text file


def _program_output() -> str | None:
    program = shutil.which(PROGRAM)
    if program is None:
        return None
    try:
        result = subprocess.run([program, "-l0", WHOLE_BIBLE], capture_output=True, text=True, timeout=120,
                                check=True)
    except (OSError, subprocess.SubprocessError) as exc:
        raise DataError(f"{program} is there but could not print the Bible ({exc}); {HOW_TO_GET}") from None
    return result.stdout


def parse_passages(text: str) -> list[Passage]:
    """Verses from the ``bible`` program's output ('Genesis 1' headings, '  1 In the beginning ...'); any
    other text: one passage per non-empty line, ten lines to a 'chapter'."""
    passages: list[Passage] = []
    chapter, heading = -1, None
    lines = text.splitlines()
    if any(_CHAPTER.match(line) for line in lines[:5]) and any(_VERSE.match(line) for line in lines[:10]):
        for line in lines:
            if match := _CHAPTER.match(line):
                chapter, heading = chapter + 1, line.strip()
            elif (match := _VERSE.match(line)) and heading is not None:
                passages.append(Passage(match["text"].strip(), chapter, f"{heading}:{match['verse']}"))
        return passages
    numbered = [(i, line.strip()) for i, line in enumerate(lines, 1) if line.strip()]
    return [Passage(line, k // 10, f"line {i}") for k, (i, line) in enumerate(numbered)]


def read_passages(path: str | os.PathLike | None = None) -> list[Passage]:
    """Every passage of the corpus: from ``path`` (or ``$DEEPZIP_KJV``), else from the ``bible`` program."""
    path = path or os.environ.get("DEEPZIP_KJV") or None
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise DataNotFoundError(f"text file {path} does not exist; {HOW_TO_GET}")
        text = path.read_text(encoding="utf-8", errors="replace")
    else:
        text = _program_output()
        if text is None:
            raise DataNotFoundError(f"the King James Bible is not installed (no '{PROGRAM}' program on PATH); "
                                    f"{HOW_TO_GET}")
    passages = parse_passages(text)
    if not passages:
        raise DataError(f"no passages in {path or PROGRAM + ' output'}; expected one passage per line")
    return passages


def split_passages(passages: list[Passage], part: str, every: int = 10) -> list[str]:
    """The texts of ``part``: 'evaluation' (every ``every``-th chapter) or 'calibration' (the others)."""
    if part not in ("calibration", "evaluation"):
        raise ValueError(f"part={part!r} is not allowed; choose from calibration, evaluation")
    held_out = [p.chapter % every == every - 1 for p in passages]
    return [p.text for p, held in zip(passages, held_out) if held == (part == "evaluation")]


def load_text(part: str = "calibration", path: str | os.PathLike | None = None, limit: int | None = None,
              min_words: int = 5) -> list[str]:
    """Passages of the corpus's ``part`` (calibration or evaluation), in order, those of at least
    ``min_words`` words; at most ``limit`` of them, spread evenly over the part (deterministic)."""
    texts = [t for t in split_passages(read_passages(path), part) if len(t.split()) >= min_words]
    if limit is not None and limit < len(texts):
        stride = len(texts) / limit
        texts = [texts[int(i * stride)] for i in range(limit)]
    return texts
