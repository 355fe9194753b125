"""The README's quick start, as a newcomer types it.

- The first command is the one that works both as root without sudo and
  as a user with sudo (`$(command -v sudo)` is empty for root without
  sudo), followed by `make run`.
- `make run` in a fresh clone, as root, with no sudo anywhere on PATH:
  it installs nothing that is already there, builds both binaries and
  serves the demo page and /healthz.
- `make deps-build` as a user without root: nothing to install is fine
  without sudo; something to install without sudo is a clear refusal;
  with sudo it goes through sudo.  (A package that does not exist stands
  for a missing one, and a fake sudo records what it was asked, so no
  package is installed by this test.)
"""
import os
import pathlib
import pwd
import re
import shutil
import signal
import subprocess
import tempfile

import pytest

from conftest import ROOT, free_port, http, wait_for

README = os.path.join(ROOT, "README.md")


def readme_commands():
    """The indented command lines of README.md's opening section (before
    the first heading after the title)."""
    text = open(README).read()
    head = text.split("\n## ", 1)[0]
    return [l.strip() for l in head.splitlines() if l.startswith("    ")]


def path_without_sudo(tmp_path):
    """PATH with every directory that holds a sudo replaced by a copy of
    it without sudo (symlinks to the rest)."""
    dirs = []
    for d in os.environ.get("PATH", "/usr/bin:/bin").split(os.pathsep):
        if d and os.path.exists(os.path.join(d, "sudo")):
            nd = tmp_path / ("nosudo%d" % len(dirs))
            nd.mkdir()
            for name in os.listdir(d):
                if name != "sudo":
                    os.symlink(os.path.join(d, name), nd / name)
            dirs.append(str(nd))
        elif d:
            dirs.append(d)
    return os.pathsep.join(dirs)


def test_readme_first_commands():
    cmds = readme_commands()
    assert len(cmds) >= 2, cmds
    first, tests = cmds[0], cmds[1]
    # Root without sudo: $(command -v sudo) expands to nothing.
    assert first.count("$(command -v sudo) apt-get") == 2, first
    assert first.endswith("&& make run"), first
    assert "apt-get install -y make" in first, first
    assert tests == "make deps && make test", tests
    # .ci/run runs the same test command.
    ci = open(os.path.join(ROOT, ".ci", "run")).read()
    assert re.search(r"^make deps$", ci, re.M) and \
        re.search(r"^make test$", ci, re.M), ci


def test_first_command_prefix_is_empty_without_sudo(tmp_path):
    env = dict(os.environ, PATH=path_without_sudo(tmp_path))
    out = subprocess.run(["sh", "-c", 'echo "[$(command -v sudo)]"'],
                         capture_output=True, env=env, timeout=10)
    assert out.stdout.strip() == b"[]", out.stdout


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root: it is the "
                    "root-without-sudo case")
def test_make_run_as_root_without_sudo_in_a_fresh_clone(tmp_path):
    clone = tmp_path / "wshub"
    subprocess.run(["git", "clone", "-q", ROOT, str(clone)], check=True,
                   timeout=60)
    port = free_port()
    env = dict(os.environ, PATH=path_without_sudo(tmp_path))
    env.pop("MAKEFLAGS", None)
    env.pop("MFLAGS", None)
    log = open(tmp_path / "make-run.log", "wb")
    p = subprocess.Popen(
        ["make", "-C", str(clone), "run",
         "RUN_ARGS=--listen 127.0.0.1:%d" % port],
        stdout=log, stderr=subprocess.STDOUT, env=env,
        start_new_session=True)
    try:
        def up():
            if p.poll() is not None:
                raise AssertionError("make run exited %s: %s" % (
                    p.returncode, open(tmp_path / "make-run.log").read()))
            try:
                return http(port, "GET", "/healthz", timeout=1.0)[0] == 200
            except OSError:
                return False
        # A fresh build on two busy cores: generous, but bounded.
        wait_for(up, timeout=300, interval=0.5, what="make run to serve")
        status, body = http(port, "GET", "/")
        assert status == 200 and b"<html" in body.lower()
        assert os.access(clone / "build" / "wshub-sim", os.X_OK)
        text = open(tmp_path / "make-run.log").read()
        assert "deps: every package is installed" in text, text
        assert "sudo" not in text.replace("or sudo", ""), text
    finally:
        # make runs the server as its child: stop the group we started.
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGTERM)
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait(timeout=10)
        log.close()


def _nobody():
    try:
        return pwd.getpwnam("nobody")
    except KeyError:
        return None


def _as_user(args, env, cwd):
    """Runs |args| as user nobody (we are root)."""
    nb = _nobody()

    def demote():
        os.setgid(nb.pw_gid)
        os.setgroups([])
        os.setuid(nb.pw_uid)
    return subprocess.run(args, capture_output=True, env=env, cwd=cwd,
                          preexec_fn=demote, timeout=60)


@pytest.mark.skipif(os.geteuid() != 0 or _nobody() is None,
                    reason="needs root to run as another user")
def test_deps_build_as_a_user_with_and_without_sudo(tmp_path):
    # pytest's tmp_path lies under a directory only root may enter.
    top = tempfile.mkdtemp(prefix="wshub-quickstart-", dir="/tmp")
    try:
        _deps_build_as_user(tmp_path, pathlib.Path(top))
    finally:
        shutil.rmtree(top)


def _deps_build_as_user(tmp_path, top):
    os.chmod(top, 0o755)
    work = top / "w"
    work.mkdir()
    shutil.copy(os.path.join(ROOT, "Makefile"), work / "Makefile")
    os.chmod(work, 0o777)
    base = dict(os.environ, PATH=path_without_sudo(tmp_path), HOME=str(work))
    base.pop("MAKEFLAGS", None)
    # Everything installed: no sudo needed.
    out = _as_user(["make", "-s", "deps-build"], base, str(work))
    assert out.returncode == 0, out
    assert b"every package is installed" in out.stdout, out.stdout
    # Something to install, no root, no sudo: a clear refusal.
    out = _as_user(["make", "-s", "deps-build",
                    "DEB_BUILD_PKGS=wshub-no-such-package"], base, str(work))
    assert out.returncode != 0
    assert b"need root or sudo to install wshub-no-such-package" in \
        out.stdout + out.stderr, out
    # With sudo on PATH: apt-get goes through it.
    fake = top / "fakesudo"
    fake.mkdir()
    os.chmod(fake, 0o755)
    rec = work / "sudo.log"
    (fake / "sudo").write_text('#!/bin/sh\necho "$*" >> %s\n' % rec)
    os.chmod(fake / "sudo", 0o755)
    env = dict(base, PATH=str(fake) + os.pathsep + base["PATH"])
    out = _as_user(["make", "-s", "deps-build",
                    "DEB_BUILD_PKGS=wshub-no-such-package"], env, str(work))
    assert out.returncode == 0, out
    calls = rec.read_text().splitlines()
    assert calls[0] == "apt-get update", calls
    assert calls[1].endswith("apt-get install -y --no-install-recommends "
                             "wshub-no-such-package"), calls
