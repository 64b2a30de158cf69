"""The Dockerfile, checked without a Docker engine.

A small parser (continuation lines, comments, parser directives, JSON and shell
forms, flags, global ARGs, stages) reads the Dockerfile; the tests check the
base image, the user, the entry point, the labels and the runtime environment,
and one integration test replays the build stage (venv + the same `pip install`
on the same .dockerignore-filtered context) and runs the installed console script.
"""

from __future__ import annotations

import json
import os
import posixpath
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCKERFILE = REPO / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"
CHART_VALUES = REPO / "charts" / "api-metrics-exporter" / "values.yaml"

IMAGE_CONFIG = "/etc/api-metrics-exporter/exporter.toml"
STATE_DIR = "/var/lib/api-metrics-exporter"
VENV = "/opt/venv"
OCI_LABELS = (
    "org.opencontainers.image.title",
    "org.opencontainers.image.description",
    "org.opencontainers.image.version",
    "org.opencontainers.image.source",
    "org.opencontainers.image.licenses",
)


def package_version() -> str:
    text = (REPO / "exporter" / "__init__.py").read_text(encoding="utf-8")
    match = re.search(r"""^__version__\s*=\s*["']([^"']+)["']""", text, re.M)
    assert match, "exporter/__init__.py has no __version__ = '...'"
    return match.group(1)


# --- a small Dockerfile parser ------------------------------------------------------------


@dataclass
class Instruction:
    cmd: str  # upper-case keyword
    raw: str  # everything after the keyword, continuations joined
    flags: dict[str, str]  # leading --name=value flags
    args: str  # raw minus the flags
    exec_form: list[str] | None  # JSON (exec) form, when it is one
    line: int


@dataclass
class Stage:
    index: int
    base: str  # with ARGs substituted
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, cmd: str) -> list[Instruction]:
        return [i for i in self.instructions if i.cmd == cmd]

    def last(self, cmd: str) -> Instruction | None:
        found = self.all(cmd)
        return found[-1] if found else None


@dataclass
class Dockerfile:
    global_args: dict[str, str]
    stages: list[Stage]

    def stage(self, ref: str) -> Stage:
        for stage in self.stages:
            if stage.name == ref or str(stage.index) == ref:
                return stage
        raise KeyError(ref)

    @property
    def final(self) -> Stage:
        return self.stages[-1]


def substitute(text: str, variables: dict[str, str]) -> str:
    """${VAR}, ${VAR:-default}, $VAR as Docker expands them (unknown: empty)."""

    def repl(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(3)
        default = m.group(2)
        value = variables.get(name)
        if not value and default is not None:
            return default
        return value or ""

    return re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}|\$([A-Za-z_][A-Za-z0-9_]*)", repl, text)


def split_flags(raw: str) -> tuple[dict[str, str], str]:
    flags: dict[str, str] = {}
    rest = raw.lstrip()
    while True:
        m = re.match(r"--([a-z-]+)(?:=(\S*))?\s+", rest)
        if not m:
            return flags, rest
        flags[m.group(1)] = m.group(2) or ""
        rest = rest[m.end():]


def parse_key_values(args: str) -> dict[str, str]:
    """LABEL/ENV `k=v k2="v 2"` (and legacy `ENV key value`)."""
    tokens = shlex.split(args, posix=True)
    if tokens and "=" not in tokens[0]:
        return {tokens[0]: " ".join(tokens[1:])}
    out = {}
    for token in tokens:
        key, sep, value = token.partition("=")
        assert sep, f"expected key=value, got {token!r}"
        out[key] = value
    return out


def parse_dockerfile(text: str) -> Dockerfile:
    lines = text.splitlines()
    escape = "\\"
    # Parser directives: only at the very top, before any other line.
    for line in lines:
        m = re.match(r"^#\s*([a-zA-Z]+)\s*=\s*(\S+)\s*$", line)
        if not m:
            break
        if m.group(1).lower() == "escape":
            escape = m.group(2)

    logical: list[tuple[int, str]] = []
    buffer, start = "", 0
    for number, line in enumerate(lines, 1):
        stripped = line.strip()
        if not buffer and (not stripped or stripped.startswith("#")):
            continue
        if buffer and (not stripped or stripped.startswith("#")):
            continue  # comments and blank lines inside a continuation are dropped
        if not buffer:
            start = number
        if line.rstrip().endswith(escape):
            buffer += line.rstrip()[: -len(escape)] + " "
            continue
        buffer += line
        logical.append((start, buffer.strip()))
        buffer = ""
    if buffer:
        logical.append((start, buffer.strip()))

    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for number, text_line in logical:
        keyword, _, raw = text_line.partition(" ")
        cmd = keyword.upper()
        raw = raw.strip()
        flags, args = split_flags(raw) if cmd in {"FROM", "COPY", "ADD", "RUN", "HEALTHCHECK"} else ({}, raw)
        exec_form = None
        if args.startswith("["):
            try:
                parsed = json.loads(args)
            except ValueError:
                parsed = None
            if isinstance(parsed, list) and all(isinstance(x, str) for x in parsed):
                exec_form = parsed
        instruction = Instruction(cmd, raw, flags, args, exec_form, number)
        if cmd == "ARG" and not stages:
            name, _, default = args.partition("=")
            global_args[name.strip()] = default.strip().strip('"')
            continue
        if cmd == "FROM":
            m = re.match(r"^(\S+)(?:\s+[Aa][Ss]\s+(\S+))?$", args)
            assert m, f"line {number}: cannot parse FROM {args!r}"
            stages.append(Stage(len(stages), substitute(m.group(1), global_args), m.group(2)))
            continue
        assert stages, f"line {number}: {cmd} before the first FROM"
        stages[-1].instructions.append(instruction)
    return Dockerfile(global_args, stages)


def stage_args(stage: Stage) -> dict[str, str]:
    out = {}
    for ins in stage.all("ARG"):
        name, _, default = ins.args.partition("=")
        out[name.strip()] = default.strip().strip('"')
    return out


def stage_env(stage: Stage) -> dict[str, str]:
    env: dict[str, str] = {}
    for ins in stage.all("ENV"):
        for key, value in parse_key_values(ins.args).items():
            env[key] = value
    return env


def labels(stage: Stage) -> dict[str, str]:
    variables = stage_args(stage)
    out = {}
    for ins in stage.all("LABEL"):
        for key, value in parse_key_values(ins.args).items():
            out[key] = substitute(value, variables)
    return out


@pytest.fixture(scope="module")
def dockerfile() -> Dockerfile:
    return parse_dockerfile(DOCKERFILE.read_text(encoding="utf-8"))


def build_stage(df: Dockerfile) -> Stage:
    """The stage the final stage copies the virtualenv from."""
    for ins in df.final.all("COPY"):
        if "from" in ins.flags and shlex.split(ins.args)[0] == VENV:
            return df.stage(ins.flags["from"])
    raise AssertionError(f"the final stage does not COPY --from=<stage> {VENV}")


# --- the parser itself --------------------------------------------------------------------

SAMPLE = r"""# syntax=docker/dockerfile:1
# a comment
ARG BASE=python:3.12-slim
FROM ${BASE} AS one
RUN echo a \
    # a comment inside a continuation
    && echo b
COPY --chown=1:1 --from=zero ["a b", "/dest/"]
LABEL a="x y" b=z
ENV K V W
FROM one
CMD ["x", "y"]
"""


def test_parser():
    df = parse_dockerfile(SAMPLE)
    assert df.global_args == {"BASE": "python:3.12-slim"}
    assert [(s.base, s.name) for s in df.stages] == [("python:3.12-slim", "one"), ("one", None)]
    run, copy, label, env = df.stages[0].instructions
    assert run.cmd == "RUN" and " ".join(run.args.split()) == "echo a && echo b"
    assert copy.flags == {"chown": "1:1", "from": "zero"} and copy.exec_form == ["a b", "/dest/"]
    assert labels(df.stages[0]) == {"a": "x y", "b": "z"}
    assert stage_env(df.stages[0]) == {"K": "V W"}
    assert df.final.last("CMD").exec_form == ["x", "y"]
    assert df.stages[0].instructions[0].line == 5


# --- static checks ------------------------------------------------------------------------


def test_base_images_are_the_same_official_slim_python(dockerfile):
    requires = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["requires-python"]
    minimum = tuple(int(x) for x in re.search(r">=\s*(\d+)\.(\d+)", requires).groups())
    names = {s.name for s in dockerfile.stages if s.name}
    bases = [s.base for s in dockerfile.stages if s.base not in names]
    assert len(dockerfile.stages) >= 2, "multi-stage build expected"
    assert bases and len(set(bases)) == 1, f"all stages must start from one base (the venv is copied): {bases}"
    m = re.fullmatch(
        r"(?:docker\.io/(?:library/)?)?python:(\d+)\.(\d+)(?:\.\d+)?-slim(?:-[a-z]+)?(?:@sha256:[0-9a-f]{64})?",
        bases[0],
    )
    assert m, f"{bases[0]} is not an official python:X.Y[-.Z]-slim[-distro] image pinned by tag"
    assert (int(m.group(1)), int(m.group(2))) >= minimum, f"{bases[0]} is older than requires-python {requires}"


def test_final_stage_user_is_numeric_non_root(dockerfile):
    user = dockerfile.final.last("USER")
    assert user, "the final stage sets no USER"
    m = re.fullmatch(r"(\d+)(?::(\d+))?", user.args)
    assert m, f"USER {user.args!r} must be numeric (runAsNonRoot needs a numeric UID)"
    uid, gid = int(m.group(1)), int(m.group(2) or m.group(1))
    assert uid != 0 and gid != 0
    # The chart runs the same UID/GID.
    text = CHART_VALUES.read_text()
    assert f"runAsUser: {uid}" in text and f"runAsGroup: {gid}" in text


def test_entrypoint_cmd_and_port(dockerfile):
    final = dockerfile.final
    assert final.last("ENTRYPOINT").exec_form == ["api-metrics-exporter"]
    assert final.last("CMD").exec_form == ["run", "--config", IMAGE_CONFIG]
    exposed = [p for ins in final.all("EXPOSE") for p in ins.args.split()]
    assert exposed == ["9687"] or exposed == ["9687/tcp"]
    # ...the port the shipped config listens on.
    listen = tomllib.loads((REPO / "exporter.toml").read_text())["server"]["listen"]
    assert listen.rsplit(":", 1)[1] == "9687"


def test_oci_labels(dockerfile):
    found = labels(dockerfile.final)
    for key in OCI_LABELS:
        assert found.get(key), f"label {key} missing or empty"
    assert found["org.opencontainers.image.title"] == "api-metrics-exporter"
    assert found["org.opencontainers.image.version"] == package_version()
    assert found["org.opencontainers.image.source"].startswith("https://")
    license_ = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["license"]
    assert found["org.opencontainers.image.licenses"] == (license_.get("text") if isinstance(license_, dict) else license_)


def test_runtime_stage(dockerfile):
    final = dockerfile.final
    env = stage_env(final)
    assert env.get("PYTHONDONTWRITEBYTECODE") == "1"
    assert env.get("PYTHONUNBUFFERED") == "1"
    assert env.get("PATH", "").startswith(f"{VENV}/bin:"), "the venv's bin must come first on PATH"
    volumes = []
    for ins in final.all("VOLUME"):
        volumes += ins.exec_form if ins.exec_form is not None else ins.args.split()
    assert STATE_DIR in volumes
    assert build_stage(dockerfile) is not final
    copies = final.all("COPY") + final.all("ADD")
    assert not final.all("ADD"), "use COPY (ADD can fetch URLs)"
    from_context = [shlex.split(i.args) for i in copies if "from" not in i.flags]
    # Only the default config comes from the context; the code comes in the venv.
    assert from_context == [["exporter.toml", IMAGE_CONFIG]]
    for ins in final.all("RUN"):
        assert "pip" not in ins.args and "apt-get" not in ins.args, f"line {ins.line}: no installs in the runtime stage"


def test_build_stage_installs_the_copied_tree(dockerfile):
    build = build_stage(dockerfile)
    runs = [i.args for i in build.all("RUN")]
    assert any(re.search(rf"{VENV}/bin/pip install\b.*\s\.$", r) for r in runs), runs
    assert any(shlex.split(i.args) == [".", "."] for i in build.all("COPY")), "COPY . . expected"


# --- .dockerignore and the build context --------------------------------------------------


def _glob_regex(pattern: str) -> re.Pattern[str]:
    out, i = "", 0
    while i < len(pattern):
        c = pattern[i]
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
            continue
        if pattern.startswith("**", i):
            out, i = out + ".*", i + 2
            continue
        if c == "*":
            out += "[^/]*"
        elif c == "?":
            out += "[^/]"
        elif c == "[":
            end = pattern.index("]", i)
            out += pattern[i : end + 1]
            i = end
        elif c == "\\" and i + 1 < len(pattern):
            i += 1
            out += re.escape(pattern[i])
        else:
            out += re.escape(c)
        i += 1
    return re.compile(f"^{out}$")


def dockerignore_patterns() -> list[tuple[bool, re.Pattern[str]]]:
    patterns = []
    for line in DOCKERIGNORE.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        line = posixpath.normpath(line.lstrip("!").strip().lstrip("/"))
        patterns.append((negate, _glob_regex(line)))
    return patterns


def is_ignored(path: str, patterns) -> bool:
    """Docker semantics: the last pattern matching the path or one of its parents wins."""
    parts = path.split("/")
    prefixes = ["/".join(parts[:n]) for n in range(1, len(parts) + 1)]
    ignored = False
    for negate, regex in patterns:
        if any(regex.match(p) for p in prefixes):
            ignored = not negate
    return ignored


SKIP_DIRS = {".git", ".venv", "venv", "__pycache__", ".pytest_cache", ".hypothesis", ".mypy_cache",
             ".ruff_cache", "build", "dist", "node_modules", ".tox", ".nox"}


def checkout_files() -> list[str]:
    """Files of a clean checkout: `git ls-files` when the repo has commits, else the tree."""
    has_commits = (
        shutil.which("git")
        and subprocess.run(["git", "-C", str(REPO), "rev-parse", "--verify", "-q", "HEAD"],
                           capture_output=True).returncode == 0
    )
    if has_commits:
        out = subprocess.run(["git", "-C", str(REPO), "ls-files", "-z"], capture_output=True, check=True).stdout
        return sorted(p for p in out.decode().split("\0") if p and (REPO / p).is_file())
    files = []
    for root, dirs, names in os.walk(REPO):
        dirs[:] = [d for d in dirs if d not in SKIP_DIRS and not d.endswith(".egg-info")]
        for name in names:
            files.append(Path(root, name).relative_to(REPO).as_posix())
    return sorted(files)


def build_context(dest: Path) -> list[str]:
    patterns = dockerignore_patterns()
    kept = [p for p in checkout_files() if not is_ignored(p, patterns)]
    for rel in kept:
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / rel, target)
    return kept


def test_dockerignore_matcher():
    pats = [(False, _glob_regex("*")), (True, _glob_regex("exporter")), (False, _glob_regex("**/__pycache__"))]
    assert is_ignored(".git/config", pats)
    assert not is_ignored("exporter/cli.py", pats)
    assert is_ignored("exporter/__pycache__/cli.cpython-311.pyc", pats)


def test_build_context_has_what_the_build_needs(dockerfile):
    patterns = dockerignore_patterns()
    files = checkout_files()
    kept = {p for p in files if not is_ignored(p, patterns)}
    for needed in ("pyproject.toml", "exporter/__init__.py", "exporter/cli.py", "exporter.toml"):
        assert needed in kept, f"{needed} is not in the build context"
    readme = tomllib.loads((REPO / "pyproject.toml").read_text())["project"].get("readme")
    if isinstance(readme, str):
        assert not is_ignored(readme, patterns), f".dockerignore drops pyproject's readme {readme}"
    for stage in dockerfile.stages:
        for ins in stage.all("COPY"):
            if "from" in ins.flags:
                continue
            *sources, _ = ins.exec_form or shlex.split(ins.args)
            for src in sources:
                assert src == "." or src in kept or any(k.startswith(src.rstrip("/") + "/") for k in kept), (
                    f"line {ins.line}: COPY source {src} is not in the build context"
                )
    for junk in (".git/", "tests/", "charts/", "docs/", ".venv/", "__pycache__/"):
        assert not any(k.startswith(junk) or f"/{junk}" in k for k in kept), f"{junk} leaks into the build context"


# --- replay of the build ------------------------------------------------------------------


def clean_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("APIMETRICS_")}
    env.pop("PYTHONPATH", None)
    env.pop("VIRTUAL_ENV", None)
    env.update(extra or {})
    return env


@pytest.mark.integration
def test_build_stage_replay_installs_a_working_console_script(dockerfile, tmp_path):
    context = tmp_path / "context"
    build_context(context)
    rootfs = tmp_path / "rootfs"  # container paths map to rootfs/<path>

    def host(path: str, workdir: str = "/") -> Path:
        return rootfs / posixpath.normpath(posixpath.join(workdir, path)).lstrip("/")

    def copy_in(ins: Instruction, workdir: str) -> None:
        *sources, dest = ins.exec_form or shlex.split(ins.args)
        target = host(dest, workdir)
        for src in sources:
            origin = context / src
            if origin.is_dir():
                shutil.copytree(origin, target, dirs_exist_ok=True)
            else:
                into = target / origin.name if (dest.endswith("/") or len(sources) > 1) else target
                into.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(origin, into)

    def replay(stage: Stage, env: dict[str, str]) -> None:
        workdir = "/"
        for ins in stage.instructions:
            if ins.cmd == "WORKDIR":
                workdir = posixpath.join(workdir, ins.args)
                host(workdir).mkdir(parents=True, exist_ok=True)
            elif ins.cmd == "ENV":
                env.update({k: substitute(v, env) for k, v in parse_key_values(ins.args).items()})
            elif ins.cmd == "COPY" and "from" not in ins.flags:
                copy_in(ins, workdir)
            elif ins.cmd == "RUN" and stage is not dockerfile.final:
                for command in ins.args.split("&&"):
                    argv = shlex.split(command)
                    if re.fullmatch(r"python3?(\.\d+)?", argv[0]) and argv[1:3] == ["-m", "venv"]:
                        subprocess.run([sys.executable, "-m", "venv", str(host(argv[3], workdir))], check=True)
                    elif posixpath.basename(argv[0]) == "pip" and "install" in argv:
                        argv = [str(host(a, workdir)) if a.startswith("/") else a for a in argv]
                        result = subprocess.run(argv, cwd=host(workdir), env=env, capture_output=True,
                                                text=True, timeout=900)
                        assert result.returncode == 0, f"{' '.join(argv)} failed:\n{result.stdout}\n{result.stderr}"
                    else:
                        pytest.fail(f"line {ins.line}: the replay does not know the build step {command.strip()!r}")
            elif ins.cmd in {"ARG", "LABEL", "USER", "EXPOSE", "VOLUME", "HEALTHCHECK", "ENTRYPOINT", "CMD",
                             "COPY", "RUN"}:
                pass  # metadata, or runtime-stage steps checked statically above
            else:
                pytest.fail(f"line {ins.line}: the replay does not know {ins.cmd}")

    build = build_stage(dockerfile)
    replay(build, clean_env())
    replay(dockerfile.final, clean_env())

    script = host(f"{VENV}/bin/api-metrics-exporter")
    assert script.is_file(), "pip install did not create the console script"
    version = subprocess.run([str(script), "--version"], capture_output=True, text=True, timeout=60,
                             env=clean_env(), cwd=tmp_path)
    assert version.returncode == 0, version.stderr
    assert package_version() in version.stdout.split(), version.stdout

    # The image's default command reads the config copied into the image: it must be valid.
    cmd = dockerfile.final.last("CMD").exec_form
    config = host(cmd[cmd.index("--config") + 1])
    assert config.is_file()
    check = subprocess.run([str(script), "check", "--config", str(config)], capture_output=True, text=True,
                           timeout=60, env=clean_env(), cwd=tmp_path)
    assert check.returncode == 0, check.stdout + check.stderr
