"""Every command block of README.md and docs/*.md runs as written, in order, on the demo data.

Run: ```shell, ```console (its `$ ` lines), ```bash, a plain ``` block whose lines start with
`jaxcnn` or `python`, and ```python. A block that needs a GPU, a download, several hosts or a
long time has `<!-- doc-test: skip (REASON) -->` on the line before it and is skipped by name
(pytest's -ra summary lists each with its reason); `<!-- doc-test: needs NAME -->` runs it only
where NAME imports as a module or exists as a path. `<!-- doc-test: expect FILE KEY A[, seconds
S] -->` after a block checks a figure the document states: the accuracy at dotted KEY of JSON
FILE (e.g. `runs/demo/results.json best.accuracy`) within ±0.08 of A, and the block's time
within 4 S (loose: machines and their load differ); the figures must appear in the text.

The set-up command's install prefix (`python3 -m venv ... && . .venv/bin/activate && pip install
... &&`) is not run again: this environment is installed; the rest of the line is. The test
command (after `<!-- test-command -->`) is this suite itself. Each document gets a scratch folder
that looks like a clone (the repository's files linked in) where its blocks run one after the
other, sharing the files they write; shell blocks under `bash -euo pipefail` with this
environment's `jaxcnn` first on PATH, Python blocks with this interpreter.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import pathlib
import re
import subprocess
import sys
import time

import pytest

from conftest import REPO_ROOT

DOCUMENTS = ["README.md", *sorted(str(p.relative_to(REPO_ROOT)) for p in (REPO_ROOT / "docs").glob("*.md"))]
SHELL_FENCES = {"shell", "console", "bash", "sh"}
COMMAND = re.compile(r"(jaxcnn|python3?)( |$)")  # a plain ``` block of these lines runs as shell
MARKER = re.compile(r"<!--\s*doc-test:\s*(.*?)\s*-->")
INSTALL = re.compile(r"^(python3? -m venv \S+|\. \S+/activate|source \S+/activate|pip install .*)$")
LINKED = ("README.md", "pyproject.toml", "jaxcnn", "scripts", "benchmarks", "docs", "tests", ".ci")
BLOCK_TIMEOUT_S = 600


@dataclasses.dataclass(frozen=True)
class Block:
    document: str
    line: int  # of the opening fence, 1-based
    language: str  # "shell" or "python"
    code: str
    skip: str | None = None
    needs: str | None = None
    expect: str | None = None

    @property
    def name(self) -> str:
        first = self.code.strip().splitlines()[0] if self.code.strip() else ""
        return f"{self.document}:{self.line} `{first[:60]}`"


def blocks_of(document: str) -> list[Block]:
    """The runnable blocks of `document`, each with its markers (see the module docstring)."""
    lines = (REPO_ROOT / document).read_text().splitlines()
    blocks, markers, test_command, i = [], [], False, 0
    while i < len(lines):
        line = lines[i]
        if "<!-- test-command -->" in line:
            test_command = True
        elif match := MARKER.search(line):
            if match.group(1).startswith("expect ") and blocks:
                blocks[-1] = dataclasses.replace(blocks[-1], expect=match.group(1)[len("expect "):])
            else:
                markers.append(match.group(1))
        elif line.lstrip().startswith("```"):
            indent = line[:len(line) - len(line.lstrip())]
            info, start = line.strip()[3:].split(" ")[0], i + 1
            end = next((j for j in range(start, len(lines)) if lines[j].strip() == "```"), None)
            if end is None:
                raise ValueError(f"{document}:{start}: a ``` block that is never closed")
            body = [b[len(indent):] if b.startswith(indent) else b for b in lines[start:end]]
            block = _block(document, start, info, body, markers, test_command)
            if block is not None:
                blocks.append(block)
            elif markers:
                raise ValueError(f"{document}:{start}: a doc-test marker before a block that does not run")
            markers, test_command, i = [], False, end
        elif line.strip():
            if markers:
                raise ValueError(f"{document}:{i + 1}: a doc-test marker must be right before its block")
            test_command = False
        i += 1
    return blocks


def _block(document, line, info, body, markers, test_command) -> Block | None:
    if info == "python":
        language, code = "python", "\n".join(body) + "\n"
    elif info == "console":
        language, code = "shell", "\n".join(b[2:] for b in body if b.startswith("$ ")) + "\n"
    elif info in SHELL_FENCES or (info == "" and body and COMMAND.match(body[0]) and all(
            COMMAND.match(b) or b.startswith((" ", "#")) or not b.strip() for b in body)):
        language, code = "shell", "\n".join(body) + "\n"
    else:
        return None
    skip = needs = None
    for marker in markers:
        if match := re.fullmatch(r"skip \((.+)\)", marker):
            skip = match.group(1)
        elif marker.startswith("needs "):
            needs = marker[len("needs "):]
        else:
            raise ValueError(f"{document}:{line}: unknown doc-test marker {marker!r}")
    if test_command:
        skip = "the test command: this suite itself"
    if language == "shell" and skip is None:
        code = _without_install(code, f"{document}:{line}")
    return Block(document, line, language, code, skip, needs)


def _without_install(code: str, where: str) -> str:
    """The set-up command without its venv / pip install steps (this environment is installed)."""
    commands = code.strip().split(" && ")
    kept = [c for c in commands if not INSTALL.match(c.strip())]
    if len(kept) == len(commands):
        return code
    if not kept:
        raise ValueError(f"{where}: a block that only installs must be marked `<!-- doc-test: skip (...) -->`")
    return " && ".join(kept) + "\n"


ALL_BLOCKS = [block for document in DOCUMENTS for block in blocks_of(document)]
failed_documents: set[str] = set()


@pytest.fixture(scope="session")
def workspaces(tmp_path_factory):
    """document -> its scratch folder, laid out like a clone of the repository."""
    made = {}

    def workspace(document: str) -> pathlib.Path:
        if document not in made:
            folder = tmp_path_factory.mktemp("doc-" + re.sub(r"\W", "-", document))
            for name in LINKED:
                if (REPO_ROOT / name).exists():
                    (folder / name).symlink_to(REPO_ROOT / name)
            made[document] = folder
        return made[document]

    return workspace


def _available(need: str) -> bool:
    if os.path.exists(need):
        return True
    try:
        return importlib.util.find_spec(need) is not None
    except (ImportError, ValueError):
        return False


@pytest.mark.parametrize("block", ALL_BLOCKS, ids=[f"{b.document}:{b.line}" for b in ALL_BLOCKS])
def test_block_runs_as_written(block: Block, workspaces):
    if block.skip:
        pytest.skip(f"{block.name}: {block.skip}")
    if block.needs and not _available(block.needs):
        pytest.skip(f"{block.name}: needs {block.needs}, which is not here")
    if block.document in failed_documents:
        pytest.skip(f"{block.name}: an earlier block of {block.document} failed")
    folder = workspaces(block.document)
    env = {**os.environ, "PATH": f"{pathlib.Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
           "PYTHONPATH": str(REPO_ROOT), "MPLBACKEND": "Agg", "JAX_PLATFORMS": "cpu"}
    if block.language == "python":
        command = [sys.executable, "-c", block.code]
    else:
        command = ["bash", "-euo", "pipefail", "-c", block.code]
    start = time.perf_counter()
    result = subprocess.run(command, cwd=folder, env=env, capture_output=True, text=True, timeout=BLOCK_TIMEOUT_S)
    seconds = time.perf_counter() - start
    print(f"{block.name}: {seconds:.1f} s\n{result.stdout[-3000:]}")
    if result.returncode != 0:
        failed_documents.add(block.document)
        pytest.fail(f"{block.name} exited with {result.returncode} after {seconds:.0f} s:\n"
                    f"{result.stdout[-2000:]}\n{result.stderr[-4000:]}")
    if block.language == "python":
        assert result.stdout.strip(), f"{block.name} prints nothing"
    if block.expect:
        _check_stated_figures(block, folder, seconds)


def _check_stated_figures(block: Block, folder: pathlib.Path, seconds: float) -> None:
    match = re.fullmatch(r"(\S+) (\S+) ([\d.]+)(?:, seconds (\d+))?", block.expect)
    assert match, f"{block.name}: an expect marker reads `FILE KEY A[, seconds S]`, not {block.expect!r}"
    path, key, stated, stated_seconds = match.groups()
    text = MARKER.sub("", (REPO_ROOT / block.document).read_text())
    assert stated in text, f"{block.document} must state the accuracy its expect marker checks ({stated})"
    value = json.loads((folder / path).read_text())
    for part in key.split("."):
        value = value[part]
    assert abs(value - float(stated)) <= 0.08, f"{path} {key} is {value}; {block.document} says {stated}"
    if stated_seconds:
        assert f"{stated_seconds} s" in text, f"{block.document} must state the time it checks ({stated_seconds} s)"
        assert seconds <= 4 * int(stated_seconds), f"{block.name} took {seconds:.0f} s; {block.document} says {stated_seconds} s"


def test_every_document_has_blocks_and_readme_keeps_the_ci_test_command():
    """.ci/run runs the line after `<!-- test-command -->` in README.md; the doc test skips it by name."""
    readme = (REPO_ROOT / "README.md").read_text().splitlines()
    marker = readme.index("<!-- test-command -->")
    command = next(line for line in readme[marker + 1:] if line.strip() and not line.startswith("```"))
    assert command.startswith("python3 -m venv .venv && ") and command.endswith("&& python -m pytest")
    readme_blocks = [b for b in ALL_BLOCKS if b.document == "README.md"]
    assert any(b.skip == "the test command: this suite itself" for b in readme_blocks)
    assert readme_blocks[0].code.startswith("jaxcnn train ") and readme_blocks[0].expect  # the set-up run, checked


def _anchor(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


@pytest.mark.parametrize("document", DOCUMENTS)
def test_links_point_to_files_and_headings_that_exist(document):
    path = REPO_ROOT / document
    for target in re.findall(r"\]\(([^)\s]+)\)", path.read_text()):
        if re.match(r"[a-z]+:", target):
            continue  # a web address
        file, _, anchor = target.partition("#")
        linked = (path.parent / file).resolve() if file else path
        assert linked.exists(), f"{document} links to {target}, which does not exist"
        if anchor and linked.suffix == ".md":
            headings = [_anchor(h) for h in re.findall(r"^#+ (.+)$", linked.read_text(), flags=re.M)]
            assert anchor in headings, f"{document} links to {target}: no such heading in {linked.name}"
