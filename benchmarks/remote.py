"""Remote reads over loopback: gds_zarr against zarr's ObjectStore (obstore) and FsspecStore
(s3fs) and tensorstore's s3 kvstore, same data, same servers, same run.

    python -m benchmarks.remote [--quick] [--latency-ms 20] [--repeat N] [--out DIR]

Everything runs on this machine, on 127.0.0.1: the arrays are served over plain HTTP by nginx
(Debian's ``nginx-light``, which ``bash ci/bench_remote.sh`` installs; without it, the Range
server of tests/_servers.py) and over S3 by ``--s3-server``: ``nginx`` (the default where nginx
is installed) answers S3's path-style ``GET``/``HEAD`` of ``/<bucket>/<key>`` with ranges from
the same files, and every listing with an empty ``ListBucketResult`` (reads never list; it does
not check signatures), so the S3 rows measure the clients, not the server; ``moto`` is moto's
S3 server (the one the tests use), a Python server whose own CPU cost per request dominates
the S3 rows on a small machine. Every reader talks to its server through a forwarding proxy
that counts requests and, in the latency runs, delays each request by a fixed time before
forwarding it (a far-away bucket on a fast link: what batching and concurrency are worth).
Each case is run with no added latency and with ``--latency-ms`` (default 20 ms).

Readers: over HTTP, gds_zarr (``GDSStore("http://...")``), zarr's ObjectStore(HTTPStore),
zarr's FsspecStore (aiohttp) and tensorstore's http kvstore; over S3, gds_zarr, zarr's
ObjectStore(S3Store), FsspecStore (s3fs) and tensorstore's s3 kvstore. zarr's peers use zarr's
own pipeline, gds_zarr its own; every library runs with its defaults.

Cases (float32, zstd level 1, written once by zarr itself):

* ``sharded``: 2048x2048 in 512x512 shards of 128x128 chunks, whole array (16 shards, 256 chunks);
* ``small``: 1024x1024 in 64x64 chunks, unsharded, whole array (256 objects);
* ``windows``: 8 windows of 256x256 at random places of ``sharded``, read one after another.

The table gives each reader's median time, MB/s of decoded data, requests per read (counted by
the proxy) and gds_zarr's speed-up over the best peer. moto is a Python server and this machine
may be shared: absolute times are noisy, the request counts are exact, and the 20 ms runs are
dominated by latency (round trips), so their ratios are the meaningful figures. Results go to
``benchmarks/results/<date>_<time>_<machine>_remote.{md,json}``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
BUCKET = "gds-zarr-bench"
KEY_ID, SECRET, REGION = "AKIDBENCH", "bench-secret", "us-east-1"
DEFAULT_PIPELINE = "zarr.core.codec_pipeline.BatchedCodecPipeline"

Reader = Callable[[str, Any], np.ndarray]


def _servers() -> Any:
    sys.path.insert(0, str(REPO / "tests"))
    import _servers

    return _servers


def _cases(quick: bool, tiny: bool = False) -> dict[str, dict[str, Any]]:
    # tiny: the test suite's smoke run (same structure: 4 shards of 16 chunks, 16 objects).
    n = 256 if tiny else 1024 if quick else 2048
    k = 4 if tiny else 1
    return {
        "sharded": {"shape": (n, n), "chunks": (128 // k, 128 // k),
                    "shards": (512 // k, 512 // k), "select": "all"},
        "small": {"shape": (n // 2, n // 2) if quick or tiny else (1024, 1024),
                  "chunks": (64 // k, 64 // k), "shards": None, "select": "all"},
        "windows": {"array": "sharded", "windows": 2 if tiny else 4 if quick else 8,
                    "edge": 256 // k},
    }


def _write(cases: dict[str, dict[str, Any]], moto: str | None,
           work: Path) -> dict[str, np.ndarray]:
    """Write every array under ``work`` with zarr (and upload it to moto's bucket when
    ``moto`` is its endpoint); the data, by case."""
    import obstore
    import zarr
    import zarr.codecs as zc
    from obstore.store import S3Store

    client = None if moto is None else S3Store(
        BUCKET, endpoint=moto, access_key_id=KEY_ID, secret_access_key=SECRET, region=REGION,
        client_options={"allow_http": True})
    out = {}
    rng = np.random.default_rng(0)
    for name, c in cases.items():
        if "shape" not in c:
            continue
        data = rng.standard_normal(c["shape"]).astype("f4").cumsum(axis=1)  # compressible
        path = work / f"{name}.zarr"
        with warnings.catch_warnings(), zarr.config.set({"codec_pipeline.path": DEFAULT_PIPELINE}):
            warnings.simplefilter("ignore")
            z = zarr.create_array(zarr.storage.LocalStore(path), shape=data.shape, dtype="f4",
                                  chunks=c["chunks"], shards=c["shards"],
                                  compressors=zc.ZstdCodec(level=1))
            z[...] = data
        for f in path.rglob("*") if client is not None else ():
            if f.is_file():
                obstore.put(client, f"{name}.zarr/{f.relative_to(path).as_posix()}",
                            f.read_bytes())
        out[name] = data
    return out


# ---------------------------------------------------------------- servers


#: nginx's answer to any S3 listing (``GET /<bucket>?list-type=2...``): no keys. Reading an
#: array never needs a listing; s3fs lists once when a ``HEAD`` of a key says 404 (v2
#: metadata probes), to tell a missing key from a "directory".
_EMPTY_LISTING = ('<?xml version="1.0" encoding="UTF-8"?><ListBucketResult '
                  'xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Name>' + BUCKET
                  + '</Name><KeyCount>0</KeyCount><MaxKeys>1000</MaxKeys>'
                  '<IsTruncated>false</IsTruncated></ListBucketResult>')


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class _Nginx:
    """nginx serving ``root`` on a free loopback port, in the foreground of a child process;
    with ``s3=True`` also as a read-only S3 endpoint (``s3_url``): bucket ``BUCKET`` is
    ``root``, path-style keys are files under it, every listing is empty."""

    def __init__(self, root: Path, work: Path, *, s3: bool = False) -> None:
        import subprocess

        port = _free_port()
        temps = " ".join(f"{k}_temp_path {work}/{k};" for k in
                         ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
        servers = f"  server {{ listen 127.0.0.1:{port}; root {root}; }}\n"
        self.s3_url: str | None = None
        if s3:
            s3_port = _free_port()
            s3_root = work / "s3-root"
            s3_root.mkdir(exist_ok=True)
            (s3_root / BUCKET).symlink_to(root, target_is_directory=True)
            servers += (
                f"  server {{ listen 127.0.0.1:{s3_port}; root {s3_root};\n"
                f"    location ~ ^/[^/]+/?$ {{ default_type application/xml;\n"
                f"      return 200 '{_EMPTY_LISTING}'; }} }}\n")
            self.s3_url = f"http://127.0.0.1:{s3_port}"
        conf = work / "nginx.conf"
        conf.write_text(
            f"daemon off; master_process off; worker_processes 1; pid {work}/nginx.pid;\n"
            f"error_log {work}/error.log;\nevents {{ worker_connections 4096; }}\n"
            f"http {{ access_log off; keepalive_requests 1000000; {temps}\n{servers}}}\n")
        self.proc = subprocess.Popen(["nginx", "-c", str(conf), "-p", str(work)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.url = f"http://127.0.0.1:{port}"
        import urllib.error
        import urllib.request

        for _ in range(100):  # until it answers (a 404 for / is an answer)
            try:
                urllib.request.urlopen(self.url, timeout=1)
                break
            except urllib.error.HTTPError:
                break
            except OSError:
                time.sleep(0.05)

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)


def _have_nginx() -> bool:
    import shutil

    return shutil.which("nginx") is not None


# ---------------------------------------------------------------- readers


def _s3_options(endpoint: str) -> dict[str, Any]:
    return {"endpoint": endpoint, "access_key_id": KEY_ID, "secret_access_key": SECRET,
            "region": REGION}


def _gds_zarr(kind: str, url: str) -> Callable[[str], Any]:
    import zarr

    import gds_zarr

    if kind == "http":
        return lambda name: zarr.open_array(gds_zarr.GDSStore(f"{url}/{name}.zarr"), mode="r")
    return lambda name: zarr.open_array(
        gds_zarr.GDSStore(f"s3://{BUCKET}/{name}.zarr", read_only=True,
                          storage_options=_s3_options(url)), mode="r")


def _zarr_obstore(kind: str, url: str) -> Callable[[str], Any]:
    import zarr
    from obstore.store import HTTPStore, S3Store
    from zarr.storage import ObjectStore

    def open_(name: str) -> Any:
        if kind == "http":
            store = HTTPStore.from_url(f"{url}/{name}.zarr", client_options={"allow_http": True})
        else:
            store = S3Store(BUCKET, prefix=f"{name}.zarr", client_options={"allow_http": True},
                            **_s3_options(url))
        return zarr.open_array(ObjectStore(store, read_only=True), mode="r")

    return open_


def _zarr_fsspec(kind: str, url: str) -> Callable[[str], Any]:
    import zarr
    from zarr.storage import FsspecStore

    if kind == "http":
        import aiohttp  # noqa: F401 - a missing peer is reported, not dropped

        return lambda name: zarr.open_array(
            FsspecStore.from_url(f"{url}/{name}.zarr", read_only=True,
                                 storage_options={"asynchronous": True}), mode="r")
    import s3fs  # noqa: F401

    opts = {"key": KEY_ID, "secret": SECRET, "endpoint_url": url,
            "client_kwargs": {"region_name": REGION}, "asynchronous": True}
    return lambda name: zarr.open_array(
        FsspecStore.from_url(f"s3://{BUCKET}/{name}.zarr", storage_options=opts,
                             read_only=True), mode="r")


def _tensorstore(kind: str, url: str) -> Callable[[str], Any]:
    import tensorstore as ts

    os.environ.update({"AWS_ACCESS_KEY_ID": KEY_ID, "AWS_SECRET_ACCESS_KEY": SECRET})

    class _Array:
        def __init__(self, name: str) -> None:
            kv: dict[str, Any] = (
                {"driver": "http", "base_url": f"{url}/{name}.zarr/"} if kind == "http" else
                {"driver": "s3", "bucket": BUCKET, "path": f"{name}.zarr/", "endpoint": url,
                 "aws_region": REGION, "aws_credentials": {"type": "environment"}})
            self.t = ts.open({"driver": "zarr3", "kvstore": kv}, read=True).result()

        def __getitem__(self, sel: Any) -> np.ndarray:
            return np.asarray(self.t[sel].read().result())

    return _Array


READERS: dict[str, Callable[[str, str], Callable[[str], Any]]] = {
    "gds_zarr": _gds_zarr, "zarr_obstore": _zarr_obstore, "zarr_fsspec": _zarr_fsspec,
    "tensorstore": _tensorstore,
}


def _selections(case: dict[str, Any], shape: tuple[int, ...]) -> list[Any]:
    if case.get("select") == "all":
        return [(slice(None),) * len(shape)]
    rng = np.random.default_rng(1)
    e = case["edge"]
    out = []
    for _ in range(case["windows"]):
        r, c = (int(rng.integers(0, s - e)) for s in shape)
        out.append((slice(r, r + e), slice(c, c + e)))
    return out


def _pipeline(reader: str) -> str:
    return "gds_zarr.GDSCodecPipeline" if reader == "gds_zarr" else DEFAULT_PIPELINE


def run(quick: bool, latency_ms: float, repeat: int, readers: list[str],
        out_dir: Path, *, tiny: bool = False, s3_server: str = "auto") -> Path:
    """Run every case and reader; write the table and the JSON; return the .md path
    (``tiny``: arrays 16x smaller than ``quick``, for the test suite; ``s3_server``: "nginx",
    "moto", or "auto" for nginx where it is installed)."""
    import contextlib

    from benchmarks.machine import cores, cpu_model, load_average, machine_slug, versions

    servers = _servers()
    cases = _cases(quick, tiny)
    records: list[dict[str, Any]] = []
    load_start = load_average()
    if s3_server == "auto":
        s3_server = "nginx" if _have_nginx() else "moto"
    if s3_server == "nginx" and not _have_nginx():
        raise RuntimeError("--s3-server nginx: nginx is not installed (bash ci/bench_remote.sh "
                           "installs it)")
    with contextlib.ExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        (work / "data").mkdir()
        moto = None
        if s3_server == "moto":
            moto = stack.enter_context(servers.start_moto(subprocess=True))
            servers.create_bucket(moto, BUCKET)
        data = _write(cases, moto, work / "data")
        http: Any
        if _have_nginx():
            http = _Nginx(work / "data", work, s3=s3_server == "nginx")
        else:
            http = servers.RangeServer(work / "data")
        stack.callback(http.close)
        s3_endpoint = moto or http.s3_url
        for kind, target in (("http", http.url), ("s3", s3_endpoint)):
            for delay in (0.0, latency_ms / 1000):
                proxy = servers.Proxy(target, delay=delay)
                try:
                    records += _run_readers(kind, proxy, delay, readers, cases, data, repeat)
                finally:
                    proxy.close()
    server_names = {"http": "nginx" if isinstance(http, _Nginx) else "Python Range server",
                    "s3": "moto" if moto else "nginx (S3 path-style GET/HEAD, empty listings)"}
    from importlib import metadata

    vers = versions()
    for dist in ("obstore", "s3fs", "aiohttp", "moto"):  # the remote peers and servers
        try:
            vers[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    if isinstance(http, _Nginx):
        import subprocess

        out = subprocess.run(["nginx", "-v"], capture_output=True, text=True)
        vers["nginx"] = out.stderr.strip().rpartition("/")[2]
    meta = {"machine": f"{cpu_model()}, {cores()} cores", "load_start": load_start,
            "servers": server_names,
            "load_end": load_average(), "versions": vers, "repeat": repeat,
            "quick": quick, "latency_ms": latency_ms}
    stamp = time.strftime("%Y-%m-%d_%H%M%S")
    out_dir.mkdir(parents=True, exist_ok=True)
    base = out_dir / f"{stamp}_{machine_slug(None)}_remote{'_quick' if quick else ''}"
    base.with_suffix(".json").write_text(json.dumps({"meta": meta, "records": records},
                                                    indent=1, default=str))
    base.with_suffix(".md").write_text(_markdown(records, meta, cases))
    return base.with_suffix(".md")


def _run_readers(kind: str, proxy: Any, delay: float, readers: list[str],
                 cases: dict[str, dict[str, Any]], data: dict[str, np.ndarray],
                 repeat: int) -> list[dict[str, Any]]:
    """Every reader on every case through ``proxy``; one record each."""
    import zarr

    import gds_zarr

    records: list[dict[str, Any]] = []
    base = {"server": kind, "latency_ms": delay * 1000}
    for rname in readers:
        try:
            opener = READERS[rname](kind, proxy.url)
        except ImportError as e:
            records.append({**base, "reader": rname, "error": f"not installed ({e.name})"})
            continue
        for cname, case in cases.items():
            array = case.get("array", cname)
            ref = data[array]
            sels = _selections(case, ref.shape)
            rec: dict[str, Any] = {**base, "reader": rname, "case": cname,
                                   "bytes": sum(ref[s].nbytes for s in sels)}
            try:
                # gds_zarr on the CPU, as its peers; set only here (a test runs this in-process).
                with zarr.config.set({"codec_pipeline.path": _pipeline(rname)}), \
                        gds_zarr.settings.set(device="cpu"):
                    z = opener(array)
                    for s in sels:  # warm-up, and the check
                        if not np.array_equal(z[s], ref[s]):
                            raise AssertionError(f"{rname} read wrong values")
                    times, reqs = [], []
                    for _ in range(repeat):
                        before = proxy.total()
                        t0 = time.perf_counter()
                        for s in sels:
                            z[s]
                        times.append(time.perf_counter() - t0)
                        reqs.append(proxy.total() - before)
                rec.update(seconds=times, median_s=statistics.median(times),
                           requests=statistics.median(reqs))
            except Exception as e:  # noqa: BLE001 - a failing peer is reported, not dropped
                rec["error"] = f"{type(e).__name__}: {str(e)[:200]}"
            records.append(rec)
            print(_row(rec), flush=True)
    return records


def _row(r: dict[str, Any]) -> str:
    head = f"{r['server']:<4} {r['reader']:<12} {r.get('case', '-'):<8} {r['latency_ms']:>3.0f} ms"
    if "error" in r:
        return f"{head}  {r['error']}"
    mbs = r["bytes"] / r["median_s"] / 1e6
    return (f"{head}  "
            f"{r['median_s']:8.3f} s {mbs:8.1f} MB/s {r['requests']:6.0f} requests")


def _markdown(records: list[dict[str, Any]], meta: dict[str, Any],
              cases: dict[str, Any]) -> str:
    lines = [
        "# Remote reads over loopback: gds_zarr vs zarr ObjectStore, FsspecStore, tensorstore",
        "",
        f"Machine: {meta['machine']}; load average {meta['load_start']} at the start, "
        f"{meta['load_end']} at the end. Versions: "
        + ", ".join(f"{k} {v}" for k, v in meta["versions"].items()) + ".",
        "",
        "Servers on 127.0.0.1, each behind a counting proxy (asyncio, its own process) that "
        "adds the stated latency to every request (the servers are named below: nginx answers "
        "S3's path-style reads from the same files without checking signatures, so S3 rows "
        "measure the clients; moto, a Python server, is itself CPU-bound, so with moto the S3 "
        "times are noisier and flatter). The machine is "
        "shared (2 cores, other engineers' jobs): times without added latency are dominated "
        "by CPU cost and are noisy; the 20 ms runs are dominated by round trips, so their "
        "ratios and the request counts (exact) are the meaningful figures. Median of "
        f"{meta['repeat']} repetitions after a warm-up read that is also checked against the "
        "written data.",
        "",
        "Servers: " + ", ".join(f"{k}: {v}" for k, v in meta["servers"].items()) + ".",
        "",
        "| server | latency | case | reader | median s | MB/s | requests/read | "
        "gds_zarr vs best peer |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for server, lat, cname in ((sv, la, c) for sv in ("http", "s3")
                               for la in sorted({r["latency_ms"] for r in records})
                               for c in cases):
        rows = [r for r in records if r["latency_ms"] == lat and r.get("case") == cname
                and r["server"] == server and "error" not in r]
        ours = next((r for r in rows if r["reader"] == "gds_zarr"), None)
        peers = [r for r in rows if r["reader"] != "gds_zarr"]
        best = min((r["median_s"] for r in peers), default=None)
        for r in rows:
            ratio = ""
            if r is ours and best is not None:
                ratio = f"**{best / r['median_s']:.2f}x**"
            lines.append(f"| {server} | {lat:.0f} ms | {cname} | {r['reader']} | "
                         f"{r['median_s']:.3f} | "
                         f"{r['bytes'] / r['median_s'] / 1e6:.1f} | {r['requests']:.0f} | "
                         f"{ratio} |")
    errors = [r for r in records if "error" in r]
    if errors:
        lines += ["", "Not measured:", ""]
        lines += [f"- {r['server']} {r['reader']} ({r.get('case', 'all cases')}, "
                  f"{r['latency_ms']:.0f} ms): "
                  f"{r['error']}" for r in errors]
    lines += ["", "Cases:", ""]
    for name, c in cases.items():
        lines.append(f"- `{name}`: " + ", ".join(f"{k}={v}" for k, v in c.items()))
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.remote", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="smaller arrays, fewer windows")
    p.add_argument("--latency-ms", type=float, default=20.0,
                   help="added latency per request of the second run (default 20)")
    p.add_argument("--repeat", type=int, default=3, help="timed repetitions (default 3)")
    p.add_argument("--readers", default=",".join(READERS),
                   help=f"subset of: {', '.join(READERS)}")
    p.add_argument("--s3-server", choices=("auto", "nginx", "moto"), default="auto",
                   help="what answers S3 requests (default: nginx where installed, else moto)")
    p.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    args = p.parse_args(argv)
    readers = [r for r in args.readers.split(",") if r]
    unknown = set(readers) - set(READERS)
    if unknown:
        p.error(f"unknown readers: {', '.join(sorted(unknown))}")
    md = run(args.quick, args.latency_ms, args.repeat, readers, args.out,
             s3_server=args.s3_server)
    print(f"\nwrote {md} (+ .json)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
