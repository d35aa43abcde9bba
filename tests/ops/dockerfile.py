"""A small Dockerfile reader: enough to check what the tests in this folder check.

Joins continuation lines, drops comments, splits instructions and stages,
and resolves ``ARG`` defaults used in ``FROM``.
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Instruction:
    keyword: str
    arguments: str

    def exec_form(self) -> list[str] | None:
        """The JSON array of an exec-form instruction, else None (shell form)."""
        text = self.arguments.strip()
        if not text.startswith("["):
            return None
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            return None
        return value if isinstance(value, list) and all(isinstance(item, str) for item in value) else None


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [item for item in self.instructions if item.keyword == keyword]

    def last(self, keyword: str) -> Instruction | None:
        found = self.all(keyword)
        return found[-1] if found else None


@dataclass(frozen=True)
class Copy:
    sources: list[str]
    destination: str
    from_stage: str | None


def instructions(text: str) -> list[Instruction]:
    logical: list[str] = []
    current = ""
    for raw in text.splitlines():
        stripped = raw.strip()
        if stripped.startswith("#") and not current:
            continue
        if stripped.startswith("#"):  # a comment inside a continued instruction
            continue
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        current += stripped
        if current.strip():
            logical.append(current.strip())
        current = ""
    if current.strip():
        logical.append(current.strip())
    result = []
    for line in logical:
        keyword, _, arguments = line.partition(" ")
        result.append(Instruction(keyword.upper(), arguments.strip()))
    return result


def stages(text: str) -> list[Stage]:
    args: dict[str, str] = {}
    found: list[Stage] = []
    for item in instructions(text):
        if item.keyword == "ARG" and not found:
            name, _, default = item.arguments.partition("=")
            args[name.strip()] = default.strip()
        elif item.keyword == "FROM":
            words = item.arguments.split()
            words = [word for word in words if not word.startswith("--")]
            base = re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: args.get(m.group(1) or m.group(2), ""), words[0])
            stage_name = words[2] if len(words) >= 3 and words[1].upper() == "AS" else None
            found.append(Stage(base, stage_name))
        elif found:
            found[-1].instructions.append(item)
    return found


def copies(stage: Stage) -> list[Copy]:
    result = []
    for item in stage.all("COPY") + stage.all("ADD"):
        words = item.exec_form() or shlex.split(item.arguments)
        from_stage = None
        plain = []
        for word in words:
            if word.startswith("--from="):
                from_stage = word.split("=", 1)[1]
            elif not word.startswith("--"):
                plain.append(word)
        result.append(Copy(plain[:-1], plain[-1], from_stage))
    return result


def env(stage: Stage) -> dict[str, str]:
    values: dict[str, str] = {}
    for item in stage.all("ENV"):
        for word in shlex.split(item.arguments):
            name, sep, value = word.partition("=")
            if sep:
                values[name] = value
    return values


def _ignore_regex(pattern: str) -> re.Pattern[str]:
    """Docker's pattern syntax: ``**`` any number of folders, ``*`` and ``?`` within one name."""
    out = ""
    index = 0
    while index < len(pattern):
        if pattern.startswith("**/", index):
            out += "(?:.*/)?"
            index += 3
        elif pattern.startswith("**", index):
            out += ".*"
            index += 2
        elif pattern[index] == "*":
            out += "[^/]*"
            index += 1
        elif pattern[index] == "?":
            out += "[^/]"
            index += 1
        else:
            out += re.escape(pattern[index])
            index += 1
    return re.compile(out)


def dockerignore_excludes(patterns: list[str], path: str) -> bool:
    """Whether .dockerignore leaves ``path`` (or a folder above it) out of the context."""
    parts = path.strip("/").split("/")
    candidates = ["/".join(parts[: index + 1]) for index in range(len(parts))]
    excluded = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        regex = _ignore_regex((pattern[1:] if negate else pattern).strip("/"))
        if any(regex.fullmatch(candidate) for candidate in candidates):
            excluded = not negate
    return excluded


def read_dockerignore(path: Path) -> list[str]:
    if not path.exists():
        return []
    lines = [line.strip() for line in path.read_text().splitlines()]
    return [line for line in lines if line and not line.startswith("#")]
