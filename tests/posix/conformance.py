#!/usr/bin/env python3
"""A small POSIX conformance pass, meant to be diffed between a plain directory and a gpair mount.

    python3 tests/posix/conformance.py DIR      # DIR: an empty, writable directory

Runs a fixed sequence of operations inside DIR and prints one line per check, `NAME: RESULT`.
RESULT is `ok`, a value (`mode=0o100640 size=5 nlink=1`), an errno name (`EEXIST`) or
`EXC ClassName` for an exception that is not an OSError. Nothing printed depends on inode or
device numbers, absolute times or the path of DIR, so two correct filesystems print the same:

    python3 tests/posix/conformance.py /tmp/ref > ref.txt
    python3 tests/posix/conformance.py /mnt/gpair/t > mount.txt
    diff ref.txt mount.txt

Exit code 0 when the sequence ran to the end, whatever the results; 2 on a usage error.

Compare runs made by the same user: `chown-other` says which case ran (root or not).
On Linux 6.18, ext4 (/tmp) and tmpfs (/dev/shm) print identical output; a directory's st_size
differs between them (4096 vs 40), so `desc()` leaves it out. Known to differ elsewhere:
`dir-nlink` and `rename-dir-nlink-moves` (btrfs and many FUSE filesystems report 1),
the `*xattr*` checks (tmpfs before Linux 6.6 has no user.* xattrs: EOPNOTSUPP),
`renameat2-*` (EINVAL on filesystems without RENAME_NOREPLACE / RENAME_EXCHANGE),
`unlink-dir` (EPERM on non-Linux systems).
"""

import ctypes
import errno
import fcntl
import mmap
import os
import stat
import sys
import time

RO, WO, RW = os.O_RDONLY, os.O_WRONLY, os.O_RDWR
CREAT, EXCL = os.O_CREAT, os.O_EXCL
OLD_NS = 1_000_000_123  # 2001-09-09, with a nanosecond part to catch rounding


# ---- helpers ---------------------------------------------------------------------------------

def check(name, fn):
    """Runs one check and prints `name: result`; never lets an exception escape."""
    try:
        result = fn()
        out = "ok" if result is None else str(result)
    except OSError as err:
        out = errno.errorcode.get(err.errno, f"errno={err.errno}") if err.errno else "EXC OSError"
    except Exception as err:  # noqa: BLE001 - one failing check must never stop the pass
        out = f"EXC {type(err).__name__}"
    print(f"{name}: {out}", flush=True)


def quiet(fn, *args, **kwargs):
    """A setup step; if it fails, the checks that depend on it show the failure."""
    try:
        fn(*args, **kwargs)
    except OSError:
        pass


def then(*steps):
    """Lets a lambda run several steps in order; the result is the last one."""
    return steps[-1]


def put(path, data=b"", mode=0o644):
    fd = os.open(path, WO | CREAT | os.O_TRUNC, mode)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def get(path):
    with open(path, "rb") as f:
        return f.read()


def fd_io(path, flags, fn, mode=0o644):
    """Opens path, returns fn(fd), closes."""
    fd = os.open(path, flags, mode)
    try:
        return fn(fd)
    finally:
        os.close(fd)


def mode_of(path):
    return oct(os.stat(path).st_mode)


def nlink(path):
    return os.stat(path).st_nlink


def desc(path):
    """Mode, size and link count; a directory's size is filesystem-specific, so it is left out."""
    st = os.stat(path)
    size = "" if stat.S_ISDIR(st.st_mode) else f" size={st.st_size}"
    return f"mode={oct(st.st_mode)}{size} nlink={st.st_nlink}"


def moved(src, dst_desc):
    return f"dst={dst_desc} src-exists={os.path.lexists(src)}"


# renameat2 through libc (glibc >= 2.28) or the raw syscall (316 on x86_64, 276 on aarch64).
_libc = ctypes.CDLL(None, use_errno=True)
RENAME_NOREPLACE, RENAME_EXCHANGE = 1, 2
AT_FDCWD = -100


def renameat2(src, dst, flags):
    args = (AT_FDCWD, os.fsencode(src), AT_FDCWD, os.fsencode(dst), ctypes.c_uint(flags))
    if hasattr(_libc, "renameat2"):
        rc = _libc.renameat2(*args)
    else:
        nr = {"x86_64": 316, "aarch64": 276}.get(os.uname().machine, 316)
        rc = _libc.syscall(ctypes.c_long(nr), *args)
    if rc != 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))


def main():
    if len(sys.argv) != 2:
        print(f"usage: {sys.argv[0]} DIR   (DIR: an empty, writable directory)", file=sys.stderr)
        return 2
    top = sys.argv[1]
    if not os.path.isdir(top) or os.listdir(top):
        print(f"conformance: {top} must be an existing, empty directory", file=sys.stderr)
        return 2
    os.chdir(top)  # every path below is relative, so DIR never appears in the output
    os.umask(0o022)
    none = lambda fd: None  # noqa: E731 - "just open it"

    # ---- open flags --------------------------------------------------------------------------
    check("open-creat",
          lambda: fd_io("f1", WO | CREAT, lambda fd: f"wrote={os.write(fd, b'hello')}"))
    check("stat-new-file", lambda: desc("f1"))
    check("open-excl-existing", lambda: fd_io("f1", WO | CREAT | EXCL, none))
    check("open-excl-new", lambda: fd_io("f2", WO | CREAT | EXCL, none))
    check("open-missing", lambda: fd_io("nope", RO, none))
    check("open-trunc", lambda: fd_io("f1", WO | os.O_TRUNC, lambda fd: desc("f1")))
    quiet(put, "app", b"abc")

    def append(fd):
        os.lseek(fd, 0, os.SEEK_SET)  # O_APPEND ignores the file offset
        os.write(fd, b"def")
        os.write(fd, b"gh")
        return get("app")
    check("open-append", lambda: fd_io("app", WO | os.O_APPEND, append))
    check("write-on-rdonly", lambda: fd_io("app", RO, lambda fd: os.write(fd, b"x")))
    check("read-on-wronly", lambda: fd_io("app", WO, lambda fd: os.read(fd, 1)))
    quiet(os.mkdir, "d1")
    check("open-dir-wronly", lambda: fd_io("d1", WO, none))
    check("open-directory-on-file", lambda: fd_io("app", RO | os.O_DIRECTORY, none))
    check("open-directory-on-dir", lambda: fd_io("d1", RO | os.O_DIRECTORY, none))

    # ---- read / write / offsets / truncate -----------------------------------------------------
    quiet(put, "io", b"0123456789")
    check("pread-middle", lambda: fd_io("io", RO, lambda fd: os.pread(fd, 4, 3)))
    check("pread-short-at-eof", lambda: fd_io("io", RO, lambda fd: os.pread(fd, 100, 7)))
    check("pread-past-eof", lambda: fd_io("io", RO, lambda fd: os.pread(fd, 10, 50)))
    check("pwrite-middle",
          lambda: fd_io("io", RW, lambda fd: then(os.pwrite(fd, b"XY", 4), get("io"))))
    check("read-after-seek",
          lambda: fd_io("io", RO, lambda fd: then(os.lseek(fd, 8, 0), os.read(fd, 10))))
    check("seek-end", lambda: fd_io("io", RO, lambda fd: os.lseek(fd, 0, os.SEEK_END)))

    def sparse(fd):
        os.pwrite(fd, b"Z", 3 * 4096)
        data = get("sparse")
        return f"size={len(data)} zeros={data[:-1] == bytes(3 * 4096)} last={data[-1:]!r}"
    check("sparse-write", lambda: fd_io("sparse", RW | CREAT, sparse))

    def grow(fd):
        os.ftruncate(fd, 20)
        d = get("io")
        return f"size={os.fstat(fd).st_size} head={d[:10]!r} zeros={d[10:] == bytes(10)}"
    check("ftruncate-grow", lambda: fd_io("io", RW, grow))
    check("ftruncate-shrink",
          lambda: fd_io("io", RW, lambda fd: then(os.ftruncate(fd, 3), get("io"))))
    check("truncate-path", lambda: then(os.truncate("io", 1), f"{desc('io')} data={get('io')!r}"))
    check("truncate-missing", lambda: os.truncate("nope", 0))
    check("fsync", lambda: fd_io("io", RW, os.fsync))
    check("fdatasync", lambda: fd_io("io", RW, os.fdatasync))
    check("fsync-dir", lambda: fd_io(".", RO | os.O_DIRECTORY, os.fsync))

    def two_fds():
        put("coh", b"aaaa")
        with open("coh", "r+b", buffering=0) as w, open("coh", "rb", buffering=0) as r:
            w.write(b"bb")
            return r.read()
    check("write-visible-to-other-fd", two_fds)

    def unlink_open():
        put("gone", b"still here")
        fd = os.open("gone", RO)
        try:
            os.unlink("gone")
            data = os.pread(fd, 100, 0)
            return f"data={data!r} nlink={os.fstat(fd).st_nlink} exists={os.path.lexists('gone')}"
        finally:
            os.close(fd)
    check("unlink-open-file", unlink_open)

    # ---- stat, times ---------------------------------------------------------------------------
    quiet(put, "t", b"12345")
    check("stat-uid-is-mine", lambda: os.stat("t").st_uid == os.getuid())
    check("stat-gid-is-mine", lambda: os.stat("t").st_gid == os.getgid())
    check("stat-blocks-cover-size", lambda: os.stat("t").st_blocks * 512 >= os.stat("t").st_size)

    def mtime_advances():
        os.utime("t", ns=(OLD_NS, OLD_NS))  # a known past value, so clock granularity can't hide it
        fd_io("t", WO, lambda fd: os.pwrite(fd, b"x", 0))
        return f"mtime advanced: {os.stat('t').st_mtime_ns > OLD_NS}"
    check("mtime-after-write", mtime_advances)

    def explicit():
        os.utime("t", ns=(OLD_NS, OLD_NS + 2_000_000_333))
        st = os.stat("t")
        return f"atime_ns={st.st_atime_ns} mtime_ns={st.st_mtime_ns}"
    check("utime-explicit-ns", explicit)
    check("ctime-after-utime", lambda: os.stat("t").st_ctime_ns > os.stat("t").st_mtime_ns)
    check("utime-now", lambda: then(os.utime("t"), abs(os.stat("t").st_mtime - time.time()) < 10))
    check("utime-missing", lambda: os.utime("nope"))

    # ---- chmod, chown --------------------------------------------------------------------------
    check("chmod-file", lambda: then(os.chmod("t", 0o640), desc("t")))
    check("fchmod-file", lambda: fd_io("t", RO, lambda fd: then(os.fchmod(fd, 0o600), desc("t"))))
    check("chmod-setuid", lambda: then(os.chmod("t", 0o4755), mode_of("t")))
    quiet(os.mkdir, "sd")
    check("chmod-dir-setgid-sticky", lambda: then(os.chmod("sd", 0o3775), mode_of("sd")))
    check("chmod-missing", lambda: os.chmod("nope", 0o644))

    def chown_same():
        os.chown("t", os.getuid(), os.getgid())
        st = os.stat("t")
        return f"uid-same={st.st_uid == os.getuid()} gid-same={st.st_gid == os.getgid()}"
    check("chown-same", chown_same)
    check("chown-noop", lambda: os.chown("t", -1, -1))

    def chown_other():
        if os.geteuid() != 0:
            return "case=not-root skipped"
        os.chmod("t", 0o4755)
        os.chown("t", 1234, 1234)  # Linux also clears setuid on an executable file here
        st = os.stat("t")
        return f"case=root uid={st.st_uid} gid={st.st_gid} mode={oct(st.st_mode)}"
    check("chown-other", chown_other)

    # ---- mkdir, rmdir, unlink ------------------------------------------------------------------
    check("mkdir-new", lambda: then(os.mkdir("m", 0o750), desc("m")))
    check("mkdir-exists", lambda: os.mkdir("m"))
    check("mkdir-over-file", lambda: os.mkdir("t"))
    check("mkdir-missing-parent", lambda: os.mkdir("nope/child"))
    check("dir-nlink", lambda: then(os.mkdir("m/sub"), f"nlink={nlink('m')}"))
    check("rmdir-not-empty", lambda: os.rmdir("m"))
    check("rmdir-file", lambda: os.rmdir("t"))
    check("rmdir-missing", lambda: os.rmdir("nope"))
    check("rmdir-empty", lambda: then(os.rmdir("m/sub"), f"exists={os.path.lexists('m/sub')}"))
    check("unlink-dir", lambda: os.unlink("m"))
    check("unlink-missing", lambda: os.unlink("nope"))
    check("unlink-file", lambda: then(put("u"), os.unlink("u"), f"exists={os.path.lexists('u')}"))
    check("create-in-file", lambda: put("t/child"))

    # ---- rename --------------------------------------------------------------------------------
    quiet(put, "ra", b"A")
    quiet(put, "rb", b"B")
    check("rename-file-over-file", lambda: then(os.rename("ra", "rb"), moved("ra", get("rb"))))
    for d in ("rd1", "rd2", "rd3", "rd4"):
        quiet(os.mkdir, d)
    quiet(put, "rd1/x", b"x")
    quiet(put, "rd2/y", b"y")
    check("rename-dir-over-nonempty-dir", lambda: os.rename("rd1", "rd2"))
    check("rename-dir-over-empty-dir",
          lambda: then(os.rename("rd1", "rd3"), moved("rd1", os.listdir("rd3"))))
    check("rename-file-over-dir", lambda: os.rename("rb", "rd4"))
    check("rename-dir-over-file", lambda: os.rename("rd4", "rb"))
    quiet(os.mkdir, "rd3/sub")
    check("rename-dir-into-own-subdir", lambda: os.rename("rd3", "rd3/sub/inner"))
    check("rename-same-name", lambda: then(os.rename("rb", "rb"), get("rb")))
    check("rename-missing", lambda: os.rename("nope", "nope2"))
    check("rename-across-dirs", lambda: then(os.rename("rb", "rd4/moved"), get("rd4/moved")))
    check("rename-dir-nlink-moves",
          lambda: then(os.rename("rd3/sub", "rd4/sub"), f"from={nlink('rd3')} to={nlink('rd4')}"))

    # ---- renameat2 -----------------------------------------------------------------------------
    quiet(put, "na", b"NA")
    quiet(put, "nb", b"NB")
    check("renameat2-noreplace-existing", lambda: renameat2("na", "nb", RENAME_NOREPLACE))
    check("renameat2-noreplace-new",
          lambda: then(renameat2("na", "nc", RENAME_NOREPLACE), moved("na", get("nc"))))
    check("renameat2-exchange",
          lambda: then(renameat2("nb", "nc", RENAME_EXCHANGE), f"nb={get('nb')} nc={get('nc')}"))
    check("renameat2-exchange-file-dir",
          lambda: then(renameat2("nb", "rd4", RENAME_EXCHANGE),
                       f"nb-is-dir={os.path.isdir('nb')} rd4={get('rd4')}"))
    check("renameat2-exchange-missing", lambda: renameat2("nc", "nope", RENAME_EXCHANGE))

    # ---- symlinks ------------------------------------------------------------------------------
    quiet(put, "target", b"through the link")
    check("symlink", lambda: os.symlink("target", "sl"))
    check("readlink", lambda: os.readlink("sl"))
    def lstat_symlink():
        st = os.lstat("sl")
        return f"islnk={stat.S_ISLNK(st.st_mode)} size={st.st_size}"  # size = length of target
    check("lstat-symlink", lstat_symlink)
    check("stat-through-symlink", lambda: desc("sl"))
    check("read-through-symlink", lambda: get("sl"))
    check("symlink-exists", lambda: os.symlink("x", "sl"))
    quiet(os.symlink, "no-such-target", "dangling")
    check("stat-dangling", lambda: os.stat("dangling"))
    check("lstat-dangling", lambda: stat.S_ISLNK(os.lstat("dangling").st_mode))
    check("readlink-regular-file", lambda: os.readlink("target"))
    check("open-nofollow-symlink", lambda: fd_io("sl", RO | os.O_NOFOLLOW, none))
    check("symlink-dir",
          lambda: then(os.symlink("d1", "sld"),
                       f"isdir={os.path.isdir('sld')} islink={os.path.islink('sld')}"))
    check("unlink-symlink-keeps-target",
          lambda: then(os.unlink("sld"), f"target-is-dir={os.path.isdir('d1')}"))
    check("symlink-long-target",
          lambda: then(os.symlink("a/" * 1000 + "b", "sll"), f"len={len(os.readlink('sll'))}"))

    # ---- hard links ----------------------------------------------------------------------------
    quiet(put, "h1", b"shared")
    check("link", lambda: os.link("h1", "h2"))
    check("link-nlink", lambda: f"h1={nlink('h1')} h2={nlink('h2')}")
    check("link-same-content", lambda: get("h1") == get("h2"))
    check("link-write-through-other",
          lambda: then(fd_io("h2", WO, lambda fd: os.pwrite(fd, b"S", 0)), get("h1")))
    check("link-to-dir", lambda: os.link("d1", "d1link"))
    check("link-over-existing", lambda: os.link("h1", "target"))
    check("link-unlink-one", lambda: then(os.unlink("h1"), f"{desc('h2')} data={get('h2')!r}"))

    # ---- readdir -------------------------------------------------------------------------------
    quiet(os.mkdir, "ls")
    quiet(put, "ls/file")
    quiet(os.mkdir, "ls/dir")
    quiet(os.symlink, "file", "ls/link")
    check("listdir", lambda: sorted(os.listdir("ls")))
    check("listdir-has-dots", lambda: "." in os.listdir("ls") or ".." in os.listdir("ls"))

    def scandir_types():
        entries = sorted(os.scandir("ls"), key=lambda e: e.name)
        return " ".join(f"{e.name}=dir:{e.is_dir(follow_symlinks=False)}"
                        f",file:{e.is_file(follow_symlinks=False)},link:{e.is_symlink()}"
                        for e in entries)
    check("scandir-types", scandir_types)
    check("listdir-empty", lambda: os.listdir("d1"))
    check("listdir-file", lambda: os.listdir("target"))

    def many():
        os.mkdir("many")
        for i in range(300):
            put(f"many/e{i:03d}")
        names = sorted(os.listdir("many"))
        return f"count={len(names)} first={names[0]} last={names[-1]} unique={len(set(names))}"
    check("listdir-300", many)

    def after_unlink():
        for i in range(0, 300, 2):
            os.unlink(f"many/e{i:03d}")
        names = sorted(os.listdir("many"))
        return f"count={len(names)} first={names[0]} last={names[-1]}"
    check("listdir-after-unlink-half", after_unlink)

    # ---- xattrs --------------------------------------------------------------------------------
    quiet(put, "xa")
    user_xattrs = lambda p: sorted(n for n in os.listxattr(p) if n.startswith("user."))  # noqa
    check("setxattr", lambda: os.setxattr("xa", "user.test", b"value1"))
    check("getxattr", lambda: os.getxattr("xa", "user.test"))
    check("setxattr-empty-value",
          lambda: then(os.setxattr("xa", "user.empty", b""), os.getxattr("xa", "user.empty")))
    check("listxattr", lambda: user_xattrs("xa"))
    check("setxattr-create-existing",
          lambda: os.setxattr("xa", "user.test", b"v", os.XATTR_CREATE))
    check("setxattr-replace-missing",
          lambda: os.setxattr("xa", "user.other", b"v", os.XATTR_REPLACE))
    check("setxattr-replace-existing",
          lambda: then(os.setxattr("xa", "user.test", b"v2", os.XATTR_REPLACE),
                       os.getxattr("xa", "user.test")))
    check("removexattr", lambda: then(os.removexattr("xa", "user.test"), user_xattrs("xa")))
    check("getxattr-missing", lambda: os.getxattr("xa", "user.test"))
    check("removexattr-missing", lambda: os.removexattr("xa", "user.test"))
    check("setxattr-symlink-nofollow",  # user.* is not allowed on symlinks
          lambda: os.setxattr("sl", "user.test", b"v", follow_symlinks=False))

    # ---- fallocate, statvfs --------------------------------------------------------------------
    def fallocate(fd):
        os.posix_fallocate(fd, 0, 8192)
        return f"size={os.fstat(fd).st_size} zeros={get('fa') == bytes(8192)}"
    check("posix-fallocate-grow", lambda: fd_io("fa", RW | CREAT, fallocate))
    check("posix-fallocate-inside",
          lambda: fd_io("fa", RW, lambda fd: then(os.posix_fallocate(fd, 0, 100), desc("fa"))))

    def statvfs():
        v = os.statvfs(".")
        return f"bsize>0={v.f_bsize > 0} namemax>=255={v.f_namemax >= 255}"
    check("statvfs", statvfs)

    # ---- mmap ----------------------------------------------------------------------------------
    quiet(put, "mm", b"mapped content!")

    def mmap_read(fd):
        with mmap.mmap(fd, 0, prot=mmap.PROT_READ) as m:
            return m[:] == get("mm")
    check("mmap-read", lambda: fd_io("mm", RO, mmap_read))

    def mmap_write(fd):
        with mmap.mmap(fd, 0, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ | mmap.PROT_WRITE) as m:
            m[0:6] = b"MAPPED"
            m.flush()  # msync(MS_SYNC)
        return os.pread(fd, 100, 0)
    check("mmap-write-shared", lambda: fd_io("mm", RW, mmap_write))
    check("mmap-write-seen-by-open", lambda: get("mm"))

    # ---- names ---------------------------------------------------------------------------------
    check("name-255", lambda: then(put("n" * 255), f"listed={'n' * 255 in os.listdir('.')}"))
    check("name-256", lambda: put("n" * 256))
    check("mkdir-name-256", lambda: os.mkdir("n" * 256))

    def non_utf8():
        os.mkdir("nonutf")
        put(b"nonutf/caf\xe9", b"x")  # Latin-1 bytes, not valid UTF-8
        as_str = os.fsdecode(b"nonutf/caf\xe9")  # surrogateescape, as Python programs see it
        return f"listed={os.listdir(b'nonutf')} via-str={get(as_str)!r}"
    check("name-non-utf8", non_utf8)
    check("name-utf8", lambda: then(put("caf\u00e9-\u65e5\u672c"),
                                    [n for n in sorted(os.listdir(b".")) if n.startswith(b"caf")]))
    odd = "a b\nc"
    check("name-with-space-and-newline", lambda: then(put(odd), f"listed={odd in os.listdir('.')}"))

    # ---- umask ---------------------------------------------------------------------------------
    def with_umask(mask, fn):
        old = os.umask(mask)
        try:
            return fn()
        finally:
            os.umask(old)
    check("umask-022-mkdir",
          lambda: with_umask(0o022, lambda: then(os.mkdir("um1", 0o777), mode_of("um1"))))
    check("umask-022-create",
          lambda: with_umask(0o022, lambda: then(put("um2", mode=0o666), mode_of("um2"))))
    check("umask-077-create",
          lambda: with_umask(0o077, lambda: then(put("um3", mode=0o666), mode_of("um3"))))

    # ---- access --------------------------------------------------------------------------------
    quiet(put, "acc", b"x", 0o600)
    quiet(os.chmod, "acc", 0o600)
    check("access-exists", lambda: os.access("acc", os.F_OK))
    check("access-r", lambda: os.access("acc", os.R_OK))
    check("access-w", lambda: os.access("acc", os.W_OK))
    check("access-x", lambda: os.access("acc", os.X_OK))  # False even for root: no x bit at all
    check("access-missing", lambda: os.access("nope", os.F_OK))

    # ---- special files -------------------------------------------------------------------------
    check("mkfifo", lambda: then(os.mkfifo("fifo", 0o644),
                                 f"isfifo={stat.S_ISFIFO(os.stat('fifo').st_mode)} {desc('fifo')}"))
    check("mkfifo-exists", lambda: os.mkfifo("fifo"))

    # ---- locking -------------------------------------------------------------------------------
    quiet(put, "lk", b"lock me")

    def lockf(fd):
        fcntl.lockf(fd, fcntl.LOCK_EX)
        fcntl.lockf(fd, fcntl.LOCK_UN)
    check("lockf-ex-un", lambda: fd_io("lk", RW, lockf))

    def try_flock():
        fd_io("lk", RO, lambda fd2: fcntl.flock(fd2, fcntl.LOCK_EX | fcntl.LOCK_NB))
        return "ok"

    def flock(fd):
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        try:  # another open file description must conflict
            second = try_flock()
        except OSError as err:
            second = errno.errorcode.get(err.errno, str(err.errno))
        fcntl.flock(fd, fcntl.LOCK_UN)
        return f"second-while-held={second} after-unlock={try_flock()}"
    check("flock", lambda: fd_io("lk", RW, flock))

    # ---- final listing -------------------------------------------------------------------------
    check("final-listing",
          lambda: [n if len(n) < 64 else f"<{len(n)} bytes>" for n in sorted(os.listdir(b"."))])
    return 0


if __name__ == "__main__":
    sys.exit(main())
