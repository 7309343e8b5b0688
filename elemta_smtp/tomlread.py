"""Reading elemta.toml's TOML: every problem with its file, key and line, and a key or table
written twice reported and left out so the rest of the file is still checked (TOML
parsers stop at the first repetition). Also the line of each key, for every later problem."""

from __future__ import annotations

import re
import sys
from collections.abc import Iterator
from typing import Any, NamedTuple

from elemta_smtp.errors import ElemtaError


class Problem(NamedTuple):
    """One thing wrong with a config file."""

    path: str
    key: str
    line: int | None
    message: str

    def __str__(self) -> str:
        where = f"{self.path}:{self.line}" if self.line else self.path
        key = f" [{self.key}]" if self.key else ""
        return f"{where}:{key} {self.message}"


class ConfigError(ElemtaError):
    """elemta.toml cannot be used; ``problems`` lists every reason."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


def _written(text: str) -> Iterator[tuple[str, int, bool]]:
    """Yield ("section.key" or "section", line, is_key) for every table header and
    ``key = value`` line: a line scanner, enough for the plain layout elemta.toml uses."""
    table = ""
    header = re.compile(r"^\s*\[\s*([A-Za-z0-9_.\- ]+?)\s*\]")
    key = re.compile(r"^\s*([A-Za-z0-9_\-]+)\s*=")
    for number, line in enumerate(text.splitlines(), start=1):
        if m := header.match(line):
            table = re.sub(r"\s+", "", m.group(1))
            yield table, number, False
        elif m := key.match(line):
            yield (f"{table}.{m.group(1)}" if table else m.group(1)), number, True


def line_index(text: str) -> dict[str, int]:
    """Map "section.key" (and "section") to the line it is first written on."""
    index: dict[str, int] = {}
    for name, number, _ in _written(text):
        index.setdefault(name, number)
    return index


class _Repeat(NamedTuple):
    """A key (or table header) written a second time: where, and which lines it spans."""

    name: str
    is_key: bool
    first: int
    line: int
    end: int  # last line of its value (a multi-line array), or of the table it heads


def _repeat_near(text: str, line: int | None) -> _Repeat | None:
    """The repeated key or table header the TOML parser stopped at: the entry written last
    on or before ``line`` (the parser reports where the value ends), or the first repeated
    one when the parser gave no line. None when the error there is not a repetition."""
    written = list(_written(text))
    seen: dict[str, int] = {}
    last: _Repeat | None = None
    for index, (name, number, is_key) in enumerate(written):
        if line is not None and number > line:
            break
        if name not in seen:
            seen[name] = number
            last = None
            continue
        # a key's value ends before the next key or header; a table before the next header
        stops = [n for _, n, k in written[index + 1:] if is_key or not k]
        last = _Repeat(name, is_key, seen[name], number,
                       stops[0] - 1 if stops else len(text.splitlines()))
        if line is None:
            return last
    return last


def _blank(text: str, first: int, last: int) -> str:
    """``text`` with lines ``first``..``last`` (1-based) emptied: other line numbers unchanged."""
    lines = text.split("\n")
    for i in range(first - 1, min(last, len(lines))):
        lines[i] = ""
    return "\n".join(lines)


if sys.version_info >= (3, 11):
    import tomllib

    _TOMLError: tuple[type[Exception], ...] = (tomllib.TOMLDecodeError,)

    def _toml_loads(text: str) -> dict[str, Any]:
        return tomllib.loads(text)
else:  # Python 3.10: no tomllib
    import tomlkit
    import tomlkit.exceptions

    _TOMLError = (tomlkit.exceptions.TOMLKitError,)

    def _toml_loads(text: str) -> dict[str, Any]:
        return dict(tomlkit.parse(text).unwrap())


def _error_line(exc: Exception) -> tuple[int | None, str]:
    """The line a TOML error is on, and its message without the "(at line L, column C)"."""
    line = getattr(exc, "line", None)
    message = str(exc)
    if m := re.search(r"\s*\(?at line (\d+),? col(?:umn)? (\d+)\)?", message):
        line = int(m.group(1))
        message = message[:m.start()] + f" (column {m.group(2)})" + message[m.end():]
    return (line if isinstance(line, int) else None), message.strip()


_MAX_REPEATS = 200


def read_toml(text: str, path: str) -> tuple[dict[str, Any], list[Problem]]:
    """Parse the TOML, reporting every key (or table) written twice and parsing on without
    the repetition, so the rest of the file is still checked. A syntax error ends it."""
    problems: list[Problem] = []
    for _ in range(_MAX_REPEATS):
        try:
            return _toml_loads(text), problems
        except _TOMLError as exc:
            line, message = _error_line(exc)
            repeat = _repeat_near(text, line)
            if repeat is None and re.search(r"already exists|twice|overwrite", message):
                repeat = _repeat_near(text, None)  # tomlkit's line is not the repetition's
            if repeat is None:
                problems.append(Problem(path, "", line, f"not valid TOML: {message}"))
                raise ConfigError(problems) from None
            section, _, key = repeat.name.rpartition(".")
            if repeat.is_key:
                where = f"in [{section}]" if section else "at the top of the file"
                problems.append(Problem(path, repeat.name, repeat.line,
                                        f"\"{key}\" is written twice {where} (first on line "
                                        f"{repeat.first}): delete one; this one was not checked"))
                text = _blank(text, repeat.line, repeat.end)
            else:
                problems.append(Problem(path, repeat.name, repeat.line,
                                        f"table [{repeat.name}] is written twice (first on line "
                                        f"{repeat.first}): merge the two; the keys under this one "
                                        "were not checked"))
                text = _blank(text, repeat.line, repeat.end)
    raise ConfigError(problems)
