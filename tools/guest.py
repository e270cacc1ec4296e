"""Run a command in a fresh Linux guest that has device-mapper (this host's kernel has none).

    tools/guest [--disk 4G] [--memory 2048] [--timeout 600] -- COMMAND ...

The guest is Debian's cloud kernel (``linux-image-cloud-amd64``) under qemu with TCG
(``VMIC_GUEST_ACCEL=kvm`` for KVM). Its init is a static busybox in a small initramfs
built here (cached under ``~/.cache/vmic-guest``, rebuilt when the kernel or this file
changes): it loads the modules below, mounts the host's ``/`` over virtiofs read-only
with a tmpfs overlay for writes (so the project's ``.venv``, lvm2 and qemu-img are
simply there), mounts a read-write *work* directory at the same path as on the host,
runs the command there as root, and powers off. What comes back: the command's exit
code and its output (also in ``<work>/.guest/output``); files it writes under the work
directory stay on the host.

Inside, LVM runs without udev (``lvmlocal.conf``: LVM makes its own device nodes, scans
only the virtio disks and starts no dmeventd), each
``--disk`` is a sparse scratch file on the host seen as ``/dev/vda``, ``/dev/vdb``, ...,
and ``VMIC_IN_GUEST=1`` is set. Every run has a deadline: a guest that does not power off
in time is killed and :class:`GuestTimeout` says what the console showed last.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

KERNEL_PACKAGE = "linux-image-cloud-amd64"
#: as VMIC_GUEST_PACKAGES in tools/setup.sh (tools/test and tools/guest install them)
PACKAGES = (KERNEL_PACKAGE, "busybox-static", "cpio", "qemu-system-x86", "thin-provisioning-tools", "lvm2")
VIRTIOFSD = Path("/usr/lib/qemu/virtiofsd")
BUSYBOX = Path("/bin/busybox")
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "vmic-guest"
#: loaded with their dependencies (from modules.dep), in dependency order
MODULES = ("virtio_pci", "virtio_blk", "virtiofs", "overlay", "dm-mod", "dm-snapshot", "dm-thin-pool")
LVM_LOCAL = """\
activation {
    monitoring = 0
    udev_sync = 0
    udev_rules = 0
    verify_udev_operations = 1
}
devices {
    obtain_device_list_from_udev = 0
    global_filter = [ "a|^/dev/vd|", "r|.*|" ]
}
"""
INIT = r"""#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mkdir -p /proc /sys /dev /lower /upper /newroot
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
for module in $(cat /modules.order); do insmod "/modules/$module" || echo "vmic-guest: insmod $module failed"; done
mount -t virtiofs -o ro root /lower || { echo "vmic-guest: cannot mount the host root"; poweroff -f; }
mount -t tmpfs -o size=75%,mode=0755 upper /upper
mkdir -p /upper/data /upper/work
mount -t overlay overlay -o lowerdir=/lower,upperdir=/upper/data,workdir=/upper/work /newroot
for fs in proc sys dev; do mount --move /$fs /newroot/$fs; done
mount -t tmpfs -o mode=0755 run /newroot/run
# /tmp stays the overlay's (its writes land in the tmpfs upper anyway): a tmpfs of its own
# would hide a checkout that lives under the host's /tmp
mkdir -p /newroot/dev/pts /newroot/dev/shm
mount -t devpts devpts /newroot/dev/pts
mount -t tmpfs -o mode=1777 shm /newroot/dev/shm
mkdir -p "/newroot$vmic_work"
mount -t virtiofs work "/newroot$vmic_work" || { echo "vmic-guest: cannot mount the work directory"; poweroff -f; }
cp /lvmlocal.conf /newroot/etc/lvm/lvmlocal.conf
rm -f /newroot/etc/lvm/cache/.cache
ip link set lo up
hostname vmic-guest
echo "vmic-guest: running"
chroot /newroot /usr/bin/env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    HOME=/root TMPDIR=/tmp VMIC_IN_GUEST=1 LANG=C.UTF-8 \
    /bin/sh -c "cd '$vmic_work' && exec /bin/sh '$vmic_work/.guest/command.sh'" \
    > "/newroot$vmic_work/.guest/output" 2>&1
echo $? > "/newroot$vmic_work/.guest/rc"
sync
umount "/newroot$vmic_work"
echo "vmic-guest: done"
poweroff -f
"""


class GuestError(RuntimeError):
    """The guest could not run the command (not the command's own failure)."""


class GuestTimeout(GuestError):
    pass


@dataclass(frozen=True)
class GuestResult:
    returncode: int
    output: str
    seconds: float
    accel: str


def missing_packages() -> list[str]:
    missing = []
    for package in PACKAGES:
        status = subprocess.run(["dpkg-query", "-W", "-f=${Status}", package], capture_output=True, text=True)
        if "install ok installed" not in status.stdout:
            missing.append(package)
    return missing


def kernel() -> tuple[Path, Path]:
    """The newest cloud kernel in /boot and its modules directory."""
    candidates = sorted(Path("/boot").glob("vmlinuz-*-cloud-amd64"), key=lambda p: p.stat().st_mtime)
    for vmlinuz in reversed(candidates):
        modules = Path("/lib/modules") / vmlinuz.name.removeprefix("vmlinuz-")
        if (modules / "modules.dep").is_file():
            return vmlinuz, modules
    missing = " ".join(missing_packages()) or KERNEL_PACKAGE
    raise GuestError(f"no guest kernel: install it as root with  apt-get install -y {missing}  "
                     "(or run tools/test, which installs it)")


def load_order(modules: Path, wanted: Sequence[str]) -> list[str]:
    """Paths (relative to ``modules``) of ``wanted`` and everything they need, dependencies first."""
    deps: dict[str, list[str]] = {}
    by_name: dict[str, str] = {}
    for line in (modules / "modules.dep").read_text().splitlines():
        path, _, needs = line.partition(":")
        deps[path] = needs.split()
        by_name[Path(path).name.split(".ko")[0].replace("_", "-")] = path
    order: list[str] = []

    def visit(path: str) -> None:
        if path in order:
            return
        for dep in deps.get(path, []):
            visit(dep)
        order.append(path)

    builtin = (modules / "modules.builtin").read_text()
    for name in wanted:
        found = by_name.get(name.replace("_", "-"))
        if found is None:
            if f"/{name}.ko" in builtin or f"/{name.replace('-', '_')}.ko" in builtin:
                continue  # built into the kernel
            raise GuestError(f"the guest kernel has no module {name}")
        visit(found)
    return order


def initramfs() -> Path:
    """The init and modules as a cpio archive, cached by what goes into it."""
    vmlinuz, modules = kernel()
    order = load_order(modules, MODULES)
    key = hashlib.sha256("\0".join([vmlinuz.name, INIT, LVM_LOCAL, *order]).encode()).hexdigest()[:16]
    target = CACHE / f"initramfs-{key}.cpio"
    if target.is_file():
        return target
    if not BUSYBOX.is_file():
        raise GuestError("no static busybox: install it as root with  apt-get install -y busybox-static")
    CACHE.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=CACHE) as tmp:
        root = Path(tmp)
        for sub in ("bin", "modules"):
            (root / sub).mkdir()
        shutil.copy(BUSYBOX, root / "bin" / "busybox")
        (root / "init").write_text(INIT)
        (root / "init").chmod(0o755)
        (root / "lvmlocal.conf").write_text(LVM_LOCAL)
        names = []
        for path in order:
            shutil.copy(modules / path, root / "modules" / Path(path).name)
            names.append(Path(path).name)
        (root / "modules.order").write_text("\n".join(names) + "\n")
        files = sorted(str(p.relative_to(root)) for p in root.rglob("*"))
        archive = root / "archive.cpio"
        with open(archive, "wb") as out:
            subprocess.run(["cpio", "-o", "-H", "newc", "--quiet"], input="\n".join(files).encode(), cwd=root,
                           stdout=out, check=True)
        os.replace(archive, target)
    return target


def accelerator() -> str:
    """TCG unless ``VMIC_GUEST_ACCEL=kvm``: on this workplace's hosts /dev/kvm opens, but a
    nested KVM guest hangs before its first console line, while TCG boots in seconds."""
    return "kvm" if os.environ.get("VMIC_GUEST_ACCEL") == "kvm" else "tcg"


def _size(text: str) -> int:
    units = {"K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}
    return int(float(text[:-1]) * units[text[-1].upper()]) if text[-1:].upper() in units else int(text)


@contextlib.contextmanager
def _virtiofsd(socket: Path, source: Path, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with open(log, "ab") as out:
        proc = subprocess.Popen([str(VIRTIOFSD), f"--socket-path={socket}", "-o", f"source={source}",
                                 "-o", "sandbox=chroot", "-o", "cache=auto", "-o", "no_posix_lock"],
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 10
        while not socket.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise GuestError(f"virtiofsd did not start for {source}: {log.read_text()[-500:]}")
            time.sleep(0.02)
        yield proc
    finally:
        proc.kill()
        proc.wait()


def run(command: Sequence[str] | str, work: Path, *, disks: Sequence[str] = (), memory_mib: int = 2048,
        cpus: int = 2, timeout: float = 600) -> GuestResult:
    """Run ``command`` (argv, or a shell script) in a fresh guest with ``work`` shared read-write.

    ``disks`` are sizes ("4G") of sparse scratch disks, ``/dev/vda`` first."""
    if not VIRTIOFSD.is_file() or shutil.which("qemu-system-x86_64") is None:
        raise GuestError("qemu is missing: install it as root with  apt-get install -y qemu-system-x86")
    vmlinuz, _ = kernel()
    ramdisk = initramfs()
    work = work.resolve()
    state = work / ".guest"
    shutil.rmtree(state, ignore_errors=True)
    state.mkdir(parents=True)
    script = command if isinstance(command, str) else shlex.join(command)
    (state / "command.sh").write_text(f"set -e\n{script}\n")
    accel = accelerator()
    with tempfile.TemporaryDirectory(prefix="vmic-guest-") as tmp:
        runtime = Path(tmp)
        argv = ["qemu-system-x86_64", "-accel", accel, "-cpu", "max,-arch-capabilities" if accel == "kvm" else "max",
                "-M", "q35", "-smp", str(cpus), "-m", f"{memory_mib}M",
                "-object", f"memory-backend-memfd,id=mem,size={memory_mib}M,share=on", "-numa", "node,memdev=mem",
                "-kernel", str(vmlinuz), "-initrd", str(ramdisk),
                "-append", f"console=ttyS0 panic=-1 vmic_work={work}",
                "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
                "-serial", f"file:{runtime / 'console'}", "-nic", "none"]
        for tag in ("root", "work"):
            argv += ["-chardev", f"socket,id={tag},path={runtime / tag}.sock",
                     "-device", f"vhost-user-fs-pci,chardev={tag},tag={tag}"]
        for index, size in enumerate(disks):
            disk = runtime / f"disk{index}.img"
            with open(disk, "wb") as handle:
                handle.truncate(_size(size))
            argv += ["-drive", f"file={disk},if=virtio,format=raw,cache=none,aio=threads,discard=unmap"]
        started = time.monotonic()
        with _virtiofsd(runtime / "root.sock", Path("/"), runtime / "virtiofsd.log"), \
                _virtiofsd(runtime / "work.sock", work, runtime / "virtiofsd.log"):
            with open(runtime / "qemu.log", "wb") as out:
                qemu = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
            try:
                qemu.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                qemu.kill()
                qemu.wait()
                raise GuestTimeout(f"the guest did not finish within {timeout:.0f} s ({accel}); console:\n"
                                   f"{_tail(runtime / 'console')}\noutput:\n{_tail(state / 'output')}") from None
        seconds = time.monotonic() - started
        rc = state / "rc"
        if not rc.is_file():
            raise GuestError(f"the guest stopped without running the command (qemu exit {qemu.returncode}); "
                             f"console:\n{_tail(runtime / 'console')}\nqemu: {_tail(runtime / 'qemu.log')}")
        return GuestResult(int(rc.read_text().strip() or "255"), (state / "output").read_text(errors="replace"),
                           seconds, accel)


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(none)"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tools/guest", description=__doc__.split("\n\n")[0])
    parser.add_argument("--disk", action="append", default=[], help="a scratch disk of this size (repeatable)")
    parser.add_argument("--memory", type=int, default=2048, help="MiB (default 2048)")
    parser.add_argument("--cpus", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=600, help="seconds (default 600)")
    parser.add_argument("--work", type=Path, default=Path.cwd(), help="shared read-write (default: here)")
    parser.add_argument("command", nargs="+")
    args = parser.parse_args(argv)
    try:
        result = run(args.command, args.work, disks=args.disk, memory_mib=args.memory, cpus=args.cpus,
                     timeout=args.timeout)
    except GuestError as exc:
        print(f"tools/guest: error: {exc}", file=sys.stderr)
        return 2
    sys.stdout.write(result.output)
    print(f"tools/guest: exit {result.returncode} after {result.seconds:.1f} s ({result.accel})", file=sys.stderr)
    return result.returncode


if __name__ == "__main__":
    sys.exit(main())
