"""Reading a local search corpus: JSONL records or a folder of text files, and change detection.

Owns the corpus formats (JSONL {id?, title?, text|contents, url?}, including
the Search-R1 `"Title"\ntext` layout; a folder of .txt/.md files split into
passages of about PASSAGE_WORDS words) and the two change detectors the
index uses (a cheap size/mtime signature, an exact content hash).
"""

import hashlib
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

FOLDER_SUFFIXES = (".txt", ".md", ".markdown")
TEXT_FIELDS = ("text", "contents", "content")
PASSAGE_WORDS = 200
_QUOTED_TITLE = re.compile(r'^"(.+)"$')


class CorpusError(Exception):
    """The corpus is missing, unreadable, empty or malformed (the message says which)."""


@dataclass
class CorpusDocument:
    doc_id: str
    title: str
    text: str
    url: str | None = None


def _split_quoted_title(contents: str) -> tuple[str, str]:
    """Search-R1/wiki-18 style `"Title"\\ntext` contents -> (title, text)."""
    first, _, rest = contents.partition("\n")
    match = _QUOTED_TITLE.match(first.strip())
    return (match.group(1), rest.strip()) if match and rest.strip() else ("", contents)


def _record_to_document(record: object, where: str) -> CorpusDocument:
    if not isinstance(record, dict):
        raise CorpusError(f"{where}: expected a JSON object, got {type(record).__name__}")
    text_field = next((name for name in TEXT_FIELDS if isinstance(record.get(name), str)), None)
    if text_field is None:
        raise CorpusError(f"{where}: no text field (one of {', '.join(TEXT_FIELDS)})")
    title, text = str(record.get("title") or ""), record[text_field]
    if not title and text_field == "contents":
        title, text = _split_quoted_title(text)
    doc_id = record.get("id", record.get("_id"))
    url = record.get("url")
    return CorpusDocument(str(doc_id) if doc_id is not None else where, title, text.strip(),
                          str(url) if url else None)


def _read_jsonl(source: Path) -> Iterator[CorpusDocument]:
    with source.open(encoding="utf-8") as handle:
        for line_number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise CorpusError(f"{source.name} line {line_number}: not valid JSON ({exc.msg})") from None
            yield _record_to_document(record, f"{source.name}:{line_number}")


def _folder_files(folder: Path) -> list[Path]:
    files = []
    for path in folder.rglob("*"):
        relative = path.relative_to(folder)
        if any(part.startswith(".") for part in relative.parts):
            continue
        if path.suffix.lower() in FOLDER_SUFFIXES and path.is_file() and not path.is_symlink():
            files.append(path)
    return sorted(files)


def _file_passages(path: Path, folder: Path) -> Iterator[CorpusDocument]:
    """A text file -> passages of about PASSAGE_WORDS words, split on blank lines."""
    content = path.read_text(encoding="utf-8", errors="replace")
    heading = next((line.lstrip("#").strip() for line in content.splitlines() if line.startswith("# ")), "")
    title = heading or path.stem.replace("_", " ").replace("-", " ")
    relative = path.relative_to(folder).as_posix()
    passage: list[str] = []
    words = 0
    number = 0
    for paragraph in re.split(r"\n\s*\n", content):
        paragraph = " ".join(paragraph.split())
        if paragraph.startswith("#"):
            paragraph = paragraph.lstrip("#").strip()
            if paragraph == heading:  # already the title
                continue
        if not paragraph:
            continue
        passage.append(paragraph)
        words += len(paragraph.split())
        if words >= PASSAGE_WORDS:
            number += 1
            yield CorpusDocument(f"{relative}#{number}", title, "\n".join(passage))
            passage, words = [], 0
    if passage:
        number += 1
        yield CorpusDocument(f"{relative}#{number}", title, "\n".join(passage))


def read_documents(source: Path) -> Iterator[CorpusDocument]:
    """Every document of a JSONL file or a folder of .txt/.md files."""
    if source.is_dir():
        for path in _folder_files(source):
            yield from _file_passages(path, source)
    else:
        yield from _read_jsonl(source)


def _hash_file(path: Path, digest) -> None:
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)


def quick_signature(source: Path) -> str:
    """Cheap change detector: sizes and mtimes of the source file(s)."""
    if source.is_dir():
        listing = hashlib.sha256()
        for path in _folder_files(source):
            stat = path.stat()
            listing.update(f"{path.relative_to(source)}\t{stat.st_size}\t{stat.st_mtime_ns}\n".encode())
        return "dir:" + listing.hexdigest()
    stat = source.stat()
    return f"file:{stat.st_size}:{stat.st_mtime_ns}"


def content_hash(source: Path) -> str:
    """Exact change detector: a hash over the source's bytes (and file names for a folder)."""
    digest = hashlib.sha256()
    if source.is_dir():
        for path in _folder_files(source):
            digest.update(path.relative_to(source).as_posix().encode() + b"\0")
            _hash_file(path, digest)
    else:
        _hash_file(source, digest)
    return digest.hexdigest()
