"""Booted systemd containers for the Ansible tests: a Debian image made once with ``debootstrap`` and cached, one
overlay mount of it per container, each container in a network namespace of its own behind a veth pair, booted
with ``systemd-nspawn --boot`` and reached over real SSH with a key made for the run.

    host (the controller)                          container NAME (systemd as PID 1, sshd, journald)
    10.X.Y.1/30  veth "fgh…"  <───────────────>  "fgc…" renamed eth0  10.X.Y.2/30     (netns fgtest-<pid>-<i>)
                                                  default route via 10.X.Y.1: every host address is reachable

Why not molecule: its create/destroy playbooks would run exactly these commands, with a second tool between the test
and what it checks. Here a pytest fixture owns every namespace, mount and process it made (``Cleanup``) and undoes
them in reverse order also when a test fails or times out; names carry the pytest pid so leftovers of a run that was
killed outright (SIGKILL) are found and removed by the next one (``sweep_stale``).

Needs root, ``debootstrap`` (Debian package ``debootstrap``), ``systemd-nspawn`` (``systemd-container``), ``ip``
(``iproute2``) and ``ssh`` / ``ssh-keygen`` (``openssh-client``); ``require_tools`` fails loudly when one is missing.
The image is built from the Debian mirror apt on this machine uses; the containers themselves have no way out.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import ipaddress
import os
import random
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

CACHE_DIR = Path(os.environ.get("FLOORGATE_TEST_CACHE", "/var/cache/floorgate-tests"))
SUITE = "bookworm"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
# what a freshly installed plant PC (or a Pi with Raspberry Pi OS lite) has, plus sshd for Ansible: python3-venv and
# python3-packaging are there because the containers cannot reach a mirror (the role installs them where missing)
IMAGE_PACKAGES = (
    "python3", "python3-venv", "python3-apt", "python3-packaging", "systemd", "systemd-sysv", "udev",
    "openssh-server", "iproute2", "dbus",
)
IMAGE_FORMAT = 1  # bump when the preparation below changes: a new cache key
PREFIX = "fgtest"
TOOLS = {"debootstrap": "debootstrap", "systemd-nspawn": "systemd-container", "ip": "iproute2",
         "ssh": "openssh-client", "ssh-keygen": "openssh-client", "mount": "mount"}


class HarnessError(RuntimeError):
    """The container harness could not do what it was asked; the message says what and why."""


def require_tools() -> None:
    if os.geteuid() != 0:
        raise HarnessError("the Ansible container tests need root (network namespaces, overlay mounts, nspawn)")
    missing = sorted({pkg for tool, pkg in TOOLS.items() if _which(tool) is None})
    if missing:
        raise HarnessError(f"missing programs for the Ansible container tests: install the Debian packages "
                           f"{' '.join(missing)} (scripts/ensure-services.sh does that as root)")


def _which(tool: str) -> str | None:
    return shutil.which(tool) or shutil.which(tool, path="/usr/sbin:/sbin:/usr/bin:/bin")


def run(args: list[str], *, timeout_s: float = 60, check: bool = True, input_: str | None = None,
        ) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(args, capture_output=True, text=True, timeout=timeout_s, check=False, input=input_)
    if check and done.returncode != 0:
        raise HarnessError(f"{' '.join(args)} exited with {done.returncode}:\n{done.stdout}{done.stderr}")
    return done


# -- the image --------------------------------------------------------------------------------------------------------
def debian_mirror() -> str:
    """The mirror apt uses for the main suite here (deb822 ``debian.sources`` or one-line ``sources.list``)."""
    deb822 = Path("/etc/apt/sources.list.d/debian.sources")
    if deb822.exists():
        for stanza in deb822.read_text().split("\n\n"):
            fields = dict(re.findall(r"^(\w[\w-]*):\s*(.+)$", stanza, re.M))
            if SUITE in fields.get("Suites", "").split() and fields.get("URIs"):
                return fields["URIs"].split()[0]
    legacy = Path("/etc/apt/sources.list")
    if legacy.exists():
        for line in legacy.read_text().splitlines():
            parts = line.split()
            if len(parts) >= 3 and parts[0] == "deb" and parts[2] == SUITE:
                return parts[1]
    return DEFAULT_MIRROR


def image_key() -> str:
    text = "\n".join([SUITE, "minbase", str(IMAGE_FORMAT), *sorted(IMAGE_PACKAGES)])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def ensure_image(*, log: Callable[[str], None] = print, timeout_s: float = 900) -> Path:
    """The cached image directory (``CACHE_DIR/bookworm-<key>``), built on first use. A lock file keeps two runs from
    building at once; the build goes to a temporary directory renamed into place when complete."""
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    key = image_key()
    image = CACHE_DIR / f"{SUITE}-{key}"
    done_marker = image / ".floorgate-image-complete"
    if done_marker.exists():
        return image
    with (CACHE_DIR / f"{SUITE}-{key}.lock").open("w") as lock:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise HarnessError(f"waited {timeout_s:.0f} s for another build of {image}") from None
                time.sleep(1)
        if done_marker.exists():  # built by the run that held the lock
            return image
        partial = CACHE_DIR / f"{SUITE}-{key}.partial"
        if partial.exists():
            shutil.rmtree(partial)
        mirror = debian_mirror()
        log(f"building the container image {image} with debootstrap from {mirror} (once, ~1-2 min)")
        started = time.monotonic()
        built = subprocess.run(
            ["debootstrap", "--variant=minbase", f"--include={','.join(IMAGE_PACKAGES)}", SUITE, str(partial),
             mirror], capture_output=True, text=True, timeout=timeout_s, check=False)
        if built.returncode != 0:
            tail = "\n".join((built.stdout + built.stderr).splitlines()[-30:])
            raise HarnessError(f"debootstrap of {SUITE} from {mirror} failed ({built.returncode}):\n{tail}")
        _prepare_image(partial)
        (partial / done_marker.name).write_text(f"{SUITE} {' '.join(IMAGE_PACKAGES)}\n")
        if image.exists():
            shutil.rmtree(image)
        partial.rename(image)
        log(f"image ready in {time.monotonic() - started:.0f} s")
        return image


def _prepare_image(root: Path) -> None:
    """What every container needs and the image does not have by itself."""
    # no stale apt lists pretending to be current; no machine-id: each boot makes its own (overlay upper dir)
    for p in (root / "etc/machine-id", root / "var/lib/dbus/machine-id"):
        p.unlink(missing_ok=True)
    (root / "etc/machine-id").write_text("")
    # sshd: keys only, quick; the host keys came with openssh-server and are the same in every container (tests)
    (root / "etc/ssh/sshd_config.d").mkdir(parents=True, exist_ok=True)
    (root / "etc/ssh/sshd_config.d/floorgate-test.conf").write_text(
        "PermitRootLogin prohibit-password\nPasswordAuthentication no\nUseDNS no\n")
    # units that only wait or fail in a container without a network manager or consoles
    for unit in ("systemd-networkd-wait-online.service", "getty@tty1.service", "console-getty.service"):
        link = root / "etc/systemd/system" / unit
        link.parent.mkdir(parents=True, exist_ok=True)
        if not link.exists():
            link.symlink_to("/dev/null")


# -- cleanup ----------------------------------------------------------------------------------------------------------
@dataclass
class Cleanup:
    """Undo steps, run in reverse order; every step runs even when an earlier one fails."""

    steps: list[tuple[str, Callable[[], None]]] = field(default_factory=list)

    def add(self, what: str, undo: Callable[[], None]) -> None:
        self.steps.append((what, undo))

    def run(self) -> list[str]:
        problems = []
        while self.steps:
            what, undo = self.steps.pop()
            try:
                undo()
            except Exception as exc:
                problems.append(f"{what}: {exc}")
        return problems


def sweep_stale() -> list[str]:
    """Remove what an earlier run that was killed outright left behind: nspawn processes, the containers' processes,
    overlay mounts and network namespaces named ``fgtest-<pid>-…`` whose pid is no longer a running process."""
    removed: list[str] = []

    def dead(pid: int) -> bool:
        return pid != os.getpid() and not Path(f"/proc/{pid}").exists()

    pattern = re.compile(rf"{PREFIX}-(\d+)-")
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if not argv or not argv[0].endswith(b"systemd-nspawn"):
            continue
        names = [a.decode(errors="replace") for a in argv]
        machine = next((names[i + 1] for i, a in enumerate(names[:-1]) if a == "-M"), "")
        m = pattern.match(machine)
        if m and dead(int(m.group(1))):
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(proc.name), signal.SIGKILL)
                removed.append(f"process {proc.name} ({machine})")
    netns_dir = Path("/run/netns")
    names = [ns.name for ns in netns_dir.iterdir()] if netns_dir.exists() else []
    stale_netns = [n for n in names if (m := pattern.match(n + "-")) and dead(int(m.group(1)))]
    for name in stale_netns:  # the containers' own processes first: they keep the overlays busy
        removed += [f"process {pid} in netns {name}" for pid in kill_netns_processes(name)]
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        mountpoint = line.split()[4]
        m = re.search(rf"/{PREFIX}-(\d+)-[^/]*/merged$", mountpoint)
        if m and dead(int(m.group(1))) and run(["umount", "-l", mountpoint], check=False).returncode == 0:
            removed.append(f"mount {mountpoint}")
    for name in stale_netns:
        if run(["ip", "netns", "del", name], check=False).returncode == 0:
            removed.append(f"netns {name}")
    return removed


def kill_netns_processes(name: str) -> list[int]:
    """SIGKILL every process still in network namespace ``name`` (a container whose nspawn is gone: its systemd
    and services) and return their pids."""
    listed = run(["ip", "netns", "pids", name], check=False).stdout.split()
    killed = []
    for pid in map(int, listed):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)
    return killed


# -- network ----------------------------------------------------------------------------------------------------------
def pick_subnet() -> ipaddress.IPv4Network:
    """A /24 in 10.0.0.0/8 that no interface here uses (each container gets a /30 of it)."""
    used = run(["ip", "-4", "-o", "addr", "show"]).stdout
    nets = [ipaddress.ip_interface(a).network for a in re.findall(r"inet (\S+)", used)]
    routes = run(["ip", "-4", "route", "show"]).stdout
    nets += [ipaddress.ip_network(r, strict=False) for r in re.findall(r"^(\d+\.\d+\.\d+\.\d+/\d+)", routes, re.M)]
    rng = random.Random()
    for _ in range(200):
        net = ipaddress.ip_network(f"10.{rng.randint(64, 250)}.{rng.randint(0, 255)}.0/24")
        if not any(net.overlaps(n) for n in nets):
            return net
    raise HarnessError("no free 10.x.y.0/24 for the containers' networks")


@dataclass
class Netns:
    name: str
    host_if: str
    host_ip: str
    guest_ip: str

    @classmethod
    def create(cls, name: str, index: int, subnet: ipaddress.IPv4Network, cleanup: Cleanup) -> Netns:
        base = subnet.network_address + 4 * index
        host_ip, guest_ip = str(base + 1), str(base + 2)
        tag = f"{os.getpid() % 100000}x{index}"
        host_if, guest_if = f"fgh{tag}", f"fgc{tag}"
        run(["ip", "netns", "add", name])

        def delete() -> None:
            kill_netns_processes(name)  # normally none: the container has powered off
            run(["ip", "netns", "del", name], check=False)

        cleanup.add(f"netns {name}", delete)
        run(["ip", "link", "add", host_if, "type", "veth", "peer", "name", guest_if])
        cleanup.add(f"veth {host_if}", lambda: run(["ip", "link", "del", host_if], check=False) and None)
        run(["ip", "link", "set", guest_if, "netns", name])
        run(["ip", "addr", "add", f"{host_ip}/30", "dev", host_if])
        run(["ip", "link", "set", host_if, "up"])
        run(["ip", "-n", name, "link", "set", guest_if, "name", "eth0"])
        run(["ip", "-n", name, "addr", "add", f"{guest_ip}/30", "dev", "eth0"])
        run(["ip", "-n", name, "link", "set", "eth0", "up"])
        run(["ip", "-n", name, "link", "set", "lo", "up"])
        # the host is the way to everything else, e.g. a service on another container's host address
        run(["ip", "-n", name, "route", "add", "default", "via", host_ip])
        return cls(name, host_if, host_ip, guest_ip)


# -- containers -------------------------------------------------------------------------------------------------------
@dataclass
class Container:
    name: str
    root: Path  # the overlay's merged directory: the container's /
    net: Netns
    ssh_key: Path
    log_path: Path
    popen: subprocess.Popen[bytes] | None = None

    @classmethod
    def start(cls, name: str, image: Path, workdir: Path, net: Netns, ssh_key: Path, cleanup: Cleanup) -> Container:
        base = workdir / name
        upper, work, merged = base / "upper", base / "work", base / "merged"
        for d in (upper, work, merged):
            d.mkdir(parents=True)
        run(["mount", "-t", "overlay", "overlay", "-o", f"lowerdir={image},upperdir={upper},workdir={work}",
             str(merged)])
        cleanup.add(f"overlay {merged}", lambda: _umount(merged))
        ssh_dir = merged / "root/.ssh"
        ssh_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        (ssh_dir / "authorized_keys").write_text(Path(f"{ssh_key}.pub").read_text())
        (ssh_dir / "authorized_keys").chmod(0o600)
        # no DNS in here: the resolver gets "connection refused" at once instead of a 10 s timeout (Ansible's fact
        # gathering looks up the host's FQDN), and the host name resolves from /etc/hosts
        (merged / "etc/resolv.conf").unlink(missing_ok=True)
        (merged / "etc/resolv.conf").write_text("# no name server: the test containers have no way out\n")
        hosts = merged / "etc/hosts"
        hosts.write_text((hosts.read_text() if hosts.exists() else "127.0.0.1 localhost\n") + f"127.0.1.1 {name}\n")
        c = cls(name, merged, net, ssh_key, base / "console.log")
        with c.log_path.open("ab") as log:
            c.popen = subprocess.Popen(
                ["systemd-nspawn", "-q", "-D", str(merged), "--boot", "--register=no", "--keep-unit",
                 f"--network-namespace-path=/run/netns/{net.name}", "-M", name, "--console=passive",
                 "--resolv-conf=off"],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        cleanup.add(f"container {name}", c.stop)
        return c

    def stop(self, timeout_s: float = 20) -> None:
        """Power off (nspawn turns SIGTERM into an orderly shutdown), SIGKILL the lot if that takes too long."""
        if self.popen is None or self.popen.poll() is not None:
            return
        self.popen.terminate()
        try:
            self.popen.wait(timeout_s)
        except subprocess.TimeoutExpired:
            kill_netns_processes(self.net.name)  # the container's init and services
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, signal.SIGKILL)
            self.popen.wait(10)

    def ssh_args(self) -> list[str]:
        return ["ssh", "-i", str(self.ssh_key), "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
                "-o", "BatchMode=yes", "-o", "ConnectTimeout=5", "-o", "LogLevel=ERROR", f"root@{self.net.guest_ip}"]

    def ssh(self, command: str, *, timeout_s: float = 60, check: bool = True) -> subprocess.CompletedProcess[str]:
        """``command`` run by the container's shell over SSH."""
        done = subprocess.run([*self.ssh_args(), command], capture_output=True, text=True, timeout=timeout_s,
                              check=False)
        if check and done.returncode != 0:
            raise AssertionError(f"{self.name}: `{command}` exited with {done.returncode}:\n{done.stdout}{done.stderr}")
        return done

    def wait_ready(self, timeout_s: float = 60) -> None:
        """Until SSH answers and systemd has finished booting (``is-system-running`` running or degraded)."""
        deadline = time.monotonic() + timeout_s
        last = ""
        while time.monotonic() < deadline:
            if self.popen is not None and self.popen.poll() is not None:
                raise HarnessError(f"container {self.name} exited with {self.popen.returncode}:\n{self.console()}")
            done = subprocess.run([*self.ssh_args(), "systemctl is-system-running --wait"], capture_output=True,
                                  text=True, timeout=timeout_s, check=False)
            state = done.stdout.strip()
            if state in ("running", "degraded"):
                return
            last = done.stdout + done.stderr
            time.sleep(0.3)
        raise HarnessError(f"container {self.name} not up within {timeout_s} s; last: {last}\n{self.console()}")

    def console(self, lines: int = 40) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return f"--- {self.log_path} ---\n" + "\n".join(text.splitlines()[-lines:])


def _umount(path: Path) -> None:
    for _ in range(20):
        done = run(["umount", str(path)], check=False)
        if done.returncode == 0 or "not mounted" in done.stderr:
            return
        time.sleep(0.25)
    run(["umount", "-l", str(path)])


def make_ssh_key(directory: Path) -> Path:
    key = directory / "id_ed25519"
    run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "floorgate-tests", "-f", str(key)])
    return key


@contextlib.contextmanager
def containers(names: list[str], workdir: Path, *, log: Callable[[str], None] = print,
               ) -> Iterator[list[Container]]:
    """Boot one container per name (each in its own network namespace) and yield them once SSH answers; everything
    is torn down on exit, also after an error."""
    require_tools()
    for what in sweep_stale():
        log(f"removed a leftover of an earlier run: {what}")
    image = ensure_image(log=log)
    cleanup = Cleanup()
    try:
        key = make_ssh_key(workdir)
        subnet = pick_subnet()
        started: list[Container] = []
        for i, name in enumerate(names):
            machine = f"{PREFIX}-{os.getpid()}-{name}"
            net = Netns.create(machine, i, subnet, cleanup)
            started.append(Container.start(machine, image, workdir, net, key, cleanup))
        for c in started:
            c.wait_ready()
        yield started
    finally:
        problems = cleanup.run()
        if problems:
            raise HarnessError("teardown incomplete: " + "; ".join(problems))
