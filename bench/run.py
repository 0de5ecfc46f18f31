"""hf_fdw against direct Python clients, side by side, on a local scripted endpoint.

    python3 bench/run.py            # the full run, about 19 minutes on 2 cores
    python3 bench/run.py --quick    # a smoke run, under 2 minutes

Starts its own endpoint on 127.0.0.1 (bench/endpoint.py: text classification
after a set latency), its own throwaway PostgreSQL cluster with Multicorn2 and
this checkout's hf_fdw, and the direct clients of bench/direct.py; measures

- throughput: ``SELECT text, label FROM model WHERE text = ANY(%s)`` with k
  distinct inputs through psycopg, against the same k requests sent by plain
  ``requests`` in sequence, huggingface_hub's ``InferenceClient`` in
  sequence, and a thread pool as large as hf_fdw's ``concurrency``;
- a JOIN of a 10 000-row table with 500 distinct texts, and its re-run served
  from the cache;
- the backend's peak memory (VmHWM) after 10 000 and 100 000 predicted rows;

each measurement repeated and interleaved with the others, and prints the
ratios, the raw times, and how each target of the issue fares. It is a
benchmark, not a test: it asserts nothing and exits 0 whatever it measures.
Only 127.0.0.1 is ever contacted; everything it starts is stopped at the end,
on failure too.
"""

from __future__ import annotations

import argparse
import dataclasses
import http.client
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR.parent))

from hf_fdw.cluster import LocalCluster, missing_prerequisite, pg_config

CONCURRENCY = 8  # hf_fdw's default; the thread pool gets the same size
PHRASES = (
    "see you at lunch tomorrow",
    "win a free cruise, click now",
    "the meeting moved to 3pm",
    "subscribe asap for free gifts",
    "can you send me the report",
    "you have won, claim your prize, click",
    "dinner at eight?",
    "free entry, subscribe and win",
)


class BenchError(Exception):
    """Something the benchmark needs did not work; the message says what."""


@dataclass(frozen=True)
class Plan:
    """What one run measures, and how long it may spend on it."""

    latencies_ms: tuple[int, ...] = (0, 20, 100)
    input_counts: tuple[int, ...] = (1, 100, 2000)
    repeat: int = 3
    # A run expected to take longer than this is done once, not ``repeat`` times.
    repeat_below_seconds: float = 12.0
    # A sequential client expected to take longer than this runs on the first
    # inputs only (``sample_seconds`` worth), and its time is scaled up: at this
    # point it is one request after another, so its time is linear in k.
    sequential_limit_seconds: float = 45.0
    sample_seconds: float = 20.0
    extra_concurrency: int = 0  # another pool size to compare, at 20 ms (0: none)
    join_rows: int = 10_000
    join_distinct: int = 500
    join_latency_ms: int = 20
    cached_inputs: int = 2000
    memory_rows: tuple[int, int] = (10_000, 100_000)


FULL = Plan()
QUICK = Plan(
    input_counts=(1, 100),
    repeat=1,
    extra_concurrency=0,
    join_rows=2000,
    join_distinct=100,
    cached_inputs=500,
    memory_rows=(2000, 20_000),
)


# ---------------------------------------------------------------------------
# Processes: the endpoint and the direct clients
# ---------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a process (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def memory_mb(pid: int) -> dict[str, float]:
    """A process's peak (VmHWM) and current (VmRSS) resident memory, in MB."""
    found = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmHWM", "VmRSS"):
            found[name] = int(value.split()[0]) / 1024
    return found


class Endpoint:
    """bench/endpoint.py in its own processes, so that no client shares its GIL."""

    def __init__(self, workers: int = 2) -> None:
        self.process = subprocess.Popen(
            [sys.executable, str(BENCH_DIR / "endpoint.py"), "--workers", str(workers)],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout is not None
        first = self.process.stdout.readline().split()
        second = self.process.stdout.readline().split()
        if not first or first[0] != "listening" or not second:
            self.close()
            raise BenchError("the benchmark endpoint did not start")
        self.url = first[-1]
        self.worker_pids = [int(pid) for pid in second[1:]]
        parts = urlsplit(self.url)
        if parts.hostname != "127.0.0.1":
            self.close()
            raise BenchError(f"the endpoint listens on {parts.hostname}, not 127.0.0.1")
        self._port = parts.port or 80

    def model_url(self, latency_ms: int) -> str:
        return f"{self.url}/models/{model_id(latency_ms)}"

    def requests_served(self) -> int:
        connection = http.client.HTTPConnection("127.0.0.1", self._port, timeout=10)
        try:
            connection.request("GET", "/stats")
            return int(json.loads(connection.getresponse().read())["requests"])
        finally:
            connection.close()

    def cpu(self) -> float:
        return sum(cpu_seconds(pid) for pid in self.worker_pids)

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def model_id(latency_ms: int) -> str:
    return f"acme/spam/delay-{latency_ms}"


class DirectWorker:
    """One bench/direct.py process; runs a client over texts and times it."""

    def __init__(self, python: str, environment: dict[str, str] | None = None) -> None:
        self.python = python
        self.process = subprocess.Popen(
            [python, str(BENCH_DIR / "direct.py")],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, **(environment or {})},
        )

    def run(self, client: str, url: str, texts: Sequence[str]) -> dict[str, Any]:
        assert self.process.stdin is not None and self.process.stdout is not None
        command = {
            "client": client, "url": url, "texts": list(texts),
            "concurrency": CONCURRENCY,
        }
        self.process.stdin.write(json.dumps(command) + "\n")
        self.process.stdin.flush()
        line = self.process.stdout.readline()
        if not line:
            raise BenchError(f"the {client} client's process ended")
        answer = json.loads(line)
        if "error" in answer:
            raise BenchError(f"the {client} client failed: {answer['error']}")
        return answer

    def close(self) -> None:
        if self.process.stdin is not None:
            self.process.stdin.close()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def server_python() -> str:
    """The Python PostgreSQL embeds (through Multicorn2), to run ``requests`` in.

    The direct clients then use the same interpreter and the same ``requests``
    and ``urllib3`` as the backend, so that a difference is hf_fdw's own.
    """
    library = Path(pg_config("--pkglibdir") or "") / "multicorn.so"
    try:
        linked = subprocess.run(["ldd", str(library)], capture_output=True,
                                text=True, timeout=30, check=False).stdout
    except (OSError, subprocess.SubprocessError):
        linked = ""
    for word in linked.split():
        if word.startswith("libpython3."):
            version = word.removeprefix("libpython").split(".so")[0]
            for prefix in ("/usr/bin", "/usr/local/bin"):
                candidate = Path(prefix) / f"python{version}"
                if candidate.exists():
                    return str(candidate)
    return sys.executable


def checkout_version() -> str:
    """The commit the cluster's copy of hf_fdw comes from, and whether it is edited."""
    try:
        return subprocess.run(
            ["git", "-C", str(BENCH_DIR.parent), "describe", "--always", "--dirty"],
            capture_output=True, text=True, timeout=30, check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "not a git checkout"


def python_versions(python: str, modules: Sequence[str]) -> str:
    code = (
        "import importlib, platform; print(platform.python_version(), "
        + ", ".join(
            f"'{name}', importlib.import_module('{name}').__version__"
            for name in modules
        )
        + ")"
    )
    try:
        return subprocess.run([python, "-c", code], capture_output=True, text=True,
                              timeout=60, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


# ---------------------------------------------------------------------------
# Measurements
# ---------------------------------------------------------------------------


@dataclass
class Measurement:
    """One timed run of one client over one list of texts."""

    seconds: float
    cpu: float  # the client's CPU seconds: the backend's for hf_fdw
    server_cpu: float
    requests: int
    spam: int  # how many texts got the spam label (the same for every client)
    rows: int
    sent_in_requests: float | None = None  # hf_fdw: seconds in its request phase
    scale: float = 1.0  # > 1: run on a sample, times scaled up by this


@dataclass
class Cell:
    """Every client's measurements for one latency and one number of inputs."""

    latency_ms: int
    inputs: int
    runs: dict[str, list[Measurement]] = field(default_factory=dict)

    def median(self, client: str) -> float | None:
        runs = self.runs.get(client)
        if not runs:
            return None
        return statistics.median(run.seconds * run.scale for run in runs)

    def median_of(self, client: str, value: Callable[[Measurement], float]) -> float:
        return statistics.median(value(run) for run in self.runs[client])

    def estimated(self, client: str) -> bool:
        return any(run.scale > 1 for run in self.runs.get(client, []))


class Bench:
    """Everything one run starts, and the measurements it takes with it."""

    def __init__(self, plan: Plan, stack: ExitStack, client_python: str) -> None:
        import psycopg

        self.psycopg = psycopg
        self.plan = plan
        self._tags = iter(range(1, 10**9))
        self.notes: list[str] = []

        self.endpoint = Endpoint()
        stack.callback(self.endpoint.close)
        self.cluster = LocalCluster()
        stack.callback(self.cluster.close)
        self.requests_worker = DirectWorker(client_python)
        stack.callback(self.requests_worker.close)
        # huggingface_hub's offline mode refuses local URLs too: see direct.py.
        self.hub_worker = DirectWorker(sys.executable, {"HF_HUB_OFFLINE": "0"})
        stack.callback(self.hub_worker.close)

        self.conn = self.connect()
        stack.callback(self.conn.close)
        self.backend_pid = self.conn.execute("SELECT pg_backend_pid()").fetchone()[0]
        self.conn.execute("CREATE EXTENSION hf_fdw CASCADE")
        self.engines = {
            "nocache": {"concurrency": CONCURRENCY, "cache_ttl": 0},
            "cached": {"concurrency": CONCURRENCY, "cache_ttl": 3600},
        }
        if plan.extra_concurrency:
            self.engines["wide"] = {
                "concurrency": plan.extra_concurrency, "cache_ttl": 0
            }
        latencies = {*plan.latencies_ms, plan.join_latency_ms, 0}
        for engine, options in self.engines.items():
            options["max_requests"] = 1_000_000
            self.conn.execute(
                "SELECT hf_fdw.create_engine(%s, endpoint => %s, options => %s)",
                (engine, self.endpoint.url, json.dumps(options)),
            )
            for latency in sorted(latencies):
                self.conn.execute(
                    """SELECT hf_fdw.create_model(%s, predict => 'label', engine => %s,
                           task => 'text-classification', model_name => %s,
                           labels => '["ham", "spam"]')""",
                    (table_name(engine, latency), engine, model_id(latency)),
                )

    def connect(self) -> Any:
        # prepare_threshold=None: every statement planned with its array, as a
        # one-off query is (no server-side prepared statement).
        return self.psycopg.connect(
            self.cluster.dsn, autocommit=True, prepare_threshold=None
        )

    def texts(self, count: int) -> list[str]:
        """``count`` texts no earlier run has sent."""
        tag = next(self._tags)
        return [f"r{tag}-{i} {PHRASES[i % len(PHRASES)]}" for i in range(count)]

    # -- one run of each client ---------------------------------------------

    def run_fdw(self, engine: str, latency_ms: int, texts: list[str]) -> Measurement:
        table = table_name(engine, latency_ms)
        usage_before = self.usage_seconds(engine, latency_ms)
        cpu_before = cpu_seconds(self.backend_pid)
        server_before = self.endpoint.cpu()
        served_before = self.endpoint.requests_served()

        started = time.perf_counter()
        rows = self.conn.execute(
            f"SELECT text, label FROM {table} WHERE text = ANY(%s)", (texts,)
        ).fetchall()
        seconds = time.perf_counter() - started

        return Measurement(
            seconds=seconds,
            cpu=cpu_seconds(self.backend_pid) - cpu_before,
            server_cpu=self.endpoint.cpu() - server_before,
            requests=self.endpoint.requests_served() - served_before,
            spam=sum(label == "spam" for _, label in rows),
            rows=len(rows),
            sent_in_requests=self.usage_seconds(engine, latency_ms) - usage_before,
        )

    def run_direct(self, client: str, latency_ms: int, texts: list[str],
                   scale: float = 1.0) -> Measurement:
        worker = self.hub_worker if client == "hub" else self.requests_worker
        server_before = self.endpoint.cpu()
        served_before = self.endpoint.requests_served()
        answer = worker.run(client, self.endpoint.model_url(latency_ms), texts)
        labels = answer["labels"]
        return Measurement(
            seconds=answer["seconds"],
            cpu=answer["cpu"],
            server_cpu=self.endpoint.cpu() - server_before,
            requests=self.endpoint.requests_served() - served_before,
            spam=labels.get("LABEL_1", 0),
            rows=sum(labels.values()),
            scale=scale,
        )

    def usage_seconds(self, engine: str, latency_ms: int) -> float:
        row = self.conn.execute(
            "SELECT seconds FROM hf_fdw.usage WHERE engine = %s AND model = %s",
            (engine, model_id(latency_ms)),
        ).fetchone()
        return float(row[0]) if row else 0.0

    # -- the sections ----------------------------------------------------------

    def warm_up(self) -> None:
        """One request per client and model: imports, pools and connections."""
        for latency in sorted({*self.plan.latencies_ms, self.plan.join_latency_ms}):
            for engine in self.engines:
                self.run_fdw(engine, latency, self.texts(CONCURRENCY * 2))
            for client in ("requests", "pool", "hub"):
                self.run_direct(client, latency, self.texts(CONCURRENCY * 2))

    def throughput(self) -> list[Cell]:
        cells = []
        for latency in self.plan.latencies_ms:
            for count in self.plan.input_counts:
                cells.append(self.throughput_cell(latency, count))
                progress(f"{latency} ms, {count} inputs: "
                         + ", ".join(f"{client} {cells[-1].median(client):.3f} s"
                                     for client in cells[-1].runs))
        return cells

    def throughput_cell(self, latency_ms: int, count: int) -> Cell:
        cell = Cell(latency_ms, count)
        latency = latency_ms / 1000
        parallel_seconds = count * latency / CONCURRENCY
        sequential_seconds = count * latency

        def fdw(engine: str) -> Callable[[], Measurement]:
            return lambda: self.run_fdw(engine, latency_ms, self.texts(count))

        def direct(client: str, sequential: bool = True) -> Callable[[], Measurement]:
            if sequential and sequential_seconds > self.plan.sequential_limit_seconds:
                sample = max(1, int(self.plan.sample_seconds / latency))
                return lambda: self.run_direct(
                    client, latency_ms, self.texts(sample), scale=count / sample
                )
            return lambda: self.run_direct(client, latency_ms, self.texts(count))

        clients: dict[str, tuple[Callable[[], Measurement], int]] = {
            "hf_fdw": (fdw("nocache"), self.repeats(parallel_seconds)),
            "pool": (direct("pool", sequential=False), self.repeats(parallel_seconds)),
            "requests": (direct("requests"), self.repeats(sequential_seconds)),
            "hub": (direct("hub"), self.repeats(sequential_seconds)),
        }
        if (
            self.plan.extra_concurrency
            and latency_ms == 20
            and count == max(self.plan.input_counts)
        ):
            clients[f"hf_fdw c{self.plan.extra_concurrency}"] = (
                fdw("wide"), self.repeats(count * latency / self.plan.extra_concurrency)
            )
        for name, runs in interleave(clients):
            cell.runs.setdefault(name, []).append(runs())
        return cell

    def repeats(self, expected_seconds: float) -> int:
        if expected_seconds > self.plan.repeat_below_seconds:
            return 1
        return self.plan.repeat

    def join(self) -> dict[str, Any]:
        """The JOIN of a table with repeated texts, uncached, rewritten, cached."""
        plan = self.plan
        latency = plan.join_latency_ms
        bodies = self.texts(plan.join_distinct)
        self.conn.execute("CREATE TABLE bench_messages (id int, body text)")
        copy_rows = "COPY bench_messages (id, body) FROM STDIN"
        with self.conn.cursor().copy(copy_rows) as copy:
            for i in range(plan.join_rows):
                copy.write_row((i, bodies[i % plan.join_distinct]))
        self.conn.execute("ANALYZE bench_messages")

        uncached = table_name("nocache", latency)
        cached = table_name("cached", latency)
        join = ("SELECT m.id, s.label FROM bench_messages m "
                "JOIN {table} s ON s.text = m.body")
        rewritten = (
            "WITH p AS MATERIALIZED (SELECT text, label FROM {table} WHERE text = "
            "ANY(ARRAY(SELECT DISTINCT body FROM bench_messages))) "
            "SELECT m.id, p.label FROM bench_messages m JOIN p ON p.text = m.body"
        )
        explain = [row[0] for row in self.conn.execute(
            "EXPLAIN (COSTS OFF) " + join.format(table=uncached)
        ).fetchall()]

        runs: dict[str, list[Measurement]] = {}
        clients = {
            "join": (lambda: self.run_sql(join.format(table=uncached)), plan.repeat),
            "join, rewritten": (
                lambda: self.run_sql(rewritten.format(table=uncached)), plan.repeat
            ),
            "pool": (lambda: self.run_direct("pool", latency, bodies), plan.repeat),
        }
        for name, run in interleave(clients):
            runs.setdefault(name, []).append(run())
        progress("join: " + ", ".join(
            f"{name} {statistics.median(m.seconds for m in ms):.3f} s"
            for name, ms in runs.items()))

        # The cache: one run fills it, the re-runs are served from it.
        self.conn.execute("SELECT hf_fdw.clear_cache()")
        runs["join, cache filled"] = [self.run_sql(join.format(table=cached))]
        # The latency does not matter once cached: fill this one without it.
        cached_texts = self.texts(plan.cached_inputs)
        any_query = (f"SELECT text, label FROM {table_name('cached', 0)} "
                     "WHERE text = ANY(%s)")
        runs["= ANY, cache filled"] = [self.run_sql(any_query, (cached_texts,))]
        clients = {
            "join, cached re-run": (
                lambda: self.run_sql(join.format(table=cached)), plan.repeat
            ),
            "= ANY, cached re-run": (
                lambda: self.run_sql(any_query, (cached_texts,)), plan.repeat
            ),
        }
        for name, run in interleave(clients):
            runs.setdefault(name, []).append(run())
        entries, size = self.conn.execute(
            "SELECT entries, bytes FROM hf_fdw.cache"
        ).fetchone()
        self.conn.execute("SELECT hf_fdw.clear_cache()")
        self.conn.execute("DROP TABLE bench_messages")
        progress("cache: " + ", ".join(
            f"{name} {statistics.median(m.seconds for m in ms):.3f} s"
            for name, ms in runs.items() if "cache" in name))
        return {"runs": runs, "explain": explain, "cache": (entries, size)}

    def run_sql(self, query: str, params: Any = None) -> Measurement:
        cpu_before = cpu_seconds(self.backend_pid)
        server_before = self.endpoint.cpu()
        served_before = self.endpoint.requests_served()
        started = time.perf_counter()
        rows = self.conn.execute(query, params).fetchall()
        seconds = time.perf_counter() - started
        return Measurement(
            seconds=seconds,
            cpu=cpu_seconds(self.backend_pid) - cpu_before,
            server_cpu=self.endpoint.cpu() - server_before,
            requests=self.endpoint.requests_served() - served_before,
            spam=sum(row[-1] == "spam" for row in rows),
            rows=len(rows),
        )

    def memory(self) -> list[dict[str, Any]]:
        """Peak backend memory after predicting many rows, each in a fresh backend."""
        small, large = self.plan.memory_rows
        results = []
        for engine, batches in (
            ("nocache", [small]),
            ("nocache", [large]),
            ("cached", [small] * (large // small)),
        ):
            results.extend(self.memory_session(engine, batches))
            last = results[-1]
            progress(f"memory: {last['rows']} rows, {engine}: VmHWM "
                     f"{last['hwm']:.0f} MB in {last['seconds']:.1f} s")
        return results

    def memory_session(self, engine: str, batches: list[int]) -> list[dict[str, Any]]:
        table = table_name(engine, 0)
        results = []
        with self.connect() as conn:
            pid = conn.execute("SELECT pg_backend_pid()").fetchone()[0]
            conn.execute(f"SELECT label FROM {table} WHERE text = 'warm up'").fetchall()
            before = memory_mb(pid)
            total = 0
            started = time.perf_counter()
            for index, count in enumerate(batches):
                conn.execute(
                    f"SELECT count(label) FROM {table} WHERE text = ANY(%s)",
                    (self.texts(count),),
                ).fetchone()
                total += count
                if index in (0, len(batches) - 1):
                    after = memory_mb(pid)
                    entries, size = conn.execute(
                        "SELECT entries, bytes FROM hf_fdw.cache"
                    ).fetchone()
                    results.append({
                        "engine": engine, "rows": total, "statements": index + 1,
                        "hwm_before": before["VmHWM"], "hwm": after["VmHWM"],
                        "rss": after["VmRSS"], "cache_entries": entries,
                        "cache_bytes": size,
                        "seconds": time.perf_counter() - started,
                    })
        return results


def table_name(engine: str, latency_ms: int) -> str:
    return f"spam_{engine}_{latency_ms}ms"


def interleave(
    clients: dict[str, tuple[Callable[[], Measurement], int]],
) -> Iterator[tuple[str, Callable[[], Measurement]]]:
    """Each client's runs, taken in turns, the order rotated every round.

    Noise from other work on the machine then falls on every client alike.
    """
    names = list(clients)
    rounds = max(repeats for _, repeats in clients.values())
    for round_ in range(rounds):
        shift = round_ % len(names)
        for name in names[shift:] + names[:shift]:
            run, repeats = clients[name]
            if round_ < repeats:
                yield name, run


def progress(line: str) -> None:
    print(f"  .. {line}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------
# The report
# ---------------------------------------------------------------------------


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    cells = [list(map(str, header))] + [[str(value) for value in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = []
    for index, row in enumerate(cells):
        lines.append("| " + " | ".join(v.ljust(w) for v, w in zip(row, widths)) + " |")
        if index == 0:
            lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def seconds_text(cell: Cell, client: str) -> str:
    value = cell.median(client)
    if value is None:
        return "-"
    return ("~" if cell.estimated(client) else "") + f"{value:.3f}"


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or not denominator:
        return None
    return numerator / denominator


def ratio_text(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def report(bench: Bench, cells: list[Cell], join: dict[str, Any],
           memory: list[dict[str, Any]], header: list[str]) -> str:
    out: list[str] = []
    out.extend(header)

    out.append(
        "\n#### Throughput: k distinct inputs, one request each (median seconds)\n"
    )
    out.append(
        "Ratio = the other client's time / hf_fdw's time: above 1x, hf_fdw is "
        "faster. ~ marks a sequential time measured on the first inputs and "
        "scaled to k.\n"
    )
    rows = []
    for cell in cells:
        fdw = cell.median("hf_fdw")
        pool = cell.median("pool")
        rows.append([
            f"{cell.latency_ms} ms", cell.inputs,
            seconds_text(cell, "hf_fdw"), seconds_text(cell, "pool"),
            seconds_text(cell, "requests"), seconds_text(cell, "hub"),
            ratio_text(ratio(pool, fdw)),
            ratio_text(ratio(cell.median("requests"), fdw)),
            ratio_text(ratio(cell.median("hub"), fdw)),
            f"{(fdw - pool) / cell.inputs * 1000:+.3f}" if fdw and pool else "-",
        ])
    out.append(markdown_table(
        ["latency", "inputs", "hf_fdw s", "pool s", "requests s", "hub s",
         "vs pool", "vs requests", "vs hub", "hf_fdw - pool, ms/row"],
        rows,
    ))
    extra = [c for c in cells if any(n.startswith("hf_fdw c") for n in c.runs)]
    for cell in extra:
        name = next(n for n in cell.runs if n.startswith("hf_fdw c"))
        wide = cell.median(name)
        out.append(
            f"\nWith concurrency {bench.plan.extra_concurrency} instead of "
            f"{CONCURRENCY} ({cell.latency_ms} ms, {cell.inputs} inputs): hf_fdw "
            f"{wide:.3f} s, {ratio_text(ratio(cell.median('requests'), wide))} "
            f"the sequential requests client, "
            f"{ratio_text(ratio(cell.median('hub'), wide))} the hub client."
        )

    out.append("\n#### Where hf_fdw's time goes at 0 ms latency (medians)\n")
    rows = []
    for cell in cells:
        if cell.latency_ms != 0 or cell.inputs < 100:
            continue
        k = cell.inputs
        fdw_run = cell.median_of("hf_fdw", lambda m: m.seconds)
        in_requests = cell.median_of("hf_fdw", lambda m: m.sent_in_requests or 0.0)
        rows.append([
            k, f"{fdw_run:.3f}", f"{in_requests:.3f}",
            f"{(fdw_run - in_requests) / k * 1000:.3f}",
            f"{cell.median_of('hf_fdw', lambda m: m.cpu) / k * 1000:.3f}",
            f"{cell.median_of('pool', lambda m: m.cpu) / k * 1000:.3f}",
            f"{cell.median_of('requests', lambda m: m.cpu) / k * 1000:.3f}",
            f"{cell.median_of('pool', lambda m: m.server_cpu) / k * 1000:.3f}",
        ])
    if rows:
        out.append(markdown_table(
            ["inputs", "statement s", "in requests s", "outside requests ms/row",
             "backend CPU ms/row", "pool CPU ms/row", "requests CPU ms/row",
             "endpoint CPU ms/row"],
            rows,
        ))
        out.append(
            "\n'in requests' is hf_fdw.usage.seconds: the time from the first "
            "request sent to the last answer read; the rest of the statement is "
            "planning, reading the quals, building rows and sending them."
        )

    out.append(f"\n#### JOIN: {bench.plan.join_rows} rows, {bench.plan.join_distinct} "
               f"distinct texts, {bench.plan.join_latency_ms} ms latency\n")
    rows = []
    pool = statistics.median(m.seconds for m in join["runs"]["pool"])
    for name, runs in join["runs"].items():
        seconds = statistics.median(m.seconds for m in runs)
        rows.append([
            name, runs[0].rows, runs[0].requests, f"{seconds:.3f}",
            f"{runs[0].rows / seconds:,.0f}", ratio_text(pool / seconds),
            len(runs),
        ])
    out.append(markdown_table(
        ["query", "rows", "requests", "seconds", "rows/s", "vs pool", "runs"], rows
    ))
    out.append(
        "\n'join' is `SELECT m.id, s.label FROM bench_messages m JOIN model s ON "
        "s.text = m.body`; 'rewritten' asks for the distinct texts in one scan, "
        "`WITH p AS MATERIALIZED (SELECT text, label FROM model WHERE text = "
        "ANY(ARRAY(SELECT DISTINCT body FROM bench_messages))) ... JOIN p`; "
        "'pool' sends the distinct texts' requests directly. Cached rows come "
        f"from a model with cache_ttl 3600 (cache afterwards: {join['cache'][0]} "
        f"entries, {join['cache'][1]:,} bytes as hf_fdw counts them). The JOIN's "
        "plan:\n"
    )
    out.append("\n".join("    " + line for line in join["explain"]))

    out.append("\n#### Backend memory, 0 ms latency, distinct inputs, each in a fresh "
               "backend\n")
    rows = []
    for run in memory:
        rows.append([
            f"{run['rows']:,}", run["statements"],
            "on" if run["engine"] == "cached" else "off (cache_ttl 0)",
            f"{run['hwm_before']:.0f}", f"{run['hwm']:.0f}",
            f"{run['hwm'] - run['hwm_before']:+.0f}", f"{run['rss']:.0f}",
            f"{run['cache_entries']:,}", f"{run['seconds']:.1f}",
            f"{run['seconds'] / run['rows'] * 1000:.2f}",
        ])
    out.append(markdown_table(
        ["rows", "statements", "cache", "VmHWM before MB", "VmHWM after MB",
         "growth MB", "VmRSS after MB", "cached entries", "seconds", "ms/row"],
        rows,
    ))

    out.append("\n#### Targets\n")
    out.extend(targets(bench, cells, join, memory))

    out.append("\n#### Raw times (seconds, every run, in the order taken)\n")
    rows = []
    for cell in cells:
        for client, runs in cell.runs.items():
            scale = runs[0].scale
            times = " ".join(f"{run.seconds:.3f}" for run in runs)
            if scale > 1:
                times += f" (on {round(cell.inputs / scale)} inputs, x{scale:.2f})"
            checks = []
            expected = cell.inputs / scale
            if any(run.requests != round(expected) for run in runs):
                checks.append("requests " + ",".join(str(r.requests) for r in runs))
            if any(run.rows != round(expected) for run in runs):
                checks.append("rows " + ",".join(str(r.rows) for r in runs))
            rows.append([f"{cell.latency_ms} ms", cell.inputs, client, times,
                         "; ".join(checks) or "ok"])
    for name, runs in join["runs"].items():
        rows.append([f"{bench.plan.join_latency_ms} ms", "join", name,
                     " ".join(f"{run.seconds:.3f}" for run in runs),
                     "requests " + ",".join(str(r.requests) for r in runs)])
    out.append(markdown_table(["latency", "inputs", "client", "times", "checks"], rows))
    disagree = [
        f"{cell.latency_ms} ms, {cell.inputs} inputs"
        for cell in cells
        if len({run.spam for runs in cell.runs.values() for run in runs
                if run.scale == 1}) > 1
    ]
    out.append(
        "\nLabels: " + (
            "in every cell, every client labelled as many texts spam."
            if not disagree else "the clients' spam counts differ in: "
            + "; ".join(disagree)
        )
    )
    server = max(
        ((run.server_cpu / run.seconds, cell.latency_ms, cell.inputs, client)
         for cell in cells for client, runs in cell.runs.items() for run in runs
         if run.seconds > 0.2),
        default=None,
    )
    if server:
        out.append(
            f"Endpoint: {len(bench.endpoint.worker_pids)} processes; its busiest "
            f"measurement ({server[1]} ms, {server[2]} inputs, {server[3]}) used "
            f"{server[0] * 100:.0f}% of one core."
        )
    out.extend(bench.notes)
    return "\n".join(out)


def verdict(met: bool) -> str:
    return "MET" if met else "NOT MET"


def targets(bench: Bench, cells: list[Cell], join: dict[str, Any],
            memory: list[dict[str, Any]]) -> list[str]:
    lines = []
    by_key = {(cell.latency_ms, cell.inputs): cell for cell in cells}
    headline = by_key.get((20, 2000))
    if headline:
        fdw = headline.median("hf_fdw")
        vs_pool = ratio(headline.median("pool"), fdw) or 0.0
        vs_requests = ratio(headline.median("requests"), fdw) or 0.0
        vs_hub = ratio(headline.median("hub"), fdw) or 0.0
        lines.append(f"- 20 ms, 2000 inputs, hf_fdw vs the thread pool >= 0.9x: "
                     f"{vs_pool:.2f}x, {verdict(vs_pool >= 0.9)}")
        lines.append(f"- 20 ms, 2000 inputs, hf_fdw vs a sequential client >= 6x: "
                     f"{vs_requests:.2f}x requests, {vs_hub:.2f}x hub, "
                     f"{verdict(min(vs_requests, vs_hub) >= 6)}")
    else:
        lines.append("- 20 ms, 2000 inputs: not measured in this run (--quick)")
    zero = [cell for cell in cells if cell.latency_ms == 0 and cell.inputs >= 100]
    if zero:
        cell = max(zero, key=lambda c: c.inputs)
        overhead = ((cell.median("hf_fdw") or 0.0) - (cell.median("pool") or 0.0)) \
            / cell.inputs * 1000
        sequential = ((cell.median("hf_fdw") or 0.0)
                      - (cell.median("requests") or 0.0)) / cell.inputs * 1000
        lines.append(
            f"- 0 ms, {cell.inputs} inputs, at most 0.3 ms per row over the direct "
            f"client: {overhead:+.3f} ms/row over the pool ({sequential:+.3f} over "
            f"sequential requests), {verdict(overhead <= 0.3)}"
        )
    cached = [
        runs[0].rows / statistics.median(m.seconds for m in runs)
        for name, runs in join["runs"].items() if "re-run" in name
    ]
    names = [name for name in join["runs"] if "re-run" in name]
    lines.append(
        "- cached rows >= 20 000 per second: "
        + ", ".join(f"{rate:,.0f} rows/s ({name})" for rate, name in zip(cached, names))
        + f", {verdict(min(cached) >= 20_000)}"
    )
    single = [
        run for run in memory
        if run["statements"] == 1 and run["engine"] == "nocache"
    ]
    if len(single) >= 2:
        growth = single[-1]["hwm"] - single[0]["hwm"]
        lines.append(
            f"- backend memory within 50 MB from {single[0]['rows']:,} to "
            f"{single[-1]['rows']:,} rows (one statement, cache_ttl 0): VmHWM "
            f"{single[0]['hwm']:.0f} MB -> {single[-1]['hwm']:.0f} MB, "
            f"{growth:+.0f} MB, {verdict(growth <= 50)}"
        )
    session = [run for run in memory if run["engine"] == "cached"]
    if len(session) >= 2:
        growth = session[-1]["hwm"] - session[0]["hwm"]
        lines.append(
            f"- the same with the cache on, {session[-1]['statements']} statements "
            f"of {session[0]['rows']:,} in one backend: VmHWM "
            f"{session[0]['hwm']:.0f} MB -> {session[-1]['hwm']:.0f} MB, "
            f"{growth:+.0f} MB, {verdict(growth <= 50)}"
        )
    return lines


# ---------------------------------------------------------------------------


@contextmanager
def stop_on_sigterm() -> Iterator[None]:
    """Turn SIGTERM into SystemExit, so that everything started is cleaned up."""
    def stop(signum: int, frame: Any) -> None:
        raise SystemExit(f"stopped by signal {signum}")

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="hf_fdw against direct Python clients, on a local endpoint."
    )
    parser.add_argument("--quick", action="store_true",
                        help="a smoke run: fewer inputs, one run each, < 2 minutes")
    parser.add_argument("--repeat", type=int, help="runs of each measurement")
    parser.add_argument("--client-python",
                        help="the Python for the requests and pool clients "
                        "(default: the one PostgreSQL embeds)")
    args = parser.parse_args(argv)

    plan = QUICK if args.quick else FULL
    if args.repeat:
        plan = dataclasses.replace(plan, repeat=max(1, args.repeat))
    reason = missing_prerequisite()
    if reason:
        print(f"cannot run the benchmark: {reason}", file=sys.stderr)
        return 1
    try:
        import psycopg  # noqa: F401
    except ImportError:
        print("cannot run the benchmark: psycopg (3) is not installed",
              file=sys.stderr)
        return 1

    client_python = args.client_python or server_python()
    command = "python3 bench/run.py" + (" --quick" if args.quick else "") + (
        f" --repeat {args.repeat}" if args.repeat else "")
    checkout = checkout_version()
    load_before = os.getloadavg()
    started = time.monotonic()
    with stop_on_sigterm(), ExitStack() as stack:
        progress("starting the endpoint, the cluster and the clients")
        bench = Bench(plan, stack, client_python)
        server_version = bench.conn.execute("SHOW server_version").fetchone()[0]
        bench.warm_up()
        cells = bench.throughput()
        join = bench.join()
        memory = bench.memory()
        elapsed = time.monotonic() - started
        header = [
            f"### hf_fdw benchmark{' (quick)' if args.quick else ''}\n",
            f"Command: `{command}`  ",
            (f"Machine: {os.cpu_count()} CPUs, {platform.machine()}, load average "
             f"{load_before[0]:.2f} before, {os.getloadavg()[0]:.2f} after; "
             f"{elapsed / 60:.1f} minutes  "),
            (f"PostgreSQL {server_version.split()[0]}, Multicorn2, hf_fdw from this "
             f"checkout ({checkout}); engine options concurrency {CONCURRENCY}, "
             "cache_ttl 0  "),
            (f"requests and pool clients: {client_python} (Python, requests, urllib3: "
             f"{python_versions(client_python, ['requests', 'urllib3'])}), the "
             "Python the backend embeds  "),
            (f"hub client: {sys.executable} (Python, huggingface_hub: "
             f"{python_versions(sys.executable, ['huggingface_hub'])})  "),
            (f"Each measurement: median of {plan.repeat} runs (1 for runs over "
             f"{plan.repeat_below_seconds:g} s), clients interleaved; texts never "
             "sent before."),
        ]
        print(report(bench, cells, join, memory, header))
    return 0


if __name__ == "__main__":
    sys.exit(main())
