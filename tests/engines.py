"""Real container engines for the runtime tier: dockerd, podman, containerd with isolated roots.

Session-scoped: each engine starts once per test session with its data root, exec root and socket
under a temp dir, builds its images from a busybox-static rootfs, makes one created and one
running container (files changed in the running one), and is stopped by PID at the end. The
engines live in the test session's private mount namespace (conftest unshares at start-up), so
their mounts die with it. Names carry the session's PID so concurrent sessions never collide.

Recipe (what the tests can rely on):
- base image `ovl-test/base:1`: `docker import` / `podman import` of a rootfs tar with
  /bin/busybox (+ applet links), /data/delete-me.txt, /data/keep.txt, /opq/old.txt, /ren/r.txt;
- derived image `ovl-test/derived:1` from DOCKERFILE below (RUN steps: delete a file, replace a
  dir, rename a dir, add files; COPY one file; then LABEL and CMD, which make no layer);
- containers `ovl-created-<pid>` (created, never started) and `ovl-running-<pid>` (running, with
  RUNNING_CHANGES applied through exec).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import signal
import subprocess
import tarfile
import time
from dataclasses import dataclass, field

import pytest

SID = os.getpid()
DOCKERFILE = """\
FROM ovl-test/base:1
RUN rm /data/delete-me.txt
RUN rm -rf /opq && mkdir -p /opq && echo opq-new > /opq/new.txt
RUN mv /ren /renamed
RUN mkdir -p /added/deep && echo added-1 > /added/one.txt && echo added-2 > /added/deep/two.txt
COPY hello.txt /added/hello.txt
LABEL org.example.purpose=ovlinspect-fixture
CMD ["/bin/sleep", "3600"]
"""
RUNNING_CHANGES = "echo new > /added/new.txt && echo more >> /data/keep.txt && rm /added/one.txt && rm -rf /renamed"
ULIMITS = ["--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024"]
APPLETS = ["sh", "ls", "rm", "mv", "mkdir", "echo", "cat", "sleep", "touch", "true", "seq", "head", "dd", "xargs"]


def _need_root_and(*binaries: str) -> None:
    if os.geteuid() != 0:
        pytest.skip("runtime engines need root")
    missing = [b for b in binaries if shutil.which(b) is None]
    if missing:
        pytest.skip(reason=f"not installed: {', '.join(missing)} (scripts/test-packages.txt installs them)")


def busybox_path() -> str:
    bb = shutil.which("busybox") or "/bin/busybox"
    return bb


def make_rootfs(dest: str) -> str:
    """A tiny static rootfs; returns the path of its tar."""
    os.makedirs(os.path.join(dest, "bin"), exist_ok=True)
    shutil.copy2(busybox_path(), os.path.join(dest, "bin", "busybox"))
    for a in APPLETS:
        p = os.path.join(dest, "bin", a)
        if not os.path.lexists(p):
            os.symlink("busybox", p)
    for d, files in {"data": {"delete-me.txt": "delete me\n", "keep.txt": "keep\n"}, "opq": {"old.txt": "old\n"}, "ren": {"r.txt": "r\n"}}.items():
        os.makedirs(os.path.join(dest, d), exist_ok=True)
        for n, body in files.items():
            with open(os.path.join(dest, d, n), "w") as fh:
                fh.write(body)
    for d in ("etc", "tmp", "proc", "sys", "dev"):
        os.makedirs(os.path.join(dest, d), exist_ok=True)
    tarp = dest.rstrip("/") + ".tar"
    with tarfile.open(tarp, "w") as tf:
        for name in sorted(os.listdir(dest)):
            tf.add(os.path.join(dest, name), arcname=name)
    return tarp


def _layer_tar(entries: list[tuple[str, str, bytes]]) -> bytes:
    """entries: (path, "file"|"dir"|"whiteout", data) -> an uncompressed OCI layer tar."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for path, kind, data in entries:
            ti = tarfile.TarInfo(path)
            ti.mtime = 1700000000
            if kind == "dir":
                ti.type = tarfile.DIRTYPE
                ti.mode = 0o755
                tf.addfile(ti)
            else:
                if kind == "whiteout":
                    d, b = os.path.split(path)
                    ti.name = os.path.join(d, ".wh." + b)
                    data = b""
                ti.size = len(data)
                ti.mode = 0o644
                tf.addfile(ti, io.BytesIO(data))
    return buf.getvalue()


def image_archive(out: str, repo_tag: str, layers: list[bytes], created_by: list[str]) -> str:
    """A `docker save`-format archive (accepted by `docker load` and `ctr images import`)."""
    diff_ids = ["sha256:" + hashlib.sha256(la).hexdigest() for la in layers]
    config = {
        "architecture": "amd64",
        "os": "linux",
        "config": {"Cmd": ["/bin/sleep", "3600"], "Env": ["PATH=/bin"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": [{"created": "2026-01-01T00:00:00Z", "created_by": cb} for cb in created_by],
    }
    cfg = json.dumps(config).encode()
    cfg_name = hashlib.sha256(cfg).hexdigest() + ".json"
    with tarfile.open(out, "w") as tf:

        def add(name: str, data: bytes) -> None:
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            tf.addfile(ti, io.BytesIO(data))

        add(cfg_name, cfg)
        names = []
        for i, la in enumerate(layers):
            n = f"l{i:04d}/layer.tar"
            add(n, la)
            names.append(n)
        add("manifest.json", json.dumps([{"Config": cfg_name, "RepoTags": [repo_tag], "Layers": names}]).encode())
    return out


def busybox_layer() -> bytes:
    """The busybox rootfs as one layer (same content as make_rootfs)."""
    with open(busybox_path(), "rb") as fh:
        bb = fh.read()
    entries: list[tuple[str, str, bytes]] = [("bin", "dir", b"")]
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        ti = tarfile.TarInfo("bin")
        ti.type = tarfile.DIRTYPE
        ti.mode = 0o755
        tf.addfile(ti)
        ti = tarfile.TarInfo("bin/busybox")
        ti.size = len(bb)
        ti.mode = 0o755
        tf.addfile(ti, io.BytesIO(bb))
        for a in APPLETS:
            ti = tarfile.TarInfo(f"bin/{a}")
            ti.type = tarfile.SYMTYPE
            ti.linkname = "busybox"
            tf.addfile(ti)
        for path, kind, data in [
            ("data", "dir", b""),
            ("data/delete-me.txt", "file", b"delete me\n"),
            ("data/keep.txt", "file", b"keep\n"),
            ("etc", "dir", b""),
            ("tmp", "dir", b""),
        ]:
            ti = tarfile.TarInfo(path)
            if kind == "dir":
                ti.type = tarfile.DIRTYPE
                ti.mode = 0o755
                tf.addfile(ti)
            else:
                ti.size = len(data)
                tf.addfile(ti, io.BytesIO(data))
    del entries
    return buf.getvalue()


def _wait_for(pred, timeout: float, what: str, proc: subprocess.Popen | None = None, log: str | None = None) -> None:  # type: ignore[no-untyped-def]
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return
        if proc is not None and proc.poll() is not None:
            break
        time.sleep(0.05)
    tail = ""
    if log and os.path.exists(log):
        with open(log, errors="replace") as fh:
            tail = fh.read()[-3000:]
    raise RuntimeError(f"{what} did not come up\n{tail}")


def _stop(proc: subprocess.Popen | None, timeout: float = 20) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


@dataclass
class Engine:
    base: str
    env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen | None = None

    def run(self, *argv: str, check: bool = True, input: bytes | None = None, timeout: float = 300) -> str:
        r = subprocess.run(list(argv), env={**os.environ, **self.env}, input=input, capture_output=True, timeout=timeout)
        if check and r.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} failed ({r.returncode}): {r.stderr.decode(errors='replace')[-2000:]}")
        return r.stdout.decode(errors="replace")


@dataclass
class DockerEngine(Engine):
    root: str = ""
    sock: str = ""
    names: dict[str, str] = field(default_factory=dict)

    def argv(self) -> list[str]:
        b = self.base
        return [
            "dockerd", "--data-root", self.root, "--exec-root", os.path.join(b, "exec"), "-H", f"unix://{self.sock}",
            "--pidfile", os.path.join(b, "docker.pid"), "--iptables=false", "--ip6tables=false", "--bridge=none",
            "--storage-driver", "overlay2",
        ]  # fmt: skip

    def start(self) -> None:
        log = os.path.join(self.base, "dockerd.log")
        self.proc = subprocess.Popen(self.argv(), stdout=open(log, "ab"), stderr=subprocess.STDOUT, start_new_session=True)
        _wait_for(lambda: self.run("docker", "version", check=False) and self._ok(), 60, "dockerd", self.proc, log)

    def _ok(self) -> bool:
        r = subprocess.run(["docker", "info", "--format", "{{.Driver}}"], env={**os.environ, **self.env}, capture_output=True)
        return r.returncode == 0

    def docker(self, *args: str, **kw) -> str:  # type: ignore[no-untyped-def]
        return self.run("docker", *args, **kw)

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(10)

    def restart_after_kill(self) -> None:
        """Kill what the SIGKILLed dockerd left running (its containerd, shims: ours, by PID), then start again."""
        import psutil

        sock = os.path.join(self.base, "exec", "containerd", "containerd.sock")
        for p in psutil.process_iter(["pid", "cmdline"]):
            argv = p.info.get("cmdline") or []
            if any(sock in a or os.path.join(self.base, "exec") in a for a in argv) and p.info["pid"] != os.getpid():
                try:
                    p.kill()
                except psutil.Error:
                    pass
        time.sleep(0.5)
        # a killed containerd may linger as a zombie, which dockerd takes for alive via its pid file
        pidfile = os.path.join(self.base, "exec", "containerd", "containerd.pid")
        if os.path.exists(pidfile):
            os.unlink(pidfile)
        self.start()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            ids = self.docker("ps", "-q", check=False).split()
            if ids:
                self.docker("kill", *ids, check=False)
        _stop(self.proc)
        # dockerd bind-mounts its data root onto itself (shared propagation); never leave it behind
        if os.path.ismount(self.root):
            subprocess.run(["umount", "-l", self.root], check=False)


def _build_docker(d: DockerEngine, work: str) -> None:
    tarp = make_rootfs(os.path.join(work, "rootfs"))
    with open(tarp, "rb") as fh:
        d.docker("import", "-", "ovl-test/base:1", input=fh.read())
    ctx = os.path.join(work, "ctx")
    os.makedirs(ctx, exist_ok=True)
    with open(os.path.join(ctx, "Dockerfile"), "w") as fh:
        fh.write(DOCKERFILE)
    with open(os.path.join(ctx, "hello.txt"), "w") as fh:
        fh.write("hello\n")
    d.docker("build", "-q", "-t", "ovl-test/derived:1", ctx)
    # a dangling image: build a tag, then build the tag again with other content
    for i in (1, 2):
        dctx = os.path.join(work, f"dctx{i}")
        os.makedirs(dctx, exist_ok=True)
        with open(os.path.join(dctx, "Dockerfile"), "w") as fh:
            fh.write(f"FROM ovl-test/base:1\nRUN echo {i} > /dangling.txt\n")
        d.docker("build", "-q", "-t", "ovl-test/dangling:1", dctx)
    d.names = {"created": f"ovl-created-{SID}", "running": f"ovl-running-{SID}"}
    d.docker("create", "--name", d.names["created"], "ovl-test/derived:1")
    d.docker("run", "-d", "--name", d.names["running"], "ovl-test/derived:1")
    d.docker("exec", d.names["running"], "sh", "-c", RUNNING_CHANGES)


@pytest.fixture(scope="session")
def docker_engine(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    _need_root_and("dockerd", "docker", "busybox")
    base = str(tmp_path_factory.mktemp("dk"))
    d = DockerEngine(base=base, root=os.path.join(base, "root"), sock=os.path.join(base, "docker.sock"))
    d.env = {"DOCKER_HOST": f"unix://{d.sock}", "DOCKER_BUILDKIT": "0", "DOCKER_CONFIG": os.path.join(base, "cfg")}
    try:
        d.start()
        _build_docker(d, os.path.join(base, "work"))
    except Exception:
        d.stop()
        raise
    yield d
    d.stop()


@dataclass
class PodmanEngine(Engine):
    root: str = ""
    run_root: str = ""
    conf: str = ""
    names: dict[str, str] = field(default_factory=dict)

    def podman(self, *args: str, **kw) -> str:  # type: ignore[no-untyped-def]
        return self.run(
            "podman", "--root", self.root, "--runroot", self.run_root, "--storage-driver", "overlay",
            "--cgroup-manager", "cgroupfs", "--events-backend", "file", "--tmpdir", os.path.join(self.base, "tmp"),
            *args, **kw,
        )  # fmt: skip

    def stop(self) -> None:
        self.podman("rm", "-f", "-t", "0", "-a", check=False)


@pytest.fixture(scope="session")
def podman_engine(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    _need_root_and("podman", "busybox")
    base = str(tmp_path_factory.mktemp("pd"))
    p = PodmanEngine(base=base, root=os.path.join(base, "root"), run_root=os.path.join(base, "run"), conf=os.path.join(base, "storage.conf"))
    with open(p.conf, "w") as fh:
        fh.write(f'[storage]\ndriver = "overlay"\ngraphroot = "{p.root}"\nrunroot = "{p.run_root}"\n')
    p.env = {"CONTAINERS_STORAGE_CONF": p.conf}
    work = os.path.join(base, "work")
    try:
        tarp = make_rootfs(os.path.join(work, "rootfs"))
        with open(tarp, "rb") as fh:
            p.podman("import", "-", "localhost/ovl-test/base:1", input=fh.read())
        ctx = os.path.join(work, "ctx")
        os.makedirs(ctx)
        with open(os.path.join(ctx, "Dockerfile"), "w") as fh:
            fh.write(DOCKERFILE.replace("FROM ovl-test/base:1", "FROM localhost/ovl-test/base:1"))
        with open(os.path.join(ctx, "hello.txt"), "w") as fh:
            fh.write("hello\n")
        p.podman("build", "-q", "--network", "none", "-t", "localhost/ovl-test/derived:1", ctx)
        p.names = {"created": f"pd-created-{SID}", "running": f"pd-running-{SID}"}
        p.podman("create", "--name", p.names["created"], "--network", "none", *ULIMITS, "localhost/ovl-test/derived:1")
        p.podman("run", "-d", "--name", p.names["running"], "--network", "none", *ULIMITS, "localhost/ovl-test/derived:1")
        p.podman("exec", p.names["running"], "sh", "-c", RUNNING_CHANGES)
    except Exception:
        p.stop()
        raise
    yield p
    p.stop()


@dataclass
class ContainerdEngine(Engine):
    root: str = ""
    sock: str = ""
    namespace: str = "ovltest"
    names: dict[str, str] = field(default_factory=dict)
    image: str = "docker.io/ovl-test/ctd:1"

    def ctr(self, *args: str, **kw) -> str:  # type: ignore[no-untyped-def]
        return self.run("ctr", "-a", self.sock, "-n", self.namespace, *args, **kw)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            for n in self.names.values():
                self.ctr("tasks", "kill", "-s", "KILL", n, check=False)
            time.sleep(0.3)
            for n in self.names.values():
                self.ctr("tasks", "rm", "-f", n, check=False)
        _stop(self.proc)


CTD_HISTORY = ["busybox rootfs", "RUN rm /data/delete-me.txt", "RUN mkdir -p /added && echo a > /added/one.txt"]


def ctd_layers() -> list[bytes]:
    return [
        busybox_layer(),
        _layer_tar([("data", "dir", b""), ("data/delete-me.txt", "whiteout", b"")]),
        _layer_tar([("added", "dir", b""), ("added/one.txt", "file", b"a\n")]),
    ]


@pytest.fixture(scope="session")
def containerd_engine(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    _need_root_and("containerd", "ctr", "busybox")
    base = str(tmp_path_factory.mktemp("cd"))
    c = ContainerdEngine(base=base, root=os.path.join(base, "root"), sock=os.path.join(base, "ctd.sock"))
    conf = os.path.join(base, "config.toml")
    with open(conf, "w") as fh:
        fh.write(
            f'version = 2\nroot = "{c.root}"\nstate = "{base}/state"\n'
            'disabled_plugins = ["io.containerd.grpc.v1.cri"]\n'
            f'[grpc]\n  address = "{c.sock}"\n[ttrpc]\n  address = "{c.sock}.ttrpc"\n'
        )
    log = os.path.join(base, "containerd.log")
    c.proc = subprocess.Popen(["containerd", "--config", conf], stdout=open(log, "ab"), stderr=subprocess.STDOUT, start_new_session=True)
    try:
        _wait_for(lambda: os.path.exists(c.sock) and c.ctr("version", check=False) != "", 30, "containerd", c.proc, log)
        arch = image_archive(os.path.join(base, "img.tar"), c.image, ctd_layers(), CTD_HISTORY)
        c.ctr("images", "import", arch)
        c.names = {"created": f"ctd-created-{SID}", "running": f"ctd-running-{SID}"}
        c.ctr("containers", "create", c.image, c.names["created"])
        c.ctr("run", "-d", c.image, c.names["running"])
        c.ctr("tasks", "exec", "--exec-id", "chg", c.names["running"], "sh", "-c", "echo new > /added/new.txt && rm /added/one.txt")
    except Exception:
        c.stop()
        raise
    yield c
    c.stop()
