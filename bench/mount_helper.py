"""Data generation, timed reads and the report of bench/mount.sh (see its header). Python 3.9+,
standard library only; shares its statistics, formatting and `timed` with migrate_helper.py.

    mount_helper.py gen SHARE LARGE_MIB SMALL_FILES       # writes the data set, prints its facts
    mount_helper.py small-paths SMALL_FILES               # relative paths of the small files
    mount_helper.py read-small ROOT SMALL_FILES [md5]     # reads every small file below ROOT
    mount_helper.py ttfb PATH                             # open + 1-byte O_DIRECT read, ms
    mount_helper.py presign ENDPOINT AK SK BUCKET KEY     # presigned GET URL (SigV4, 1 hour)
    mount_helper.py get-small ENDPOINT AK SK BUCKET PREFIX SMALL_FILES  # plain GETs of them
    mount_helper.py dd-bytes FILE                         # bytes dd said it copied (its stderr)
    mount_helper.py west-reads FILE                       # gpair-mount's exit summary of GETs
    mount_helper.py report FILE.jsonl

The data is deterministic: the large and the local file each come from a generator with its own
seed, small file i from one seeded with i (sizes uniform in 4..64 KiB from one more generator).
`gen` prints the md5 of the large file and of all small files in order, which the bench compares
with what it reads through gpair-mount.
"""
import datetime
import hashlib
import hmac
import json
import mmap
import os
import random
import re
import resource
import statistics
import sys
import time
import urllib.parse

from migrate_helper import CHUNK, fmt, med, cell, timed, goals_block

SMALL_MIN = 4 << 10
SMALL_MAX = 64 << 10
PER_DIR = 100
SIZE_SEED = 20261122
SMALL_SEED = 0x5EED1000
LARGE_SEED = 0x1A46E100
LOCAL_SEED = 0x10CA1000
LARGE = "large/big"
LOCAL = "local/big-local"


def small_layout(n):
    """(relative path, size, seed) of every small file."""
    r = random.Random(SIZE_SEED)
    return [("small/d%03d/f%05d" % (i // PER_DIR, i), r.randint(SMALL_MIN, SMALL_MAX),
             SMALL_SEED + i) for i in range(n)]


def write(path, size, seed, md5=None):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    r = random.Random(seed)
    with open(path, "wb") as f:
        left = size
        while left:
            b = r.randbytes(min(CHUNK, left))
            f.write(b)
            if md5 is not None:
                md5.update(b)
            left -= len(b)


def gen(share, large_mib, small_n):
    t0 = time.monotonic()
    large = hashlib.md5()
    write(os.path.join(share, LARGE), large_mib << 20, LARGE_SEED, large)
    write(os.path.join(share, LOCAL), large_mib << 20, LOCAL_SEED)
    small = hashlib.md5()
    sizes = []
    for rel, size, seed in small_layout(small_n):
        write(os.path.join(share, rel), size, seed, small)
        sizes.append(size)
    print(json.dumps({
        "large_key": LARGE, "large_bytes": large_mib << 20, "large_md5": large.hexdigest(),
        "local_key": LOCAL, "local_bytes": large_mib << 20,
        "small_files": small_n, "small_bytes": sum(sizes), "small_md5": small.hexdigest(),
        "small_median": statistics.median(sizes) if sizes else None,
        "small_min": min(sizes) if sizes else None, "small_max": max(sizes) if sizes else None,
        "gen_secs": round(time.monotonic() - t0, 2)}))


def read_small(root, n, with_md5=False):
    """Reads the small files below ROOT in the generator's order, each open → EOF → close;
    prints seconds, files, bytes, the mean time in open(2) and the reader's CPU seconds (and
    the md5 of all bytes)."""
    paths = [os.path.join(root, rel) for rel, _, _ in small_layout(n)]
    md5 = hashlib.md5() if with_md5 else None
    buf = bytearray(1 << 20)
    total = 0
    in_open = 0.0
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.monotonic()
    for p in paths:
        t = time.monotonic()
        fd = os.open(p, os.O_RDONLY)
        in_open += time.monotonic() - t
        try:
            while True:
                k = os.readv(fd, [buf])
                if not k:
                    break
                total += k
                if md5 is not None:
                    md5.update(memoryview(buf)[:k])
        finally:
            os.close(fd)
    secs = time.monotonic() - t0
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    out = {"secs": secs, "files": len(paths), "bytes_read": total,
           "open_ms_per_file": in_open * 1000 / max(len(paths), 1),
           "client_cpu_s": round(r1.ru_utime - r0.ru_utime + r1.ru_stime - r0.ru_stime, 3)}
    if md5 is not None:
        out["md5"] = md5.hexdigest()
    print(json.dumps(out))


def ttfb(path):
    """Milliseconds from open(O_DIRECT) to the first byte read into a page-aligned buffer, and
    the same split into open and read. One byte where the file system takes it, else one page
    (O_DIRECT's alignment)."""
    buf = mmap.mmap(-1, 4096)
    t0 = time.perf_counter()
    fd = os.open(path, os.O_RDONLY | os.O_DIRECT)
    topen = time.perf_counter()
    try:
        size = 1
        try:
            n = os.readv(fd, [memoryview(buf)[:1]])
        except OSError as e:
            if e.errno != 22:  # EINVAL: the length must be aligned
                raise
            size = 4096
            n = os.readv(fd, [buf])
        t1 = time.perf_counter()
    finally:
        os.close(fd)
    if n < 1:
        raise RuntimeError("%s: read returned %d bytes" % (path, n))
    print(json.dumps({"ms": (t1 - t0) * 1000, "open_ms": (topen - t0) * 1000,
                      "read_ms": (t1 - topen) * 1000, "read_size": size, "first_byte": buf[0]}))


def presign(endpoint, ak, sk, bucket, key, expires=3600):
    """A path-style SigV4 presigned GET URL (region us-east-1)."""
    u = urllib.parse.urlsplit(endpoint)
    now = datetime.datetime.now(datetime.timezone.utc)
    amz_date, day = now.strftime("%Y%m%dT%H%M%SZ"), now.strftime("%Y%m%d")
    scope = "%s/us-east-1/s3/aws4_request" % day
    path = "/" + urllib.parse.quote(bucket, safe="") + "/" + urllib.parse.quote(key, safe="/~")
    q = {"X-Amz-Algorithm": "AWS4-HMAC-SHA256", "X-Amz-Credential": "%s/%s" % (ak, scope),
         "X-Amz-Date": amz_date, "X-Amz-Expires": str(expires), "X-Amz-SignedHeaders": "host"}
    query = "&".join("%s=%s" % (urllib.parse.quote(k, safe="~"), urllib.parse.quote(v, safe="~"))
                     for k, v in sorted(q.items()))
    canonical = "\n".join(["GET", path, query, "host:" + u.netloc, "", "host", "UNSIGNED-PAYLOAD"])
    to_sign = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope,
                         hashlib.sha256(canonical.encode()).hexdigest()])
    k = ("AWS4" + sk).encode()
    for part in (day, "us-east-1", "s3", "aws4_request"):
        k = hmac.new(k, part.encode(), hashlib.sha256).digest()
    sig = hmac.new(k, to_sign.encode(), hashlib.sha256).hexdigest()
    print("%s://%s%s?%s&X-Amz-Signature=%s" % (u.scheme, u.netloc, path, query, sig))


def get_small(endpoint, ak, sk, bucket, prefix, n):
    """GETs the small files' objects one after the other over one keep-alive connection
    (presigned URLs made beforehand): the gateway's own rate, with no file system around it."""
    import contextlib
    import http.client
    import io
    urls = []
    for rel, _, _ in small_layout(n):
        with contextlib.redirect_stdout(io.StringIO()) as o:
            presign(endpoint, ak, sk, bucket, prefix + "/" + rel)
        u = urllib.parse.urlsplit(o.getvalue().strip())
        urls.append(u.path + "?" + u.query)
    host = urllib.parse.urlsplit(endpoint).netloc
    total = 0
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.monotonic()
    c = http.client.HTTPConnection(host, timeout=60)
    for u in urls:
        c.request("GET", u)
        r = c.getresponse()
        body = r.read()
        if r.status != 200:
            raise RuntimeError("GET %s: %d %s" % (u.split("?")[0], r.status, body[:200]))
        total += len(body)
    c.close()
    secs = time.monotonic() - t0
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    print(json.dumps({"secs": secs, "files": n, "bytes_read": total,
                      "client_cpu_s": round(r1.ru_utime - r0.ru_utime + r1.ru_stime - r0.ru_stime, 3)}))


def dd_bytes(path):
    m = re.search(r"^(\d+) bytes", open(path).read(), re.M)
    print(m.group(1) if m else -1)


def west_reads(path):
    """{"west_gets", "west_bytes"} from gpair-mount's exit line, {} if it has none."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", open(path, errors="replace").read())
    m = re.findall(r"west reads: (\d+) ranged GETs, (\d+) bytes", text)
    print(json.dumps({"west_gets": int(m[-1][0]), "west_bytes": int(m[-1][1])} if m else {}))


# ------------------------------------------------------------------------ report

TOOLS = [("gpair", "gpair-mount"),
         ("gpair-nopt", "gpair-mount --no-passthrough"),
         ("s3fs", "s3fs (stock)"),
         ("rclone-default", "rclone mount (defaults)"),
         ("rclone-tuned", "rclone mount (tuned)"),
         ("curl", "plain GET (curl, presigned)"),
         ("http", "plain GETs (python http.client, one connection)"),
         ("direct", "direct from the share (page cache)")]
PARTS = [("large", "1. cold sequential read of the offloaded large file", "mb_per_s", "MB/s"),
         ("ttfb", "2. time to first byte of the offloaded large file (cold)", "ms", "ms"),
         ("small", "3. cold read of the offloaded small files", "files_per_s", "files/s"),
         ("local", "4. warm re-read of the local (not offloaded) large file", "mb_per_s", "MB/s")]


def gets_cell(vals):
    vals = [v for v in vals if v is not None]
    if not vals:
        return "-"
    lo, hi = min(vals), max(vals)
    return "%d" % lo if lo == hi else "%d..%d" % (lo, hi)


def report(path):
    lines = [json.loads(l) for l in open(path) if l.strip()]
    by = {}
    for l in lines:
        by.setdefault((l["part"], l["tool"]), []).append(l)
    out, verdicts = [], []
    for part, title, key, unit in PARTS:
        if not any(k[0] == part for k in by):
            continue
        any_l = next(l for l in lines if l["part"] == part)
        what = ""
        if "bytes" in any_l:
            what = " (%s%.1f MiB)" % ("%d files, " % any_l["files"] if any_l.get("files") else "",
                                      any_l["bytes"] / 2**20)
        out.append("%s%s:" % (title, what))
        out.append("")
        if part == "ttfb":
            out.append("| tool | median ms | min ms | max ms | open ms | read ms | samples | read size |")
            out.append("|---|---|---|---|---|---|---|---|")
        else:
            out.append("| tool | %s | secs | mount CPU s | gateway CPU s | client CPU s | "
                       "west GETs | load avg |" % unit)
            out.append("|---|---|---|---|---|---|---|---|")
        meds = {}
        for t, label in TOOLS:
            ls = by.get((part, t))
            if not ls:
                continue
            col = lambda f: [f(x) for x in ls]
            meds[t] = med(col(lambda x: x[key]))[0]
            if part == "ttfb":
                v = col(lambda x: x["ms"])
                out.append("| %s | %s | %s | %s | %s | %s | %d | %s |" % (
                    label, fmt(meds[t]), fmt(min(v)), fmt(max(v)),
                    fmt(med(col(lambda x: x.get("open_ms")))[0]),
                    fmt(med(col(lambda x: x.get("read_ms")))[0]), len(v),
                    "/".join(sorted({str(x.get("read_size")) for x in ls}))))
            else:
                out.append("| %s | %s | %s | %s | %s | %s | %s | %s |" % (
                    label, cell(col(lambda x: x[key])), cell(col(lambda x: x["secs"])),
                    cell(col(lambda x: x.get("mount_cpu_s"))),
                    cell(col(lambda x: x.get("gateway_cpu_s"))),
                    cell(col(lambda x: x.get("client_cpu_s"))),
                    gets_cell(col(lambda x: x.get("west_gets"))),
                    " / ".join(x.get("loadavg", "?").split()[0]
                               for x in sorted(ls, key=lambda x: x["round"])
                               if x.get("rep", 1) == 1)))
        out.append("")
        g = meds.get("gpair")
        peers = [(t, meds[t]) for t in ("s3fs", "rclone-default", "rclone-tuned") if t in meds]
        if part == "small":
            opens = ["%s %s" % (t, fmt(med([x.get("open_ms_per_file") for x in by[(part, t)]])[0]))
                     for t, _ in TOOLS if (part, t) in by
                     and med([x.get("open_ms_per_file") for x in by[(part, t)]])[0] is not None]
            if opens:
                out.append("mean ms per file spent in open(2), medians: " + ", ".join(opens))
                out.append("")
        out.append("```")
        if part in ("large", "small") and g and peers:
            best = max(peers, key=lambda tm: tm[1])
            r = g / best[1]
            out.append("gpair / max(s3fs, rclone) %s = %s / %s (%s) = %.2f" % (
                unit, fmt(g), fmt(best[1]), best[0], r))
            if part == "large" and meds.get("curl"):
                out.append("gpair / plain GET MB/s = %s / %s = %.2f" % (
                    fmt(g), fmt(meds["curl"]), g / meds["curl"]))
            if part == "small" and meds.get("http"):
                out.append("gpair / plain GETs files/s = %s / %s = %.2f" % (
                    fmt(g), fmt(meds["http"]), g / meds["http"]))
            if part == "large":
                verdicts.append("%s cold sequential read: MB/s >= 3x max(s3fs, rclone): %.2fx "
                                "(%s vs %s MB/s, %s)" % ("PASS" if r >= 3 else "MISS", r, fmt(g),
                                                         fmt(best[1]), best[0]))
            if part == "small":
                verdicts.append("(no goal) cold small-file read: %.2fx max(s3fs, rclone) "
                                "(%s vs %s files/s, %s)" % (r, fmt(g), fmt(best[1]), best[0]))
        if part == "ttfb" and g is not None:
            for t, m in peers:
                out.append("%s / gpair median ms = %s / %s = %.1f" % (t, fmt(m), fmt(g), m / g))
            if meds.get("curl"):
                out.append("plain ranged GET of byte 0 (curl time_starttransfer, cold gateway): "
                           "median %s ms; gpair - that = %s ms" % (
                               fmt(meds["curl"]), fmt(g - meds["curl"])))
            verdicts.append("%s time to first byte: median < 5 ms: %s ms" % (
                "PASS" if g < 5 else "MISS", fmt(g)))
        if part == "local" and g and meds.get("direct"):
            r = g / meds["direct"]
            out.append("gpair-mount / direct MB/s = %s / %s = %.2f" % (fmt(g), fmt(meds["direct"]), r))
            if meds.get("gpair-nopt"):
                out.append("gpair-mount --no-passthrough / direct MB/s = %s / %s = %.2f" % (
                    fmt(meds["gpair-nopt"]), fmt(meds["direct"]), meds["gpair-nopt"] / meds["direct"]))
            verdicts.append("%s warm local re-read: MB/s >= 0.9x direct: %.2fx (%s vs %s MB/s)" % (
                "PASS" if r >= 0.9 else "MISS", r, fmt(g), fmt(meds["direct"])))
        out.append("```")
        out.append("")
    rounds = max([l["round"] for l in lines if l["part"] != "ttfb"] or [0])
    loads = [float(l["loadavg"].split()[0]) for l in lines if l.get("loadavg")]
    out.append("Medians over %d round(s) (time to first byte: over its samples; warm re-read: over "
               "rounds x reps); ±x%% = half the "
               "min-max spread relative to the median; MB = 10^6 bytes; CPU s = CPU seconds of the "
               "FUSE process, the gateway and the reader during the read; west GETs = ranged GETs "
               "gpair-mount made (its exit summary); load avg = 1-minute load average when the "
               "read started, round by round%s." % (
                   rounds, " (%.2f..%.2f over the run)" % (min(loads), max(loads)) if loads else ""))
    out.extend(goals_block(verdicts, "(nothing to compare)"))
    print("\n".join(out))


if __name__ == "__main__":
    cmd, args = sys.argv[1], sys.argv[2:]
    try:
        if cmd == "gen":
            gen(args[0], int(args[1]), int(args[2]))
        elif cmd == "small-paths":
            print("\n".join(rel for rel, _, _ in small_layout(int(args[0]))))
        elif cmd == "read-small":
            read_small(args[0], int(args[1]), len(args) > 2 and args[2] == "md5")
        elif cmd == "ttfb":
            ttfb(args[0])
        elif cmd == "presign":
            presign(*args[:5])
        elif cmd == "get-small":
            get_small(args[0], args[1], args[2], args[3], args[4], int(args[5]))
        elif cmd == "dd-bytes":
            dd_bytes(args[0])
        elif cmd == "west-reads":
            west_reads(args[0])
        elif cmd == "timed":
            timed(args[0], args[1], args[2:])
        elif cmd == "report":
            report(args[0])
        else:
            raise SystemExit("unknown helper command " + cmd)
    except (RuntimeError, OSError) as e:
        print("mount bench: %s" % e, file=sys.stderr)
        sys.exit(1)
