"""``splatcast``: serve an avatar over WebRTC, render it offline, or describe it."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path

from rich.console import Console
from rich.logging import RichHandler
from rich.markup import escape
from rich.table import Table

from .config import default_engine_cache, sample_avatar_path, usable_cpu_count

console = Console(stderr=True)


MAX_RENDER_SIZE = 16384
"""Largest side of an offline render: a 16k x 16k RGB image is already 3 GB in float32."""
MAX_STREAM_SIZE = 8192
"""Largest per-view side a client may be allowed (``--max-size``); a headset's eye is 2-4k."""
MAX_FPS = 240


def _size(text: str) -> tuple[int, int]:
    try:
        width, height = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT, got {text!r}") from None
    if not (16 <= width <= MAX_STREAM_SIZE and 16 <= height <= MAX_STREAM_SIZE):
        raise argparse.ArgumentTypeError(f"sides must be between 16 and {MAX_STREAM_SIZE}, got {width}x{height}")
    return width, height


def _number_in(kind: type[int] | type[float], low: float, high: float | None = None, unit: str = "") -> Callable[[str], float]:
    """An argparse type: a ``kind`` from ``low`` to ``high`` (inclusive; NaN never). Its errors
    say what was expected, where argparse's own would name this function."""

    def parse(text: str) -> int | float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {'an integer' if kind is int else 'a number'}, got {text!r}") from None
        if not (low <= value and (high is None or value <= high)):
            bound = f"at least {_shown(low)}" if high is None else f"between {_shown(low)} and {_shown(high)}"
            raise argparse.ArgumentTypeError(f"must be {bound}{unit}, got {text}")
        return value

    return parse


def _shown(bound: float) -> str:
    return f"{int(bound):,}" if float(bound).is_integer() else f"{bound:g}"


_positive_int = _number_in(int, 1)
_non_negative_int = _number_in(int, 0)
_render_side = _number_in(int, 1, MAX_RENDER_SIZE)
_port = _number_in(int, 0, 65535)
_fps = _number_in(int, 1, MAX_FPS)
_milliseconds = _number_in(float, 0, 1000, " ms")
_idle_seconds = _number_in(float, 1, 24 * 3600, " s")
_azimuth = _number_in(float, -360, 360, " degrees")
_elevation = _number_in(float, -90, 90, " degrees")
_fov = _number_in(float, 1, 170, " degrees")
_distance = _number_in(float, 0.01, 1e4, " m")
_unit = _number_in(float, 0, 1)


def _gaussian_budget(text: str) -> int:
    """From the weight-free path's least to what a saved asset may hold and still load by default."""
    from .engine.formats import DEFAULT_MAX_GAUSSIANS
    from .engine.weightfree import MIN_NUM_GAUSSIANS

    return _number_in(int, MIN_NUM_GAUSSIANS, DEFAULT_MAX_GAUSSIANS)(text)


def _late_start(text: str) -> float:
    from .streaming.track import MAX_LATE_START

    return _number_in(float, 0, MAX_LATE_START, " of a frame interval")(text)


def _workers(text: str) -> int:
    return _non_negative_int(text) or max(1, usable_cpu_count() // 2)


def _load(path: str | None):
    from .engine.formats import load_asset

    return load_asset(path or sample_avatar_path())


def _report(error: Exception, status: int = 2) -> int:
    """A user's error as one line on stderr (its text not read as markup: pip extras are in
    brackets); returns the exit status."""
    console.print(f"[red]error:[/red] {escape(str(error))}", soft_wrap=True)
    return status


def _check_output(path: str, check_type: Callable[[str], object]) -> None:
    """Refuse an output file the command could not write, before the work that fills it: a
    reconstruction whose write fails at the end is lost."""
    check_type(path)
    output = Path(path)
    if output.is_dir():
        raise IsADirectoryError(f"{path} is a folder, not a file")
    folder = output.absolute().parent
    if not folder.is_dir():
        raise FileNotFoundError(f"folder {folder} does not exist (for {path})")
    if not os.access(folder, os.W_OK):
        raise PermissionError(f"folder {folder} is not writable (for {path})")


def _check_image_type(path: str) -> None:
    """``path``'s extension names an image format Pillow writes."""
    from PIL import Image

    from .engine.images import ImageError

    Image.init()
    suffix = Path(path).suffix.lower()
    if Image.registered_extensions().get(suffix) not in Image.SAVE:
        raise ImageError(f"{path}: unknown image type {suffix!r}: expected .png (or another format Pillow writes)")


@contextmanager
def _checkpoint_errors() -> Iterator[None]:
    """Checkpoint files that are missing or do not fit, as a one-line error. Only commands that
    load checkpoints enter it: the checkpoint module imports the networks' libraries."""
    from .engine.checkpoints import CheckpointError

    try:
        yield
    except CheckpointError as error:
        raise SystemExit(_report(error)) from None


def _check_learned_pipeline(args: argparse.Namespace) -> None:
    """The engine asked for can run here and every weight file is in the checkpoint folder:
    errors now, not after a photo's segmentation or on a server's first upload."""
    from .engine.checkpoints import checkpoint_paths
    from .engine.reconstruct import engine_config, reconstruction_device
    from .export.build import check_engine

    check_engine(engine_config(args.engine), reconstruction_device())
    if not Path(args.checkpoints).is_dir():
        raise FileNotFoundError(f"checkpoint folder {args.checkpoints} does not exist")
    with _checkpoint_errors():
        checkpoint_paths(args.checkpoints)


def _reconstruct(args: argparse.Namespace, photo: str, seed: int = 0):
    from .engine.reconstruct import reconstruct_photo

    checkpoints = args.checkpoints
    with console.status(f"reconstructing {photo}") as status, _checkpoint_errors() if checkpoints else nullcontext():
        cloud = reconstruct_photo(
            photo,
            checkpoints,
            args.gaussians,
            progress=lambda stage: status.update(f"reconstructing {photo}: {stage}"),
            seed=seed,
            engine=args.engine,
            engine_cache=args.engine_cache,
        )
    console.print(f"reconstructed {len(cloud):,} Gaussians from {photo}")
    return cloud


def reconstruct(args: argparse.Namespace) -> int:
    from .engine.formats import check_asset_type, save_asset

    _check_output(args.output, check_asset_type)
    if args.checkpoints:
        _check_learned_pipeline(args)
    save_asset(_reconstruct(args, args.photo, args.seed), args.output)
    console.print(f"wrote {args.output}")
    return 0


def export(args: argparse.Namespace) -> int:
    from .engine.pipeline import ReconstructionPipeline
    from .engine.reconstruct import reconstruction_device, reconstruction_dtype
    from .export.build import EngineConfig, build_engines, check_engine, default_engine, pipeline_graphs

    if not args.checkpoints:
        raise SystemExit("splatcast export needs --checkpoints (or SPLATCAST_CHECKPOINTS): engines are built from real weights")
    device = reconstruction_device()
    config = EngineConfig(args.engine or default_engine(), fp8=args.fp8)
    check_engine(config, device)
    with _checkpoint_errors(), console.status(f"loading the pipeline from {args.checkpoints}"):
        pipeline = ReconstructionPipeline.from_checkpoints(args.checkpoints, device=device, dtype=reconstruction_dtype(device))
    report = build_engines(config, args.engine_cache, pipeline_graphs(pipeline))
    table = Table("graph", "engine", "built", "seconds", "relative error vs eager")
    for line in report:
        engine = f"{line.engine} (torch.compile)" if line.info.get("compiled") else line.engine
        built = "built" if line.built else "from cache" if line.engine != "eager" else "nothing to build"
        table.add_row(line.graph, engine, built, f"{line.seconds:.1f}", f"{line.relative_error:.2e}")
    Console().print(table)
    for line in report:
        if "aot_refused" in line.info:
            console.print(f"[yellow]{line.graph}: AOTInductor package refused, the engine runs torch.compile instead:[/yellow] {escape(line.info['aot_refused'])}")
    return 0


def _server_config(args: argparse.Namespace):
    from .streaming.server import ServerConfig

    return ServerConfig(
        host=args.host,
        port=args.port,
        fps=args.fps,
        width=args.width,
        height=args.height,
        max_width=args.max_size[0],
        max_height=args.max_size[1],
        max_sessions=args.max_sessions,
        sessions_per_address=args.sessions_per_address,
        idle_timeout=args.idle_timeout,
        ice_servers=args.ice_server,
        turn_username=args.turn_username,
        turn_credential=args.turn_credential or os.environ.get("SPLATCAST_TURN_CREDENTIAL"),
        turn_secret=args.turn_secret or os.environ.get("SPLATCAST_TURN_SECRET"),
        store_dir=args.store,
        checkpoints=args.checkpoints,
        engine=args.engine,
        engine_cache=args.engine_cache,
        api_key=args.api_key or os.environ.get("SPLATCAST_API_KEY"),
        workers=args.workers,
        encoder_threads=args.encoder_threads,
        switch_interval_ms=args.switch_interval_ms,
        late_start=args.late_start,
    )


def serve(args: argparse.Namespace) -> int:
    from aiohttp import web

    from .streaming.server import AccessLogger, create_app

    if args.photo and args.avatar:
        raise SystemExit("give --avatar or --photo, not both")
    try:  # before any photo is reconstructed
        config = _server_config(args)
    except ValueError as error:  # settings that do not fit together: a TURN URL without credentials, say
        return _report(error)
    if args.checkpoints:
        _check_learned_pipeline(args)
    if args.photo:
        from .engine.reconstruct import learned_pipeline

        cloud, avatar_id = _reconstruct(args, args.photo), Path(args.photo).stem
        learned_pipeline.cache_clear()  # uploads go to a reconstruction process with its own; free this one's memory
    else:
        cloud = _load(args.avatar)
        avatar_id = Path(args.avatar).stem if args.avatar else "sample"
    with console.status(f"preparing {avatar_id} ({len(cloud):,} Gaussians) for streaming"):
        app = create_app({avatar_id: cloud}, config)
    url = f"http://{'localhost' if args.host in ('127.0.0.1', '0.0.0.0') else args.host}:{args.port}/"
    print(f"splatcast: streaming {avatar_id} at {url}", flush=True)
    web.run_app(app, host=args.host, port=args.port, print=None, access_log_class=AccessLogger)
    return 0


def render(args: argparse.Namespace) -> int:
    from PIL import Image

    from .engine.cameras import frame_bounds, intrinsics_from_fov, orbit_camera, single_view
    from .kernels import reference

    _check_output(args.output, _check_image_type)
    cloud = _load(args.avatar)
    centre, radius = frame_bounds(*cloud.bounds(), args.fov)
    distance = args.distance or radius
    camera_to_world = orbit_camera(args.azimuth, args.elevation, distance, centre)
    views = single_view(camera_to_world, intrinsics_from_fov(args.fov, args.width, args.height), args.width, args.height)
    image = reference.to_uint8(reference.render(cloud, views, tuple(args.background)))[0]
    Image.fromarray(image.numpy()).save(args.output)
    console.print(f"wrote {args.output} ({args.width}x{args.height})")
    return 0


def info(args: argparse.Namespace) -> int:
    cloud = _load(args.avatar)
    lo, hi = cloud.bounds()
    table = Table(title=str(args.avatar or sample_avatar_path()), show_header=False)
    table.add_row("Gaussians", f"{len(cloud):,}")
    table.add_row("SH degree", str(cloud.sh_degree))
    table.add_row("bounds min (m)", ", ".join(f"{v:.3f}" for v in lo.tolist()))
    table.add_row("bounds max (m)", ", ".join(f"{v:.3f}" for v in hi.tolist()))
    table.add_row("size (m)", ", ".join(f"{v:.3f}" for v in (hi - lo).tolist()))
    if len(cloud):
        table.add_row("opacity mean", f"{cloud.opacities.mean():.3f}")
        table.add_row("scale median (m)", f"{cloud.scales.median():.4f}")
    Console().print(table)
    return 0


def _engine_options(parser: argparse.ArgumentParser, *cache_aliases: str) -> None:
    """The learned pipeline's engine and its cache folder, as ``export``, ``reconstruct`` and
    ``serve`` take them. The name is checked by ``EngineConfig`` (a one-line error): listing the
    names here as choices would import torch for every command."""
    parser.add_argument("--engine", help="eager, torch or tensorrt (default: torch with a CUDA GPU, else eager)")
    parser.add_argument("--engine-cache", *cache_aliases, dest="engine_cache", default=str(default_engine_cache()),
                        help="folder of built engines (default: %(default)s)")


def _reconstruction_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoints", default=os.environ.get("SPLATCAST_CHECKPOINTS"),
                        help="folder of the learned pipeline's weights (default: the weight-free path)")
    parser.add_argument("--gaussians", type=_gaussian_budget, default=50_000, help="size of a weight-free avatar")
    _engine_options(parser)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="splatcast", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    commands = parser.add_subparsers(dest="command", required=True)

    p = commands.add_parser("serve", help="stream an avatar to browsers over WebRTC")
    p.add_argument("--avatar", help="a .ply or .splat Gaussian asset (default: the bundled sample)")
    p.add_argument("--photo", help="reconstruct this photo first and stream the result")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0 for every interface)")
    p.add_argument("--port", type=_port, default=8080)
    p.add_argument("--fps", type=_fps, default=60, help="stream frame rate")
    p.add_argument("--width", type=_positive_int, default=640, help="stream width before the first pose")
    p.add_argument("--height", type=_positive_int, default=480, help="stream height before the first pose")
    p.add_argument("--max-size", type=_size, default=(1920, 1080), help="largest per-view size a client may ask for")
    p.add_argument("--max-sessions", type=_positive_int, default=8)
    p.add_argument("--sessions-per-address", type=_positive_int, default=8, help="sessions one client address may hold (a NAT, a load test)")
    p.add_argument("--idle-timeout", type=_idle_seconds, default=30.0, help="seconds without a pose before a session ends")
    p.add_argument("--ice-server", action="append", default=[], help="STUN/TURN URL (repeatable; aiortc uses the first of each kind); none by default")
    p.add_argument("--turn-username", help="the TURN server's long-term credential user")
    p.add_argument("--turn-credential", help="its password (or set SPLATCAST_TURN_CREDENTIAL, which keeps it out of the process list)")
    p.add_argument("--turn-secret", help="instead: the TURN server's shared secret (coturn's static-auth-secret; or set SPLATCAST_TURN_SECRET), "
                   "from which expiring credentials are minted for the server and each viewer")
    p.add_argument("--store", help="folder for uploaded and reconstructed avatars (default: a temporary one)")
    p.add_argument("--api-key", help="turn security on (or set SPLATCAST_API_KEY): management calls need it, viewers need tokens")
    p.add_argument("--workers", type=_workers, default=1, help="processes hosting the sessions (0: half the CPUs this process may use)")
    p.add_argument("--encoder-threads", type=_non_negative_int, default=0, help="threads per session's encoder (0: its share of the cores at --max-sessions)")
    p.add_argument("--switch-interval-ms", type=_milliseconds, default=0.0, help="Python's thread switch interval in session processes (0: Python's 5 ms)")
    p.add_argument(
        "--late-start", type=_late_start, default=0.0,
        help="fraction of a frame interval (up to 0.25) a frame may start after its slot while the previous one is still out (0: skip the slot)",
    )
    _reconstruction_options(p)
    p.set_defaults(run=serve)

    p = commands.add_parser("reconstruct", help="one photo -> a Gaussian avatar (.ply or .splat)")
    p.add_argument("photo", help="a photo of one person (JPEG, PNG, WebP, ...)")
    p.add_argument("-o", "--output", required=True, help="the asset to write (.ply or .splat)")
    p.add_argument("--seed", type=int, default=0)
    _reconstruction_options(p)
    p.set_defaults(run=reconstruct)

    p = commands.add_parser("export", help="build and cache the reconstruction networks' optimized engines")
    p.add_argument("--checkpoints", default=os.environ.get("SPLATCAST_CHECKPOINTS"), help="folder of the learned pipeline's weights")
    _engine_options(p, "--cache")
    p.add_argument("--fp8", action="store_true", help="FP8 Linear layers (torch engine, Ada/Hopper)")
    p.set_defaults(run=export)

    p = commands.add_parser("render", help="render an avatar to a PNG (CPU reference renderer)")
    p.add_argument("avatar", nargs="?", help="a .ply or .splat asset (default: the bundled sample)")
    p.add_argument("-o", "--output", required=True, help="the image to write (.png, or another format Pillow writes)")
    p.add_argument("--azimuth", type=_azimuth, default=0.0, help="degrees around the vertical axis; 0 faces the avatar")
    p.add_argument("--elevation", type=_elevation, default=0.0, help="degrees above the horizon")
    p.add_argument("--distance", type=_distance, help="metres from the avatar's centre (default: fits the frame)")
    p.add_argument("--fov", type=_fov, default=40.0, help="vertical field of view, degrees")
    p.add_argument("--width", type=_render_side, default=640)
    p.add_argument("--height", type=_render_side, default=480)
    p.add_argument("--background", type=_unit, nargs=3, default=(0.08, 0.08, 0.1), metavar=("R", "G", "B"))
    p.set_defaults(run=render)

    p = commands.add_parser("info", help="count, SH degree and bounds of an avatar")
    p.add_argument("avatar", nargs="?", help="a .ply or .splat asset (default: the bundled sample)")
    p.set_defaults(run=info)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(message)s",
        handlers=[RichHandler(console=console, show_path=False)],
    )
    logging.getLogger("aioice").setLevel(logging.WARNING)
    logging.getLogger("aiortc").setLevel(logging.WARNING)
    from .engine.gaussians import AssetError
    from .engine.images import ImageError
    from .engine.prior import BodyModelError
    from .export.errors import EngineError

    try:
        return args.run(args)
    except (AssetError, ImageError, BodyModelError, EngineError, FileNotFoundError, IsADirectoryError, PermissionError) as error:
        return _report(error)
    except OSError as error:  # e.g. the port is taken
        return _report(error, 1)


if __name__ == "__main__":
    sys.exit(main())
