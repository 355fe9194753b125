"""`make install DESTDIR=... PREFIX=...` (packaging/packaging.mk): the
files land where they belong with the right modes, the installed binary
runs, the systemd unit verifies, and the man pages render without
warnings and document every flag."""
import os
import re
import shutil
import stat
import subprocess

import pytest

from conftest import ROOT, WSHUB

BUILD = os.path.dirname(WSHUB)

EXPECTED = {
    "usr/local/bin/wshub": 0o755,
    "usr/local/bin/wshub-sim": 0o755,
    "usr/local/share/man/man1/wshub.1": 0o644,
    "usr/local/share/man/man1/wshub-sim.1": 0o644,
    "usr/local/lib/systemd/system/wshub.service": 0o644,
    "etc/default/wshub": 0o644,
    "usr/local/share/doc/wshub/LICENSE": 0o644,
    "usr/local/share/doc/wshub/docs/protocol.md": 0o644,
    "usr/local/share/doc/wshub/docs/operations.md": 0o644,
}


def make_env():
    # Not the jobserver or flags of a `make integration` this runs under.
    env = dict(os.environ)
    for k in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES"):
        env.pop(k, None)
    return env


def make_install(destdir, prefix="/usr/local", *extra):
    args = ["make", "-C", ROOT, "--no-print-directory", "install",
            "DESTDIR=%s" % destdir, "PREFIX=%s" % prefix]
    if os.path.abspath(BUILD) != os.path.join(ROOT, "build"):
        pytest.skip("WSHUB_BIN is not the release build of this tree")
    return subprocess.run(args + list(extra), capture_output=True,
                          timeout=600, env=make_env())


@pytest.fixture(scope="module")
def staged(tmp_path_factory):
    d = tmp_path_factory.mktemp("stage")
    out = make_install(str(d))
    assert out.returncode == 0, out.stdout + out.stderr
    return str(d)


def test_files_and_modes(staged):
    for rel, mode in EXPECTED.items():
        p = os.path.join(staged, rel)
        assert os.path.isfile(p), rel
        assert stat.S_IMODE(os.stat(p).st_mode) == mode, (
            rel, oct(os.stat(p).st_mode))
    # Nothing outside DESTDIR's usr/local and etc.
    for top in os.listdir(staged):
        assert top in ("usr", "etc"), top
    assert os.listdir(os.path.join(staged, "usr")) == ["local"]


def test_installed_binaries_are_the_built_ones(staged):
    for name in ("wshub", "wshub-sim"):
        with open(os.path.join(BUILD, name), "rb") as a, \
                open(os.path.join(staged, "usr/local/bin", name), "rb") as b:
            assert a.read() == b.read(), name
    out = subprocess.run([os.path.join(staged, "usr/local/bin/wshub"),
                          "--help"], capture_output=True, timeout=10)
    assert out.returncode == 0 and b"--listen" in out.stdout


def test_prefix_is_respected(tmp_path):
    out = make_install(str(tmp_path), "/opt/wshub")
    assert out.returncode == 0, out.stdout + out.stderr
    assert os.path.isfile(tmp_path / "opt/wshub/bin/wshub")
    assert os.path.isfile(tmp_path / "opt/wshub/share/man/man1/wshub.1")
    unit = (tmp_path / "opt/wshub/lib/systemd/system/wshub.service") \
        .read_text()
    assert re.search(r"^ExecStart=/opt/wshub/bin/wshub$", unit, re.M), unit
    assert not os.path.exists(tmp_path / "usr")


def test_existing_env_file_is_kept(tmp_path):
    mine = tmp_path / "etc/default/wshub"
    mine.parent.mkdir(parents=True)
    mine.write_text("WSHUB_LISTEN=0.0.0.0:9000\n")
    out = make_install(str(tmp_path))
    assert out.returncode == 0, out.stdout + out.stderr
    assert mine.read_text() == "WSHUB_LISTEN=0.0.0.0:9000\n"


def test_uninstall(tmp_path):
    assert make_install(str(tmp_path)).returncode == 0
    out = subprocess.run(["make", "-C", ROOT, "--no-print-directory",
                          "uninstall", "DESTDIR=%s" % tmp_path,
                          "PREFIX=/usr/local"], capture_output=True,
                         timeout=120, env=make_env())
    assert out.returncode == 0, out.stderr
    assert not os.path.exists(tmp_path / "usr/local/bin/wshub")
    assert not os.path.exists(tmp_path / "usr/local/share/doc/wshub")
    # The operator's settings stay.
    assert os.path.isfile(tmp_path / "etc/default/wshub")


def test_unit_has_the_required_settings(staged):
    unit = open(os.path.join(
        staged, "usr/local/lib/systemd/system/wshub.service")).read()
    settings = dict(re.findall(r"^([A-Za-z]+)=(.*)$", unit, re.M))
    for key, value in {
            "DynamicUser": "yes", "NoNewPrivileges": "yes",
            "ProtectSystem": "strict", "ProtectHome": "yes",
            "PrivateTmp": "yes", "PrivateDevices": "yes",
            "RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX",
            "LimitNOFILE": "65536", "Restart": "on-failure",
            "EnvironmentFile": "-/etc/default/wshub",
            "KillSignal": "SIGTERM",
            "ExecStart": "/usr/local/bin/wshub"}.items():
        assert settings.get(key) == value, (key, settings.get(key))
    # Longer than the longest graceful shutdown: --shutdown-timeout's
    # default plus the 2 s given to Redis.
    help_text = subprocess.run([WSHUB, "--help"], capture_output=True,
                               timeout=10).stdout.decode()
    m = re.search(r"--shutdown-timeout S .*\((\d+)\)", help_text)
    assert m, help_text
    stop = settings["TimeoutStopSec"]
    assert re.fullmatch(r"\d+", stop), stop
    assert int(stop) > int(m.group(1)) + 2


def test_env_file_names_only_real_variables(staged):
    text = open(os.path.join(staged, "etc/default/wshub")).read()
    names = set(re.findall(r"^#?(WSHUB_[A-Z_]+)=", text, re.M))
    help_text = subprocess.run([WSHUB, "--help"], capture_output=True,
                               timeout=10).stdout.decode()
    flags = set(re.findall(r"^\s+--([a-z][a-z-]*)", help_text, re.M))
    real = {"WSHUB_" + f.upper().replace("-", "_") for f in flags} - \
        {"WSHUB_HELP", "WSHUB_VERSION"}
    assert names - {"WSHUB_DEBUG"} == real, (names ^ real)
    # Every line is a comment or blank: installing it changes nothing.
    for ln in text.splitlines():
        assert ln == "" or ln.startswith("#"), ln


def test_systemd_analyze_verify(staged, tmp_path):
    sa = shutil.which("systemd-analyze")
    if sa is None:
        pytest.skip("systemd-analyze is not installed")
    unit = open(os.path.join(
        staged, "usr/local/lib/systemd/system/wshub.service")).read()
    # verify checks that ExecStart exists on this machine: point it at the
    # staged binary; Documentation=man:wshub(1) is looked up with man,
    # pointed at the staged man pages.
    unit = unit.replace("ExecStart=/usr/local/bin/wshub",
                        "ExecStart=%s/usr/local/bin/wshub" % staged)
    p = tmp_path / "wshub.service"
    p.write_text(unit)
    env = dict(os.environ, MANPATH=os.path.join(staged, "usr/local/share/man"),
               SYSTEMD_LOG_LEVEL="notice")
    out = subprocess.run([sa, "verify", str(p)], capture_output=True,
                         timeout=60, env=env)
    assert out.returncode == 0, out.stderr
    # verify exits 0 on settings it ignores; it must have no complaint.
    lines = [ln for ln in out.stderr.decode().splitlines()
             if "wshub.service" in ln]
    assert not lines, lines


def man_pages(staged):
    return [os.path.join(staged, "usr/local/share/man/man1", n)
            for n in ("wshub.1", "wshub-sim.1")]


def test_man_pages_lint(staged):
    if shutil.which("groff") is None:
        pytest.skip("groff is not installed")
    for page in man_pages(staged):
        out = subprocess.run(["groff", "-man", "-ww", "-z", "-Tutf8", page],
                             capture_output=True, timeout=30)
        assert out.returncode == 0 and out.stderr == b"", (page, out.stderr)


def render(page):
    if shutil.which("man") is not None:
        env = dict(os.environ, MANWIDTH="100", LC_ALL="C.UTF-8")
        out = subprocess.run(["man", "--warnings", "-l", page],
                             capture_output=True, timeout=30, env=env)
    elif shutil.which("groff") is not None:
        out = subprocess.run(["groff", "-man", "-Tutf8", page],
                             capture_output=True, timeout=30)
    else:
        pytest.skip("neither man nor groff is installed")
    assert out.returncode == 0, out.stderr
    assert out.stderr == b"", out.stderr
    # Hyphenation and bold/underline by overstrike out of the way.
    text = re.sub(r".\x08", "", out.stdout.decode())
    return re.sub(r"\u2010\n\s*", "", text)


def test_man_pages_sections_and_flags(staged):
    wshub_1, sim_1 = (render(p) for p in man_pages(staged))
    for text in (wshub_1, sim_1):
        for sec in ("NAME", "SYNOPSIS", "DESCRIPTION", "OPTIONS",
                    "EXIT STATUS", "FILES", "SEE ALSO"):
            assert re.search(r"^%s$" % sec, text, re.M), sec
    assert re.search(r"^SIGNALS$", wshub_1, re.M)
    help_text = subprocess.run([WSHUB, "--help"], capture_output=True,
                               timeout=10).stdout.decode()
    flags = re.findall(r"^\s+(--[a-z][a-z-]*)", help_text, re.M)
    assert len(flags) > 10
    for f in flags:
        assert re.search(r"^\s+%s\b" % re.escape(f), wshub_1, re.M), f
    sim_help = subprocess.run([os.path.join(BUILD, "wshub-sim"), "--help"],
                              capture_output=True, timeout=10).stdout.decode()
    for f in set(re.findall(r"--[a-z][a-z-]*", sim_help)):
        assert re.search(r"^\s+%s\b" % re.escape(f), sim_1, re.M), f
