"""The Dockerfile installs what setup.cfg declares and follows the BIDS App conventions."""

from __future__ import annotations

import configparser
import json
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = (ROOT / "Dockerfile").read_text()


def _instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    joined = re.sub(r"\\\n", " ", "\n".join(l for l in text.splitlines() if not l.lstrip().startswith("#")))
    out = []
    for line in joined.splitlines():
        if line.strip():
            word, _, rest = line.strip().partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def _setup_cfg() -> configparser.ConfigParser:
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    return cfg


def _install_requires() -> dict[str, Requirement]:
    lines = _setup_cfg()["options"]["install_requires"].strip().splitlines()
    return {Requirement(l).name.lower(): Requirement(l) for l in lines if l.strip()}


def _args(stage_text=DOCKERFILE) -> dict[str, str]:
    return {k: v for k, _, v in (rest.partition("=") for word, rest in _instructions(stage_text)
                                 if word == "ARG")}


def _pip_installs() -> list[str]:
    """Every positional argument of every ``pip install`` in RUN instructions."""
    targets = []
    for word, rest in _instructions(DOCKERFILE):
        if word != "RUN":
            continue
        for command in re.split(r";|&&", rest):
            tokens = shlex.split(command)
            if "pip" in " ".join(tokens[:1]) and tokens[1:2] == ["install"]:
                skip = False
                for token in tokens[2:]:
                    if skip:
                        skip = False
                    elif token in ("--extra-index-url", "--index-url", "-i", "-r", "-c", "--find-links"):
                        skip = True
                    elif not token.startswith("-"):
                        targets.append(token)
    return targets


def test_pip_installs_match_setup_cfg():
    required = _install_requires()
    targets = _pip_installs()
    assert "/src" in targets, "the project itself (with its setup.cfg dependencies) is installed"
    args = _args()
    for target in targets:
        if target.startswith("/") or target == "pip":
            continue
        req = Requirement(target.replace("${TORCH_VERSION}", args.get("TORCH_VERSION", "")))
        assert req.name.lower() in required, f"Dockerfile installs {req.name}, absent from setup.cfg"
        version = next(iter(req.specifier)).version
        assert required[req.name.lower()].specifier.contains(version), \
            f"{req.name}=={version} does not satisfy setup.cfg's {required[req.name.lower()]}"


def test_torch_matches_ci():
    ci = (ROOT / ".ci/run").read_text()
    pinned = re.search(r"torch==([\w.]+)", ci)
    if pinned is None:
        pytest.skip(".ci/run does not pin torch")
    assert _args()["TORCH_VERSION"] == pinned.group(1)


def test_base_python_satisfies_python_requires():
    base = _args()["BASE_IMAGE"]
    assert base == "debian:bookworm-slim"  # CPU image by default; Debian 12 ships Python 3.11
    assert SpecifierSet(_setup_cfg()["options"]["python_requires"]).contains("3.11")


def test_bids_app_conventions():
    inst = _instructions(DOCKERFILE)
    entry = [rest for word, rest in inst if word == "ENTRYPOINT"]
    assert len(entry) == 1 and json.loads(entry[0]) == ["bmex-wf"]
    users = [rest for word, rest in inst if word == "USER"]
    assert users and users[-1] not in ("root", "0")
    env = " ".join(rest for word, rest in inst if word == "ENV")
    assert "BMEX_MODELS_DIR=/models" in env
    args = _args()
    for name in ("BASE_IMAGE", "PIP_INDEX_URL", "PIP_CERT", "TORCH_INDEX_URL", "TORCH_VERSION"):
        assert name in args, f"build argument {name} missing"
    assert "cpu" in args["TORCH_INDEX_URL"]
    froms = [rest for word, rest in inst if word == "FROM"]
    assert all(f.split()[0] == "${BASE_IMAGE}" for f in froms)
    final = DOCKERFILE.split("FROM ${BASE_IMAGE}\n")[-1]
    assert "PIP_CERT" not in final and "COPY . " not in final  # no CA bundle or sources shipped


def test_entry_point_matches_setup_cfg():
    scripts = _setup_cfg()["options.entry_points"]["console_scripts"]
    assert re.search(r"^\s*bmex-wf\s*=", scripts, re.MULTILINE)


def test_build_script():
    script = ROOT / "scripts/build-container.sh"
    text = script.read_text()
    for needle in ("--isolation chroot", "--storage-driver vfs", "debootstrap", "bookworm",
                   "bmex-wf --version", "bmex-wf models", "--pull=never"):
        assert needle in text
    bash = shutil.which("bash")
    if bash:
        assert subprocess.run([bash, "-n", str(script)], capture_output=True, check=False).returncode == 0


def test_every_package_is_installed():
    """setup.cfg's ``packages = find:`` only installs folders with an ``__init__.py``."""
    missing = sorted(str(folder.relative_to(ROOT)) for folder in (ROOT / "bmex_wf").rglob("*")
                     if folder.is_dir() and folder.name != "__pycache__"
                     and any(folder.glob("*.py")) and not (folder / "__init__.py").is_file())
    assert not missing, f"not installed by 'pip install .' (no __init__.py): {missing}"
