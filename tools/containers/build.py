"""Building the images: the Debian base with debootstrap, Parley's image from the Dockerfile,
and the infrastructure images (RabbitMQ, Redis, Cassandra, S3) from tools/containers/*/."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from parley_dev import images, s3_identities
from parley_dev.cassandra import NODE_FLAGS, LocalCassandra, cassandra_version, resolve_jars
from parley_dev.infra import weed_binary

from .engine import REPO, STATE, EngineError, build_secrets, debian_mirror, engine, image_exists, podman, podman_env

HERE = Path(__file__).resolve().parent
DEBOOTSTRAP_PACKAGES = ("python3", "python3-venv", "ca-certificates")
PATH_ENV = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

_CONSOLE_LOGBACK = """<configuration>
  <appender name="STDOUT" class="ch.qos.logback.core.ConsoleAppender">
    <encoder><pattern>%-5level [%thread] %date{ISO8601} %F:%L - %msg%n</pattern></encoder>
  </appender>
  <root level="INFO"><appender-ref ref="STDOUT"/></root>
  <logger name="com.thinkaurelius.thrift" level="ERROR"/>
</configuration>
"""


def step(name: str, started: float) -> None:
    print(f"{name}: {time.monotonic() - started:.0f} s", flush=True)


def revision() -> str:
    done = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=REPO, capture_output=True, text=True)
    return done.stdout.strip() or "dev"


def build_base(force: bool = False) -> None:
    """localhost/parley-base:bookworm: Debian bookworm (minbase) with python3 and venv, from
    Debian's packages with debootstrap, updated from the host's sources (security included).
    Reused when it exists, unless `force`."""
    if image_exists(images.BASE) and not force:
        print(f"{images.BASE}: exists, reused (make image-base FORCE=1 rebuilds it)", flush=True)
        return
    debootstrap = shutil.which("debootstrap") or "/usr/sbin/debootstrap"
    if not Path(debootstrap).is_file():
        raise EngineError("debootstrap is not installed: run `tools/system-deps.sh containers` (as root)")
    started = time.monotonic()
    STATE.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="rootfs-", dir=STATE) as tmp:
        rootfs = Path(tmp) / "rootfs"
        include = ",".join(DEBOOTSTRAP_PACKAGES)
        command = [debootstrap, "--variant=minbase", f"--include={include}", "bookworm", str(rootfs), debian_mirror()]
        log = STATE / "debootstrap.log"
        with log.open("w") as out:
            if subprocess.run(command, stdout=out, stderr=subprocess.STDOUT, check=False).returncode != 0:
                raise EngineError(f"debootstrap failed; see {log}")
        _upgrade(rootfs, log)
        for junk in ("var/cache/apt/archives", "var/lib/apt/lists", "var/log"):
            for path in (rootfs / junk).glob("*"):
                if path.is_file():
                    path.unlink()
        tar = subprocess.Popen(["tar", "-C", str(rootfs), "--numeric-owner", "-c", "."], stdout=subprocess.PIPE)
        binary = "docker" if engine() == "docker" else "podman"
        done = subprocess.run(
            [binary, "import", "--change", f"ENV {PATH_ENV}", "--change", "ENV LANG=C.UTF-8",
             "--change", 'CMD ["python3"]', "-", images.BASE],
            stdin=tar.stdout, env=podman_env(), capture_output=True, text=True, check=False,
        )  # fmt: skip
        tar.wait()
        if done.returncode != 0 or tar.returncode != 0:
            raise EngineError(f"importing the base failed: {done.stderr.strip()[-2000:]}")
    step(f"{images.BASE} (debootstrap)", started)


def _upgrade(rootfs: Path, log: Path) -> None:
    """The point-release and security updates debootstrap's suite lacks, through the host's
    sources and apt settings (copied in for the upgrade and removed again)."""
    secrets = dict(build_secrets())
    apt = rootfs / "etc" / "apt"
    own_sources = (apt / "sources.list").read_text()
    shutil.copy(secrets["apt-sources"], apt / "sources.list")
    shutil.copy(secrets["apt-conf"], apt / "apt.conf.d" / "99parley-build")
    try:
        with log.open("a") as out:
            for command in (["apt-get", "update", "-qq"], ["apt-get", "upgrade", "-y", "-qq"], ["apt-get", "clean"]):
                done = subprocess.run(
                    ["chroot", str(rootfs), *command],
                    env={"PATH": PATH_ENV[5:], "DEBIAN_FRONTEND": "noninteractive", "LANG": "C.UTF-8"},
                    stdout=out, stderr=subprocess.STDOUT, check=False,
                )  # fmt: skip
                if done.returncode != 0:
                    raise EngineError(f"{' '.join(command)} in the base failed; see {log}")
    finally:
        (apt / "sources.list").write_text(own_sources)
        (apt / "apt.conf.d" / "99parley-build").unlink(missing_ok=True)


def _build(tag_args: list[str], context: Path, containerfile: Path, build_args: dict[str, str]) -> None:
    binary = engine()
    secrets = [f"--secret=id={name},src={path}" for name, path in build_secrets()]
    args = [f"--build-arg={k}={v}" for k, v in build_args.items()]
    command = ["build", "--network=host", *secrets, *args, *tag_args, "-f", str(containerfile), str(context)]
    if binary == "docker":
        done = subprocess.run(["docker", *command], env={**podman_env(), "DOCKER_BUILDKIT": "1"}, check=False)
        if done.returncode != 0:
            raise EngineError(f"docker build of {containerfile} failed")
    else:
        podman(*command)


def build_app(tag: str | None = None) -> str:
    """Parley's image from the Dockerfile: on the upstream Python base with Docker, on the
    debootstrap base with podman. Tagged with the commit and `latest`; the image's name."""
    started = time.monotonic()
    build_args: dict[str, str] = {}
    if engine() == "podman":
        build_base()
        build_args["PYTHON_IMAGE"] = images.BASE
    name = f"{images.APP}:{tag or revision()}"
    _build(["-t", name, "-t", f"{images.APP}:latest"], REPO, REPO / "Dockerfile", build_args)
    step(f"{name}", started)
    return name


def _context(name: str) -> Path:
    """The build context of one infrastructure image, staged under .cache/containers."""
    context = STATE / "context" / name
    if context.exists():
        shutil.rmtree(context)
    shutil.copytree(HERE / name, context)
    shutil.copy(HERE / "apt-install", context / "apt-install")
    if name == "cassandra":
        lib = resolve_jars(cassandra_version())
        shutil.copytree(lib, context / "lib", copy_function=_link_or_copy, ignore=shutil.ignore_patterns(".*"))
        conf = context / "conf"
        conf.mkdir()
        node = LocalCassandra(Path("/var/lib/cassandra"), Path("/var/lib/cassandra/logs/system.log"), durable=True)
        (conf / "cassandra.yaml").write_text(node.config_text(9042, 7000))
        (conf / "jvm.options").write_text("\n".join(NODE_FLAGS) + "\n")
        (conf / "logback.xml").write_text(_CONSOLE_LOGBACK)
    if name == "s3":
        shutil.copy(weed_binary(), context / "weed")
        # The entrypoint writes the same identity file as parley_dev.infra.LocalS3.
        shutil.copy(s3_identities.__file__, context / "s3_identities.py")
    return context


def _link_or_copy(source: str, target: str) -> None:
    try:
        Path(target).hardlink_to(source)
    except OSError:
        shutil.copy2(source, target)


def build_infra(names: tuple[str, ...] = images.INFRA) -> list[str]:
    """The infrastructure images on the debootstrap base (podman's layer cache makes a rebuild
    of an unchanged one take seconds)."""
    if engine() != "podman":
        raise EngineError("the infrastructure images are built with podman (a Docker engine pulls upstream ones)")
    build_base()
    built = []
    for name in names:
        started = time.monotonic()
        tag = images.default_image(name)
        context = _context(name)
        _build(["-t", tag], context, context / "Containerfile", {"BASE": images.BASE})
        step(tag, started)
        built.append(tag)
    return built
