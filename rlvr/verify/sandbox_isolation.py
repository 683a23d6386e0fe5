"""Linux isolation primitives of the sandbox driver: resource limits, namespaces, mounts, audit hook.

Standard library only, and never imported in the sandbox: `rlvr.verify.sandbox`
compiles it with `sandbox_wire.py` and `sandbox_driver.py` on the host, and the driver
process D runs the three code objects in one namespace, this one first (D runs
``python -I -S -B``, without rlvr on its path). The layers, as D applies them
(`_driver_main` in `sandbox_driver`):

- Resource limits before any untrusted code exists: CPU seconds, address space, file
  size, open files, no core dumps (`_set_limits`). D sets them itself rather than the
  host in a `preexec_fn`: the host may be a multi-threaded trainer, where `preexec_fn`
  is unsafe, and without one `subprocess` can spawn cheaply. Memory is bounded per
  process (RLIMIT_AS), so a run's total is at most `nproc` x `memory_bytes` (no
  cgroups), and only until the deadline.
- Network, mount and pid namespaces (``unshare``; needs root or CAP_SYS_ADMIN). The new
  network namespace has only a downed loopback: nothing, not even 127.0.0.1, is
  reachable (``network="namespace"``). In the mount namespace the host's directories the
  code has no business reading are each covered by an empty tmpfs, which `sandbox_paths.host_paths`
  lists: the host's working directory, its import paths (site-packages with them: rlvr, a
  benchmark's answer key) and its temporary directories (``tempfile.gettempdir()``, /tmp,
  /var/tmp, /dev/shm: other runs, checkouts, checkpoints). So is a private directory above
  the interpreter (pyenv under /root, which W's uid could not enter). The interpreter's
  prefix is bound back in place wherever a cover hides it. Then every mount is made
  read-only, and last the scratch directory (its path, in the host's temporary directory,
  made afresh in the cover) gets a fresh size-capped tmpfs that vanishes with the namespace:
  the one writable place and the only thing left in the temporary directory
  (``filesystem="readonly"``; ``"partial"`` when a directory could not be hidden or a mount
  made read-only, with the notes saying which; `_isolate_files`). W is pid 1 of the new pid
  namespace, mounts its own /proc (host processes are invisible) and, when it exits or is
  killed, the kernel kills every process it left behind, including ones that called
  setsid(): no orphans.
- Without namespaces, sockets, ctypes and process spawning are refused by an audit hook
  installed before the untrusted code runs (``network="blocked"``, `_block_hook`; best
  effort: a hook is not a kernel boundary). Nothing is hidden then (``filesystem="open"``):
  the code reads whatever its uid may, the host's temporary directory included.
- RLIMIT_NPROC (`_nproc_limit`) does not bind root (the kernel exempts it), but it
  binds the fresh uid W drops to when the host is root, which no other process shares
  (``nproc_enforced``). As non-root, W keeps the host's uid: the limit is then the
  uid's current task count plus `nproc`, and the notes say so.
"""

import errno
import os
import sys

_CLONE_NEWNS, _CLONE_NEWPID, _CLONE_NEWNET = 0x00020000, 0x20000000, 0x40000000
_MS_RDONLY, _MS_NOSUID, _MS_NODEV, _MS_NOEXEC = 1, 2, 4, 8
_MS_REMOUNT, _MS_BIND, _MS_REC, _MS_PRIVATE = 32, 4096, 16384, 1 << 18
_PR_SET_DUMPABLE, _PR_SET_NO_NEW_PRIVS = 4, 38
# statvfs flag -> mount flag, kept when a mount is remounted read-only.
_KEEP_FLAGS = ((2, 2), (4, 4), (8, 8), (1024, 1024), (2048, 2048), (4096, 1 << 21))
# The fallback's audit hook: events and modules refused to the untrusted code.
_BLOCKED_EVENTS = ("socket.", "ctypes.", "os.exec", "os.posix_spawn", "os.spawn", "os.system",
                   "subprocess.", "pty.", "os.startfile")
_BLOCKED_MODULES = frozenset({"socket", "_socket", "ssl", "_ssl", "ctypes", "_ctypes", "subprocess",
                              "_posixsubprocess", "multiprocessing", "_multiprocessing", "asyncio", "pty"})


def _set_limits(cfg):
    import resource
    cpu = int(cfg["cpu_seconds"])
    limits = [(resource.RLIMIT_CPU, cpu, cpu + 1), (resource.RLIMIT_AS, cfg["memory_bytes"]),
              (resource.RLIMIT_FSIZE, cfg["file_bytes"]), (resource.RLIMIT_NOFILE, cfg["open_files"]),
              (resource.RLIMIT_CORE, 0)]
    for res, soft, *hard in limits:
        resource.setrlimit(res, (soft, hard[0] if hard else soft))


def _nproc_limit(cfg, uid):
    """RLIMIT_NPROC counts every task of the uid: a fresh uid gets the plain limit."""
    import resource
    n = cfg["nproc"]
    if uid is None:  # the host's own uid: add the tasks it already runs
        me = os.getuid()
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                if os.stat(f"/proc/{pid}").st_uid == me:
                    n += len(os.listdir(f"/proc/{pid}/task"))
            except OSError:
                pass
    resource.setrlimit(resource.RLIMIT_NPROC, (n, n))


def _call(libc, name, *args):
    import ctypes
    if getattr(libc, name)(*args) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{name}{args!r}: {os.strerror(err)}")


def _mount(libc, source, target, fstype, flags, data=None):
    enc = (lambda s: None if s is None else s.encode())
    _call(libc, "mount", enc(source), enc(target), enc(fstype), flags, enc(data))


def _mountpoints():
    points = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            points.append(_unoctal(line.split()[4]))
    return points


def _unoctal(path):
    """mountinfo escapes space, tab, newline and backslash as \\ooo."""
    if "\\" not in path:
        return path
    raw, out, i = path.encode(), bytearray(), 0
    while i < len(raw):
        if raw[i] == 92 and raw[i + 1:i + 4].isdigit():
            out.append(int(raw[i + 1:i + 4], 8))
            i += 4
        else:
            out.append(raw[i])
            i += 1
    return os.fsdecode(bytes(out))


def _private_dirs():
    """(prefix, its first ancestor others cannot enter) for the interpreter's prefixes."""
    out = []
    for prefix in _prefixes():
        parts = prefix.strip("/").split("/")
        private = next((d for d in ("/" + "/".join(parts[:i]) for i in range(1, len(parts) + 1))
                        if not os.stat(d).st_mode & 0o001), None)
        if private is not None:
            out.append((prefix, private))
    return out


def _prefixes():
    return sorted({os.path.realpath(sys.base_prefix), os.path.realpath(sys.base_exec_prefix)})


def _within(path, top):
    return path == top or path.startswith(top.rstrip("/") + "/")


def _makedirs(path):
    """`path` and its missing parents, each 0755 whatever the umask: W's uid must pass through."""
    missing = []
    while not os.path.lexists(path):
        missing.append(path)
        path = os.path.dirname(path)
    for d in reversed(missing):
        os.mkdir(d)
        os.chmod(d, 0o755)


def _isolate_files(libc, cfg, facts):
    """Mount namespace: the host's private, project, package and temporary directories behind
    empty tmpfs mounts, everything read-only, and a fresh tmpfs scratch dir (the cwd).

    Order matters. A cover is writable until the read-only pass, so the directories that must
    show through it can be made in it: an interpreter prefix under it (bound back from a
    descriptor opened before anything was covered) and the scratch mount point, which lies in
    the host's temporary directory, itself covered. The scratch tmpfs is mounted last, after
    the read-only pass, so it alone stays writable.
    """
    scratch = cfg["scratch"]
    _mount(libc, None, "/", None, _MS_REC | _MS_PRIVATE)
    keep = []
    try:
        for prefix in _prefixes():
            keep.append((prefix, os.open(prefix, os.O_PATH)))
        # Shortest first: a path under an earlier cover is already gone (ENOENT) unless it is
        # under a prefix bound back, where it is covered again (site-packages in the prefix).
        covers = sorted({private for _, private in _private_dirs()} | set(cfg.get("hide", ())), key=len)
        hidden, unhidden = [], []
        for path in covers:
            try:
                _mount(libc, "tmpfs", path, "tmpfs", _MS_NOSUID | _MS_NODEV | _MS_NOEXEC, "size=64k,mode=0755")
            except OSError as e:
                if e.errno != errno.ENOENT:
                    unhidden.append(f"{path} ({e.strerror})")
                continue
            hidden.append(path)
            for prefix, fd in keep:
                if _within(prefix, path):
                    _makedirs(prefix)
                    _mount(libc, f"/proc/self/fd/{fd}", prefix, None, _MS_BIND | _MS_REC)
                    facts["notes"].append(f"{path} is hidden but for the interpreter, {prefix}")
    finally:
        for _, fd in keep:
            os.close(fd)
    if hidden:
        facts["notes"].append("hidden: " + ", ".join(hidden))
    if unhidden:
        facts["notes"].append("could not hide: " + ", ".join(unhidden))
    _makedirs(scratch)
    failed = []
    for point in _mountpoints():
        try:
            flags = os.statvfs(point).f_flag
            keep_flags = sum(ms for st, ms in _KEEP_FLAGS if flags & st)
            _mount(libc, None, point, None, _MS_REMOUNT | _MS_BIND | _MS_RDONLY | keep_flags)
        except OSError as e:
            if point == "/":
                raise
            if e.errno == errno.ENOENT and any(_within(point, h) for h in hidden):
                continue  # a host mount under a cover: no path reaches it any more
            failed.append(f"{point} ({e.strerror})")
    _mount(libc, "tmpfs", scratch, "tmpfs", _MS_NOSUID | _MS_NODEV | _MS_NOEXEC,
           f"size={cfg['scratch_bytes']},mode=0700,uid={cfg['uid'] or 0},gid={cfg['uid'] or 0}")
    os.chdir(scratch)
    if failed:
        facts["notes"].append("could not make read-only: " + ", ".join(failed))
    facts["filesystem"] = "readonly" if not failed and not unhidden else "partial"


def _block_hook():
    """The fallback without namespaces: refuse sockets, ctypes, exec, signals to others."""
    for name in list(sys.modules):
        if name.split(".")[0] in _BLOCKED_MODULES:
            del sys.modules[name]
    import _signal
    import signal
    for module in (signal, _signal):  # signals by pidfd raise no audit event
        module.__dict__.pop("pidfd_send_signal", None)
    me = os.getpid()

    def hook(event, args):
        if event == "import" and str(args[0]).split(".")[0] in _BLOCKED_MODULES:
            raise PermissionError(f"sandbox: import of {args[0]} is blocked")
        if event.startswith(_BLOCKED_EVENTS) or event in ("os.kill", "os.killpg") and args[0] != me:
            raise PermissionError(f"sandbox: {event} is blocked")

    sys.addaudithook(hook)
